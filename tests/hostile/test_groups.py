"""High-cardinality groupings and group values that read alike (issue 10, section 4).

- A grouping with more distinct groups than ``audit.max_groups`` ends the counting pass
  at the batch that exceeds it, with exit 3 and a message naming the file, the column(s)
  and what to do.
- Groups are keyed by their value tuples: ``("a|b", "c")`` and ``("a", "b|c")`` both read
  ``a|b|c`` and are still two groups with their own counts (pandas hand counts).
- The bootstrap draws from a table whose ungated groups are pooled into one: every metric
  is the same function of a pooled copy as of the full copy (checked exactly, catalogue
  wide), the pooled multinomial is the law of the pooled full one (checked against the
  binomial moments and with two-sample KS tests), and a gate on a table of thousands of
  ungated groups gives the same verdict, statuses and point values with and without it.
- Reports of such a table stay bounded and say what they leave out.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp

import fairgate.core.evaluate as ev
from fairgate.core.counts import CountAccumulator, Grouping, GroupingCounts, TooManyGroups
from fairgate.core.metrics import CATALOGUE, Context
from fairgate.core.stats import resample_cells
from fairgate.integrations.mlflow import MAX_GROUPS_LOGGED, collect
from fairgate.report.json import to_dict
from fairgate.report.markdown import render_markdown
from fairgate.run import GateRequest, run_gate

TODAY = dt.date(2025, 6, 1)


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------------- the cap


CAP_POLICY = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: SENSITIVE, intersections: true,
        max_groups: 50}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.05}
statistics: {resamples: 20}
"""


def _scores_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"y": rng.integers(0, 2, n), "t": rng.random(n), "s": rng.random(n)})


def _check(run_cli, policy: Path, data: Path, *extra: str):
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", "--no-mlflow", *extra)


def test_a_column_past_the_cap_is_an_input_error_at_its_first_batch(tmp_path, run_cli) -> None:
    """100,000 unique ids, batches of 100: refused after the first batch, nothing written."""
    df = _scores_frame(100_000, np.random.default_rng(0))
    df["id"] = [f"user{i}" for i in range(len(df))]
    data = tmp_path / "ids.parquet"
    df.to_parquet(data)
    policy = _write(tmp_path / "p.yaml", CAP_POLICY.replace("SENSITIVE", "[id]"))
    r = _check(run_cli, policy, data, "--batch-size", "100")
    assert r.exit_code == 3, r.stderr
    assert r.stderr == (
        f"fairgate: error: {data}: column 'id' has more than 50 distinct values (100 in the "
        "first 100 rows); fairgate gates at most 50 groups per grouping (audit.max_groups). "
        "To gate on it, bin the column into fewer values: values with fewer rows than "
        "audit.min_group_size are not gated anyway, so merging them into one value loses no "
        "gated group. Or raise audit.max_groups.\n")
    assert "Traceback" not in r.stderr
    assert not r.out.exists() or not any(r.out.iterdir())


def test_an_intersection_past_the_cap_names_the_intersection(tmp_path, run_cli) -> None:
    """a and b have 10 values each (under the cap of 50); their cross has 100."""
    n = 1000
    df = _scores_frame(n, np.random.default_rng(1))
    df["a"] = [f"a{i % 10}" for i in range(n)]
    df["b"] = [f"b{(i // 10) % 10}" for i in range(n)]
    data = tmp_path / "cross.parquet"
    df.to_parquet(data)
    policy = _write(tmp_path / "p.yaml", CAP_POLICY.replace("SENSITIVE", "[a, b]"))
    r = _check(run_cli, policy, data)
    assert r.exit_code == 3, r.stderr
    assert r.stderr == (
        f"fairgate: error: {data}: intersection a*b (columns 'a', 'b') has more than 50 "
        "distinct combinations (100 in the first 1,000 rows); fairgate gates at most 50 groups "
        "per grouping (audit.max_groups). To gate on it, bin the columns into fewer values, or "
        "leave this intersection out (audit.intersections, the checks' on:): values with fewer "
        "rows than audit.min_group_size are not gated anyway, so merging them into one value "
        "loses no gated group. Or raise audit.max_groups.\n")
    # the same data passes the cap without the intersection
    ok = _write(tmp_path / "ok.yaml", CAP_POLICY.replace("SENSITIVE", "[a, b]")
                .replace("intersections: true", "intersections: false"))
    assert _check(run_cli, ok, data).exit_code in (0, 1)


