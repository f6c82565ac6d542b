"""The MLflow logging process: a child of ``fairgate check`` / ``compare`` that makes every
MLflow call of a run, started before the gate so that its start-up overlaps with the gate.

Where a run's time went (benchmarks/bench_mlflow.py, Adult example, 2 shared cores):
importing mlflow 1.0-3 s (it imports pandas, fastapi, its GenAI modules), opening the
default sqlite store 1.1-2.8 s (SQLAlchemy, alembic, and the migrations of a new
``mlflow.db``), the requests of one run 0.2-0.5 s. So:

- against a tracking server (``http(s)://``), this process speaks MLflow's REST API itself
  (:class:`RestStore`, the standard library only) and never imports mlflow; mlflow's own
  client is used instead when a setting needs it (AWS SigV4, an auth plugin, client
  certificates, workspaces, a separate registry URI, request-header plugins, an artifact
  store the server does not proxy) or when ``FAIRGATE_MLFLOW_CLIENT=mlflow``;
- for a local store (the default ``sqlite:///mlflow.db``, a database, ``file:``), mlflow's
  client (:class:`MlflowStore`): the process imports mlflow as soon as it starts and opens
  the store while the gate runs, since a thread could not overlap them (imports hold the
  GIL: measured, it saved nothing).

Protocol, one JSON object a line:

- parent → child: the config (tracking URI, experiment, parent run, timeout, HTTP
  settings), then the path of the job file; end of input at either point means "nothing
  to log": exit.
- child → parent: ``{"event": "ready"}`` once the store is open and the experiment known
  (or with ``error``); ``{"event": "started", "deadline"}`` when it reads the job;
  ``{"event": "run", "index", "run_id"}`` as each run is created; ``{"event":
  "promoting", ...}`` just before an alias is moved; ``{"event": "done", "runs": [...]}``.

Bounds: opening the store and finding the experiment get mlflow.timeout, and the job gets
mlflow.timeout from when it is read (the parent sends it when the gate ends; the process
reads it once the store is open, usually before). Every request's timeout is what is left
of that budget, no request starts after the deadline (a monotonic clock both processes
share), a run that could not be completed is marked FAILED with ``fairgate.logging_error``,
and a watchdog ends the process at the deadline plus GRACE seconds whatever a server does.
An alias is moved only after the run is fully logged and the version stamped, then read
back.

This module imports the standard library only (and fairgate.report.safe when it writes the
outcome of a promotion). The parent imports :func:`http_settings`, :func:`why` and
:func:`connection_problem` from here.
"""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

GRACE = 5.0  # seconds past the deadline: a promotion's answer, marking a run FAILED

