"""``--engine spark`` fails as the local engine fails: same exit codes, same messages naming the
file and row, one line on the terminal (Spark's own output and Java stack traces go to
``<out>/spark.log``), no report written. Spark retries a task whose worker died; a task
that keeps dying ends the gate with exit 3.

The session is ``local[2,2]``: two cores, and a task may fail twice (local mode's default
is once, without retry).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLE, ROOT
from tests.spark.conftest import adult, without_run, write_files

SPARK_MASTER = "local[2,2]"
POLICY = EXAMPLE / "policy.yaml"
TEACHER, STUDENT = EXAMPLE / "teacher.onnx", EXAMPLE / "student_distilled_T4.onnx"
CRASH_ONCE = ("--spark-conf", "spark.fairgate.test.fault=crash-once")
CRASH_ALWAYS = ("--spark-conf", "spark.fairgate.test.fault=crash-always")


def check(run_cli, data: object, out: Path, *extra: object, teacher: Path = TEACHER):
    return run_cli("check", "--policy", POLICY, "--data", data, "--teacher", teacher,
                   "--student", STUDENT, "--no-mlflow", "--format", "json", "--out", out, *extra)


def both(run_cli, data: object, tmp_path: Path, *spark_options: object,
         teacher: Path = TEACHER):
    local = check(run_cli, data, tmp_path / "local", teacher=teacher)
    remote = check(run_cli, data, tmp_path / "spark", "--engine", "spark", *spark_options,
                   teacher=teacher)
    return local, remote


def assert_same_failure(local, remote, code: int, message: str) -> None:
    assert local.exit_code == remote.exit_code == code, remote.stderr
    assert local.stderr == remote.stderr == f"fairgate: error: {message}\n"
    assert not (local.out / "report.json").exists()
    assert not (remote.out / "report.json").exists()


def test_corrupt_model(spark, run_cli, tmp_path) -> None:
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    local, remote = both(run_cli, EXAMPLE / "audit.parquet", tmp_path, teacher=bad)
    assert local.exit_code == remote.exit_code == 3
    assert local.stderr == remote.stderr
    assert local.stderr.startswith(f"fairgate: error: teacher model {bad}: not an ONNX model")


def test_a_model_that_does_not_load_on_the_executors(spark, run_cli, tmp_path) -> None:
    """The driver loads the teacher, the executors cannot (the test hook hands them bytes
    onnxruntime rejects, as an executor with another onnxruntime would): exit 3 and the
    driver's message for a model that does not load, naming the Spark partition."""
    r = check(run_cli, EXAMPLE / "audit.parquet", tmp_path / "out", "--engine", "spark",
              "--spark-conf", "spark.fairgate.test.fault=bad-teacher")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.startswith("fairgate: error: teacher model teacher.onnx: onnxruntime cannot "
                               "load it: ")
    assert r.stderr.endswith(" (on the executor of Spark partition 0)\n")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_missing_column(spark, run_cli, tmp_path) -> None:
    data = write_files(adult().drop_columns(["race"]), tmp_path / "data", 3)
    local, remote = both(run_cli, data, tmp_path)
    columns = ", ".join(n for n in adult().column_names if n != "race")
    assert_same_failure(local, remote, 3, f"{data}: column 'race' not found (columns: {columns})")


def _with_label(table: pa.Table, row: int, value: str | None) -> pa.Table:
    labels = table.column("income").to_pylist()
    labels[row] = value
    return table.set_column(table.schema.get_field_index("income"), "income",
                            pa.array(labels, pa.string()))


@pytest.mark.parametrize(("value", "message"), [
    ("maybe", "label column 'income' must hold positive_label '>50K' and one other value, "
              "found 2 others: <=50K, maybe"),
    (None, "label column 'income' has 1 missing value(s), first at row 1234"),
])
def test_bad_label_in_one_partition_names_the_file(spark, run_cli, tmp_path, value,
                                                   message) -> None:
    """Row 1234 of the sixth of seven files: both engines name that file and row."""
    table = adult()
    folder = tmp_path / "data"
    folder.mkdir()
    bounds = [0, 2000, 4000, 6000, 8000, 10000, 12000, table.num_rows]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = table.slice(a, b - a)
        if i == 5:
            part = _with_label(part, 1234, value)
        pq.write_table(part, folder / f"part-{i}.parquet")
    local, remote = both(run_cli, folder, tmp_path, "--spark-conf",
                         "spark.sql.files.openCostInBytes=134217728")  # one file a partition
    assert_same_failure(local, remote, 3, f"{folder / 'part-5.parquet'}: {message}")


