"""MLflow tracking, proven against a real ``mlflow server`` (see tests/mlflow_server.py).

Each logged run is read back with MlflowClient and compared with report.json, the one
record the gate writes whatever happens to MLflow. Misbehaving servers (down, killed,
silent, answering 503) must never change the verdict or the reports.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow  # noqa: F401 - imported up front so its loggers bind to the real stderr
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    _validate_metric_name,
    _validate_param_name,
    _validate_tag_name,
)

from fairgate import __version__
from fairgate.errors import UsageError
from fairgate.inputs.data_source import discover
from fairgate.integrations.mlflow import (
    MAX_ENTITIES,
    MAX_KEY,
    MAX_METRICS,
    MAX_PARAMS,
    MAX_TAG_VALUE,
    MAX_TAGS,
    KeyMaker,
    batches,
    check_uri,
    ci_tags,
    collect,
    key_part,
    note,
    valid_key,
)
from fairgate.policy import load_policy
from fairgate.report import reporters
from fairgate.run import GateRequest, run_gate
from tests.conftest import EXAMPLE, SYNTHETIC_POLICY
from tests.mlflow_server import FaultyServer, MlflowServer, SilentServer, free_port

RUN_ID = re.compile(r"\(([0-9a-f]{32})\)")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow or CI setting of the machine (or of an earlier test) leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "GITHUB_", "CI_", "GITLAB_")) or name in (
                "BUILD_URL", "GIT_COMMIT", "JENKINS_URL", "JOB_NAME", "BUILD_NUMBER"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MlflowServer]]:
    """Two real servers booting side by side: ``main`` for the suite, ``spare`` to kill."""
    booted = {name: MlflowServer(tmp_path_factory.mktemp(f"mlflow-{name}")).start()
              for name in ("main", "spare")}
    try:
        yield booted
    finally:
        for s in booted.values():
            s.stop()


@pytest.fixture(scope="module", autouse=True)
def boot_servers_early(request: pytest.FixtureRequest) -> None:
    """Servers take seconds to boot: start them before the tests that need no server run,
    but only when a selected test of this module needs one."""
    if any("servers" in item.fixturenames for item in request.session.items
           if getattr(item, "module", None) is request.module):
        request.getfixturevalue("servers")


@pytest.fixture
def server(servers: dict[str, MlflowServer], monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    s = servers["main"].wait_ready()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", s.uri)
    return s


def gate(run_cli: Callable[..., Any], policy: Path, data: Path, *extra: str | Path) -> Any:
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", *extra)


def run_id_of(result: Any) -> str:
    assert "MLflow: logged run" in result.stdout, result.stdout + result.stderr
    m = RUN_ID.search(result.stdout)
    assert m, result.stdout
    return m.group(1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_mlflow(policy: str, **settings: object) -> str:
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    return policy.rstrip("\n") + "\nmlflow:\n" + lines


# ----------------------------------------------------------------------------- oracle from report.json

PARTS = (("teacher", "teacher"), ("student", "student"), ("delta", "delta"),
         ("relative", "relative_delta"))
COUNTS = ("tp", "fp", "tn", "fn")


def expected_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The metrics a run must hold, built from report.json by hand (plain names only)."""
    plain = re.compile(r"[A-Za-z0-9\-]+")
    out: dict[str, float] = {}
    for item in report["results"] + report["kpis"]:
        assert all(plain.fullmatch(a) for a in item["grouping"])
        where = "_x_".join(item["grouping"]) or "overall"
        name = item["metric"]
        for part, field in PARTS:
            if item[field] is not None:
                out[f"{part}/{name}/{where}"] = item[field]
            interval = (item["interval"] or {}).get(part)
            for side, end in zip(("lo", "hi"), interval or (), strict=True):
                if end is not None:  # null: an unbounded end, which MLflow does not hold
                    out[f"{part}_{side}/{name}/{where}"] = end
    for g in report["groups"]:
        labels = [g["group"][a] for a in g["grouping"]]
        assert all(plain.fullmatch(x) for x in labels), labels
        base = f"group/{'_x_'.join(g['grouping'])}/{'_x_'.join(labels)}"
        for model in ("teacher", "student"):
            for rate, value in g[model].items():
                if rate not in COUNTS and value is not None:
                    out[f"{base}/{model}/{rate}"] = value
        out[f"{base}/n"] = g["n"]
        out[f"{base}/mcnemar_p"] = g["mcnemar"]["p_value"]
    out["fairgate.passed"] = float(report["exit_code"] == 0)
    out["fairgate.blocking_checks"] = float(sum(r["blocking"] for r in report["results"]))
    out["fairgate.inconclusive_checks"] = float(sum(r["status"] == "inconclusive"
                                                    for r in report["results"]))
    return out


