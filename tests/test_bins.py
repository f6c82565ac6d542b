"""Numeric sensitive attributes in bins, a sensitive attribute written alone, waivers by the
grouping name reports print, and gzip CSV audit sets (other compressions refused).

Oracles: group sizes counted by hand in plain Python, fairlearn's demographic parity on
groups that pandas' ``cut`` makes from the same values, and the report of the same rows
read from an uncompressed file.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import demographic_parity_difference

from fairgate.core.bins import Bins
from fairgate.errors import DataError

EDGES = [0, 25, 40, 65]


@pytest.fixture
def aged(tmp_path: Path) -> Path:
    """3,000 rows: label y, sex, integer age in [18, 64], teacher/student scores t and s."""
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "age": rng.integers(18, 65, n),
                       "y": rng.integers(0, 2, n)})
    df["t"] = np.clip(df.y * 0.3 + rng.random(n) * 0.7, 0, 1)
    df["s"] = np.clip(df.y * 0.25 + rng.random(n) * 0.7 + (df.age < 25) * 0.1, 0, 1)
    path = tmp_path / "aged.parquet"
    df.to_parquet(path)
    return path


def policy(sensitive: str, extra: str = "", checks: str = "") -> str:
    return f"""\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: {sensitive}
  min_group_size: 10
{extra}checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.5
{checks}statistics:
  resamples: 0