# HTTP settings of mlflow's client: one immediate retry at most, no honouring of Retry-After
# (a server asking for 60 s would break the bound), no URL printed to stdout, no download
# bar (mlflow draws it with tqdm straight to stderr, around fairgate's output boundary).
HTTP_RETRIES = 1
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": HTTP_RETRIES,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0,
}
_HTTP_FIXED = {"MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # model-training view
CLIENT_ENV = "FAIRGATE_MLFLOW_CLIENT"  # "mlflow": always mlflow's own client


def int_env(env: Mapping[str, str], name: str) -> int | None:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def http_settings(timeout: float, env: Mapping[str, str], per_request: float | None = None
                  ) -> dict[str, str]:
    """mlflow's HTTP settings for calls bounded by ``timeout``; a user's stricter setting is
    kept. ``per_request``: the timeout of one try (default: half the budget)."""
    out = dict(_HTTP_FIXED)
    for name, ours in _HTTP_ENV.items():
        mine = int_env(env, name)
        out[name] = str(ours if mine is None else min(mine, ours))
    each = max(1, math.ceil(timeout / 2 if per_request is None else per_request))
    user = int_env(env, TIMEOUT_ENV)
    out[TIMEOUT_ENV] = str(each if user is None else max(1, min(each, user)))
    return out


_HINTS = (
    ("Connection refused", "connection refused (is the tracking server running?)"),
    ("Read timed out", "the server accepted the connection but did not answer in time"),
    ("timed out", "timed out"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("Max retries exceeded", "the server could not be reached"),
)


class Deadline(Exception):
    """The job's deadline (mlflow.timeout) passed; no further request is started."""


class RestError(Exception):
    """An error answer of the tracking server (or none), worded like mlflow's own."""

    def __init__(self, message: str, error_code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def why(e: BaseException) -> str:
    """One line a person can act on, from mlflow's multi-line, nested error texts."""
    if isinstance(e, Deadline):
        return "stopped at mlflow.timeout"
    text = " ".join(str(e).split())
    code = getattr(e, "error_code", None)
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:
        return f"the server answered HTTP {status.group(1)} (retried once)"
    for needle, hint in _HINTS:
        if needle in text:
            return hint
    detail = _clip(text, 300) if text else type(e).__name__
    if code and code != "INTERNAL_ERROR" and str(code) not in detail:
        detail = f"{code}: {detail}"
    plain = ("MlflowException", "RestException", "RestError", "LookupError", "TimeoutError")
    return detail if type(e).__name__ in plain else f"{type(e).__name__}: {detail}"


def connection_problem(e: BaseException) -> bool:
    """Whether ``e`` says the server could not be reached or did not answer."""
    text = str(e)
    return any(n in text for n, _ in _HINTS) or "error responses" in text or isinstance(
        e, (ConnectionError, TimeoutError))


def not_found(e: BaseException) -> bool:
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e)


# ----------------------------------------------------------------------------- stores


@dataclass
class Bounds:
    """The current request's limits, set by :meth:`Worker.call` before each call."""

    timeout: float = 30.0  # one try
    retries: int = HTTP_RETRIES


@dataclass
class NewRun:
    run_id: str
    artifact_uri: str


@dataclass
class Experiment:
    experiment_id: str
    deleted: bool
    tags: dict[str, str] = field(default_factory=dict)


class RestStore:
    """MLflow's REST API over the standard library: what a gate run needs, nothing else."""

    RETRY_STATUS = (429, 500, 502, 503, 504)

    def __init__(self, uri: str, env: Mapping[str, str], bounds: Bounds) -> None:
        self.tracking_uri = uri
        self.base = uri.rstrip("/")
        self.bounds = bounds
        self.headers = {"User-Agent": "fairgate", "Content-Type": "application/json"}
        user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            token = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        elif env.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        self.context: ssl.SSLContext | None = None
        if uri.startswith("https://"):
            if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
                self.context = ssl._create_unverified_context()
            else:
                self.context = ssl.create_default_context(
                    cafile=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)

    @staticmethod
    def usable(uri: str | None, env: Mapping[str, str]) -> bool:
        """Whether this client can stand in for mlflow's with this URI and environment."""
        if not uri or not uri.startswith(("http://", "https://")) or "@" in uri.split("/")[2]:
            return False
        if env.get(CLIENT_ENV, "").lower() == "mlflow":
            return False
        needs_mlflow = ("MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_TRACKING_AUTH",
                        "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_WORKSPACE",
                        "_MLFLOW_DATABRICKS_TRAFFIC_ID")
        if any(env.get(k, "").strip() and env.get(k, "").lower() != "false" for k in needs_mlflow):
            return False
        registry = env.get("MLFLOW_REGISTRY_URI", "").strip()
        if registry and registry.rstrip("/") != uri.rstrip("/"):
            return False
        try:
            from importlib.metadata import entry_points

            return not list(entry_points(group="mlflow.request_header_provider"))
        except Exception:
            return False

    # ------------------------------------------------------------------ HTTP

    def _open(self, req: urllib.request.Request) -> tuple[int, bytes]:
        tries = 1 + max(0, self.bounds.retries)
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(req, timeout=self.bounds.timeout,
                                            context=self.context) as r:
                    return int(r.status), r.read()
            except urllib.error.HTTPError as e:
                body = e.read()
                if e.code in self.RETRY_STATUS:
                    if attempt + 1 < tries:
                        continue
                    raise RestError(f"API request to {req.full_url} failed: too many {e.code} "
                                    "error responses", status=e.code) from None
                return int(e.code), body
            except (TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    text = f"Read timed out (after {self.bounds.timeout:g} s)"
                else:
                    text = str(reason)
                if attempt + 1 < tries and not isinstance(reason, TimeoutError):
                    continue
                raise RestError(f"API request to {req.full_url} failed: {text}") from None
        raise AssertionError("unreachable")

    def _call(self, method: str, endpoint: str, body: dict[str, Any] | None = None,
              query: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"{self.base}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body, allow_nan=True).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        status, raw = self._open(req)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if status != 200:
            code = answer.get("error_code") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else None
            raise RestError(f"{code}: {message}" if code and message else
                            f"API request to endpoint /api/2.0/mlflow/{endpoint} failed with "
                            f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}", code, status)
        return answer if isinstance(answer, dict) else {}

    # ------------------------------------------------------------------ operations

    def experiment_by_name(self, name: str) -> Experiment | None:
        try:
            exp = self._call("GET", "experiments/get-by-name", query={"experiment_name": name})
        except RestError as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        e_ = exp["experiment"]
        return Experiment(str(e_["experiment_id"]), e_.get("lifecycle_stage") == "deleted",
                          {t["key"]: t.get("value", "") for t in e_.get("tags", [])})

    def create_experiment(self, name: str, tags: dict[str, str]) -> str:
        got = self._call("POST", "experiments/create", {
            "name": name, "tags": [{"key": k, "value": v} for k, v in tags.items()]})
        return str(got["experiment_id"])

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self._call("POST", "experiments/set-experiment-tag",
                   {"experiment_id": experiment_id, "key": key, "value": value})

    def run_experiment(self, run_id: str) -> str:
        got = self._call("GET", "runs/get", query={"run_id": run_id})
        return str(got["run"]["info"]["experiment_id"])

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> NewRun:
        got = self._call("POST", "runs/create", {
            "experiment_id": experiment_id, "run_name": name,
            "start_time": int(time.time() * 1000), "user_id": tags.get("mlflow.user", ""),
            "tags": [{"key": k, "value": v} for k, v in tags.items()]})
        info = got["run"]["info"]
        return NewRun(str(info["run_id"]), str(info.get("artifact_uri", "")))

    def log_batch(self, run_id: str, metrics: list[tuple[str, float]],
                  params: list[tuple[str, str]], tags: list[tuple[str, str]], now: int) -> None:
        def number(v: float) -> float | str:
            return v if math.isfinite(v) else ("NaN" if math.isnan(v) else
                                               ("Infinity" if v > 0 else "-Infinity"))

        self._call("POST", "runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": k, "value": number(v), "timestamp": now, "step": 0}
                        for k, v in metrics],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags]})

    def log_inputs(self, run_id: str, datasets: list[dict[str, Any]],
                   models: list[str]) -> None:
        body: dict[str, Any] = {"run_id": run_id}
        if datasets:
            body["datasets"] = [{"dataset": {k: v for k, v in d["dataset"].items() if v is not None},
                                 "tags": [{"key": k, "value": v} for k, v in d["tags"].items()]}
                                for d in datasets]
        if models:
            body["models"] = [{"model_id": m} for m in models]
        self._call("POST", "runs/log-inputs", body)

    def log_artifacts(self, run: NewRun, folder: str) -> None:
        if not run.artifact_uri.startswith("mlflow-artifacts:/") or \
                run.artifact_uri.startswith("mlflow-artifacts://"):
            # an artifact store the server does not proxy (s3://, a shared file system...)
            MlflowStore.artifacts_with_mlflow(run, folder, self.tracking_uri)
            return
        root = run.artifact_uri[len("mlflow-artifacts:/"):].strip("/")
        headers = {k: v for k, v in self.headers.items() if k != "Content-Type"}
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            url = (f"{self.base}/api/2.0/mlflow-artifacts/artifacts/"
                   f"{urllib.parse.quote(f'{root}/{rel}')}")
            req = urllib.request.Request(url, data=path.read_bytes(), method="PUT",
                                         headers=headers)
            status, raw = self._open(req)
            if status != 200:
                raise RestError(f"uploading artifact {rel} failed with HTTP {status}: "
                                f"{raw[:200].decode('utf-8', 'replace')}", status=status)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._call("POST", "runs/update", {"run_id": run_id, "status": status,
                                           "end_time": int(time.time() * 1000)})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._call("POST", "runs/set-tag", {"run_id": run_id, "key": key, "value": value})

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call("POST", "model-versions/set-tag",
                   {"name": name, "version": version, "key": key, "value": value})

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            got = self._call("GET", "registered-models/alias", query={"name": name,
                                                                      "alias": alias})
        except RestError as e:
            if e.status is not None and e.status < 500 and "not found" in str(e):
                return None
            raise
        return str(got["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias",
                   {"name": name, "alias": alias, "version": version})


class MlflowStore:
    """The same operations through mlflow's own client: local stores, plugins, auth."""

    def __init__(self, uri: str | None, bounds: Bounds) -> None:
        from mlflow.tracking import MlflowClient

        self.bounds = bounds
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = str(self.client.tracking_uri)

    def experiment_by_name(self, name: str) -> Experiment | None:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None
        return Experiment(str(exp.experiment_id), exp.lifecycle_stage == "deleted",
                          dict(exp.tags or {}))

    def create_experiment(self, name: str, tags: dict[str, str]) -> str:
        return str(self.client.create_experiment(name, tags=tags))

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    def run_experiment(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.experiment_id)

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> NewRun:
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        return NewRun(run.info.run_id, str(run.info.artifact_uri))

    def log_batch(self, run_id: str, metrics: list[tuple[str, float]],
                  params: list[tuple[str, str]], tags: list[tuple[str, str]], now: int) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics],
                              params=[Param(k, v) for k, v in params],
                              tags=[RunTag(k, v) for k, v in tags], synchronous=True)

    def log_inputs(self, run_id: str, datasets: list[dict[str, Any]],
                   models: list[str]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if datasets:
            self.client.log_inputs(run_id, datasets=[
                DatasetInput(Dataset(**d["dataset"]),
                             tags=[InputTag(k, v) for k, v in d["tags"].items()])
                for d in datasets])
        if models:  # MLflow 3 only (logged models); the job lists none for MLflow 2 sources
            from mlflow.entities import LoggedModelInput

            self.client.log_inputs(run_id, models=[LoggedModelInput(m) for m in models])

    def log_artifacts(self, run: NewRun, folder: str) -> None:
        self.client.log_artifacts(run.run_id, folder)

    @staticmethod
    def artifacts_with_mlflow(run: NewRun, folder: str, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).log_artifacts(run.run_id, folder)

    def set_terminated(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception as e:
            if connection_problem(e) or not not_found(e):
                raise
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)


Store = RestStore | MlflowStore
T = TypeVar("T")


# ----------------------------------------------------------------------------- the worker


class Worker:
    """One logging process: a store, an experiment, and the runs of one job."""

    def __init__(self, config: dict[str, Any], emit: Callable[[dict[str, Any]], None],
                 store: Store | None = None) -> None:
        self.config = config
        self.emit = emit
        self.bounds = Bounds()
        self.store: Any = store
        self.uri: str | None = None if store is None else store.tracking_uri
        self.experiment_id: str | None = None
        self.error: str | None = None
        self.deadline = math.inf
        self.user_timeout = int_env(os.environ, TIMEOUT_ENV)

    # ------------------------------------------------------------------ bounds

    def call(self, fn: Callable[..., T], *args: Any, retries: int = HTTP_RETRIES,
             **kwargs: Any) -> T:
        """Call ``fn`` with each try bounded by what is left of the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline()
        per_try = max(1, math.ceil(left / (1 + retries))) if math.isfinite(left) else 30
        if self.user_timeout is not None:
            per_try = max(1, min(per_try, self.user_timeout))
        self.bounds.timeout, self.bounds.retries = per_try, min(retries, HTTP_RETRIES)
        os.environ[TIMEOUT_ENV] = str(per_try)  # mlflow's client reads these per request
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.bounds.retries)
        try:
            return fn(*args, **kwargs)
        finally:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(HTTP_RETRIES)

    # ------------------------------------------------------------------ start-up

    def warm_up(self) -> None:
        """Open the store, then find the experiment within mlflow.timeout of its own. Opening
        a local store (the migrations of a new sqlite file run here) is local work, not bounded
        by the timeout, which is for servers: the CLI bounds the whole start-up instead."""
        uri = self.config.get("tracking_uri")
        if self.store is None:
            self.store = (RestStore(uri, os.environ, self.bounds)
                          if uri and RestStore.usable(uri, os.environ) else
                          MlflowStore(uri, self.bounds))
        self.uri = self.store.tracking_uri
        self.deadline = time.monotonic() + float(self.config["timeout"])
        parent = self.config.get("parent_run_id")
        if parent:
            try:
                self.experiment_id = self.call(self.store.run_experiment, parent)
            except Exception as e:
                raise LookupError(f"parent run {parent} not found or unreadable ({why(e)})") from e
            return
        self.experiment_id = self._experiment(str(self.config["experiment"]))

    def _experiment(self, name: str) -> str:
        store = self.store
        exp = self.call(store.experiment_by_name, name)
        if exp is None:
            try:
                return str(self.call(store.create_experiment, name, dict([EXPERIMENT_KIND])))
            except Exception:  # created meanwhile by a parallel gate
                exp = self.call(store.experiment_by_name, name)
                if exp is None:
                    raise
        if exp.deleted:
            raise LookupError(f"experiment {name!r} is deleted; restore it (mlflow experiments "
                              "restore) or set mlflow.experiment in the policy")
        if EXPERIMENT_KIND[0] not in exp.tags:  # an experiment fairgate did not make
            self.call(store.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id

    # ------------------------------------------------------------------ the job

    def run_job(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Log the job's runs within mlflow.timeout from now (the parent sent it when the gate
        ended; this process reads it once the store is open)."""
        self.deadline = time.monotonic() + float(self.config["timeout"])
        self.emit({"event": "started", "deadline": self.deadline})
        results: list[dict[str, Any]] = []
        for i, spec in enumerate(job["runs"]):
            if self.error is not None:
                results.append({"ok": False, "error": self.error, "run_id": None})
                continue
            parent = spec.get("parent_index")
            parent_id = self.config.get("parent_run_id")
            if parent is not None:
                if not results[parent]["ok"]:
                    results.append({"ok": False, "run_id": None,
                                    "error": f"its parent run was not logged "
                                             f"({results[parent]['error']})"})
                    continue
                parent_id = results[parent]["run_id"]
            results.append(self.log_run(i, spec, parent_id))
        for spec, result in reversed(list(zip(job["runs"], results, strict=True))):
            if result["ok"]:  # children first, then the parent of a comparison
                try:
                    self.call(self.store.set_terminated, result["run_id"], spec["status"])
                except Exception as e:
                    result.update(ok=False, error=why(e))
                    result["marked_failed"] = self.mark_failed(result["run_id"], result["error"])
        return results

    def log_run(self, index: int, spec: dict[str, Any], parent_id: str | None) -> dict[str, Any]:
        store = self.store
        tags = dict(spec["tags"])
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        try:
            run = self.call(store.create_run, self.experiment_id, spec["name"], tags)
        except Exception as e:
            return {"ok": False, "error": why(e), "run_id": None}
        self.emit({"event": "run", "index": index, "run_id": run.run_id})
        result: dict[str, Any] = {"ok": False, "error": None, "run_id": run.run_id}
        try:
            now = int(time.time() * 1000)
            for b in spec["batches"]:
                self.call(store.log_batch, run.run_id, b["metrics"], b["params"], b["tags"], now)
            self._inputs(run.run_id, spec, result)
            if spec.get("artifacts"):
                self.call(store.log_artifacts, run, spec["artifacts"])
            if spec.get("stamp"):
                result["stamp"] = self.stamp(run.run_id, spec["stamp"])
            if spec.get("promote"):
                from fairgate.report.safe import mlflow_value  # registry text, as a tag

                result["promotion"] = self.promote(spec["promote"])
                self.call(store.log_batch, run.run_id, [], [], [
                    (f"fairgate.promotion.{k}", mlflow_value(v, 8000))
                    for k, v in result["promotion"].items() if v is not None], now)
            result["ok"] = True
        except BaseException as e:  # a failing server must never look like a complete run
            result["error"] = why(e)
            result["marked_failed"] = self.mark_failed(run.run_id, result["error"])
        return result

    def _inputs(self, run_id: str, spec: dict[str, Any], result: dict[str, Any]) -> None:
        data = spec.get("dataset")
        if data:
            data = dict(data)
            context = data.pop("context", "audit")
            self.call(self.store.log_inputs, run_id,
                      [{"dataset": data, "tags": {"mlflow.data.context": context}}], [])
        models = list(spec.get("model_inputs", []))
        if models:  # MLflow 3's run/model link; a model of another store cannot be linked
            try:
                self.call(self.store.log_inputs, run_id, [], models)
                result["linked_models"] = models
            except Exception as e:
                if connection_problem(e) or isinstance(e, Deadline):
                    raise
                result["link_error"] = why(e)

    # ------------------------------------------------------------------ registry

    def stamp(self, run_id: str, stamp: dict[str, Any]) -> dict[str, Any]:
        """The verdict as tags on the judged model version, with the run that holds it."""
        name, version = stamp["name"], stamp["version"]
        tags = {**stamp["tags"], "fairgate.run_id": run_id,
                "fairgate.experiment_id": str(self.experiment_id)}
        base = stamp.get("ui")
        if base:
            tags["fairgate.run_url"] = f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}"
        for k, v in tags.items():
            self.call(self.store.set_model_version_tag, name, version, k, v)
        return {"name": name, "version": version, "tags": tags}

    def promote(self, p: dict[str, Any]) -> dict[str, Any]:
        """Move ``alias`` to the student's version, and read it back.

        Refused when the alias moved away from the version the student was compared with
        (the teacher was given as this alias) while the gate ran.
        """
        name, alias, version, expect = p["name"], p["alias"], p["version"], p.get("expect")
        out: dict[str, Any] = {"alias": alias, "name": name, "version": version,
                               "previous_version": None, "status": "failed", "reason": None}
        previous = self.call(self.store.alias_version, name, alias)
        out["previous_version"] = previous
        if expect is not None and previous != expect:
            now = f"v{previous}" if previous else "no version"
            out.update(status="refused", reason=(
                f"alias {alias} moved from v{expect} to {now} while the gate ran; the student "
                f"was compared with v{expect}, so it is not promoted over {now}"))
            return out
        if previous == version:
            out.update(status="unchanged", reason=f"alias {alias} already points to v{version}")
            return out
        self.emit({"event": "promoting", "alias": alias, "version": version})
        try:
            self.call(self.store.set_alias, name, alias, version, retries=0)
        except Exception as e:
            out["reason"] = why(e)
        try:
            now_at = self.call(self.store.alias_version, name, alias)
        except Exception as e:
            out.update(status="unknown", reason=f"{out['reason'] or 'the alias was set'}; "
                                                f"reading it back failed: {why(e)}")
            return out
        if now_at == version:
            out.update(status="promoted", reason=None)
        else:
            at = f"v{now_at}" if now_at else "no version"
            out.update(status="failed", reason=f"{out['reason'] or 'not moved'} (alias {alias} "
                                               f"points to {at})")
        return out

    def mark_failed(self, run_id: str, error: str) -> bool:
        """Best effort, a few seconds at most: a half-logged run must not look complete."""
        self.deadline = max(self.deadline, time.monotonic() + 2.5)
        try:
            self.call(self.store.set_tag, run_id, "fairgate.logging_error", error[:7900],
                      retries=0)
            self.call(self.store.set_terminated, run_id, "FAILED", retries=0)
            return True
        except BaseException:
            return False


