"""MLflow as the release record (issue 14), against a real ``mlflow server`` with a registry.

The fixture server (sqlite backend, local artifacts, on 127.0.0.1) holds the Adult example's
committed ONNX models, logged with ``mlflow.onnx.log_model`` and registered as versions of
``credit`` (1 teacher, 2 int8 student: passes, 3 pruned student: fails), an sklearn model
(a flavor fairgate does not read), and two run folders it must refuse. Gates are run through
the CLI and everything is read back with MlflowClient: the version tags, the alias, the run,
its dataset and model inputs, and report.json. Each test moves aliases of its own, so the
order of tests does not matter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper, numpy_helper

with warnings.catch_warnings():  # mlflow.pyfunc warns about its own type hints on import
    warnings.simplefilter("ignore", UserWarning)
    import mlflow.onnx
    import mlflow.pyfunc
    import mlflow.sklearn

from fairgate.errors import UsageError
from fairgate.inputs.data_source import discover
from fairgate.inputs.sources import model_source
from fairgate.integrations.mlflow_worker import Bounds, MlflowStore, RestStore, Worker
from tests.conftest import EXAMPLE
from tests.mlflow_server import FaultyServer, MlflowServer, free_port
from tests.test_github import parse_file_command

POLICY = (EXAMPLE / "policy.yaml").read_text().replace("resamples: 2000", "resamples: 200")
DATA = EXAMPLE / "audit.parquet"
MODEL = "credit"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "GITHUB_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("registry")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def boot_early(request: pytest.FixtureRequest) -> None:
    """The server boots while the tests that need none run."""
    if any("registry" in item.fixturenames for item in request.session.items
           if getattr(item, "module", None) is request.module):
        request.getfixturevalue("booted")


def _outside_data_model(folder: Path) -> None:
    """An MLflow-looking ONNX model folder whose weights point outside it."""
    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.external_data.add(key="location", value="../outside.data")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
                              [w])
    folder.mkdir()
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    (folder / "MLmodel").write_text("flavors:\n  onnx: {data: model.onnx, onnx_version: 1.15}\n")


@pytest.fixture(scope="module")
def registry(booted: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Models logged and registered the way a training pipeline does it."""
    from sklearn.linear_model import LogisticRegression

    server = booted.wait_ready()
    client = MlflowClient(server.uri)
    mlflow.set_tracking_uri(server.uri)
    try:
        exp = client.create_experiment("training")
        ids: dict[str, Any] = {}
        with mlflow.start_run(experiment_id=exp) as run:
            for name in ("teacher", "student_int8", "student_pruned"):
                info = mlflow.onnx.log_model(onnx.load(str(EXAMPLE / f"{name}.onnx")), name=name,
                                             pip_requirements=[])
                mv = mlflow.register_model(info.model_uri, MODEL, await_registration_for=0)
                ids[name] = (info.model_id, mv.version)
            ids["run"] = run.info.run_id
            tmp = tmp_path_factory.mktemp("bad-models")
            _outside_data_model(tmp / "outside")
            client.log_artifacts(run.info.run_id, str(tmp / "outside"), "outside")
            (tmp / "two").mkdir()
            for n in ("a.onnx", "b.onnx"):
                shutil.copyfile(EXAMPLE / "teacher.onnx", tmp / "two" / n)
            client.log_artifacts(run.info.run_id, str(tmp / "two"), "two")
        with mlflow.start_run(experiment_id=exp):
            sk = LogisticRegression().fit(np.arange(20.0).reshape(10, 2), np.arange(10) % 2)
            info = mlflow.sklearn.log_model(sk, name="model", pip_requirements=[])
            mlflow.register_model(info.model_uri, "credit-sklearn", await_registration_for=0)
    finally:
        mlflow.set_tracking_uri(None)
    assert [str(ids[n][1]) for n in ("teacher", "student_int8", "student_pruned")] == ["1", "2", "3"]
    return {"uri": server.uri, "server": server, "client": client, **ids}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def gate(run_cli: Any, policy: Path, teacher: str, student: str, *extra: str) -> Any:
    return run_cli("check", "--policy", policy, "--data", DATA, "--teacher", teacher,
                   "--student", student, *extra)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- no server