"""


BINNED = policy("[sex, {column: age, bins: [0, 25, 40, 65]}]", "  intersections: true\n")


def gate(run_cli: Callable[..., Any], policy_path: Path, data: Path, out: str = "out") -> Any:
    return run_cli("check", "--policy", policy_path, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", "--no-mlflow", "--format", "json", "--out", out)


def groups_of(report: dict[str, Any], grouping: list[str]) -> dict[tuple[str, ...], int]:
    return {tuple(g["group"][a] for a in grouping): g["n"] for g in report["groups"]
            if g["grouping"] == grouping}


def hand_label(age: int) -> str:
    for lo, hi in itertools.pairwise(EDGES):
        if lo <= age < hi:
            return f"[{lo}, {hi})"
    raise AssertionError(age)


def test_bins_group_sizes_are_the_hand_count(run_cli, write_policy, aged) -> None:
    r = gate(run_cli, write_policy(BINNED), aged)
    assert r.exit_code in (0, 1), r.stderr
    df = pd.read_parquet(aged)
    by_age: Counter[tuple[str, ...]] = Counter()
    by_both: Counter[tuple[str, ...]] = Counter()
    for sex, age in zip(df.sex, df.age, strict=True):
        by_age[(hand_label(int(age)),)] += 1
        by_both[(sex, hand_label(int(age)))] += 1
    assert groups_of(r.report, ["age"]) == dict(by_age)
    assert groups_of(r.report, ["sex", "age"]) == dict(by_both)
    assert set(by_age) == {("[0, 25)",), ("[25, 40)",), ("[40, 65)",)}


def test_bins_metric_is_fairlearns_on_the_same_groups(run_cli, write_policy, aged) -> None:
    r = gate(run_cli, write_policy(BINNED), aged)
    df = pd.read_parquet(aged)
    groups = pd.cut(df.age, EDGES, right=False).astype(str)  # pandas: "[25, 40)"
    for role, column in (("teacher", "t"), ("student", "s")):
        expected = demographic_parity_difference(df.y, (df[column] >= 0.5).astype(int),
                                                 sensitive_features=groups)
        got = next(x[role] for x in r.report["results"] if x["grouping"] == ["age"])
        assert got == pytest.approx(expected, abs=1e-12)


def test_bin_groups_are_listed_in_edge_order_not_text_order(run_cli, write_policy, aged) -> None:
    # ages are 18..64: as text "[30, 100)" sorts before "[9, 30)"; by edge it comes after
    text = policy("[{column: age, bins: [0, 9, 30, 100]}]")
    r = gate(run_cli, write_policy(text), aged)
    assert r.exit_code in (0, 1), r.stderr
    listed = [g["group"]["age"] for g in r.report["groups"] if g["grouping"] == ["age"]]
    present = sorted({hand_label_of(int(a), [0, 9, 30, 100]) for a in pd.read_parquet(aged).age},
                     key=lambda label: float(label[1:label.index(",")]))
    assert listed == present == ["[9, 30)", "[30, 100)"]


def hand_label_of(age: int, edges: list[int]) -> str:
    return next(f"[{lo}, {hi})" for lo, hi in itertools.pairwise(edges) if lo <= age < hi)


def test_scalar_sensitive_is_a_list_of_one(run_cli, write_policy, synthetic) -> None:
    one = gate(run_cli, write_policy(policy("sex"), "one.yaml"), synthetic, "one")
    listed = gate(run_cli, write_policy(policy("[sex]"), "list.yaml"), synthetic, "list")
    assert one.exit_code == listed.exit_code and one.exit_code in (0, 1)
    a, b = one.report, listed.report
    assert a["results"] == b["results"] and a["groups"] == b["groups"]
    assert [x["grouping"] for x in a["results"]] == [["sex"]]


def test_mixed_list_references_a_bin_label(run_cli, write_policy, aged) -> None:
    text = policy("[sex, {column: age, bins: [0, 25, 40, 65]}]",
                  '  reference_groups: {age: "[25, 40)"}\n',
                  "  - {id: spd, metric: statistical_parity_difference, max: 1, min: -1}\n")
    r = gate(run_cli, write_policy(text), aged)
    assert r.exit_code in (0, 1), r.stderr
    ref = [g["group"] for g in r.report["groups"] if g["reference"] and g["grouping"] == ["age"]]
    assert ref == [{"age": "[25, 40)"}]


@pytest.mark.parametrize(("sensitive", "message"), [
    ("[{column: age, bins: [0, 40, 25]}]", "bins must be strictly increasing, got [0, 40, 25]"),
    ("[{column: age, bins: [0]}]", "at least 2 items"),
    ("[{column: age, bins: [0, .nan]}]", "bins must be numbers, not NaN"),
    ("[{column: age, bins: [0, 9], extra: 1}]", "unknown key 'extra'"),
    ("[age, {column: age, bins: [0, 9]}]", "'age' is listed twice"),
])
def test_bad_bins_are_policy_errors(run_cli, write_policy, sensitive: str, message: str) -> None:
    path = write_policy(policy(sensitive))
    r = run_cli("policy", "validate", path)
    assert r.exit_code == 2 and message in r.stderr and f"{path}:5:" in r.stderr, r.stderr


def test_reference_group_of_a_binned_attribute_must_be_a_bin(run_cli, write_policy) -> None:
    text = policy("[{column: age, bins: [0, 25, 40]}]", "  reference_groups: {age: 30}\n")
    r = run_cli("policy", "validate", write_policy(text))
    assert r.exit_code == 2
    assert "age is binned: its groups are [0, 25), [25, 40); got 30" in r.stderr


@pytest.mark.parametrize(("value", "shown"), [(70, "70"), (-1, "-1"), (65, "65")])
def test_value_outside_the_bins_is_refused_naming_column_value_row(
        run_cli, write_policy, aged, tmp_path, value: int, shown: str) -> None:
    df = pd.read_parquet(aged)
    df.loc[1234, "age"] = value
    df.loc[2000, "age"] = value
    data = tmp_path / "outside.parquet"
    df.to_parquet(data)
    r = gate(run_cli, write_policy(BINNED), data)
    assert r.exit_code == 3
    assert r.stderr == (f"fairgate: error: {data}: column 'age' has value {shown} at row 1234 (2 "
                        "such rows in this batch), outside its bins [0, 65); add an edge, or make "
                        "the ends open with -.inf as the first edge or .inf as the last\n")
    assert not (tmp_path / "out" / "report.json").exists()


def test_open_ends_take_any_number(run_cli, write_policy, aged, tmp_path) -> None:
    df = pd.read_parquet(aged)
    df.loc[7, "age"] = 120
    data = tmp_path / "old.parquet"
    df.to_parquet(data)
    text = policy("[{column: age, bins: [-.inf, 25, 65, .inf]}]")
    r = gate(run_cli, write_policy(text), data)
    assert r.exit_code in (0, 1), r.stderr
    assert groups_of(r.report, ["age"])[("[65, inf)",)] == 1


def test_missing_or_nan_binned_value_is_refused(run_cli, write_policy, aged, tmp_path) -> None:
    df = pd.read_parquet(aged)
    df["age"] = df.age.astype(float)
    df.loc[42, "age"] = np.nan
    data = tmp_path / "nan.parquet"
    df.to_parquet(data)
    text = policy("[{column: age, bins: [-.inf, .inf]}]")
    r = gate(run_cli, write_policy(text), data)
    assert r.exit_code == 3
    assert (f"{data}: column 'age' is missing or NaN at row 42; a binned sensitive attribute "
            "needs a number in every row") in r.stderr


def test_bins_assign_matches_pandas_cut() -> None:
    """The interval of every value, against pandas' own right-open cut."""
    rng = np.random.default_rng(1)
    values = rng.uniform(-5, 104.9, 2000).round(1)
    values[:4] = [0, 25, 99.9, 40]  # edges themselves go right
    b = Bins("v", (-5.0, 0.0, 25.0, 40.0, 105.0))
    got = b.assign(pa.array(values), "p", 0).to_pylist()
    expected = pd.cut(values, list(b.edges), right=False).astype(str)
    assert got == [e.replace(".0", "") for e in expected]
    with pytest.raises(DataError, match="column 'v' holds 'x', not a number"):
        b.assign(pa.array(["1", "x"]), "p", 0)


