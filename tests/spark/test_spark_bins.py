"""Binned sensitive attributes and gzip CSV on ``--engine spark``: report.json byte for byte
the local engine's (bins are assigned in the per-batch function both engines run), and a
value outside the bins is the same exit-3 error, naming the same file, value and row."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from tests.conftest import EXAMPLE
from tests.spark.conftest import adult, without_run, write_files

SPARK_MASTER = "local[2]"
T4 = EXAMPLE / "student_distilled_T4.onnx"

POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [sex, {column: age, bins: [-.inf, 25, 40, 65, .inf]}]
  intersections: true
  reference_groups: {age: "[25, 40)"}
  min_group_size: 100
model: {positive_column: 1}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}
  - {id: spd, metric: statistical_parity_difference, max: 1, min: -1}
  - {id: auc, metric: roc_auc_difference, max_increase: 0.02}
scores: {sample_rows: 4000, resamples: 100}
statistics: {resamples: 300}
waivers:
  - {check: dp, grouping: sex*age, reason: small groups, owner: alice, expires: 2999-01-01}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


def gate(run_cli, policy: Path, data: Path, out: Path, *extra: str) -> Any:
    return run_cli("check", "--policy", policy, "--data", data, "--teacher",
                   EXAMPLE / "teacher.onnx", "--student", T4, "--no-mlflow", "--format", "json",
                   "--out", out, *extra)


def test_bins_spark_report_is_the_local_report(spark, run_cli, policy, tmp_path) -> None:
    files = write_files(adult(), tmp_path / "seven", 7)
    local = gate(run_cli, policy, files, tmp_path / "local")
    remote = gate(run_cli, policy, files, tmp_path / "spark", "--engine", "spark")
    assert local.exit_code in (0, 1) and remote.exit_code == local.exit_code, remote.stderr
    assert without_run(remote.out) == without_run(local.out)
    groups = {g["group"]["age"] for g in local.report["groups"] if g["grouping"] == ["age"]}
    assert groups == {"[-inf, 25)", "[25, 40)", "[40, 65)", "[65, inf)"}


def test_csv_gz_folder_spark_report_is_the_local_report(spark, run_cli, policy,
                                                        tmp_path) -> None:
    table = adult()
    folder = tmp_path / "gz"
    folder.mkdir()
    for i in range(3):
        buf = pa.BufferOutputStream()
        pacsv.write_csv(table.slice(i * 5020, 5020), buf)
        (folder / f"part-{i}.csv.gz").write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    local = gate(run_cli, policy, folder, tmp_path / "local")
    assert local.exit_code in (0, 1), local.stderr
    for name, extra in (("arrow", ()), ("spark", ("--spark-conf", "spark.fairgate.reader=spark"))):
        remote = gate(run_cli, policy, folder, tmp_path / name, "--engine", "spark", *extra)
        assert without_run(remote.out) == without_run(local.out), name


def test_value_outside_the_bins_is_the_same_error(spark, run_cli, policy, tmp_path) -> None:
    table = adult()  # open-ended bins take every number: a missing age is what they refuse
    ages = [None if i == 9000 else a for i, a in enumerate(table.column("age").to_pylist())]
    table = table.set_column(table.schema.get_field_index("age"), "age",
                             pc.cast(pa.array(ages), pa.int64()))
    files = write_files(table, tmp_path / "bad", 4)  # files of 3,765 rows
    local = gate(run_cli, policy, files, tmp_path / "local")
    remote = gate(run_cli, policy, files, tmp_path / "spark", "--engine", "spark")
    assert local.exit_code == remote.exit_code == 3
    assert remote.stderr == local.stderr
    assert f"part-00002.parquet: column 'age' is missing or NaN at row {9000 - 2 * 3765};" in \
        local.stderr