@pytest.mark.parametrize(("given", "kind", "fields"), [
    ("models:/credit/7", "version", {"name": "credit", "version": "7"}),
    ("models:/credit/007", "version", {"name": "credit", "version": "7"}),
    ("models:/credit@champion", "alias", {"name": "credit", "alias": "champion"}),
    ("models:/team.credit@a@b", "alias", {"name": "team.credit@a", "alias": "b"}),
    ("models:/m-1b7f3fd609ab4e728af65f43d64d36f3", "logged_model",
     {"model_id": "m-1b7f3fd609ab4e728af65f43d64d36f3"}),
    ("runs:/48c1090096bc48b299267bee4adea07f/model", "run",
     {"run_id": "48c1090096bc48b299267bee4adea07f", "artifact_path": "model"}),
    ("student.onnx", "file", {"path": Path("student.onnx")}),
    ("C:/models/student.onnx", "file", {"path": Path("C:/models/student.onnx")}),
    ("odd:name.onnx", "file", {"path": Path("odd:name.onnx")}),
])
def test_model_sources_parse(given: str, kind: str, fields: dict[str, Any]) -> None:
    source = model_source(given)
    assert source.kind == kind and source.given == given
    for k, v in fields.items():
        assert getattr(source, k) == v
    assert source.registered == (kind in ("version", "alias"))
    assert model_source(Path("models:/x/1")).kind == "file"  # a Path is always a file
    assert model_source(source) is source