def test_the_accumulator_stops_at_the_batch_that_exceeds_the_cap() -> None:
    g = Grouping(("g",))
    acc = CountAccumulator([g], max_groups=50)
    ones = np.ones(40, dtype=bool)
    acc.add(ones, ones, ones, {"g": pa.array([f"v{i}" for i in range(40)])})  # 40: fine
    with pytest.raises(TooManyGroups) as e:  # 30 .. 69: 70 groups
        acc.add(ones, ones, ones, {"g": pa.array([f"v{i}" for i in range(30, 70)])})
    assert str(e.value).startswith("column 'g' has more than 50 distinct values (70 in the "
                                   "first 80 rows); ")
    assert e.value.exit_code == 3


def test_the_cap_is_a_policy_setting(tmp_path, run_cli) -> None:
    policy = _write(tmp_path / "p.yaml", CAP_POLICY.replace("SENSITIVE", "[g]")
                    .replace("max_groups: 50", "max_groups: 0"))
    r = run_cli("policy", "validate", policy)
    assert r.exit_code == 2
    assert "audit.max_groups" in r.stderr
    schema = json.loads(run_cli("policy", "schema").stdout)
    audit = schema["$defs"]["AuditSpec"]["properties"]["max_groups"]
    assert audit["default"] == 100_000


# ----------------------------------------------------------------------------- "|" in values


def test_values_with_a_bar_are_their_own_groups(tmp_path: Path) -> None:
    """("a|b", "c") and ("a", "b|c") both read a|b|c: two groups, each with its own counts,
    in the joint table, report.json and the score metrics' row sample."""
    rng = np.random.default_rng(2)
    n = 4000
    df = _scores_frame(n, rng)
    df["sex"] = rng.choice(["a|b", "a"], n)
    df["race"] = rng.choice(["c", "b|c"], n)
    data = tmp_path / "bars.parquet"
    df.to_parquet(data)
    policy = _write(tmp_path / "p.yaml", """\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [sex, race], intersections: true,
                reference_groups: {sex: "a|b", race: c}}
        checks:
          - {id: dp, metric: demographic_parity_difference, max_increase: 0.5}
          - {id: auc, metric: roc_auc_difference, max_increase: 0.5}
        statistics: {resamples: 50}
        """)
    report = run_gate(GateRequest(policy=policy, data=data, teacher_scores="t",
                                  student_scores="s", today=TODAY))
    doc = to_dict(report)
    cross = [g for g in doc["groups"] if g["grouping"] == ["sex", "race"]]
    assert len(cross) == 4
    assert sorted(g["label"] for g in cross).count("a|b|c") == 2  # they read alike
    y = df.y == 1
    for g in cross:
        rows = (df.sex == g["group"]["sex"]) & (df.race == g["group"]["race"])
        for model, col in (("teacher", "t"), ("student", "s")):
            hat = df[col] >= 0.5
            assert g[model]["tp"] == int((rows & y & hat).sum())
            assert g[model]["fp"] == int((rows & ~y & hat).sum())
            assert g[model]["tn"] == int((rows & ~y & ~hat).sum())
            assert g[model]["fn"] == int((rows & y & ~hat).sum())
        assert g["n"] == int(rows.sum())
        assert g["reference"] == (g["group"] == {"sex": "a|b", "race": "c"})
    # the score sample keys rows by value tuples too: n of each group, in table order
    order = sorted({(s, r) for s, r in zip(df.sex, df.race, strict=True)})
    score_rows = [g for g in doc["scores"]["groups"] if g["grouping"] == "sex*race"]
    assert [g["n"] for g in score_rows] == [
        int(((df.sex == s) & (df.race == r)).sum()) for s, r in order]