def test_numeric_attribute_without_bins_gets_a_hint(run_cli, write_policy, aged) -> None:
    r = gate(run_cli, write_policy(policy("[sex, age]")), aged)
    df = pd.read_parquet(aged)
    values = df.age.nunique()
    small = int((df.age.value_counts() < 10).sum())
    q = [int(np.quantile(df.age, p, method="inverted_cdf")) for p in (0.25, 0.5, 0.75)]
    hint = (f"sensitive attribute 'age' is numeric with {values} values, so {values} groups, "
            f"{small} of them below min_group_size 10 (not gated): group it into intervals, e.g. "
            f"sensitive: [{{column: age, bins: [-.inf, {q[0]}, {q[1]}, {q[2]}, .inf]}}] (edges at "
            "the quartiles of its values)")
    assert hint in r.report["warnings"]
    assert not any("numeric" in w for w in gate(run_cli, write_policy(BINNED, "b.yaml"), aged,
                                                 "b").report["warnings"])


# ----------------------------------------------------------------------------- waivers


WAIVED = BINNED.replace("max_increase: 0.5", "max_increase: 0.0") + """\
waivers:
  - check: dp
    grouping: GROUPING
    reason: small groups
    owner: alice
    expires: 2999-01-01
"""


@pytest.mark.parametrize("grouping", ["sex*age", "[sex, age]"])
def test_waiver_by_grouping_name_or_list(run_cli, write_policy, aged, grouping: str) -> None:
    r = gate(run_cli, write_policy(WAIVED.replace("GROUPING", grouping)), aged)
    status = {tuple(x["grouping"]): x["status"] for x in r.report["results"]}
    assert status[("sex", "age")] == "waived"
    assert status[("sex",)] != "waived" and status[("age",)] != "waived"


def test_waiver_of_an_unknown_grouping_name_is_refused(run_cli, write_policy) -> None:
    r = run_cli("policy", "validate", write_policy(WAIVED.replace("GROUPING", "age*sex")))
    assert r.exit_code == 2
    assert "check 'dp' is not decided on grouping age*sex (it is on: sex, age, sex*age)" in r.stderr