def status_of(report: dict[str, Any]) -> str:
    """The run status fairgate gives a gate: FAILED when the gate failed."""
    return "FINISHED" if report["exit_code"] == 0 else "FAILED"


def download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(dst)))


# ----------------------------------------------------------------------------- keys and batches


@pytest.mark.parametrize(("raw", "key"), [
    ("Asian-Pac-Islander", "Asian-Pac-Islander"),
    (">50K", "gt_50K"),
    ("<=50K", "le_50K"),
    ("age = 40+", "age_eq_40_plus"),
    ("Hispanic/Latino", "Hispanic_Latino"),
    ("50%", "50_pct"),
    ("(missing)", "missing"),
    ("Ａｓｉａｎ", "Asian"),  # NFKC: full-width letters
    ("Zoë", "Zoë"),  # MLflow's \w is Unicode
    (".", "_"),
    ("..", "__"),
    ("", "_"),
    ("  ", "_"),
])
def test_key_part_is_readable_and_valid(raw: str, key: str) -> None:
    assert key_part(raw) == key
    for validate in (_validate_metric_name, _validate_param_name, _validate_tag_name):
        validate(f"group/race/{key}/student/tpr")  # MLflow's own rule: raises if invalid
    assert valid_key(f"group/race/{key}/n")


def test_key_maker_keeps_colliding_originals_apart() -> None:
    key = KeyMaker()
    a = key("group", "race", ">50K", "n")
    b = key("group", "race", "gt 50K", "n")
    c = key("group", "race", "gt_50K", "n")
    assert a == "group/race/gt_50K/n"
    assert len({a, b, c}) == 3
    assert re.fullmatch(r"group/race/gt_50K/n_[0-9a-f]{8}", b)
    assert key("group", "race", "gt 50K", "n") == b  # stable: same original, same key
    assert key.originals[b] == ("group", "race", "gt 50K", "n")
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    ka, kb = key("group", "g", long_a), key("group", "g", long_b)
    assert ka != kb and max(len(ka), len(kb)) <= MAX_KEY
    for k in (a, b, c, ka, kb):
        _validate_metric_name(k)
        _validate_tag_name(k)


def test_groups_whose_labels_read_alike_keep_their_own_keys(write_policy, tmp_path) -> None:
    """("a|b", "c") and ("a", "b|c") both read ``a|b|c``: still two groups, two keys."""
    rng = np.random.default_rng(2)
    n = 2000
    df = pd.DataFrame({"sex": rng.choice(["a|b", "a"], n), "race": rng.choice(["c", "b|c"], n),
                       "y": rng.integers(0, 2, n), "t": rng.random(n), "s": rng.random(n)})
    data = tmp_path / "alike.parquet"
    df.to_parquet(data)
    report = run_gate(GateRequest(policy=write_policy(SYNTHETIC_POLICY), data=data,
                                  teacher_scores="t", student_scores="s"))
    record = collect(report, env={})
    sizes = {k: v for k, v in record.metrics.items()
             if k.startswith("group/sex_x_race/") and k.endswith("/n")}
    assert sorted(sizes.values()) == sorted(
        float(((df.sex == s) & (df.race == r)).sum()) for s in ("a|b", "a") for r in ("c", "b|c"))
    assert all(valid_key(k) for k in record.metrics)
    assert set(record.key_origins) == set(record.metrics)


