"""``--engine spark`` gives the local engine's report.json byte for byte (issue 12).

On a real local Spark (``local[2]``): the Adult example with individual fairness and score
metrics on, 1 / 7 / 64 partitions, rows written in another order, a partitioned folder whose
partition column is a sensitive attribute, a CSV folder, an ORC folder, a catalog table, a
file:// URI that Spark lists, the multi-class example, ``fairgate compare``, and what the
MLflow run records. Each comparison drops only report.json's ``run`` key (times, and the
engine: Spark's version, master, partitions, executors), plus ``inputs.data`` where the two
runs read different files on purpose (a rewrite of the same rows, or a table instead of its
files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest

from fairgate.inputs.data_source import discover
from fairgate.integrations.mlflow import engine_tags
from tests.conftest import EXAMPLE, ROOT
from tests.spark.conftest import adult, engine_of, shuffled, without, without_run, write_files

SPARK_MASTER = "local[2]"
MULTICLASS = ROOT / "examples" / "adult_multiclass"
T4 = EXAMPLE / "student_distilled_T4.onnx"
INT8 = EXAMPLE / "student_int8.onnx"

POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [sex, race]
  intersections: true
  reference_groups: {sex: Male, race: White}
  min_group_size: 100
model: {positive_column: 1}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}
  - {id: eo, metric: equalized_odds_difference, max_increase: 0.02}
  - {id: acc, metric: accuracy, max_decrease: 0.01}
  - {id: lip, metric: individual_lipschitz, max_increase: 0.05}
  - {id: knn, metric: knn_consistency, max_decrease: 0.05}
  - {id: cf, metric: counterfactual_flip_rate, max_increase: 0.02}
  - {id: auc, metric: roc_auc_difference, max_increase: 0.02}
  - {id: ece, metric: expected_calibration_error, max_increase: 0.01}
individual:
  sample_rows: 1500
  queries: 500
  counterfactual: {column: sex, values: [Male, Female]}
scores: {sample_rows: 4000, resamples: 100}
statistics: {resamples: 300}
"""


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Adult audit set written in several ways: the same rows each time."""
    base = tmp_path_factory.mktemp("layouts")
    table = adult()
    out = {"file": EXAMPLE / "audit.parquet",
           "7 files": write_files(table, base / "seven", 7),
           "shuffled": write_files(shuffled(table), base / "shuffled", 3)}
    groups = base / "groups.parquet"  # one file, 64 row groups: 64 partitions with small splits
    pq.write_table(table, groups, row_group_size=-(-table.num_rows // 64))
    out["64 row groups"] = groups
    by_sex = base / "by_sex"  # hive layout: sex=Female/..., sex=Male/...
    pq.write_to_dataset(table, by_sex, partition_cols=["sex"])
    (by_sex / "_SUCCESS").write_text("")  # as Spark leaves it: not data
    out["by sex"] = by_sex
    csv = base / "csv"
    csv.mkdir()
    for i in range(4):
        pacsv.write_csv(table.slice(i * 4000, 4000), csv / f"part-{i}.csv")
    out["csv"] = csv
    orc_folder = base / "orc"
    orc_folder.mkdir()
    for i in range(3):
        orc.write_table(table.slice(i * 5020, 5020), orc_folder / f"part-{i}.orc")
    out["orc"] = orc_folder
    return out


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


def gate(run_cli, policy: Path, data: Any, out: Path, *extra: Any,
         student: Path = T4, teacher: Path = EXAMPLE / "teacher.onnx") -> Path:
    r = run_cli("check", "--policy", policy, "--data", data, "--teacher", teacher,
                "--student", student, "--no-mlflow", "--format", "json", "--out", out, *extra)
    assert r.exit_code in (0, 1), r.stderr
    assert r.stderr == "", r.stderr
    return out


SMALL_SPLITS = ("--spark-conf", "spark.sql.files.maxPartitionBytes=4096",
                "--spark-conf", "spark.sql.files.openCostInBytes=0")


def partitions_of(data: Path, partitions: int) -> tuple[str, ...]:
    """Spark settings that read ``data`` in ``partitions`` partitions: one per file of a
    folder, or a file's bytes cut in ``partitions`` splits (row groups go to the split
    holding their middle)."""
    if data.is_dir():  # every file costs more than a split holds: one file a partition
        return ("--spark-conf", "spark.sql.files.openCostInBytes=134217728")
    split = -(-data.stat().st_size // partitions)
    return ("--spark-conf", f"spark.sql.files.maxPartitionBytes={split}",
            "--spark-conf", "spark.sql.files.openCostInBytes=0")


def test_adult_spark_report_is_the_local_report(spark, run_cli, policy, layouts,
                                                tmp_path) -> None:
    local = gate(run_cli, policy, layouts["file"], tmp_path / "local")
    remote = gate(run_cli, policy, layouts["file"], tmp_path / "spark", "--engine", "spark")
    assert without_run(remote) == without_run(local)
    report = json.loads((local / "report.json").read_text())
    assert report["individual"]["rows_sampled"] == 1500  # the samples are in the comparison
    assert report["scores"]["rows_sampled"] == 4000
    engine = engine_of(remote)
    assert engine["name"] == "spark" and engine["master"] == SPARK_MASTER
    assert engine["spark_version"] == spark.version and engine["partitions"] == 1
    assert engine["executors"] == 1
    assert engine_of(local) == {"name": "local", "batches": 1}
    data = json.loads((remote / "report.json").read_text())["inputs"]["data"]
    assert engine_tags(data, engine) == {  # what the MLflow run records of the engine
        "fairgate.data.fingerprint": data["fingerprint"], "fairgate.data.files": "1",
        "fairgate.engine": "spark", "fairgate.engine.spark_version": spark.version,
        "fairgate.engine.master": SPARK_MASTER, "fairgate.engine.partitions": "1",
        "fairgate.engine.executors": "1"}


@pytest.mark.parametrize(("layout", "partitions"), [("7 files", 7), ("64 row groups", 64),
                                                    ("shuffled", 3)])
def test_any_partitioning_and_row_order_give_the_same_report(
        spark, run_cli, policy, layouts, tmp_path, layout: str, partitions: int) -> None:
    """The same rows in 1, 7 or 64 partitions, or in another order: the same report (the
    row samples are by row identity, not position). inputs.data names the files read."""
    reference = gate(run_cli, policy, layouts["file"], tmp_path / "reference")
    local = gate(run_cli, policy, layouts[layout], tmp_path / "local")
    remote = gate(run_cli, policy, layouts[layout], tmp_path / "spark", "--engine", "spark",
                  *partitions_of(layouts[layout], partitions))
    assert without_run(remote) == without_run(local)
    assert without(local, "inputs.data") == without(reference, "inputs.data")
    assert engine_of(remote)["partitions"] == partitions


def test_int8_student_batches_are_the_local_batches(spark, run_cli, policy, layouts,
                                                    tmp_path) -> None:
    """A dynamically quantized student decides a row by its batch: Spark's tasks cut their
    rows into the local engine's batches (7 files over fewer tasks, 64 row groups)."""
    for layout in ("7 files", "64 row groups"):
        local = gate(run_cli, policy, layouts[layout], tmp_path / f"local {layout}",
                     "--batch-size", "1000", student=INT8)
        remote = gate(run_cli, policy, layouts[layout], tmp_path / f"spark {layout}",
                      "--batch-size", "1000", "--engine", "spark", student=INT8)
        assert without_run(remote) == without_run(local)
        warnings = json.loads((local / "report.json").read_text())["warnings"]
        assert any("DynamicQuantizeLinear" in w for w in warnings)