def _watchdog(deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(max(0.05, min(1.0, deadline - time.monotonic())))
    os._exit(75)  # a server that holds a request past every timeout: stop, at last


def _import_mlflow() -> str | None:
    try:
        import logging

        import mlflow  # noqa: F401

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # migrations' INFO lines
        logging.getLogger("alembic").setLevel(logging.WARNING)
    except BaseException as e:
        return f"mlflow cannot be imported ({why(e)})"
    return None


def main(prefetch: bool = True) -> None:
    """The child's program (see the module docstring). ``prefetch``: import mlflow before the
    config arrives (the environment's tracking URI is not a server this module speaks to).

    It ends with ``os._exit``: the work is done and flushed, and the interpreter's own
    teardown of mlflow and SQLAlchemy took 1.5-2.5 s more. End of input before a job ends it
    at once, unless the store is being opened (a migration is left to finish).
    """
    out = sys.stdout
    lines: queue.Queue[str | None] = queue.Queue()
    lock = threading.Lock()
    busy = [False]

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)
        with lock:
            if not busy[0]:  # nothing under way that must finish
                os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    import_error = _import_mlflow() if prefetch else None
    line = lines.get()
    if line is None:
        os._exit(0)
    config = json.loads(line)
    os.environ.update(config["http_env"])
    worker = Worker(config, emit)
    with lock:
        busy[0] = True
    rest = RestStore.usable(config.get("tracking_uri"), os.environ)
    if not rest and not prefetch:
        import_error = _import_mlflow()
    if import_error is not None and not rest:
        worker.error = import_error
    else:
        try:
            worker.warm_up()
        except BaseException as e:
            worker.error = why(e)
    emit({"event": "ready", "error": worker.error, "uri": worker.uri,
          "experiment_id": worker.experiment_id, "client": "rest" if rest else "mlflow"})
    line = lines.get()
    if line is None:
        os._exit(0)
    job = json.loads(Path(line.strip()).read_text(encoding="utf-8"))
    threading.Thread(target=_watchdog, args=(time.monotonic() + float(config["timeout"]) + GRACE,),
                     daemon=True).start()
    runs = worker.run_job(job)
    emit({"event": "done", "runs": runs, "uri": worker.uri,
          "experiment_id": worker.experiment_id})
    os._exit(0)


if __name__ == "__main__":
    main()