def test_batches_stay_within_mlflow_limits() -> None:
    metrics = {f"m{i}": float(i) for i in range(2500)}
    params = {f"p{i}": str(i) for i in range(250)}
    tags = {f"t{i}": str(i) for i in range(130)}
    got = list(batches(metrics, params, tags))
    for b in got:
        assert len(b.metrics) <= MAX_METRICS and len(b.params) <= MAX_PARAMS
        assert len(b.tags) <= MAX_TAGS
        assert len(b.metrics) + len(b.params) + len(b.tags) <= MAX_ENTITIES
    assert dict(m for b in got for m in b.metrics) == metrics
    assert dict(p for b in got for p in b.params) == params
    assert dict(t for b in got for t in b.tags) == tags
    assert len(got) == 3  # 250 params need 3 requests; metrics ride along
    assert len(list(batches({"a": 1.0}, {"b": "1"}, {"c": "1"}))) == 1


def test_ci_provenance_tags() -> None:
    github = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/models",
              "GITHUB_SHA": "abc123", "GITHUB_RUN_ID": "42", "GITHUB_REF": "refs/heads/main",
              "GITHUB_SERVER_URL": "https://github.example.com"}
    assert ci_tags(github) == {
        "ci.provider": "github", "ci.github.repository": "acme/models",
        "ci.github.sha": "abc123", "ci.github.run_id": "42", "ci.github.ref": "refs/heads/main",
        "ci.github.run_url": "https://github.example.com/acme/models/actions/runs/42",
        "mlflow.source.git.repoURL": "https://github.example.com/acme/models",
        "mlflow.source.git.commit": "abc123",
    }
    jenkins = {"JENKINS_URL": "https://ci/", "BUILD_URL": "https://ci/job/gate/7/",
               "GIT_COMMIT": "def456"}
    assert ci_tags(jenkins) == {"ci.provider": "jenkins", "ci.jenkins.build_url":
                                "https://ci/job/gate/7/", "ci.jenkins.git_commit": "def456",
                                "mlflow.source.git.commit": "def456"}
    gitlab = {"GITLAB_CI": "true", "CI_PIPELINE_URL": "https://gl/p/-/pipelines/9",
              "CI_COMMIT_SHA": "0f0f"}
    assert ci_tags(gitlab) == {"ci.provider": "gitlab", "ci.gitlab.pipeline_url":
                               "https://gl/p/-/pipelines/9", "ci.gitlab.commit_sha": "0f0f",
                               "mlflow.source.git.commit": "0f0f"}
    assert ci_tags({"HOME": "/root"}) == {}


@pytest.mark.parametrize("uri", [
    "htp://localhost:5000", "localhost:5000", "127.0.0.1:5000", "http://", "http:///runs",
    "http://host:port", "http://host:99999", "http://local host:5000", "sqlite:mlflow.db",
    "postgresql:/db", "  ",
])
def test_malformed_tracking_uri_is_a_usage_error(uri: str) -> None:
    with pytest.raises(UsageError, match="MLFLOW_TRACKING_URI"):
        check_uri(uri, "MLFLOW_TRACKING_URI")


def test_messages_never_show_a_password() -> None:
    with pytest.raises(UsageError) as e:
        check_uri("https://ci-bot:s3cret@mlflow.example.com:port", "MLFLOW_TRACKING_URI")
    assert "s3cret" not in str(e.value) and "ci-bot:***@mlflow.example.com" in str(e.value)


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:5000", "https://mlflow.example.com/", "sqlite:///mlflow.db",
    "sqlite:////abs/mlflow.db", "postgresql+psycopg2://u:p@db/mlflow", "file:///tmp/mlruns",
    "./mlruns", "/abs/mlruns", "databricks", "databricks://profile",
])
def test_wellformed_tracking_uri(uri: str) -> None:
    assert check_uri(uri, "MLFLOW_TRACKING_URI") == uri.strip()