def test_partition_column_as_sensitive_attribute(spark, run_cli, policy, layouts,
                                                 tmp_path) -> None:
    """sex=Female/ and sex=Male/ folders: ``sex`` is a column of both engines (and a model
    input), as if it were in the files."""
    local = gate(run_cli, policy, layouts["by sex"], tmp_path / "local")
    remote = gate(run_cli, policy, layouts["by sex"], tmp_path / "spark", "--engine", "spark")
    assert without_run(remote) == without_run(local)
    by_spark = gate(run_cli, policy, layouts["by sex"], tmp_path / "by_spark", "--engine",
                    "spark", *SPARK_READER)
    assert without_run(by_spark) == without_run(local)
    data = json.loads((local / "report.json").read_text())["inputs"]["data"]
    assert data["partition_columns"] == ["sex"] and data["files"] == 2
    reference = gate(run_cli, policy, layouts["file"], tmp_path / "reference")
    assert without(local, "inputs.data") == without(reference, "inputs.data")


SPARK_READER = ("--spark-conf", "spark.fairgate.reader=spark")


def test_csv_folder(spark, run_cli, policy, layouts, tmp_path) -> None:
    """Read by pyarrow on the executors, and by Spark's CSV reader (its text turned into
    what pyarrow's CSV reader gives)."""
    local = gate(run_cli, policy, layouts["csv"], tmp_path / "local")
    remote = gate(run_cli, policy, layouts["csv"], tmp_path / "spark", "--engine", "spark")
    assert without_run(remote) == without_run(local)
    by_spark = gate(run_cli, policy, layouts["csv"], tmp_path / "by_spark", "--engine", "spark",
                    *SPARK_READER)
    assert without_run(by_spark) == without_run(local)
    assert engine_of(by_spark)["reader"] == "spark" and engine_of(remote)["reader"] == "arrow"
    reference = gate(run_cli, policy, layouts["file"], tmp_path / "reference")
    assert without(local, "inputs.data") == without(reference, "inputs.data")