def test_grouping_counts_look_groups_up_by_tuple() -> None:
    g = Grouping(("sex", "race"))
    groups = (("a", "b|c"), ("a|b", "c"))
    gc = GroupingCounts(g, groups, np.arange(16).reshape(2, 2, 2, 2))
    assert gc.labels == ["a|b|c", "a|b|c"]  # display only
    assert gc.index == {("a", "b|c"): 0, ("a|b", "c"): 1}
    assert gc.sizes.tolist() == [28, 92]
    assert gc.sizes is gc.sizes  # computed once


# ----------------------------------------------------------------------------- pooling


def _table(rng: np.random.Generator, sizes: list[int]) -> np.ndarray:
    """A joint table of groups of the given sizes, with uneven cell shares (some empty)."""
    out = []
    for n in sizes:
        share = rng.dirichlet(np.full(8, 0.7))
        out.append(rng.multinomial(n, share))
    return np.asarray(out, dtype=np.int64).reshape(len(sizes), 2, 2, 2)


def _pool(cells: np.ndarray, ctx: Context) -> tuple[np.ndarray, Context]:
    """pool_ungated on the group axis of copies ``cells[B, G, 2, 2, 2]`` too."""
    if cells.ndim == 4:
        return ev.pool_ungated(cells, ctx)
    pooled = [ev.pool_ungated(c, ctx) for c in cells]
    return np.stack([p[0] for p in pooled]), pooled[0][1]


COUNT_METRICS = [m for m in CATALOGUE.values()
                 if not (m.sampled or m.scored or m.paired) and m.derived != "alignment"]


@pytest.mark.parametrize("reference", [0, 4, None], ids=["gated-ref", "ungated-ref", "no-ref"])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_every_metric_reads_the_same_from_a_pooled_table(reference: int | None,
                                                         alpha: float) -> None:
    """metric(pooled copy) == metric(full copy), exactly, for every count metric, on the
    point counts and on 200 bootstrap copies (NaN where and only where undefined); metrics
    over the whole audit set read the same from its sums alone, as _with_intervals gives."""
    rng = np.random.default_rng(3)
    cells = _table(rng, [400, 35, 250, 60, 12, 3, 0, 29, 1, 8])
    gated = cells.sum(axis=(1, 2, 3)) >= 30
    ctx = Context(gated=gated, reference=reference, alpha=alpha)
    pooled, pctx = ev.pool_ungated(cells, ctx)
    assert pooled.shape[0] == int(gated.sum()) + (reference == 4) + 1  # gated, ref, pooled
    assert pooled.sum() == cells.sum()
    copies = resample_cells(cells, 200, np.random.default_rng(4))
    pooled_copies, _ = _pool(copies, ctx)
    for full, part in ((cells, pooled), (copies, pooled_copies)):
        for split in (GroupingCounts.teacher, GroupingCounts.student):
            for m in COUNT_METRICS:
                want = m.compute(split(full), ctx)
                got = m.compute(split(part), pctx)
                np.testing.assert_array_equal(got, want, err_msg=m.name)
                if m.scope == "overall" and m.derived is None:  # the whole table as one group
                    whole = split(full).astype(float).sum(axis=-3, keepdims=True)
                    np.testing.assert_array_equal(m.compute(whole, pctx), want, err_msg=m.name)


def test_pooling_leaves_small_tables_alone() -> None:
    """No pooling unless it removes a group: the common case draws the same copies."""
    cells = _table(np.random.default_rng(5), [300, 200, 10])
    ctx = Context(gated=cells.sum(axis=(1, 2, 3)) >= 30, reference=0)
    same, same_ctx = ev.pool_ungated(cells, ctx)
    assert same is cells and same_ctx is ctx