def test_malformed_uri_exits_2_before_any_work(synthetic, write_policy, run_cli,
                                              monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp://127.0.0.1:5000")
    r = gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic)
    assert r.exit_code == 2
    assert "MLflow tracking URI 'htp://127.0.0.1:5000' (MLFLOW_TRACKING_URI) is malformed: " \
           "unknown scheme 'htp'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not r.out.exists()  # a usage error: nothing was run, nothing written
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    policy = write_policy(with_mlflow(SYNTHETIC_POLICY, tracking_uri="http://host:port"))
    r = gate(run_cli, policy, synthetic)
    assert r.exit_code == 2
    line = len(SYNTHETIC_POLICY.splitlines()) + 2
    assert f"{policy}:{line}: mlflow.tracking_uri) is malformed: the port" in r.stderr
    r = gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic, "--parent-run", "no such/run")
    assert r.exit_code == 2 and "--parent-run: 'no such/run' is not an MLflow run id" in r.stderr


def test_note_stays_within_a_tag(synthetic, write_policy) -> None:
    report = run_gate(GateRequest(policy=write_policy(SYNTHETIC_POLICY), data=synthetic,
                                  teacher_scores="t", student_scores="s"))
    many = dataclasses.replace(report, decision=dataclasses.replace(
        report.decision, results=report.decision.results * 200))
    text = note(many)
    assert len(text) <= MAX_TAG_VALUE
    rows = text.count("\n| ") - 1  # table lines, less the header
    assert f"… {len(many.decision.results) - rows} more checks: see `report.json`" in text
    assert note(report).count("\n| ") - 1 == len(report.decision.results)


# ----------------------------------------------------------------------------- no server needed


def test_default_store_is_mlflow_db_in_working_directory(synthetic, write_policy, run_cli,
                                                         tmp_path) -> None:
    policy = write_policy(with_mlflow(SYNTHETIC_POLICY, timeout=120))
    r = gate(run_cli, policy, synthetic)
    assert r.exit_code == r.report["exit_code"], r.stderr
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fairgate")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == run_id_of(r)
    assert run.data.tags["fairgate.verdict"] == r.report["verdict"]
    assert "report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def assert_not_logged(r: Any, baseline: dict[str, Any], required: bool, why: str) -> None:
    """Same verdict and report as without MLflow; exit 3 only when MLflow is required."""
    assert "MLflow: run NOT logged" in r.stderr and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    report = r.report
    assert report["results"] == baseline["results"] and report["groups"] == baseline["groups"]
    if required:
        assert r.exit_code == 3
        assert "the policy requires MLflow logging (mlflow.required: true)" in r.stderr
    else:
        assert r.exit_code == report["exit_code"]


@pytest.fixture
def baseline(synthetic, write_policy, run_cli) -> dict[str, Any]:
    return dict(gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic, "--no-mlflow").report)


@pytest.mark.parametrize("required", [False, True])
def test_nothing_listening(synthetic, write_policy, run_cli, monkeypatch, baseline,
                           required) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    policy = write_policy(with_mlflow(SYNTHETIC_POLICY, required=required))
    assert_not_logged(gate(run_cli, policy, synthetic), baseline, required,
                      "connection refused")


@pytest.mark.parametrize("required", [False, True])
def test_server_that_never_answers(synthetic, write_policy, run_cli, monkeypatch, baseline,
                                   required) -> None:
    silent = SilentServer()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", silent.uri)
        policy = write_policy(with_mlflow(SYNTHETIC_POLICY, required=required, timeout=2))
        started = time.monotonic()
        r = gate(run_cli, policy, synthetic)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert_not_logged(r, baseline, required, silent.uri)
    # mlflow alone would wait 120 s per try and retry 7 times: the bound is what matters here,
    # so the margin is wide (gate + import of mlflow on a loaded machine)
    assert elapsed < 2 + 30, elapsed