def test_orc_folder(spark, run_cli, policy, layouts, tmp_path) -> None:
    local = gate(run_cli, policy, layouts["orc"], tmp_path / "local")
    remote = gate(run_cli, policy, layouts["orc"], tmp_path / "spark", "--engine", "spark")
    assert without_run(remote) == without_run(local)
    by_spark = gate(run_cli, policy, layouts["orc"], tmp_path / "by_spark", "--engine", "spark",
                    *SPARK_READER)
    assert without_run(by_spark) == without_run(local)
    reference = gate(run_cli, policy, layouts["file"], tmp_path / "reference")
    assert without(local, "inputs.data") == without(reference, "inputs.data")


def test_catalog_table(spark, run_cli, policy, layouts, tmp_path) -> None:
    spark.read.parquet(str(EXAMPLE / "audit.parquet")).write.mode("overwrite").saveAsTable(
        "default.adult_audit")
    remote = gate(run_cli, policy, "table:spark_catalog.default.adult_audit",
                  tmp_path / "spark", "--engine", "spark")
    reference = gate(run_cli, policy, layouts["file"], tmp_path / "reference")
    assert without(remote, "inputs.data") == without(reference, "inputs.data")
    data = json.loads((remote / "report.json").read_text())["inputs"]["data"]
    assert data["path"] == "table:spark_catalog.default.adult_audit"
    assert data["table"] == "spark_catalog.default.adult_audit"
    assert data["provider"] == "parquet" and data["version"] is None
    assert data["version_from"] == "the catalog keeps no version of this table"
    assert data["rows"] == 15060 and data["fingerprint"]  # its folder's listing


def test_file_uri_is_listed_by_spark_as_fairgate_lists_it(spark, run_cli, policy, layouts,
                                                          tmp_path) -> None:
    """A URI goes through Spark's own listing: same files, sizes, times and footer rows,
    so the same fingerprint as the local listing of the folder."""
    folder = layouts["7 files"]
    remote = gate(run_cli, policy, folder.as_uri(), tmp_path / "spark", "--engine", "spark")
    local = gate(run_cli, policy, folder, tmp_path / "local")
    assert without(remote, "inputs.data.path") == without(local, "inputs.data.path")
    data = json.loads((remote / "report.json").read_text())["inputs"]["data"]
    assert data["fingerprint"] == discover(folder).fingerprint()
    assert engine_of(remote)["reader"] == "spark"


