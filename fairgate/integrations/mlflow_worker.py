"""The MLflow logging process: a child of ``fairgate check`` / ``compare`` that does every
MLflow call of a run, so that their cost overlaps with the gate instead of adding to it.

Where the time went (benchmarks/bench_mlflow.py, Adult example, 2 cores): importing mlflow
1.0-2.6 s, opening the default sqlite store 1.1-2.8 s (its SQLAlchemy and alembic imports,
and the schema migrations of a new ``mlflow.db``), the requests themselves 0.2-0.5 s. A
thread cannot overlap the first two with the gate (imports hold the GIL: measured, it
saved nothing), a process can. So the parent starts this program before it loads the
policy; it imports mlflow at once, opens the store and finds the experiment while the gate
runs, then waits for the job: what to log, written by the parent to a file.

Protocol, one JSON object a line:

- parent → child: the config (tracking URI, experiment, parent run, HTTP settings), then
  the path of the job file; end of input at either point means "nothing to log": exit.
- child → parent: ``{"event": "ready"}`` once the store is open and the experiment known
  (or with ``error``); ``{"event": "started", "deadline"}`` when it reads the job;
  ``{"event": "run", "index", "run_id"}`` as each run is created;
  ``{"event": "promoting", ...}`` just before an alias is moved; ``{"event": "done",
  "runs": [...]}`` at the end.

Bounds: opening the store and finding the experiment get mlflow.timeout, and the job gets
mlflow.timeout from when it is read (the parent sends it when the gate ends; the process
reads it once the store is open, usually before). Every request's HTTP timeout is what is
left of that budget (mlflow reads it per request), no request starts after the deadline
(a monotonic clock both processes share), a run that could not be completed
is marked FAILED with ``fairgate.logging_error``, and a watchdog ends the process at the
deadline plus GRACE seconds whatever a server does. An alias is moved only after the run
is fully logged and the version stamped; it is read back afterwards.

This module imports the standard library only; mlflow is imported by :func:`main`, in the
child. The parent imports :func:`http_settings` and :func:`why` from here.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

GRACE = 5.0  # seconds past the deadline: a promotion's answer, marking a run FAILED

# HTTP settings of mlflow's client: one immediate retry at most, no honouring of Retry-After
# (a server asking for 60 s would break the bound), no URL printed to stdout.
HTTP_RETRIES = 1
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": HTTP_RETRIES,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0,
}
_HTTP_FIXED = {"MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # model-training view


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
    plain = ("MlflowException", "RestException", "LookupError", "TimeoutError")
    return detail if type(e).__name__ in plain else f"{type(e).__name__}: {detail}"


def connection_problem(e: BaseException) -> bool:
    """Whether ``e`` says the server could not be reached or did not answer."""
    text = str(e)
    return any(n in text for n, _ in _HINTS) or "error responses" in text or isinstance(
        e, (ConnectionError, TimeoutError))


T = TypeVar("T")


class Worker:
    """One logging process: a client, an experiment, and the runs of one job."""

    def __init__(self, config: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self.emit = emit
        self.client: Any = None
        self.uri: str | None = None
        self.experiment_id: str | None = None
        self.error: str | None = None
        self.deadline = math.inf
        self.user_timeout = int_env(os.environ, TIMEOUT_ENV)

    # ------------------------------------------------------------------ bounds

    def call(self, fn: Callable[..., T], *args: Any, retries: int = HTTP_RETRIES,
             **kwargs: Any) -> T:
        """Call ``fn`` with each HTTP try bounded by what is left of the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline()
        if math.isfinite(left):
            per_try = max(1, math.ceil(left / (1 + retries)))
            if self.user_timeout is not None:
                per_try = max(1, min(per_try, self.user_timeout))
            os.environ[TIMEOUT_ENV] = str(per_try)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(min(retries, HTTP_RETRIES))
        try:
            return fn(*args, **kwargs)
        finally:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(HTTP_RETRIES)

    # ------------------------------------------------------------------ start-up

    def warm_up(self) -> None:
        """Open the store (migrations of a new sqlite file run here) and find the experiment,
        within mlflow.timeout of its own."""
        from mlflow.tracking import MlflowClient

        self.deadline = time.monotonic() + float(self.config["timeout"])

        self.client = self.call(MlflowClient, tracking_uri=self.config.get("tracking_uri"))
        self.uri = str(self.client.tracking_uri)
        parent = self.config.get("parent_run_id")
        if parent:
            try:
                run = self.call(self.client.get_run, parent)
            except Exception as e:
                raise LookupError(f"parent run {parent} not found or unreadable ({why(e)})") from e
            self.experiment_id = str(run.info.experiment_id)
            return
        self.experiment_id = self._experiment(str(self.config["experiment"]))

    def _experiment(self, name: str) -> str:
        client = self.client
        exp = self.call(client.get_experiment_by_name, name)
        if exp is None:
            try:
                return str(self.call(client.create_experiment, name, tags=dict([EXPERIMENT_KIND])))
            except Exception:  # created meanwhile by a parallel gate
                exp = self.call(client.get_experiment_by_name, name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise LookupError(f"experiment {name!r} is deleted; restore it (mlflow experiments "
                              "restore) or set mlflow.experiment in the policy")
        if EXPERIMENT_KIND[0] not in (exp.tags or {}):  # an experiment fairgate did not make
            self.call(client.set_experiment_tag, exp.experiment_id, *EXPERIMENT_KIND)
        return str(exp.experiment_id)

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
                    self.call(self.client.set_terminated, result["run_id"], spec["status"])
                except Exception as e:
                    result.update(ok=False, error=why(e))
                    self.mark_failed(result["run_id"], result["error"])
        return results

    def log_run(self, index: int, spec: dict[str, Any], parent_id: str | None) -> dict[str, Any]:
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        tags = dict(spec["tags"])
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        try:
            run = self.call(client.create_run, self.experiment_id, run_name=spec["name"], tags=tags)
        except Exception as e:
            return {"ok": False, "error": why(e), "run_id": None}
        run_id = run.info.run_id
        self.emit({"event": "run", "index": index, "run_id": run_id})
        result: dict[str, Any] = {"ok": False, "error": None, "run_id": run_id}
        try:
            now = int(time.time() * 1000)
            for b in spec["batches"]:
                self.call(client.log_batch, run_id,
                          metrics=[Metric(k, v, now, 0) for k, v in b["metrics"]],
                          params=[Param(k, v) for k, v in b["params"]],
                          tags=[RunTag(k, v) for k, v in b["tags"]], synchronous=True)
            self._inputs(run_id, spec, result)
            if spec.get("artifacts"):
                self.call(client.log_artifacts, run_id, spec["artifacts"])
            if spec.get("stamp"):
                result["stamp"] = self.stamp(run_id, spec["stamp"])
            if spec.get("promote"):
                result["promotion"] = self.promote(spec["promote"])
                self.call(client.log_batch, run_id, tags=[
                    RunTag(f"fairgate.promotion.{k}", str(v))
                    for k, v in result["promotion"].items() if v is not None])
            result["ok"] = True
        except BaseException as e:  # a failing server must never look like a complete run
            result["error"] = why(e)
            self.mark_failed(run_id, result["error"])
        return result

    def _inputs(self, run_id: str, spec: dict[str, Any], result: dict[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

        data = spec.get("dataset")
        if data:
            context = data.pop("context", "audit")
            self.call(self.client.log_inputs, run_id, datasets=[DatasetInput(
                Dataset(**data), tags=[InputTag("mlflow.data.context", context)])])
        models = [LoggedModelInput(m) for m in spec.get("model_inputs", [])]
        if models:  # MLflow 3's run/model link; a model of another store cannot be linked
            try:
                self.call(self.client.log_inputs, run_id, models=models)
                result["linked_models"] = [m.model_id for m in models]
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
            self.call(self.client.set_model_version_tag, name, version, k, v)
        return {"name": name, "version": version, "tags": tags}

    def _holder(self, name: str, alias: str) -> str | None:
        try:
            return str(self.call(self.client.get_model_version_by_alias, name, alias).version)
        except Exception as e:
            if connection_problem(e) or isinstance(e, Deadline):
                raise
            if "not found" in str(e):
                return None
            raise

    def promote(self, p: dict[str, Any]) -> dict[str, Any]:
        """Move ``alias`` to the student's version, and read it back.

        Refused when the alias moved away from the version the student was compared with
        (the teacher was given as this alias) while the gate ran.
        """
        name, alias, version, expect = p["name"], p["alias"], p["version"], p.get("expect")
        out: dict[str, Any] = {"alias": alias, "name": name, "version": version,
                               "previous_version": None, "status": "failed", "reason": None}
        previous = self._holder(name, alias)
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
            self.call(self.client.set_registered_model_alias, name, alias, version, retries=0)
        except Exception as e:
            out["reason"] = why(e)
        try:
            now_at = self._holder(name, alias)
        except Exception as e:
            out.update(status="unknown", reason=f"{out['reason'] or 'the alias was set'}; "
                                                f"reading it back failed: {why(e)}")
            return out
        if now_at == version:
            out.update(status="promoted", reason=None)
        else:
            out.update(status="failed", reason=(out["reason"] or "")
                       + f" (alias {alias} points to {f'v{now_at}' if now_at else 'no version'})")
        return out

    def mark_failed(self, run_id: str, error: str) -> None:
        """Best effort, a few seconds at most: a half-logged run must not look complete."""
        self.deadline = max(self.deadline, time.monotonic() + 2.5)
        try:
            self.call(self.client.set_tag, run_id, "fairgate.logging_error", error[:7900],
                      retries=0)
            self.call(self.client.set_terminated, run_id, "FAILED", retries=0)
        except BaseException:
            pass


def _watchdog(deadline: float) -> None:
    while time.monotonic() < deadline:
        time.sleep(max(0.05, min(1.0, deadline - time.monotonic())))
    os._exit(75)  # a server that holds a request past every timeout: stop, at last


def main() -> None:
    """The child's program (see the module docstring).

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

    def begin() -> None:
        with lock:
            busy[0] = True

    threading.Thread(target=read, daemon=True).start()
    import_error = None
    try:  # first: the slow part, before the parent has even loaded the policy
        import logging

        import mlflow  # noqa: F401

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # migrations' INFO lines
        logging.getLogger("alembic").setLevel(logging.WARNING)
    except BaseException as e:
        import_error = f"mlflow cannot be imported ({why(e)})"
    line = lines.get()
    if line is None:
        os._exit(0)
    config = json.loads(line)
    os.environ.update(config["http_env"])
    worker = Worker(config, emit)
    begin()
    if import_error is not None:
        worker.error = import_error
    else:
        try:
            worker.warm_up()
        except BaseException as e:
            worker.error = why(e)
    emit({"event": "ready", "error": worker.error, "uri": worker.uri,
          "experiment_id": worker.experiment_id})
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
