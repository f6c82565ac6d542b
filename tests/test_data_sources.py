"""--data beyond one file, on the local engine: folders, globs, partition folders, ORC, CSV
folders; the data's identity; and row samples that do not depend on the order of rows."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest

from fairgate.errors import DataError
from fairgate.inputs.data_source import discover, partition_of
from tests.conftest import EXAMPLE, SYNTHETIC_POLICY


def scores_policy(extra: str = "") -> str:
    """The synthetic policy with score metrics on a 700-row sample of its 5,000 rows."""
    return SYNTHETIC_POLICY.replace("  - id: acc\n", "  - {id: auc, metric: roc_auc_difference, "
                                    "max_increase: 0.05}\n  - id: acc\n").replace(
        "  intersections: true\n", f"  intersections: true\n{extra}") + \
        "scores: {sample_rows: 700, resamples: 50}\n"


def gate(run_cli, policy: Path, data: object, out: Path, *extra: object):
    r = run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow", "--format", "json", "--out", out, *extra)
    assert r.exit_code in (0, 1), r.stderr
    return json.loads((out / "report.json").read_text())


def results(report: dict) -> dict:
    """What a gate found, without where the rows were read from or when."""
    out = dict(report)
    out.pop("run")
    out["inputs"] = {k: v for k, v in report["inputs"].items() if k != "data"}
    return out


def split(table: pa.Table, folder: Path, files: int, order: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True)
    if order is not None:
        table = table.take(pa.array(order))
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(a, b - a), folder / f"part-{i:03d}.parquet")
    return folder


def test_folder_glob_and_orc_read_like_the_file(synthetic, write_policy, run_cli,
                                                tmp_path) -> None:
    policy = write_policy(scores_policy())
    table = pq.read_table(synthetic)
    reference = results(gate(run_cli, policy, synthetic, tmp_path / "ref"))
    folder = split(table, tmp_path / "folder", 5)
    (folder / "_SUCCESS").write_text("")  # what Spark leaves: skipped, as Spark skips it
    (folder / ".part-000.parquet.crc").write_bytes(b"\0\1")
    nested = tmp_path / "nested" / "2024"
    split(table, nested, 3)
    orc_folder = tmp_path / "orc"
    orc_folder.mkdir()
    for i in range(2):
        orc.write_table(table.slice(i * 2500, 2500), orc_folder / f"p{i}.orc")
    for i, data in enumerate((folder, str(tmp_path / "folder" / "part-*.parquet"),
                              str(tmp_path / "nested" / "**" / "*.parquet"), orc_folder)):
        got = gate(run_cli, policy, data, tmp_path / f"out-{i}")
        assert results(got) == reference, data
    info = gate(run_cli, policy, folder, tmp_path / "info")["inputs"]["data"]
    assert info["files"] == 5 and info["format"] == "parquet" and info["rows"] == 5000
    assert info["fingerprint"] == discover(folder).fingerprint()


def test_rows_in_another_order_give_the_same_samples(synthetic, write_policy, run_cli,
                                                     tmp_path) -> None:
    """Score metrics are computed on a row sample; the sample is picked by a hash of each
    row's values, so shuffling the rows (and splitting them into files) changes nothing."""
    policy = write_policy(scores_policy())
    table = pq.read_table(synthetic)
    reference = gate(run_cli, policy, synthetic, tmp_path / "ref")
    assert reference["scores"]["rows_sampled"] == 700
    order = np.random.default_rng(3).permutation(table.num_rows)
    shuffled = split(table, tmp_path / "shuffled", 4, order)
    assert results(gate(run_cli, policy, shuffled, tmp_path / "a")) == results(reference)
    other_batches = gate(run_cli, policy, synthetic, tmp_path / "b", "--batch-size", "333")
    assert results(other_batches) == results(reference)


def test_row_id_column_picks_the_sample(synthetic, write_policy, run_cli, tmp_path) -> None:
    table = pq.read_table(synthetic)
    ids = pa.array([f"row-{i:05d}" for i in range(table.num_rows)])
    with_ids = tmp_path / "ids.parquet"
    pq.write_table(table.append_column("id", ids), with_ids)
    policy = write_policy(scores_policy("  row_id: id\n"))
    reference = gate(run_cli, policy, with_ids, tmp_path / "ref")
    order = np.random.default_rng(5).permutation(table.num_rows)
    shuffled = split(table.append_column("id", ids), tmp_path / "shuffled", 3, order)
    assert results(gate(run_cli, policy, shuffled, tmp_path / "a")) == results(reference)
    by_values = gate(run_cli, write_policy(scores_policy(), "p2.yaml"), synthetic, tmp_path / "c")
    assert reference["scores"] != by_values["scores"]  # another identity, another sample


def test_partition_folders_are_columns(synthetic, write_policy, run_cli, tmp_path) -> None:
    """race=A/..., race=B/...: ``race`` is a text column of every row of those files."""
    table = pq.read_table(synthetic)
    folder = tmp_path / "by_race"
    pq.write_to_dataset(table, folder, partition_cols=["race"])
    policy = write_policy(scores_policy())
    got = gate(run_cli, policy, folder, tmp_path / "a")
    assert results(got) == results(gate(run_cli, policy, synthetic, tmp_path / "ref"))
    assert got["inputs"]["data"]["partition_columns"] == ["race"]


def test_partition_values_are_unescaped() -> None:
    assert partition_of("a=x%3Dy/b=__HIVE_DEFAULT_PARTITION__/c/part.parquet") == (
        ("a", "x=y"), ("b", None))