def test_server_answering_503_is_not_retried_for_long(synthetic, write_policy, run_cli,
                                                      monkeypatch, baseline) -> None:
    faulty = FaultyServer()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", faulty.uri)
        r = gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic)
    finally:
        faulty.close()
    assert_not_logged(r, baseline, False, "503")
    assert len(faulty.failed) <= 2  # one retry at most, and Retry-After: 60 was not honoured


def test_commands_that_do_not_log_never_import_mlflow(synthetic, write_policy,
                                                      tmp_path) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    script = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from fairgate.cli import main
        check = ["check", "--policy", {str(policy)!r}, "--data", {str(synthetic)!r},
                 "--teacher-scores", "t", "--student-scores", "s", "--format", "json"]
        for name, args in [("help", ["--help"]), ("validate", ["policy", "validate",
                           {str(policy)!r}]), ("metrics", ["metrics"]),
                           ("no-mlflow", [*check, "--no-mlflow"]), ("logging", check)]:
            r = CliRunner().invoke(main, args)
            assert r.exit_code in (0, 1), (name, r.output)
            print(name, any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # logging fails fast
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # logging too: the MLflow calls run in a child process (integrations/mlflow_worker.py)
    assert out.stdout.split() == ["help", "False", "validate", "False", "metrics", "False",
                                  "no-mlflow", "False", "logging", "False"]


# ----------------------------------------------------------------------------- a real server


def test_run_holds_params_metrics_tags_and_artifacts(server, synthetic, write_policy, run_cli,
                                                     monkeypatch, tmp_path) -> None:
    ci = {"GITHUB_REPOSITORY": "acme/models", "GITHUB_SHA": "abc123", "GITHUB_RUN_ID": "42"}
    for k, v in ci.items():
        monkeypatch.setenv(k, v)
    policy = write_policy(SYNTHETIC_POLICY)
    r = gate(run_cli, policy, synthetic)
    report = r.report
    assert r.exit_code == report["exit_code"], r.stderr
    client = MlflowClient(server.uri)
    run = client.get_run(run_id_of(r))
    assert run.info.status == status_of(report)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "fairgate"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    clock = dt.datetime.fromisoformat(report["run"]["started_at"]).strftime("%H:%M:%S")
    assert run.info.run_name == f"s vs t · policy · {clock}"

    params = run.data.params
    assert params["policy.sha256"] == sha256(policy)
    assert (params["policy.version"], params["model.threshold"]) == ("1", "0.5")
    assert params["groupings"] == "sex,race,sex*race"
    assert (params["statistics.confidence"], params["statistics.resamples"],
            params["statistics.seed"], params["statistics.decide_on"]) == (
        "0.95", "200", "0", "interval")
    assert params["fairgate.version"] == __version__
    assert params["audit.rows"] == "5000"

    assert run.data.metrics == expected_metrics(report)
    # the synthetic audit is too small for max_increase 0.02: inconclusive checks, counted
    assert any(res["status"] == "inconclusive" for res in report["results"])

    tags = run.data.tags
    assert tags["fairgate.verdict"] == report["verdict"]
    assert tags["fairgate.exit_code"] == str(report["exit_code"])
    assert tags["fairgate.data.fingerprint"] == discover(synthetic).fingerprint()
    assert tags["fairgate.engine"] == "local"
    assert tags["fairgate.sha256.policy"] == sha256(policy)
    assert "fairgate.sha256.teacher" not in tags  # score columns: no model file to hash
    assert tags["ci.github.sha"] == tags["mlflow.source.git.commit"] == "abc123"
    assert tags["ci.github.run_url"] == "https://github.com/acme/models/actions/runs/42"
    for res in report["results"]:
        where = "_x_".join(res["grouping"]) or "overall"
        assert tags[f"fairgate.status/{res['check']}/{where}"] == res["status"]
        assert f"| {res['status']} | {res['check']} |" in tags["mlflow.note.content"]
    assert f"**{report['verdict'].upper()}**" in tags["mlflow.note.content"]

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    written = {n.filename for n in reporters().values() if (r.out / n.filename).exists()}
    assert names == written | {"kpis.csv", "metric_keys.json", "policy"}
    got = tmp_path / "got"
    got.mkdir()
    logged_report = json.loads(download(client, run.info.run_id, "report.json", got).read_text())
    local = dict(report)
    assert 0 < local["mlflow"].pop("seconds_after_gate") < 60
    assert local.pop("mlflow") == {  # what MLflow holds, added to the local copy afterwards
        "logged": True, "error": None, "tracking_uri": server.uri,
        "experiment_id": run.info.experiment_id, "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "run_url": f"{server.uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
        "model_version": None, "promotion": None}
    assert logged_report == local

    (dataset,) = run.inputs.dataset_inputs  # the audit set, in the run's Datasets panel
    assert dataset.dataset.name == "audit.parquet"
    fingerprint = discover(synthetic).fingerprint()  # of the listing, not of the bytes
    assert dataset.dataset.digest == fingerprint[:16]
    assert dataset.dataset.source_type == "local"
    assert json.loads(dataset.dataset.source) == {"uri": str(synthetic.resolve())}
    assert json.loads(dataset.dataset.profile) == {"num_rows": 5000, "fingerprint": fingerprint,
                                                   "num_columns": 5}
    assert {c["name"]: c["type"] for c in json.loads(dataset.dataset.schema)["mlflow_colspec"]} \
        == {"sex": "string", "race": "string", "y": "long", "t": "double", "s": "double"}
    assert {(t.key, t.value) for t in dataset.tags} == {("mlflow.data.context", "audit")}
    assert download(client, run.info.run_id, "policy/policy.yaml", got).read_text() == \
        policy.read_text()
    resolved = download(client, run.info.run_id, "policy/resolved.yaml", got)
    assert load_policy(resolved).policy == load_policy(policy).policy

    rows = list(csv.DictReader(io.StringIO(
        download(client, run.info.run_id, "kpis.csv", got).read_text())))
    assert len(rows) == len(report["results"]) + len(report["kpis"])
    for row, item in zip(rows, report["results"] + report["kpis"], strict=True):
        assert row["metric"] == item["metric"]
        assert row["grouping"] == "*".join(item["grouping"])
        assert row["check"] == item.get("check", "")
        for col, val in (("teacher", item["teacher"]), ("student", item["student"]),
                         ("delta", item["delta"]), ("relative_delta", item["relative_delta"])):
            assert (float(row[col]) if row[col] else None) == val
        for part in ("teacher", "student", "delta"):
            lo_hi = (item["interval"] or {}).get(part)
            got_lo_hi = [float(row[f"{part}_lo"]), float(row[f"{part}_hi"])] if row[
                f"{part}_lo"] else None
            assert got_lo_hi == lo_hi


def test_onnx_models_policy_experiment_and_run_name(server, write_policy, run_cli) -> None:
    policy = write_policy(with_mlflow((EXAMPLE / "policy.yaml").read_text(),
                                      experiment="adult-release", run_name="T4 candidate"))
    teacher, student = EXAMPLE / "teacher.onnx", EXAMPLE / "student_distilled_T4.onnx"
    r = run_cli("check", "--policy", policy, "--data", EXAMPLE / "audit.parquet",
                "--teacher", teacher, "--student", student)
    report = r.report
    assert r.exit_code == report["exit_code"], r.stderr
    client = MlflowClient(server.uri)
    run = client.get_run(run_id_of(r))
    assert client.get_experiment(run.info.experiment_id).name == "adult-release"
    assert run.info.run_name == "T4 candidate" and run.info.status == status_of(report)
    assert run.data.tags["fairgate.sha256.teacher"] == sha256(teacher)
    assert run.data.tags["fairgate.sha256.student"] == sha256(student)
    assert run.data.tags["fairgate.data.fingerprint"] == report["inputs"]["data"]["fingerprint"]
    assert report["inputs"]["data"]["fingerprint"] == discover(EXAMPLE / "audit.parquet").fingerprint()
    assert run.data.params["audit.positive_label"] == ">50K"
    assert run.data.metrics == expected_metrics(report)
    assert "group/sex_x_race/Female_x_Asian-Pac-Islander/student/tpr" in run.data.metrics


def test_awkward_group_values_give_unique_valid_keys(server, write_policy, run_cli,
                                                     tmp_path) -> None:
    rng = np.random.default_rng(1)
    n = 3000
    values = [">50K", "gt 50K", "age = 40+", "Hispanic/Latino", ".", "Asian-Pac-Islander|Female"]
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "race": rng.choice(values, n),
                       "y": rng.integers(0, 2, n), "t": rng.random(n), "s": rng.random(n)})
    data = tmp_path / "awkward.parquet"
    df.to_parquet(data)
    r = gate(run_cli, write_policy(SYNTHETIC_POLICY), data)
    report = r.report
    client = MlflowClient(server.uri)
    run = client.get_run(run_id_of(r))
    assert run.info.status == status_of(report)  # the server accepted every key
    origins = json.loads(download(client, run.info.run_id, "metric_keys.json",
                                  tmp_path).read_text())
    groups = {(g["label"], "*".join(g["grouping"])): g for g in report["groups"]}
    n_values = 0
    for g in report["groups"]:
        n_values += 2 + sum(v is not None for m in ("teacher", "student")
                            for k, v in g[m].items() if k not in COUNTS)
    unique = {(i["metric"], tuple(i["grouping"]), i.get("alpha")): i
              for i in report["results"] + report["kpis"]}
    for item in unique.values():
        n_values += sum(item[f] is not None for _, f in PARTS)
        n_values += sum(end is not None for k, v in (item["interval"] or {}).items()
                        if k != "defined_share" and v is not None for end in v)  # ±inf: null
    n_values += 3  # fairgate.passed, fairgate.blocking_checks, fairgate.inconclusive_checks
    assert len(run.data.metrics) == n_values  # nothing overwrote anything
    for key, value in run.data.metrics.items():
        assert valid_key(key)
        origin = origins[key]
        if key.startswith("fairgate."):
            continue
        if origin[0] == "group":
            _, grouping, label, *rest = origin
            g = groups[(label, grouping)]
            want = g[rest[0]][rest[1]] if len(rest) == 2 else (
                g["n"] if rest[0] == "n" else g["mcnemar"]["p_value"])
            assert value == want, key
    for label in (">50K", "gt 50K"):
        assert groups[(label, "race")]["n"] > 0
    clean = run.data.metrics["group/race/gt_50K/n"]
    hashed = [k for k in run.data.metrics if re.fullmatch(r"group/race/gt_50K_[0-9a-f]{8}/n", k)]
    assert len(hashed) == 1
    assert {clean, run.data.metrics[hashed[0]]} == {
        groups[(">50K", "race")]["n"], groups[("gt 50K", "race")]["n"]}
    assert run.data.metrics["group/race/age_eq_40_plus/n"] == groups[("age = 40+", "race")]["n"]
    assert run.data.metrics["group/race/Hispanic_Latino/n"] == \
        groups[("Hispanic/Latino", "race")]["n"]
    assert run.data.metrics["group/race/_/n"] == groups[(".", "race")]["n"]