def test_multiclass_example(spark, run_cli, tmp_path) -> None:
    data = write_files(pq.read_table(MULTICLASS / "audit.parquet"), tmp_path / "mc", 5)
    args = ["--policy", MULTICLASS / "policy.yaml", "--data", data, "--teacher",
            MULTICLASS / "teacher.onnx", "--student", MULTICLASS / "student_distilled_T4.onnx",
            "--reference-student", MULTICLASS / "student_nds.onnx", "--no-mlflow",
            "--format", "json"]
    local = run_cli("check", *args, "--out", tmp_path / "local")
    remote = run_cli("check", *args, "--out", tmp_path / "spark", "--engine", "spark",
                     *SMALL_SPLITS)
    assert local.exit_code == remote.exit_code == 1, remote.stderr
    assert without_run(tmp_path / "spark") == without_run(tmp_path / "local")
    classwise = json.loads((tmp_path / "local" / "report.json").read_text())["classwise"]
    assert len(classwise["disagreement"]) == 3 and classwise["disagreement"][0]["cells"]


def test_compare_on_spark(spark, run_cli, policy, layouts, tmp_path) -> None:
    args = ["--policy", policy, "--data", layouts["7 files"], "--teacher",
            EXAMPLE / "teacher.onnx", "--candidate", T4, "--candidate",
            EXAMPLE / "student_pruned.onnx", "--no-mlflow"]
    local = run_cli("compare", *args, "--out", tmp_path / "local")
    remote = run_cli("compare", *args, "--out", tmp_path / "spark", "--engine", "spark")
    assert local.exit_code == remote.exit_code, remote.stderr
    for name in ("compare.json", "compare.md"):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    for cand in ("student_distilled_T4", "student_pruned"):
        assert without_run(tmp_path / "spark" / cand) == without_run(tmp_path / "local" / cand)


def test_mlflow_run_records_the_engine_and_the_data(spark, run_cli, layouts, tmp_path,
                                                    monkeypatch) -> None:
    """The MLflow run of a Spark gate: the engine's tags and the listing's fingerprint, as
    report.json has them, and the folder as the run's dataset input."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY + f"mlflow: {{tracking_uri: {json.dumps(store)}, timeout: 120}}\n")
    folder = layouts["7 files"]
    r = run_cli("check", "--policy", policy, "--data", folder, "--teacher",
                EXAMPLE / "teacher.onnx", "--student", T4, "--format", "json",
                "--out", tmp_path / "out", "--engine", "spark")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert r.exit_code == report["exit_code"], r.stderr
    engine = report["run"]["engine"]
    run = MlflowClient(store).get_run(report["mlflow"]["run_id"])
    tags = run.data.tags
    assert tags["fairgate.engine"] == "spark"
    assert tags["fairgate.engine.spark_version"] == spark.version
    assert tags["fairgate.engine.master"] == SPARK_MASTER
    assert tags["fairgate.engine.partitions"] == str(engine["partitions"])
    assert tags["fairgate.engine.executors"] == "1"
    fingerprint = discover(folder).fingerprint()
    assert tags["fairgate.data.fingerprint"] == fingerprint and tags["fairgate.data.files"] == "7"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == folder.name and dataset.dataset.digest == fingerprint[:16]
    assert json.loads(dataset.dataset.profile)["num_rows"] == 15060


def test_spark_settings_of_the_command_line_are_restored(spark, run_cli, policy, layouts,
                                                         tmp_path) -> None:
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    gate(run_cli, policy, layouts["7 files"], tmp_path / "a", "--engine", "spark", *SMALL_SPLITS)
    assert spark.conf.get("spark.sql.files.maxPartitionBytes") == before
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "10000"