def test_csv_folder_reads_one_schema(write_policy, run_cli, tmp_path) -> None:
    """Types are inferred once (first block of the first file): a later file whose column
    looks different is read with the same types; sensitive columns are text."""
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "a.csv").write_text("sex,race,y,t,s\n" + "F,01,1,0.9,0.8\nM,02,0,0.2,0.3\n" * 40)
    (folder / "b.csv").write_text("sex,race,y,t,s\n" + "M,1,1,0.7,0.6\nF,02,0,1,0\n" * 40)
    got = gate(run_cli, write_policy(SYNTHETIC_POLICY), folder, tmp_path / "a")
    races = {g["group"]["race"] for g in got["groups"] if g["grouping"] == ["race"]}
    assert races == {"01", "02", "1"}
    assert got["inputs"]["data"]["rows"] == 160


@pytest.mark.parametrize(("layout", "message"), [
    ("empty", "{d}: no data files in this directory (expected a .parquet, .orc or .csv file, "
              "or a directory or glob of them)"),
    ("mixed", "{d}: mixes formats (csv: {d}/b.csv, parquet: {d}/a.parquet); give files of one "
              "format"),
    ("keys", "{d}: partition folders differ: {d}/k=1/a.parquet has k=, {d}/z.parquet has none; "
             "every file needs the same key=value folders"),
    ("both", "{d}/y=1/a.parquet: column 'y' is both a column of the file and a partition folder "
             "(y=...); rename one of them"),
])
def test_bad_layouts_are_input_errors(synthetic, write_policy, run_cli, tmp_path, layout,
                                      message) -> None:
    d = tmp_path / "d"
    d.mkdir()
    table = pq.read_table(synthetic)
    if layout == "mixed":
        pq.write_table(table, d / "a.parquet")
        pacsv.write_csv(table, d / "b.csv")
    elif layout == "keys":
        (d / "k=1").mkdir()
        pq.write_table(table, d / "k=1" / "a.parquet")
        pq.write_table(table, d / "z.parquet")
    elif layout == "both":
        (d / "y=1").mkdir()
        pq.write_table(table, d / "y=1" / "a.parquet")
    r = run_cli("check", "--policy", write_policy(SYNTHETIC_POLICY), "--data", d,
                "--teacher-scores", "t", "--student-scores", "s", "--no-mlflow",
                "--out", tmp_path / "out")
    assert r.exit_code == 3, r.stderr
    assert r.stderr == f"fairgate: error: {message.format(d=d)}\n"
    assert not (tmp_path / "out").exists()


def test_glob_without_match_and_table_without_spark(write_policy, run_cli, tmp_path) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    args = ["--teacher-scores", "t", "--student-scores", "s", "--no-mlflow"]
    r = run_cli("check", "--policy", policy, "--data", str(tmp_path / "*.parquet"), *args)
    assert r.exit_code == 3
    assert r.stderr == (f"fairgate: error: {tmp_path / '*.parquet'}: no data files match this "
                        "pattern (expected a .parquet, .orc or .csv file, or a directory or glob "
                        "of them)\n")
    r = run_cli("check", "--policy", policy, "--data", "table:db.audit", *args)
    assert r.exit_code == 2
    assert r.stderr == ("fairgate: error: --data table:db.audit: catalog tables are read by "
                        "Spark; add --engine spark\n")
    r = run_cli("check", "--policy", policy, "--data", "s3a://bucket/audit/", *args)
    assert r.exit_code == 2
    assert r.stderr == ("fairgate: error: --data s3a://bucket/audit/: the local engine reads "
                        "local files; read s3a:// with --engine spark\n")
    r = run_cli("check", "--policy", policy, "--data", "x.parquet", "--spark-master", "local[2]",
                *args)
    assert r.exit_code == 2
    assert r.stderr == "fairgate: error: --spark-master and --spark-conf need --engine spark\n"
    r = run_cli("check", "--policy", policy, "--data", "x.parquet", "--spark-conf", "nokey",
                "--engine", "spark", *args)
    assert r.exit_code == 2
    assert "Invalid value for '--spark-conf': 'nokey' is not KEY=VALUE" in r.stderr


def test_fingerprint_is_the_listing(synthetic, tmp_path) -> None:
    """Size, modification time, relative path and footer rows: not the bytes."""
    folder = split(pq.read_table(synthetic), tmp_path / "f", 2)
    first = discover(folder).fingerprint()
    assert discover(folder).fingerprint() == first
    assert discover(f"{folder}/*.parquet").fingerprint() == first
    assert discover(folder.as_uri()).fingerprint() == first
    part = folder / "part-001.parquet"
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    assert discover(folder).fingerprint() != first
    files = discover(folder).files
    assert [f.rel for f in files] == ["part-000.parquet", "part-001.parquet"]
    assert [f.rows for f in files] == [2500, 2500]


def test_a_corrupt_file_is_named(synthetic, tmp_path) -> None:
    folder = split(pq.read_table(synthetic), tmp_path / "f", 2)
    (folder / "part-001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"part-001\.parquet: cannot read the audit set: "):
        discover(folder)


def test_example_fingerprint_is_stable_across_copies_with_their_times(tmp_path) -> None:
    copy = tmp_path / "audit.parquet"
    copy.write_bytes((EXAMPLE / "audit.parquet").read_bytes())
    st = (EXAMPLE / "audit.parquet").stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert discover(copy).fingerprint() == discover(EXAMPLE / "audit.parquet").fingerprint()