def test_pooled_draws_have_the_law_of_pooled_full_draws() -> None:
    """Each gated group's size is Binomial(N, p_g) either way (moments), and metrics of the
    copies have the same distribution (two-sample KS, 20,000 copies a side)."""
    rng = np.random.default_rng(6)
    cells = _table(rng, [300, 120, 80, 20, 15, 10, 9, 5, 4, 2])
    ctx = Context(gated=cells.sum(axis=(1, 2, 3)) >= 30, reference=0)
    pooled, pctx = ev.pool_ungated(cells, ctx)
    b = 20_000
    full = resample_cells(cells, b, np.random.default_rng(7))
    part = resample_cells(pooled, b, np.random.default_rng(8))
    n = int(cells.sum())
    for g in range(3):  # the gated groups come first, in order
        p = cells[g].sum() / n
        for draws in (full[:, g].sum(axis=(1, 2, 3)), part[:, g].sum(axis=(1, 2, 3))):
            se = np.sqrt(n * p * (1 - p) / b)
            assert abs(draws.mean() - n * p) < 5 * se
            assert draws.var() == pytest.approx(n * p * (1 - p), rel=0.05)
    for name in ("demographic_parity_difference", "equalized_odds_ratio", "disparate_impact",
                 "statistical_parity_difference", "accuracy", "theil_index",
                 "between_group_theil_index", "worst_group_accuracy"):
        m = CATALOGUE[name]
        a = m.compute(GroupingCounts.student(full), ctx)
        c = m.compute(GroupingCounts.student(part), pctx)
        a, c = a[np.isfinite(a)], c[np.isfinite(c)]
        assert ks_2samp(a, c).pvalue > 1e-3, name


@pytest.mark.parametrize("method, tolerance", [("percentile", 0.15), ("uniform", 0.3)])
def test_intervals_with_and_without_pooling_agree(monkeypatch: pytest.MonkeyPatch, method: str,
                                                  tolerance: float) -> None:
    """compute_values' intervals from the pooled table are those of the full table, up to
    Monte Carlo error (20,000 resamples; percentile intervals within 0.15 bootstrap SD, about
    5 SE; the uniform ones rest on quantiles further out in the tails, where the Monte Carlo
    error is about twice as large, so 0.3 SD)."""
    cells = _table(np.random.default_rng(9), [500, 300, 90, 20, 15, 10, 9, 5, 4, 2, 1])
    g = Grouping(("g",))
    counts = {g: GroupingCounts(g, tuple((f"v{i:02d}",) for i in range(len(cells))), cells)}
    keys = [ev.MetricKey(m, g) for m in ("demographic_parity_difference", "equalized_odds_ratio",
                                         "statistical_parity_difference", "worst_group_accuracy")]
    keys += [ev.MetricKey(m, None) for m in ("accuracy", "theil_index")]
    settings = ev.Settings(30, {}, 0.95, 20_000, 11, interval=method)  # type: ignore[arg-type]
    pooled = ev.compute_values(keys, counts, settings)
    monkeypatch.setattr(ev, "pool_ungated", lambda cells, ctx: (cells, ctx))
    full = ev.compute_values(keys, counts, settings)
    for key in keys:
        a, b = pooled[key], full[key]
        assert (a.teacher, a.student, a.delta) == (b.teacher, b.student, b.delta)
        for side in ("teacher_interval", "student_interval", "delta_interval"):
            ia, ib = getattr(a, side), getattr(b, side)
            assert ia is not None and ib is not None
            sd = (ib.hi - ib.lo) / (2 * 1.96)
            assert abs(ia.lo - ib.lo) < tolerance * sd + 1e-12, (key.label, side)
            assert abs(ia.hi - ib.hi) < tolerance * sd + 1e-12, (key.label, side)
            assert ia.defined == pytest.approx(ib.defined, abs=0.01)


# ----------------------------------------------------------------------------- many groups


def _ungated_heavy(path: Path) -> pd.DataFrame:
    """4 groups of 1,500-3,000 rows and 3,000 groups of 1-5 rows; the student selects
    more often in group big0 only."""
    rng = np.random.default_rng(12)
    big = np.repeat([f"big{i}" for i in range(4)], [3000, 2500, 2000, 1500])
    small = np.repeat([f"z{i:04d}" for i in range(3000)], rng.integers(1, 6, 3000))
    g = np.concatenate([big, small])
    n = len(g)
    y = rng.integers(0, 2, n)
    t = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    s = np.clip(t + (g == "big0") * 0.15 + rng.normal(0, 0.02, n), 0, 1)
    df = pd.DataFrame({"g": g, "y": y, "t": t, "s": s}).sample(frac=1.0, random_state=0)
    df.to_parquet(path)
    return df


HEAVY_POLICY = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [g], min_group_size: 30}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}
  - {id: spd, metric: statistical_parity_difference, max_increase: 0.5, max_decrease: 0.5}
  - {id: acc, metric: accuracy, max_decrease: 0.2}
  - {id: theil, metric: theil_index, max_increase: 0.5}