def test_nested_runs_and_experiment_from_env(server, synthetic, write_policy, run_cli,
                                             monkeypatch) -> None:
    client = MlflowClient(server.uri)
    pipeline = client.create_experiment("training-pipeline")
    parent = client.create_run(pipeline).info.run_id
    policy = write_policy(SYNTHETIC_POLICY)
    by_option = client.get_run(run_id_of(gate(run_cli, policy, synthetic, "--parent-run",
                                              parent)))
    monkeypatch.setenv("MLFLOW_RUN_ID", parent)
    by_env = client.get_run(run_id_of(gate(run_cli, policy, synthetic)))
    for child in (by_option, by_env):
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert child.info.experiment_id == pipeline  # nesting shows within one experiment
    monkeypatch.delenv("MLFLOW_RUN_ID")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    run = client.get_run(run_id_of(gate(run_cli, policy, synthetic)))
    assert client.get_experiment(run.info.experiment_id).name == "from-env"
    assert "mlflow.parentRunId" not in run.data.tags
    r = gate(run_cli, policy, synthetic, "--parent-run", "0" * 32)
    assert r.exit_code == r.report["exit_code"]
    assert f"run NOT logged to {server.uri}: parent run {'0' * 32} not found" in r.stderr


def test_run_failing_midway_is_marked_failed(server, synthetic, write_policy, run_cli,
                                             monkeypatch, baseline) -> None:
    faulty = FaultyServer(upstream=server.uri, fail=r"/mlflow-artifacts/")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", faulty.uri)
        r = gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic)
    finally:
        faulty.close()
    assert_not_logged(r, baseline, False, "503")
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("fairgate")
    (run,) = client.search_runs([exp.experiment_id], "tags.`fairgate.logging_error` != ''")
    assert run.info.status == "FAILED"
    assert "503" in run.data.tags["fairgate.logging_error"]
    assert run.data.tags["fairgate.verdict"] == baseline["verdict"]


