"""MLflow: one run per gate, everything needed to understand and reproduce the verdict.

mlflow is imported here only, and only when a run is logged, so the CLI starts fast.
Logging never changes the verdict: an unreachable, slow or failing server is reported,
the wait is bounded (``mlflow.timeout``), and only ``mlflow.required: true`` turns a
logging failure into exit 3.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairgate.errors import UsageError
from fairgate.outcome import GateReport

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_KEY = 250
_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
CI_ENV = {
    "GITHUB_REPOSITORY": "ci.github.repository",
    "GITHUB_SHA": "ci.github.sha",
    "GITHUB_RUN_ID": "ci.github.run_id",
    "GITHUB_REF": "ci.github.ref",
    "BUILD_URL": "ci.jenkins.build_url",
    "GIT_COMMIT": "ci.git_commit",
    "CI_PIPELINE_URL": "ci.gitlab.pipeline_url",
    "CI_COMMIT_SHA": "ci.gitlab.commit_sha",
}


@dataclass(frozen=True)
class Logged:
    ok: bool
    message: str
    error: str | None = None
    run_id: str | None = None


class KeyMaker:
    """Readable, valid, unique MLflow keys from arbitrary group values.

    MLflow allows letters, digits, ``_ - . /`` and space. Other characters become ``_``;
    when two different originals would meet in one key, the later one gets a short hash
    of its original so no value silently overwrites another.
    """

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, raw: str) -> str:
        key = _BAD.sub("_", raw).strip() or "_"
        key = re.sub(r"/{2,}", "/", key)
        if len(key) > MAX_KEY or (key in self._seen and self._seen[key] != raw):
            digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
            key = f"{key[: MAX_KEY - 9]}_{digest}"
        self._seen[key] = raw
        return key


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _num(x: float | None) -> float | None:
    return None if x is None or x != x else float(x)


def collect(report: GateReport) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """The metrics, params and tags of a gate run (pure; tested without a server)."""
    key = KeyMaker()
    p = report.policy.policy
    metrics: dict[str, float] = {}

    def put(name: str, value: float | None) -> None:
        v = _num(value)
        if v is not None:
            metrics[key(name)] = v

    seen_values = {}
    for r in report.decision.results:
        seen_values[r.key] = r.value
    for v in report.kpis:
        seen_values.setdefault(v.key, v)
    for k, v in seen_values.items():
        where = f"{k.metric}/{k.grouping}" if k.grouping else f"{k.metric}/overall"
        for part in ("teacher", "student", "delta"):
            put(f"{part}/{where}", getattr(v, part))
            interval = getattr(v, f"{part}_interval")
            if interval is not None:
                put(f"{part}_lo/{where}", interval.lo)
                put(f"{part}_hi/{where}", interval.hi)
    for g in report.groups:
        label = "|".join(g.group)
        for model, rates in (("teacher", g.teacher_rates), ("student", g.student_rates)):
            for rate in ("selection_rate", "tpr", "fpr", "accuracy", "precision"):
                put(f"group/{g.grouping}/{label}/{model}/{rate}", rates[rate])
        put(f"group/{g.grouping}/{label}/n", g.n)
    st = p.statistics
    params = {
        "fairgate_version": report.version,
        "policy.version": str(p.version),
        "policy.sha256": report.policy.sha256,
        "threshold": str(p.model.threshold),
        "groupings": ",".join(g.name for g in report.groupings),
        "min_group_size": str(p.audit.min_group_size),
        "statistics.confidence": str(st.confidence),
        "statistics.resamples": str(st.resamples),
        "statistics.seed": str(st.seed),
        "statistics.decide_on": st.decide_on,
        "audit.rows": str(report.inputs["data"]["rows"]),
    }
    for role in ("teacher", "student"):
        out = report.inputs[role].get("output", {})
        params[f"{role}.output"] = str(out.get("how", ""))[:500]
    tags = {
        "fairgate.verdict": report.verdict,
        "fairgate.exit_code": str(report.decision.exit_code),
        "fairgate.sha256.policy": report.policy.sha256,
        "fairgate.sha256.data": report.inputs["data"]["sha256"],
        "mlflow.note.content": _note(report),
    }
    for role in ("teacher", "student"):
        if "sha256" in report.inputs[role]:
            tags[f"fairgate.sha256.{role}"] = report.inputs[role]["sha256"]
    for env, tag in CI_ENV.items():
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    if os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        tags["ci.github.run_url"] = (f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/"
                                     f"{os.environ['GITHUB_RUN_ID']}")
    return metrics, params, tags


def _note(report: GateReport) -> str:
    d = report.decision
    lines = [f"**fairgate verdict: {report.verdict.upper()}** ({len(d.results)} checks)", "",
             "| status | check | grouping | teacher | student | change |", "|---|---|---|---|---|---|"]
    for r in d.results[:50]:
        v = r.value

        def f(x: float, signed: bool = False) -> str:
            return "undef" if x != x else (f"{x:+.4f}" if signed else f"{x:.4f}")

        lines.append(f"| {r.status.value} | {r.check.id} | {r.key.grouping or 'overall'} | "
                     f"{f(v.teacher)} | {f(v.student)} | {f(v.delta, True)} |")
    return "\n".join(lines)[:7900]


def _run_name(report: GateReport) -> str:
    def name(role: str) -> str:
        info = report.inputs[role]
        return Path(info["path"]).stem if info.get("path") else str(info.get("column"))

    return f"{name('student')} vs {name('teacher')}"


def _validate_uri(uri: str) -> None:
    if "://" not in uri and not uri.startswith(("file:", "databricks")) and not os.path.isabs(uri):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", uri):
            raise UsageError(f"MLflow tracking URI {uri!r} is malformed")
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        parsed = urlparse(uri)
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise UsageError(f"MLflow tracking URI {uri!r} has an invalid port") from None
        if not parsed.hostname:
            raise UsageError(f"MLflow tracking URI {uri!r} has no host")


def _log(report: GateReport, out: Path, parent_run: str | None, uri: str | None,
         timeout: float, result: dict[str, Any]) -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    p = report.policy.policy.mlflow
    client = MlflowClient(tracking_uri=uri) if uri else MlflowClient()
    result["uri"] = client.tracking_uri if hasattr(client, "tracking_uri") else uri
    name = p.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fairgate"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
    metrics, params, tags = collect(report)
    parent = parent_run or os.environ.get("MLFLOW_RUN_ID")
    run_tags = {"mlflow.parentRunId": parent} if parent else {}
    run = client.create_run(exp_id, run_name=p.run_name or _run_name(report), tags=run_tags)
    run_id = run.info.run_id
    result["run_id"] = run_id
    now = int(time.time() * 1000)
    for chunk in _chunks([Param(k, v) for k, v in params.items()], MAX_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], MAX_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks([Metric(k, v, now, 0) for k, v in metrics.items()], MAX_METRICS):
        client.log_batch(run_id, metrics=chunk)
    for path in sorted(out.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            client.log_artifact(run_id, str(path))
    client.log_text(run_id, report.policy.text, f"policy/{report.policy.path.name}")
    client.set_terminated(run_id, "FINISHED")
    result["ok"] = True


def log_gate_run(report: GateReport, out: Path, parent_run: str | None = None) -> Logged:
    """Log the run; a failure is returned, never raised (except a malformed URI: exit 2)."""
    p = report.policy.policy.mlflow
    uri = p.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        _validate_uri(uri)
    result: dict[str, Any] = {"ok": False}

    def target() -> None:
        try:
            _log(report, out, parent_run, uri, p.timeout, result)
        except BaseException as e:  # a failing server must never break the gate
            result["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"

    thread = threading.Thread(target=target, name="fairgate-mlflow", daemon=True)
    thread.start()
    thread.join(p.timeout)
    where = uri or "MLflow's default store"
    if thread.is_alive():
        return Logged(False, f"MLflow: run NOT logged: {where} did not answer within "
                             f"{p.timeout:g} s (mlflow.timeout)", "timeout")
    if not result.get("ok"):
        return Logged(False, f"MLflow: run NOT logged to {where}: {result.get('error')}",
                      result.get("error"))
    return Logged(True, f"MLflow: logged run {result['run_id']} to {result.get('uri') or where}",
                  run_id=result["run_id"])