@pytest.mark.parametrize(("given", "message"), [
    ("models:/credit/latest", "'latest' is a stage or 'latest', which can move while the gate "
     "runs; name a version (models:/credit/7) or an alias (models:/credit@champion)"),
    ("models:/credit/Production", "'Production' is a stage or 'latest'"),
    ("models:/a/b/c", "expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/MODEL_ID"),
    ("models:/", "expected models:/NAME/VERSION"),
    ("models:/credit@", "expected models:/NAME@ALIAS"),
    ("models://profile@databricks/credit/1", "expected models:/NAME/VERSION"),
    ("runs:/abc", "name the model's artifact path in the run (runs:/RUN_ID/model)"),
    ("runs:/abc/../x", "name the model's artifact path"),
    ("runs:/a b/model", "'a b' is not an MLflow run id"),
    ("s3://bucket/model.onnx", "s3: URIs are not read by fairgate; give an .onnx file, "
     "models:/NAME/VERSION"),
    ("models:/credit\n/1", "contains a control character"),
])
def test_malformed_model_uris_are_usage_errors(given: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        model_source(given, "--student")
    assert str(e.value).startswith(f"--student {given!r}: ") and message in str(e.value)


def test_promote_is_checked_before_any_work(run_cli, policy: Path, tmp_path: Path,
                                            monkeypatch) -> None:
    cases = [
        (["--promote", "champion"], EXAMPLE / "student_int8.onnx",
         "--promote champion: the student must be a registered model version"),
        (["--promote", "champion", "--no-mlflow"], "models:/credit/2",
         "--promote moves an MLflow registry alias, which needs the run logged to MLflow"),
        (["--promote", "v3"], "models:/credit/2", "an alias is letters, digits, _ and -"),
        (["--promote", "latest"], "models:/credit/2", "MLflow reserves 'latest'"),
        (["--promote", "a b"], "models:/credit/2", "an alias is letters, digits"),
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # never asked
    for extra, student, message in cases:
        r = gate(run_cli, policy, str(EXAMPLE / "teacher.onnx"), str(student), *extra)
        assert r.exit_code == 2 and message in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.stderr and not r.out.exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_uri_needs_a_store(run_cli, policy: Path) -> None:
    r = gate(run_cli, policy, str(EXAMPLE / "teacher.onnx"), "models:/credit/2", "--no-mlflow")
    assert r.exit_code == 3
    assert ("student model models:/credit/2: no MLflow tracking server is set "
            "(MLFLOW_TRACKING_URI, or mlflow.tracking_uri in the policy) and MLflow's default "
            "store ./mlflow.db does not exist here") in r.stderr
    assert not Path("mlflow.db").exists()  # reading a model never creates a store


# ----------------------------------------------------------------------------- the release flow


def test_gate_alias_against_version_stamps_and_promotes_on_pass(registry, run_cli, policy,
                                                                monkeypatch, tmp_path) -> None:
    client: MlflowClient = registry["client"]
    client.set_registered_model_alias(MODEL, "prod-a", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    outputs, summary = tmp_path / "github-output", tmp_path / "github-summary"
    for name, value in (("GITHUB_ACTIONS", "true"), ("GITHUB_OUTPUT", str(outputs)),
                        ("GITHUB_STEP_SUMMARY", str(summary))):
        monkeypatch.setenv(name, value)
    r = gate(run_cli, policy, f"models:/{MODEL}@prod-a", f"models:/{MODEL}/2", "--promote",
             "prod-a")
    report = r.report
    assert r.exit_code == 0 == report["exit_code"], r.stderr
    assert "MLflow: promoted credit@prod-a to v2 (it pointed to v1)" in r.stdout
    assert client.get_model_version_by_alias(MODEL, "prod-a").version == "2"
    steps = parse_file_command(outputs.read_text())  # the action's step outputs
    assert (steps["promoted"], steps["mlflow-run-id"]) == ("true", report["mlflow"]["run_id"])
    # markdown: a zero-width space after "@" so the alias can mention nobody (safe.markdown)
    assert "promoted credit@&#8203;prod-a to v2 (it pointed to v1)" in summary.read_text()
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name)

    # what was gated, exactly: name, version, alias, source run and every file's sha256
    teacher, student = (report["inputs"][m]["source"] for m in ("teacher", "student"))
    assert (teacher["registered_model"], teacher["version"], teacher["alias"]) == (MODEL, "1",
                                                                                   "prod-a")
    assert (student["uri"], student["version"], student["alias"]) == ("models:/credit/2", "2",
                                                                       None)
    assert student["run_id"] == registry["run"]
    assert student["model_id"] == registry["student_int8"][0]
    assert student["flavors"] == ["onnx", "python_function"] and student["model_file"] == "model.onnx"
    got = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/2", tracking_uri=registry["uri"]))
    assert {f["path"]: f["sha256"] for f in student["files"]} == {
        p.relative_to(got).as_posix(): sha256(p) for p in got.rglob("*") if p.is_file()}
    assert any(f["path"].endswith(".data") for f in student["files"])  # the weights, hashed
    assert report["inputs"]["student"]["sha256"] == sha256(got / "model.onnx")
    assert report["inputs"]["student"]["path"] == "models:/credit/2"

    # the run: findable name, sortable verdict, linked to the models and the audit set
    logged = report["mlflow"]
    run = client.get_run(logged["run_id"])
    assert run.info.run_name.startswith("credit/2 vs credit@prod-a (v1) · policy · ")
    assert run.info.status == "FINISHED" and run.data.metrics["fairgate.passed"] == 1.0
    assert {m.model_id for m in run.inputs.model_inputs} == {registry["teacher"][0],
                                                              registry["student_int8"][0]}
    assert run.inputs.dataset_inputs[0].dataset.digest == discover(DATA).fingerprint()[:16]
    assert run.data.tags["fairgate.student.uri"] == "models:/credit/2"
    assert run.data.tags["fairgate.student.source_run"] == registry["run"]
    assert run.data.tags["fairgate.promotion.status"] == "promoted"
    assert run.data.tags["fairgate.promotion.previous_version"] == "1"

    # the verdict, stamped on what was judged, pointing back at the run
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["fairgate.verdict"] == "pass" and tags["fairgate.passed"] == "true"
    assert tags["fairgate.inconclusive_checks"] == str(sum(
        x["status"] == "inconclusive" for x in report["results"]))
    assert tags["fairgate.run_id"] == run.info.run_id
    assert tags["fairgate.run_url"] == logged["run_url"]
    assert tags["fairgate.policy_sha256"] == sha256(policy)
    assert tags["fairgate.data_fingerprint"] == discover(DATA).fingerprint()
    assert tags["fairgate.checked_at"] == report["run"]["started_at"]
    assert tags["fairgate.teacher"] == f"models:/{MODEL}@prod-a"
    assert tags["fairgate.teacher_version"] == f"{MODEL}/1"
    assert logged["model_version"] == {"name": MODEL, "version": "2", "tags": tags}
    assert logged["promotion"] == {"alias": "prod-a", "name": MODEL, "version": "2",
                                   "previous_version": "1", "status": "promoted",
                                   "reason": None}

    # again, now that prod-a holds v2: nothing to move (and the teacher is the student)
    r = gate(run_cli, policy, f"models:/{MODEL}@prod-a", f"models:/{MODEL}/2", "--promote",
             "prod-a")
    assert r.exit_code == 0, r.stderr
    assert "MLflow: credit@prod-a already points to v2" in r.stdout
    assert r.report["warnings"] and r.report["mlflow"]["promotion"]["status"] == "unchanged"


@pytest.mark.parametrize("client_kind", ["rest", "mlflow"])
def test_failed_gate_is_stamped_and_never_promoted(registry, run_cli, policy, monkeypatch,
                                                   client_kind: str) -> None:
    """Also through mlflow's own client (what a local store, or a plugin, uses)."""
    client: MlflowClient = registry["client"]
    client.set_registered_model_alias(MODEL, "prod-b", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    if client_kind == "mlflow":
        monkeypatch.setenv("FAIRGATE_MLFLOW_CLIENT", "mlflow")
    r = gate(run_cli, policy, f"models:/{MODEL}@prod-b", f"models:/{MODEL}/3", "--promote",
             "prod-b")
    report = r.report
    assert r.exit_code == 1 == report["exit_code"], r.stderr  # the gate's verdict, not 3
    assert "MLflow: credit@prod-b not moved: the gate did not pass (verdict fail)" in r.stdout
    assert client.get_model_version_by_alias(MODEL, "prod-b").version == "1"
    run = client.get_run(report["mlflow"]["run_id"])
    assert run.info.status == "FAILED"  # a failed gate: red in the UI, not "Finished"
    assert run.data.metrics["fairgate.passed"] == 0.0
    assert "fairgate.logging_error" not in run.data.tags  # FAILED by verdict, not by logging
    assert "fairgate.promotion.status" not in run.data.tags
    tags = client.get_model_version(MODEL, "3").tags
    assert (tags["fairgate.verdict"], tags["fairgate.passed"]) == ("fail", "false")
    assert tags["fairgate.run_id"] == run.info.run_id
    assert report["mlflow"]["promotion"] is None
    assert {m.model_id for m in run.inputs.model_inputs} == {registry["teacher"][0],
                                                              registry["student_pruned"][0]}
    assert run.inputs.dataset_inputs[0].dataset.name == "audit.parquet"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.json", "kpis.csv"}


def test_models_the_gate_must_refuse(registry, run_cli, policy, monkeypatch) -> None:
    """Exit 3 naming the URI and what was found; nothing written, nothing promoted."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    run_id = registry["run"]
    teacher = f"models:/{MODEL}/1"
    cases = [
        ("models:/credit-sklearn/1", "student model models:/credit-sklearn/1: not an ONNX model: "
         "its MLmodel has the flavors python_function, sklearn, and fairgate reads the onnx "
         "flavor only"),
        (f"models:/{MODEL}/99", f"student model models:/{MODEL}/99: RESOURCE_DOES_NOT_EXIST: "
         f"Model Version (name={MODEL}, version=99) not found (MLflow at {registry['uri']})"),
        (f"models:/{MODEL}@nope", f"student model models:/{MODEL}@nope: INVALID_PARAMETER_VALUE: "
         "Registered model alias nope not found."),
        ("models:/m-00000000000000000000000000000000", "Logged model with ID "
         "'m-00000000000000000000000000000000' not found"),
        (f"runs:/{run_id}/outside", f"student model runs:/{run_id}/outside (model.onnx): tensor "
         "'w' points to external data '../outside.data' outside the model's folder; refusing "
         "to read it"),
        (f"runs:/{run_id}/two", f"student model runs:/{run_id}/two: ambiguous: no MLmodel and 2 "
         ".onnx files (a.onnx, b.onnx); point the URI at one of them"),
        (f"runs:/{run_id}/nothing", f"student model runs:/{run_id}/nothing: "),
    ]
    versions = registry["client"].search_model_versions(f"name='{MODEL}'")
    before = {v.version: (dict(v.tags), sorted(v.aliases)) for v in versions}
    for student, message in cases:
        # URIs resolve with or without logging; --promote needs a registered student
        extras = [["--no-mlflow"]] + ([["--promote", "prod-c"]]
                                      if model_source(student).registered else [])
        for extra in extras:
            r = gate(run_cli, policy, teacher, student, *extra)
            assert r.exit_code == 3 and message in r.stderr, (student, extra, r.stderr)
            assert r.stderr.startswith("fairgate: error: ") and "Traceback" not in r.stderr
            assert not r.out.exists()
    after = registry["client"].search_model_versions(f"name='{MODEL}'")
    assert {v.version: (dict(v.tags), sorted(v.aliases)) for v in after} == before


def test_unreachable_registry_is_exit_3_with_the_uri(run_cli, policy, monkeypatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = gate(run_cli, policy, "models:/credit@champion", "models:/credit/2", "--no-mlflow")
    assert r.exit_code == 3, r.stderr
    assert (f"fairgate: error: teacher model models:/credit@champion: the MLflow server at {uri} "
            "cannot be reached (connection refused (is the tracking server running?))") in r.stderr
    assert not r.out.exists()


@pytest.mark.parametrize("gone", ["writes", "all"])
def test_registry_that_goes_away_before_promotion(registry, run_cli, policy, monkeypatch,
                                                  gone: str) -> None:
    """After the download, the registry refuses writes (or the server goes away): the run
    is marked, nothing is promoted, and --promote makes it exit 3."""
    client: MlflowClient = registry["client"]
    alias = f"prod-d-{gone}"
    client.set_registered_model_alias(MODEL, alias, "1")
    proxy = (FaultyServer(registry["uri"], fail=r"^POST .*(model-versions/set-tag|registered-models/alias)")
             if gone == "writes" else FaultyServer(registry["uri"], fail="$^",
                                                   fail_after=r"/runs/create"))
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.uri)
        r = gate(run_cli, policy, f"models:/{MODEL}@{alias}", f"models:/{MODEL}/2",
                 "--promote", alias)
    finally:
        proxy.close()
    assert r.exit_code == 3, r.stderr
    assert f"fairgate: error: --promote {alias}: NOT promoted: the run was not logged (" \
           in r.stderr
    assert f"credit@{alias} was not moved; the gate's own verdict was pass" in r.stderr
    assert r.report["verdict"] == "pass" and r.report["mlflow"]["logged"] is False
    assert client.get_model_version_by_alias(MODEL, alias).version == "1"
    assert not [x for x in proxy.seen if "registered-models/alias" in x and x.startswith("POST")]
    if gone == "writes":  # the run was made, then marked as not complete
        run = client.get_run(r.report["mlflow"]["run_id"])
        assert run.info.status == "FAILED" and "503" in run.data.tags["fairgate.logging_error"]


def test_promotion_refused_when_the_alias_moved_during_the_gate(registry) -> None:
    """The teacher was models:/credit@prod-e = v1; someone moved prod-e to v3 meanwhile: the
    student was never compared with v3, so it is not promoted over it."""
    client: MlflowClient = registry["client"]
    client.set_registered_model_alias(MODEL, "prod-e", "3")
    for store in (RestStore(registry["uri"], {}, Bounds()), MlflowStore(registry["uri"], Bounds())):
        events: list[dict[str, Any]] = []
        worker = Worker({"tracking_uri": registry["uri"], "experiment": "x", "timeout": 10},
                        events.append, store)
        out = worker.promote({"name": MODEL, "alias": "prod-e", "version": "2", "expect": "1"})
        assert out["status"] == "refused" and out["previous_version"] == "3"
        assert "alias prod-e moved from v1 to v3 while the gate ran" in out["reason"]
        assert client.get_model_version_by_alias(MODEL, "prod-e").version == "3" and not events
        assert worker.promote({"name": MODEL, "alias": "prod-e", "version": "3"})["status"] == \
            "unchanged"
        assert worker.promote({"name": MODEL, "alias": "nobody-yet", "version": "2"}) == {
            "alias": "nobody-yet", "name": MODEL, "version": "2", "previous_version": None,
            "status": "promoted", "reason": None}
        client.delete_registered_model_alias(MODEL, "nobody-yet")


def test_compare_candidates_from_the_registry(registry, run_cli, policy, monkeypatch,
                                              tmp_path) -> None:
    client: MlflowClient = registry["client"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    out = tmp_path / "cmp"
    r = run_cli("compare", "--policy", policy, "--data", DATA, "--teacher", f"models:/{MODEL}/1",
                "--candidate", f"models:/{MODEL}/2", "--candidate", f"models:/{MODEL}/3",
                "--candidate", f"models:/{registry['student_int8'][0]}", "--out", out)
    summary = json.loads((out / "compare.json").read_text())
    assert r.exit_code == 0 == summary["exit_code"], r.stderr
    names = [c["name"] for c in summary["candidates"]]
    assert sorted(names) == sorted(["credit_2", "credit_3", registry["student_int8"][0]])
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert parent.data.tags["fairgate.kind"] == "compare"
    assert parent.data.tags["fairgate.data.fingerprint"] == discover(DATA).fingerprint()
    assert parent.data.tags["fairgate.engine"] == "local"
    assert {m.model_id for m in parent.inputs.model_inputs} == {
        registry[n][0] for n in ("teacher", "student_int8", "student_pruned")}
    for cand in summary["candidates"]:
        report = json.loads((out / cand["name"] / "report.json").read_text())
        run = client.get_run(report["mlflow"]["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        version = report["inputs"]["student"]["source"].get("version")
        if version is not None:  # registered candidates carry their own verdict
            assert client.get_model_version(MODEL, version).tags["fairgate.run_id"] == \
                run.info.run_id
            assert report["mlflow"]["model_version"]["tags"]["fairgate.verdict"] == cand["verdict"]
        else:
            assert report["mlflow"]["model_version"] is None


def test_run_and_logged_model_uris_with_no_mlflow(registry, run_cli, policy, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    teacher = f"runs:/{registry['run']}/teacher"
    student = f"models:/{registry['student_int8'][0]}"
    r = gate(run_cli, policy, teacher, student, "--no-mlflow")
    assert r.exit_code == 0, r.stderr
    t, s = (r.report["inputs"][m]["source"] for m in ("teacher", "student"))
    assert (t["kind"], t["run_id"], t["artifact_path"]) == ("run", registry["run"], "teacher")
    assert (s["kind"], s["model_id"], s["run_id"]) == ("logged_model", registry["student_int8"][0],
                                                       registry["run"])
    assert "mlflow" not in r.report  # nothing was logged
    assert registry["client"].get_experiment_by_name("fairgate") is None or not [
        run for run in registry["client"].search_runs(
            [registry["client"].get_experiment_by_name("fairgate").experiment_id])
        if run.data.tags.get("fairgate.teacher.uri") == teacher]
