"""``--engine spark`` over Spark Connect (``sc://host:port``, ``SPARK_REMOTE``): the local
engine's report.json, the same failures, and usage errors that say what to do.

The module starts one real Spark Connect server (``local[2]``, pyspark's own
``SparkConnectServer`` through its ``spark-submit``, in a process of its own on a free port)
and runs fairgate as a client of it, as a user would: fairgate's process has no SparkContext
and no JVM, only the Connect client. The server's Python workers import this checkout's
fairgate (``PYTHONPATH``). It stops at the end of the module.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fairgate.engine.spark import LOCAL_JVM_OPTIONS
from fairgate.integrations.mlflow import engine_tags
from tests.conftest import EXAMPLE, ROOT
from tests.spark.conftest import adult, engine_of, without, without_run
from tests.spark.test_spark_equality import POLICY

TEACHER, STUDENT = EXAMPLE / "teacher.onnx", EXAMPLE / "student_distilled_T4.onnx"
SERVER_START = 180  # seconds: a JVM on two shared cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on ``local[2]``: its URL, ``sc://localhost:PORT``."""
    from pyspark.find_spark_home import _find_spark_home

    folder = tmp_path_factory.mktemp("connect")
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE")}
    env.update(SPARK_CONNECT_MODE="0", PYSPARK_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    confs = {"spark.connect.grpc.binding.address": "127.0.0.1",
             "spark.connect.grpc.binding.port": str(port), "spark.ui.enabled": "false",
             "spark.sql.shuffle.partitions": "4", "spark.sql.session.timeZone": "UTC",
             "spark.driver.extraJavaOptions": LOCAL_JVM_OPTIONS,
             "spark.sql.warehouse.dir": str(folder / "warehouse")}
    command = [os.path.join(_find_spark_home(), "bin", "spark-submit"), "--class",
               "org.apache.spark.sql.connect.service.SparkConnectServer", "--name",
               "fairgate-tests", "--master", "local[2]",
               *itertools.chain.from_iterable(("--conf", f"{k}={v}") for k, v in confs.items()),
               "spark-internal"]
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                   stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Spark Connect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"sc://localhost:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the JVM and its Python workers
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(60)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The equality tests' policy: individual fairness and score metrics on (row samples)."""
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


def check(run_cli, policy: Path, data: object, out: Path, *extra: object):
    return run_cli("check", "--policy", policy, "--data", data, "--teacher", TEACHER,
                   "--student", STUDENT, "--no-mlflow", "--format", "json", "--out", out, *extra)


def gate(run_cli, policy: Path, data: object, out: Path, *extra: object) -> Path:
    r = check(run_cli, policy, data, out, *extra)
    assert r.exit_code in (0, 1), r.stderr
    assert r.stderr == "", r.stderr
    return out


def test_adult_over_connect_is_the_local_report(server, run_cli, policy, tmp_path) -> None:
    """``--spark-master sc://...``: the local report to the last digit; run.engine (and the
    MLflow tags) name the server without the URL's parameters (a token never lands in a
    report), and fairgate leaves pyspark's Connect mode as it found it."""
    local = gate(run_cli, policy, EXAMPLE / "audit.parquet", tmp_path / "local")
    remote = gate(run_cli, policy, EXAMPLE / "audit.parquet", tmp_path / "connect",
                  "--engine", "spark", "--spark-master", f"{server}/;user_id=fairgate-tests")
    assert without_run(remote) == without_run(local)
    report = json.loads((local / "report.json").read_text())
    assert report["individual"]["rows_sampled"] == 1500
    assert report["scores"]["rows_sampled"] == 4000
    engine = engine_of(remote)
    assert engine["name"] == "spark" and engine["connect"] is True
    assert engine["remote"] == server and engine["master"] == "local[2]"
    assert engine["executors"] == 1 and engine["partitions"] == 1
    assert engine["reader"] == "arrow" and engine["log"] is None
    tags = engine_tags({}, engine)
    assert tags["fairgate.engine.remote"] == server
    assert tags["fairgate.engine.master"] == "local[2]"
    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ  # a classic session may follow


def test_spark_remote_and_spark_reading_over_connect(server, run_cli, policy, tmp_path,
                                                     monkeypatch) -> None:
    """``SPARK_REMOTE`` alone; a URI, which Spark lists and reads (``_metadata``), in more
    partitions than one merge task folds: the partials are merged on the executors by
    partition id (Connect has no RDD to count partitions by) and the report is the local
    one."""
    data = tmp_path / "groups.parquet"
    table = adult()
    pq.write_table(table, data, row_group_size=-(-table.num_rows // 64))
    local = gate(run_cli, policy, data, tmp_path / "local")
    monkeypatch.setenv("SPARK_REMOTE", server)
    remote = gate(run_cli, policy, data.as_uri(), tmp_path / "connect", "--engine", "spark",
                  "--spark-conf", "spark.sql.files.maxPartitionBytes=8192",
                  "--spark-conf", "spark.sql.files.openCostInBytes=0")
    assert without(remote, "inputs.data.path") == without(local, "inputs.data.path")
    engine = engine_of(remote)
    assert engine["remote"] == server and engine["reader"] == "spark"
    assert engine["partitions"] > 32  # more than FAN_IN count tasks ...
    assert engine["partials"] < engine["partitions"] / 16  # ... merged before the driver


def test_compare_over_connect(server, run_cli, tmp_path) -> None:
    """``fairgate compare`` over Connect: compare.json and .md, and each candidate's report,
    as the local engine writes them."""
    data = tmp_path / "data"
    data.mkdir()
    table = adult()
    for i in range(3):
        pq.write_table(table.slice(i * 5020, 5020), data / f"part-{i}.parquet")
    args = ["--policy", EXAMPLE / "policy.yaml", "--data", data, "--teacher", TEACHER,
            "--candidate", STUDENT, "--candidate", EXAMPLE / "student_pruned.onnx",
            "--no-mlflow"]
    local = run_cli("compare", *args, "--out", tmp_path / "local")
    remote = run_cli("compare", *args, "--out", tmp_path / "connect", "--engine", "spark",
                     "--spark-master", server)
    assert local.exit_code == remote.exit_code, remote.stderr
    assert remote.stderr == ""
    for name in ("compare.json", "compare.md"):
        assert ((tmp_path / "connect" / name).read_bytes()
                == (tmp_path / "local" / name).read_bytes())
    for cand in ("student_distilled_T4", "student_pruned"):
        assert without_run(tmp_path / "connect" / cand) == without_run(tmp_path / "local" / cand)
        assert engine_of(tmp_path / "connect" / cand)["remote"] == server


def _seven_files(table: pa.Table, folder: Path, label: str | None) -> Path:
    """Seven files; row 1234 of the sixth has label ``label``."""
    folder.mkdir()
    bounds = [0, 2000, 4000, 6000, 8000, 10000, 12000, table.num_rows]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = table.slice(a, b - a)
        if i == 5:
            labels = part.column("income").to_pylist()
            labels[1234] = label
            part = part.set_column(part.schema.get_field_index("income"), "income",
                                   pa.array(labels, pa.string()))
        pq.write_table(part, folder / f"part-{i}.parquet")
    return folder


def test_a_bad_label_in_one_partition_over_connect(server, run_cli, tmp_path) -> None:
    """Found by the task that reads the sixth of seven files on the server's executors: exit
    3 and the local engine's message naming that file and row, one line, no report."""
    folder = _seven_files(adult(), tmp_path / "data", "maybe")
    policy = EXAMPLE / "policy.yaml"
    local = check(run_cli, policy, folder, tmp_path / "local")
    remote = check(run_cli, policy, folder, tmp_path / "connect", "--engine", "spark",
                   "--spark-master", server,
                   "--spark-conf", "spark.sql.files.openCostInBytes=134217728")
    message = (f"fairgate: error: {folder / 'part-5.parquet'}: label column 'income' must hold "
               "positive_label '>50K' and one other value, found 2 others: <=50K, maybe\n")
    assert local.exit_code == remote.exit_code == 3, remote.stderr
    assert local.stderr == remote.stderr == message
    assert not (local.out / "report.json").exists()
    assert not (remote.out / "report.json").exists()


def test_a_task_that_keeps_dying_over_connect(server, run_cli, tmp_path) -> None:
    """A Spark job that fails on the server: exit 3, one line (no Java stack), which says
    Spark's log is the server's."""
    r = check(run_cli, EXAMPLE / "policy.yaml", EXAMPLE / "audit.parquet", tmp_path / "out",
              "--engine", "spark", "--spark-master", server,
              "--spark-conf", "spark.fairgate.test.fault=crash-always")
    assert r.exit_code == 3
    assert r.stderr == ("fairgate: error: the Spark job failed: a task failed 1 time(s), the "
                        "last with: Python worker exited unexpectedly (crashed); Spark's log is "
                        "the Spark Connect server's\n")
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_notebook_connect_session_is_used_as_it_is(server, run_cli, tmp_path,
                                                     monkeypatch) -> None:
    """A process already in Connect mode (a serverless notebook): ``--engine spark`` without
    a master runs in that session, restores the settings it changed and leaves it open."""
    from pyspark.sql import SparkSession

    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")  # pyspark sets it; undone after
    session = SparkSession.builder.remote(server).getOrCreate()
    try:
        before = session.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
        r = check(run_cli, EXAMPLE / "policy.yaml", EXAMPLE / "audit.parquet",
                  tmp_path / "out", "--engine", "spark", "--batch-size", "5000")
        assert r.exit_code == 1, r.stderr  # the example's T4 student fails a check
        engine = engine_of(tmp_path / "out")
        assert engine["remote"] == server and engine["connect"] is True
        assert session.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == before
        assert session.range(3).count() == 3  # still open
    finally:
        session.stop()


@pytest.mark.parametrize(("env", "extra", "message"), [
    ({"SPARK_REMOTE": "local[2]"}, (),
     "SPARK_REMOTE=local[2]: fairgate connects to a Spark Connect server by its URL, "
     "sc://host:port; to start a local Spark, unset SPARK_REMOTE and give --spark-master "
     "local[N]"),
    ({"SPARK_REMOTE": "sc://localhost:{port}/;token=secret"}, ("--spark-master", "local[2]"),
     "--spark-master local[2] and SPARK_REMOTE=sc://localhost:{port}: pyspark would connect "
     "to SPARK_REMOTE's Spark Connect server; unset SPARK_REMOTE to use --spark-master"),
    ({}, ("--spark-master", "sc://localhost:{port}/;token=secret"),
     "Spark Connect (sc://localhost:{port}): cannot reach localhost:{port} (Connection "
     "refused); is the Spark Connect server running?"),
    ({}, ("--spark-master", "sc://localhost:port/;token=secret"),
     "sc://localhost:port: not a Spark Connect URL, sc://host:port (Port could not be cast to "
     "integer value as 'port')"),
], ids=["SPARK_REMOTE=local", "a master and SPARK_REMOTE", "no server there", "no port"])
def test_connect_usage_errors(run_cli, tmp_path, monkeypatch, env, extra, message) -> None:
    """Exit 2 before any work, one line saying what to change; a token is never shown."""
    port = _free_port()  # nothing listens there
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(port=port))
    r = check(run_cli, EXAMPLE / "policy.yaml", EXAMPLE / "audit.parquet", tmp_path / "out",
              "--engine", "spark", *(x.format(port=port) for x in extra))
    assert r.exit_code == 2
    assert r.stderr == f"fairgate: error: {message.format(port=port)}\n"
    assert "secret" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_static_setting_over_connect_is_a_usage_error(server, run_cli, tmp_path) -> None:
    r = check(run_cli, EXAMPLE / "policy.yaml", EXAMPLE / "audit.parquet", tmp_path / "out",
              "--engine", "spark", "--spark-master", server,
              "--spark-conf", "spark.driver.memory=3g")
    assert r.exit_code == 2
    assert r.stderr.startswith("fairgate: error: --spark-conf spark.driver.memory: cannot be "
                               "changed in the running Spark session (")
    assert r.stderr.endswith("; set it on the Spark Connect server\n")


def test_without_the_connect_client_is_a_usage_error(tmp_path) -> None:
    """pyspark without its Connect client (grpcio missing, as after ``pip install pyspark``):
    exit 2 naming the extra to install, before any connection is tried."""
    fake = tmp_path / "no_grpc" / "grpc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named grpc')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(fake.parent), str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("SPARK_REMOTE", None)
    r = subprocess.run([sys.executable, "-m", "fairgate", "check", "--policy",
                        str(EXAMPLE / "policy.yaml"), "--data", str(EXAMPLE / "audit.parquet"),
                        "--teacher", str(TEACHER), "--student", str(STUDENT), "--no-mlflow",
                        "--out", str(tmp_path / "out"), "--engine", "spark", "--spark-master",
                        "sc://localhost:1"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("fairgate: error: Spark Connect (sc://localhost:1) needs "
                               "pyspark's Connect client, which is not installed here: pip "
                               "install 'fairgate[spark-connect]' (")
    assert "grpc" in r.stderr and r.stderr.count("\n") == 1