statistics: {resamples: 400, decide_on: conservative}
"""


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("heavy")
    df = _ungated_heavy(d / "audit.parquet")
    _write(d / "policy.yaml", HEAVY_POLICY)
    req = GateRequest(policy=d / "policy.yaml", data=d / "audit.parquet", teacher_scores="t",
                      student_scores="s", today=TODAY)
    return df, req, run_gate(req)


def test_an_ungated_heavy_table_gives_the_same_verdict_pooled_or_not(
        heavy, monkeypatch: pytest.MonkeyPatch) -> None:
    _, req, pooled = heavy
    monkeypatch.setattr(ev, "pool_ungated", lambda cells, ctx: (cells, ctx))
    full = run_gate(req)
    assert pooled.verdict == full.verdict == "fail"
    assert [r.status for r in pooled.decision.results] == [r.status for r in full.decision.results]
    for a, b in zip(pooled.decision.results, full.decision.results, strict=True):
        assert (a.value.teacher, a.value.student, a.value.delta) == (
            b.value.teacher, b.value.student, b.value.delta)


def test_reports_list_every_gated_group_and_say_what_they_leave_out(heavy) -> None:
    df, _, report = heavy
    sizes = df.g.value_counts()
    ungated = sizes[sizes < 30].sort_values(ascending=False)
    doc = to_dict(report)
    listed = doc["groups"]
    assert len(listed) == 4 + ev.LISTED_UNGATED
    assert {g["label"] for g in listed if g["gated"]} == {f"big{i}" for i in range(4)}
    assert [g["label"] for g in listed] == sorted(g["label"] for g in listed)  # table order
    assert sorted((g["n"] for g in listed if not g["gated"]), reverse=True) == \
        ungated.iloc[:ev.LISTED_UNGATED].tolist()
    (cut,) = doc["groups_unlisted"]
    assert cut["grouping"] == ["g"]
    assert cut["groups"] == 3000 - ev.LISTED_UNGATED
    assert cut["rows"] == int(ungated.iloc[ev.LISTED_UNGATED:].sum())
    assert cut["largest"] == int(ungated.iloc[ev.LISTED_UNGATED])
    assert sum(g["n"] for g in listed) + cut["rows"] == len(df)
    md = render_markdown(report)
    assert "<b>g</b>: 3004 groups (4 gated)" in md
    assert "Showing 50 of 3004 groups" in md


def test_mlflow_logs_a_bounded_number_of_groups_and_says_so(heavy) -> None:
    _, _, report = heavy
    record = collect(report, env={})
    sizes = [k for k in record.metrics if k.startswith("group/g/") and k.endswith("/n")]
    assert len(sizes) == MAX_GROUPS_LOGGED
    assert all(f"group/g/big{i}/n" in record.metrics for i in range(4))  # gated first
    assert record.tags["fairgate.groups_logged"] == (
        f"group metrics of at most {MAX_GROUPS_LOGGED} groups per grouping (the reference, "
        "smallest McNemar p, then the largest; report.json lists every gated group): "
        f"g: {MAX_GROUPS_LOGGED} of 3,004")


def test_group_rows_of_a_subset_are_those_rows_of_the_whole() -> None:
    """keep= only chooses rows: tests, Holm and rates are over the whole table."""
    cells = _table(np.random.default_rng(13), [400, 35, 250, 60, 12, 3, 0, 29, 1, 8])
    g = Grouping(("g",))
    gc = GroupingCounts(g, tuple((f"v{i}",) for i in range(len(cells))), cells)
    ctx = ev.context_for(gc, ev.Settings(30, {}, 0.95, 0, 0))
    keep, cut = ev.listed_groups(gc, ctx, limit=2)
    assert keep.tolist() == [0, 1, 2, 3, 4, 7]  # gated 0-3, then the largest others: 29, 12
    assert cut == ev.Unlisted(g, 4, 3 + 0 + 1 + 8, 8)
    whole = ev.group_rows(gc, ctx)
    assert ev.group_rows(gc, ctx, keep=keep) == [whole[i] for i in keep]