# ----------------------------------------------------------------------------- compression


def test_csv_gz_gives_the_csv_report(run_cli, write_policy, aged, tmp_path) -> None:
    table = pq.read_table(aged)
    plain = tmp_path / "audit.csv"
    pacsv.write_csv(table, plain)
    zipped = tmp_path / "audit.csv.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        buf = pa.BufferOutputStream()
        pacsv.write_csv(table.slice(i * 1500, 1500), buf)
        (folder / f"part-{i}.csv.gz").write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    path = write_policy(BINNED)
    reports = {}
    for name, data in (("csv", plain), ("gz", zipped), ("folder", folder),
                       ("glob", tmp_path / "parts" / "*.csv.gz")):
        r = gate(run_cli, path, data, name)
        assert r.exit_code in (0, 1), r.stderr
        report = r.report
        report.pop("run")
        data_info = report["inputs"].pop("data")
        assert data_info["rows"] == 3000 and data_info["format"] == "csv"
        reports[name] = json.dumps(report, sort_keys=True)
    assert reports["gz"] == reports["csv"] == reports["folder"] == reports["glob"]


def _compressed(kind: str, raw: bytes, path: Path) -> None:
    if kind == ".bz2":
        path.write_bytes(bz2.compress(raw))
    elif kind == ".xz":
        path.write_bytes(lzma.compress(raw))
    elif kind == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("audit.csv", raw)
    else:  # .zst: the bytes do not matter, the name is refused first
        path.write_bytes(raw)


@pytest.mark.parametrize(("name", "what"), [
    ("audit.csv.bz2", ".bz2 compression"), ("audit.csv.xz", ".xz compression"),
    ("audit.csv.zst", ".zst compression"), ("audit.zip", ".zip compression"),
    ("audit.parquet.gz", "gzip of a file that is not .csv"),
])
def test_other_compressions_are_refused_naming_the_file(run_cli, write_policy, aged, tmp_path,
                                                        name: str, what: str) -> None:
    raw = aged.read_bytes() if ".parquet" in name else b"sex,age,y,t,s\nF,30,1,0.5,0.5\n"
    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / name
    if name.endswith(".gz"):
        target.write_bytes(gzip.compress(raw))
    else:
        _compressed("." + name.rsplit(".", 1)[1], raw, target)
    path = write_policy(BINNED)
    for data in (target, folder):
        r = gate(run_cli, path, data)
        assert r.exit_code == 3
        assert r.stderr == (f"fairgate: error: {target}: {what} is not read; fairgate reads "
                            ".csv.gz (gzip CSV) and Parquet or ORC (compressed inside the "
                            "file): decompress it, or write it as Parquet\n")


def test_too_many_groups_of_a_numeric_column_suggest_bins(run_cli, write_policy, aged) -> None:
    text = policy("[age]", "  max_groups: 5\n")
    r = gate(run_cli, write_policy(text), aged)
    assert r.exit_code == 3
    assert ("bin the column into fewer values (audit.sensitive: [{column: NAME, bins: [edges]}] "
            "groups a number by interval)") in r.stderr


@pytest.mark.parametrize("sensitive", ["sex", ["sex", {"column": "age", "bins": [0, 25]}],
                                       {"column": "age", "bins": [0, 25]}])
def test_json_schema_takes_every_form_the_loader_takes(sensitive: Any) -> None:
    import jsonschema

    from fairgate.policy import json_schema, validate

    data = {"version": 1, "audit": {"label": "y", "positive_label": 1, "sensitive": sensitive},
            "checks": [{"id": "a", "metric": "accuracy", "max_decrease": 0.1}]}
    jsonschema.validate(data, json_schema())
    assert validate(data, {}, "p.yaml").audit.attributes[0] in ("sex", "age")
    bad = {**data, "audit": {**data["audit"], "sensitive": [{"column": "age"}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())