def test_slow_server_leaves_an_incomplete_run_marked_failed(server, synthetic, write_policy,
                                                            run_cli, monkeypatch,
                                                            baseline) -> None:
    slow = FaultyServer(upstream=server.uri, fail="$^", slow=r"/runs/log-batch", delay=4)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", slow.uri)
        r = gate(run_cli, write_policy(with_mlflow(SYNTHETIC_POLICY, timeout=2)), synthetic)
        # either the request timed out in time to say so, or the wait did (2 s)
        assert_not_logged(r, baseline, False, "MLflow: run NOT logged")
        assert ("the server accepted the connection but did not answer in time" in r.stderr
                or "did not finish within 2 s (mlflow.timeout)" in r.stderr), r.stderr
        run_id = re.search(r"run ([0-9a-f]{32}) was started there and is (incomplete|marked "
                           r"FAILED)", r.stderr)
        assert run_id, r.stderr
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + 30  # the abandoned worker marks it once the call returns
        while client.get_run(run_id.group(1)).info.status == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        run = client.get_run(run_id.group(1))
        assert run.info.status == "FAILED"
        assert run.data.tags["fairgate.logging_error"] in (  # whichever came first
            "stopped at mlflow.timeout",
            "the server accepted the connection but did not answer in time")
    finally:
        slow.close()


@pytest.mark.parametrize("required", [False, True])
def test_server_killed_mid_suite(servers, synthetic, write_policy, run_cli, monkeypatch,
                                 baseline, required) -> None:
    spare = servers["spare"]
    if spare.proc is not None and spare.proc.poll() is None:  # first run: alive, then killed
        spare.wait_ready()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", spare.uri)
        ok = gate(run_cli, write_policy(SYNTHETIC_POLICY), synthetic)
        run_id_of(ok)
        spare.kill()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", spare.uri)
    policy = write_policy(with_mlflow(SYNTHETIC_POLICY, required=required))
    assert_not_logged(gate(run_cli, policy, synthetic), baseline, required,
                      "connection refused")