def test_positive_label_absent_across_all_partitions(spark, run_cli, tmp_path) -> None:
    table = adult()
    negatives = table.filter(pc.equal(table.column("income"), "<=50K"))
    data = write_files(negatives, tmp_path / "data", 4)
    local, remote = both(run_cli, data, tmp_path)
    assert_same_failure(local, remote, 3, f"{data}: no row of label column 'income' equals "
                                          "positive_label '>50K' (values seen: <=50K)")


def test_missing_table(spark, run_cli, tmp_path) -> None:
    r = check(run_cli, "table:default.no_such_table", tmp_path / "out", "--engine", "spark")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.startswith("fairgate: error: table:default.no_such_table: Spark cannot read "
                               "it: [TABLE_OR_VIEW_NOT_FOUND]")
    assert r.stderr.count("\n") == 1 and "\tat " not in r.stderr


def test_a_worker_that_dies_once_is_retried(spark, run_cli, tmp_path) -> None:
    local, remote = both(run_cli, EXAMPLE / "audit.parquet", tmp_path, *CRASH_ONCE)
    assert local.exit_code == remote.exit_code == 1, remote.stderr  # the T4 student fails
    assert without_run(remote.out) == without_run(local.out)


def test_a_worker_that_always_dies_ends_the_gate(spark, run_cli, tmp_path) -> None:
    r = check(run_cli, EXAMPLE / "audit.parquet", tmp_path / "out", "--engine", "spark",
              *CRASH_ALWAYS)
    assert r.exit_code == 3
    assert r.stderr.startswith("fairgate: error: the Spark job failed: a task failed 2 time(s), "
                               "the last with: Python worker exited unexpectedly (crashed)")
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "out" / "report.json").exists()


# ----------------------------------------------------------------------------- a fresh process


def fairgate(*args: object, cwd: Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environ.get("PYTHONPATH"))
                                            if p)
    return subprocess.run([sys.executable, "-m", "fairgate", *map(str, args)], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=600)


def test_terminal_gets_one_line_and_the_log_gets_spark(tmp_path) -> None:
    """A fresh fairgate starts its own Spark: the JVM's output (start-up noise, the dead
    worker's Java stack) is in <out>/spark.log; the terminal has fairgate's one line, and
    <out> holds no report."""
    out = tmp_path / "out"
    r = fairgate("check", "--policy", POLICY, "--data", EXAMPLE / "audit.parquet", "--teacher",
                 TEACHER, "--student", STUDENT, "--no-mlflow", "--out", out, "--engine", "spark",
                 "--spark-master", "local[1,2]", "--spark-conf", "spark.ui.enabled=false",
                 *CRASH_ALWAYS, cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    log = out / "spark.log"
    assert r.stdout == ""
    assert r.stderr == (f"fairgate: error: the Spark job failed: a task failed 2 time(s), the "
                        "last with: Python worker exited unexpectedly (crashed); Spark's log: "
                        f"{log}\n")
    text = log.read_text()
    assert "Python worker exited unexpectedly" in text and "\tat org.apache.spark" in text
    assert sorted(p.name for p in out.iterdir()) == ["spark.log"]


def test_without_pyspark_spark_is_a_usage_error(tmp_path) -> None:
    fake = tmp_path / "no_pyspark" / "pyspark"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named pyspark')\n")
    r = fairgate("check", "--policy", POLICY, "--data", EXAMPLE / "audit.parquet", "--teacher",
                 TEACHER, "--student", STUDENT, "--no-mlflow", "--out", tmp_path / "out",
                 "--engine", "spark", cwd=tmp_path,
                 env={"PYTHONPATH": str(fake.parent)})
    assert r.returncode == 2
    assert r.stderr == ("fairgate: error: --engine spark needs pyspark, which is not installed "
                        "here: pip install 'fairgate[spark]' (it needs Java 17 too)\n")


def test_help_and_the_local_engine_never_import_pyspark(tmp_path) -> None:
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fairgate.cli import main\n"
        f"check = ['check', '--policy', {str(POLICY)!r}, '--data', "
        f"{str(EXAMPLE / 'audit.parquet')!r}, '--teacher', {str(TEACHER)!r}, '--student', "
        f"{str(STUDENT)!r}, '--no-mlflow', '--format', 'json', '--out', {str(tmp_path / 'o')!r}]\n"
        "for args in (['--help'], ['check', '--help'], check):\n"
        "    r = CliRunner().invoke(main, args)\n"
        "    assert r.exit_code in (0, 1), r.output\n"
        "    print(any(m.split('.')[0] == 'pyspark' for m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]
