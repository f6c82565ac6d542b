"""MLflow: one run per gate, holding everything needed to understand and reproduce the verdict.

mlflow is imported here only, and only when a run is logged, so the CLI starts fast.
Logging never changes the verdict or the reports: an unreachable, slow or failing server
is reported in one plain line, the whole wait is bounded by ``mlflow.timeout`` (mlflow's
own HTTP client would otherwise retry for minutes and honour ``Retry-After``), and only
``mlflow.required: true`` turns a logging failure into exit 3. A malformed tracking URI
is a usage error (exit 2), found before anything is sent.

Where the run goes: the policy's ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``,
else MLflow's default store (today ``sqlite:///mlflow.db`` in the working directory). The
experiment is the parent run's when nested (MLflow shows nesting within one experiment),
else the policy's ``mlflow.experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else ``fairgate``.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import GroupRow, MetricKey, MetricValue
from fairgate.core.outcome import GateReport
from fairgate.errors import UsageError
from fairgate.policy import LoadedPolicy
from fairgate.report import safe
from fairgate.report.json import num as json_number
from fairgate.report.markdown import by_evidence
from fairgate.report.safe import mlflow_key_part as key_part
from fairgate.report.terminal import model_reading, model_readings

# MLflow's per-request limits (mlflow.utils.validation), kept here so no import is needed.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTITIES = 1000, 100, 100, 1000
MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE, MAX_RUN_NAME = 250, 6000, 8000, 250
DEFAULT_EXPERIMENT = "fairgate"
NOTE_BUDGET = 7800  # mlflow.note.content is a tag: at most MAX_TAG_VALUE characters

# HTTP settings of mlflow's client while fairgate logs: one immediate retry at most, no
# honouring of Retry-After (a server asking for 60 s would break the bound), no URL print.
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0,
}
_HTTP_FIXED = {"MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_ENV_LOCK = threading.Lock()

# ----------------------------------------------------------------------------- keys

_VALID_KEY = re.compile(r"^[/\w.\- ]*$")


def grouping_part(attributes: tuple[str, ...] | None, positive: str | None = None) -> str:
    """``(sex, race)`` → ``sex_x_race``; metrics over the whole audit set → ``overall``;
    a multi-class one-vs-rest table of class ``Sales`` over sex → ``sex_Sales_vs_rest``."""
    if attributes is None:
        return "overall"
    base = "_x_".join(key_part(a) for a in attributes)
    return base if positive is None else f"{base}_{key_part(positive)}_vs_rest"


def _ident(g: Grouping | None) -> tuple[tuple[str, ...], str | None] | None:
    return None if g is None else (g.attributes, g.positive)


class KeyMaker:
    """Valid, unique, readable MLflow keys; the same original always gets the same key.

    A key is its segments joined by ``/``. When two different originals would meet in one
    key (``>50K`` and ``gt 50K``), or a key is too long, the later one gets 8 hex digits of
    the original's sha256, so no value silently overwrites another. ``ident`` is what makes
    two originals the same (default: the raw names); ``originals`` maps every key back to
    the names it stands for (logged as ``metric_keys.json``).
    """

    def __init__(self) -> None:
        self.originals: dict[str, tuple[str, ...]] = {}
        self._keys: dict[Hashable, str] = {}

    def __call__(self, *raw: str, parts: tuple[str, ...] | None = None,
                 ident: Hashable = None) -> str:
        ident = raw if ident is None else ident
        if ident in self._keys:
            return self._keys[ident]
        key = "/".join(parts if parts is not None else (key_part(r) for r in raw))
        n = 0
        while len(key) > MAX_KEY or key in self.originals:
            digest = hashlib.sha256(f"{ident!r}\x1f{n}".encode()).hexdigest()[:8]
            key = f"{key[: MAX_KEY - 9].rstrip('/')}_{digest}"
            n += 1
        self.originals[key] = raw
        self._keys[ident] = key
        return key


class Segments:
    """Unique readable key segments per namespace: group labels within a grouping, grouping
    names within a run. A segment two originals would share gets 8 hex digits of the later
    one's sha256 (``gt_50K`` and ``gt_50K_1a2b3c4d``), so every key of that group says so."""

    def __init__(self) -> None:
        self._by_ident: dict[Hashable, str] = {}
        self._used: set[tuple[Hashable, str]] = set()

    def __call__(self, namespace: Hashable, ident: Hashable, readable: str) -> str:
        if (namespace, ident) in self._by_ident:
            return self._by_ident[(namespace, ident)]
        part, n = readable, 0
        while (namespace, part) in self._used:
            digest = hashlib.sha256(f"{ident!r}\x1f{n}".encode()).hexdigest()[:8]
            part, n = f"{readable[:80]}_{digest}", n + 1
        self._used.add((namespace, part))
        self._by_ident[(namespace, ident)] = part
        return part


def valid_key(key: str) -> bool:
    """MLflow's own rule, also for Windows clients: characters, and path-like segments."""
    segments = key.split("/")
    return (0 < len(key) <= MAX_KEY and bool(_VALID_KEY.match(key))
            and all(s not in ("", ".", "..") for s in segments))


# ----------------------------------------------------------------------------- what is logged


@dataclass(frozen=True)
class RunRecord:
    """Everything a run holds except artifacts; pure data, tested without a server."""

    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    key_origins: dict[str, tuple[str, ...]]


def _num(x: float | int | None) -> float | None:
    """The number report.json holds (12 significant digits, identical across machines)."""
    return None if x is None else json_number(float(x))


def _values(report: GateReport) -> dict[MetricKey, MetricValue]:
    """Every metric value a check or a KPI reports, once each."""
    values: dict[MetricKey, MetricValue] = {}
    for r in report.decision.results:
        values.setdefault(r.key, r.value)
    for v in report.kpis:
        values.setdefault(v.key, v)
    return values


def _metric_name(k: MetricKey) -> tuple[str, str]:
    """(original, key segment) of a metric name, alpha included."""
    if k.alpha is None:
        return k.metric, key_part(k.metric)
    return f"{k.metric}(alpha={k.alpha:g})", f"{key_part(k.metric)}_alpha_{key_part(f'{k.alpha:g}')}"


_PARTS = (("teacher", "teacher", "teacher_interval"), ("student", "student", "student_interval"),
          ("delta", "delta", "delta_interval"), ("relative", "relative", "relative_interval"))


def collect(report: GateReport, env: Mapping[str, str] | None = None) -> RunRecord:
    """Metrics, params and tags of a gate run. Undefined values are left out, not zero:
    report.json (an artifact) holds them as null with the reason."""
    env = os.environ if env is None else env
    key = KeyMaker()
    segment = Segments()
    metrics: dict[str, float] = {}

    def grouping(g: Grouping | None) -> str:
        return segment("grouping", _ident(g), grouping_part(*_ident(g) or (None,)))

    def put(value: float | int | None, raw: tuple[str, ...], parts: tuple[str, ...],
            ident: Hashable) -> None:
        k = key(*raw, parts=parts, ident=ident)
        v = _num(value)
        if v is not None:
            metrics[k] = v

    for k, v in _values(report).items():
        name, name_part = _metric_name(k)
        attrs = _ident(k.grouping)
        where = k.grouping.name if k.grouping else "overall"
        for part, attr, interval_attr in _PARTS:
            put(getattr(v, attr), (part, name, where),
                (part, name_part, grouping(k.grouping)), (part, k.metric, k.alpha, attrs))
            interval = getattr(v, interval_attr)
            if interval is not None:
                for side in ("lo", "hi"):
                    p = f"{part}_{side}"
                    put(getattr(interval, side), (p, name, where),
                        (p, name_part, grouping(k.grouping)), (p, k.metric, k.alpha, attrs))
    for g in logged_groups(report):
        attrs = _ident(g.grouping)
        base = ("group", g.grouping.name, "|".join(g.group))
        label = segment(attrs, g.group, "_x_".join(key_part(x) for x in g.group))
        at = ("group", grouping(g.grouping), label)
        for model, rates in (("teacher", g.teacher_rates), ("student", g.student_rates)):
            for rate, value in rates.items():
                put(value, (*base, model, rate), (*at, model, key_part(rate)),
                    ("group", attrs, g.group, model, rate))
        for name, value in (("n", g.n), ("mcnemar_p", g.mcnemar_p)):
            put(value, (*base, name), (*at, name), ("group", attrs, g.group, name))
    origins = {k: o for k, o in key.originals.items() if k in metrics}
    return RunRecord(metrics, _params(report), _tags(report, env), origins)


#: Groups whose rates are logged as metrics, per grouping (26 metrics a group; MLflow takes
#: 1,000 a request): a grouping of 100,000 groups would otherwise log 2.6 million metrics.
#: report.json, an artifact of the run, lists every gated group.
MAX_GROUPS_LOGGED = 100


def _by_grouping(report: GateReport) -> dict[Grouping, list[GroupRow]]:
    out: dict[Grouping, list[GroupRow]] = {}
    for g in report.groups:
        out.setdefault(g.grouping, []).append(g)
    return out


def logged_groups(report: GateReport) -> list[GroupRow]:
    """The groups whose rates are logged: per grouping, all of them up to MAX_GROUPS_LOGGED,
    else the reference, then the strongest evidence of an accuracy change, then the largest
    (the order the summaries show them in), kept in report order."""
    out = []
    for rows in _by_grouping(report).values():
        chosen = {id(g) for g in by_evidence(rows)[:MAX_GROUPS_LOGGED]}
        out += [g for g in rows if id(g) in chosen]
    return out


def groups_logged_tag(report: GateReport) -> str | None:
    """Says which groupings' group metrics are cut, and how much (None when none is)."""
    cut = []
    for grouping, rows in _by_grouping(report).items():
        total = len(rows) + report.unlisted_groups(grouping)
        if total > MAX_GROUPS_LOGGED:
            cut.append(f"{grouping.name}: {MAX_GROUPS_LOGGED} of {total:,}")
    if not cut:
        return None
    return (f"group metrics of at most {MAX_GROUPS_LOGGED} groups per grouping (the reference, "
            "smallest McNemar p, then the largest; report.json lists every gated group): "
            + "; ".join(cut))


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}", v, out)
    elif isinstance(value, (dict, list)):
        out[prefix] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        out[prefix] = str(value)


def _params(report: GateReport) -> dict[str, str]:
    p = report.policy.policy
    raw: dict[str, str] = {
        "fairgate.version": report.version,
        "policy.version": str(p.version),
        "policy.sha256": report.policy.sha256,
        "groupings": ",".join(g.name for g in report.groupings),
        "audit.rows": str(report.inputs["data"]["rows"]),
    }
    for section in ("audit", "model", "statistics"):
        _flat(section, getattr(p, section).model_dump(mode="json", exclude_none=True), raw)
    for c in p.checks:
        raw[f"check.{c.id}"] = json.dumps(c.model_dump(mode="json", exclude_none=True,
                                                       exclude={"id"}), ensure_ascii=False)
    for role in ("teacher", "student"):
        how = report.inputs[role].get("output", {})
        raw[f"{role}.output"] = str(how.get("how", "")) if isinstance(how, dict) else str(how)
    key = KeyMaker()
    return {key(k, parts=(key_part(k),)): safe.mlflow_value(v, MAX_PARAM_VALUE)
            for k, v in raw.items()}


CI_ENV = {  # environment variable -> tag
    "GITHUB_REPOSITORY": "ci.github.repository",
    "GITHUB_SHA": "ci.github.sha",
    "GITHUB_RUN_ID": "ci.github.run_id",
    "GITHUB_RUN_ATTEMPT": "ci.github.run_attempt",
    "GITHUB_REF": "ci.github.ref",
    "GITHUB_WORKFLOW": "ci.github.workflow",
    "BUILD_URL": "ci.jenkins.build_url",
    "GIT_COMMIT": "ci.jenkins.git_commit",
    "JOB_NAME": "ci.jenkins.job_name",
    "BUILD_NUMBER": "ci.jenkins.build_number",
    "CI_PIPELINE_URL": "ci.gitlab.pipeline_url",
    "CI_COMMIT_SHA": "ci.gitlab.commit_sha",
    "CI_PROJECT_PATH": "ci.gitlab.project_path",
    "CI_JOB_URL": "ci.gitlab.job_url",
}


def ci_tags(env: Mapping[str, str]) -> dict[str, str]:
    """CI provenance: which pipeline, commit and repository produced this verdict."""
    tags = {tag: env[var] for var, tag in CI_ENV.items() if env.get(var)}
    if env.get("GITHUB_ACTIONS") == "true" or env.get("GITHUB_RUN_ID"):
        tags["ci.provider"] = "github"
        if env.get("GITHUB_REPOSITORY"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
            tags["mlflow.source.git.repoURL"] = f"{server}/{env['GITHUB_REPOSITORY']}"
            if env.get("GITHUB_RUN_ID"):
                tags["ci.github.run_url"] = (f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/"
                                             f"{env['GITHUB_RUN_ID']}")
    elif env.get("GITLAB_CI") or env.get("CI_PIPELINE_URL"):
        tags["ci.provider"] = "gitlab"
    elif env.get("JENKINS_URL") or env.get("BUILD_URL"):
        tags["ci.provider"] = "jenkins"
    commit = env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA") or env.get("GIT_COMMIT")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def engine_tags(data: Mapping[str, Any], engine: Mapping[str, Any]) -> dict[str, str]:
    """The data's identity (listing fingerprint, or table and version) and the engine that
    counted it: Spark's version, master, partitions and executors."""
    tags = {}
    for key in ("fingerprint", "table", "version", "files"):
        if data.get(key) is not None:
            tags[f"fairgate.data.{key}"] = str(data[key])
    for key in ("name", "spark_version", "master", "partitions", "executors"):
        if engine.get(key) is not None:
            tags["fairgate.engine" if key == "name" else f"fairgate.engine.{key}"] = str(engine[key])
    return tags


def _tags(report: GateReport, env: Mapping[str, str]) -> dict[str, str]:
    d = report.decision
    tags = {
        "fairgate.verdict": report.verdict,
        "fairgate.exit_code": str(d.exit_code),
        "fairgate.version": report.version,
        "fairgate.sha256.policy": report.policy.sha256,
        "fairgate.data": Path(str(report.inputs["data"]["path"])).name,
    }
    tags.update(engine_tags(report.inputs["data"], report.engine))
    for role in ("teacher", "student"):
        info = report.inputs[role]
        tags[f"fairgate.{role}"] = _model_name(info)
        tags[f"fairgate.{role}.read_as"] = model_reading(info)
        if info.get("sha256"):
            tags[f"fairgate.sha256.{role}"] = str(info["sha256"])
    if report.warnings:
        tags["fairgate.warnings"] = " | ".join(report.warnings)
    key = KeyMaker()
    for r in d.results:
        attrs = _ident(r.key.grouping)
        where = r.key.grouping.name if r.key.grouping else "overall"
        k = key("fairgate.status", r.check.id, where, ident=(r.check.id, attrs, r.key.alpha),
                parts=("fairgate.status", key_part(r.check.id),
                       grouping_part(*attrs or (None,))))
        tags[k] = r.status.value
    cut = groups_logged_tag(report)
    if cut is not None:
        tags["fairgate.groups_logged"] = cut
    tags.update(ci_tags(env))
    out = {k: safe.mlflow_value(v, MAX_TAG_VALUE) for k, v in tags.items()}
    out["mlflow.note.content"] = safe.clip(note(report), MAX_TAG_VALUE, short=True)  # Markdown
    return out


def _model_name(info: Mapping[str, Any]) -> str:
    if info.get("path"):
        return Path(str(info["path"])).name
    return f"column {info.get('column')}"


def run_name(report: GateReport) -> str:
    """``student_int8 vs teacher`` unless the policy names the run."""
    given = report.policy.policy.mlflow.run_name
    if given:
        return safe.mlflow_value(given, MAX_RUN_NAME)

    def short(role: str) -> str:
        info = report.inputs[role]
        return Path(str(info["path"])).stem if info.get("path") else str(info.get("column"))

    return safe.mlflow_value(f"{short('student')} vs {short('teacher')}", MAX_RUN_NAME)


def _md(text: object) -> str:
    """A name from the data or the policy, as inert Markdown (MLflow renders the note)."""
    return safe.markdown(text, 200)


def _f(x: float, signed: bool = False) -> str:
    if math.isnan(x):
        return "undefined"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def note(report: GateReport) -> str:
    """The run's description in the MLflow UI: verdict, inputs, one row per check."""
    d = report.decision
    counts: dict[str, int] = {}
    for r in d.results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    teacher, student = (_model_name(report.inputs[r]) for r in ("teacher", "student"))
    head = [
        f"### fairgate verdict: **{report.verdict.upper()}** (exit {d.exit_code})",
        "",
        f"Student **{_md(student)}** vs teacher **{_md(teacher)}** on "
        f"{_md(_model_name(report.inputs['data']))} ({report.inputs['data']['rows']:,} rows). "
        f"{len(d.results)} checks: {summary}.",
        "",
        *(f"- {role} read as: {_md(text)}" for role, text in model_readings(report)),
        *(f"- **warning**: {_md(w)}" for w in report.warnings),
        "",
        "| status | check | grouping | teacher | student | change | change interval |",
        "|---|---|---|---|---|---|---|",
    ]
    text = "\n".join(head)
    order = {"fail": 0, "undefined": 1, "warn": 2, "waived": 3, "pass": 4}
    results = sorted(d.results, key=lambda r: order.get(r.status.value, 9))
    for i, r in enumerate(results):
        v = r.value
        ci = v.delta_interval
        row = (f"\n| {r.status.value} | {_md(r.check.id)} | "
               f"{_md(r.key.grouping.name if r.key.grouping else 'overall')} | "
               f"{_f(v.teacher)} | {_f(v.student)} | {_f(v.delta, True)} | "
               f"{'' if ci is None else f'[{_f(ci.lo, True)}, {_f(ci.hi, True)}]'} |")
        if len(text) + len(row) > NOTE_BUDGET:
            text += f"\n\n… {len(results) - i} more checks: see `report.json`."
            break
        text += row
    return text + "\n\nDetails: artifacts `report.json` and `kpis.csv`."


# ----------------------------------------------------------------------------- artifacts

KPI_COLUMNS = ("kind", "check", "status", "metric", "alpha", "grouping", "teacher", "student",
               "delta", "relative_delta", "teacher_lo", "teacher_hi", "student_lo",
               "student_hi", "delta_lo", "delta_hi", "undefined")


def _cell(x: float | None) -> str:
    v = _num(x)
    return "" if v is None else repr(v)


def kpi_table(report: GateReport) -> str:
    """The KPI table as CSV: one row per check result and per KPI; empty cell = undefined."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(KPI_COLUMNS)
    rows: list[tuple[str, str, str, MetricValue]] = [
        ("check", r.check.id, r.status.value, r.value) for r in report.decision.results
    ] + [("kpi", "", "", v) for v in report.kpis]
    for kind, check, status, v in rows:
        k = v.key

        def iv(i: Any, side: str) -> str:
            return "" if i is None else _cell(getattr(i, side))

        w.writerow([kind, safe.csv_cell(check), status, safe.csv_cell(k.metric),
                    "" if k.alpha is None else repr(k.alpha),
                    safe.csv_cell(k.grouping.name if k.grouping else ""),
                    _cell(v.teacher), _cell(v.student), _cell(v.delta), _cell(v.relative),
                    iv(v.teacher_interval, "lo"), iv(v.teacher_interval, "hi"),
                    iv(v.student_interval, "lo"), iv(v.student_interval, "hi"),
                    iv(v.delta_interval, "lo"), iv(v.delta_interval, "hi"),
                    safe.csv_cell(v.reason or "")])
    return buf.getvalue()


def resolved_policy(report: GateReport) -> str:
    """The policy as applied (defaults filled in, --seed applied), itself a valid policy."""
    import yaml

    data = report.policy.policy.model_dump(mode="json", exclude_none=True)
    header = (f"# fairgate policy as applied to this run (defaults filled in)\n"
              f"# source: {report.policy.path.name} sha256 {report.policy.sha256}\n")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def report_files(out: Path) -> list[Path]:
    """The reports this run wrote: write_reports removes those of formats not chosen."""
    from fairgate.report import reporters

    names = dict.fromkeys(r.filename for r in reporters().values())
    return [out / n for n in names if (out / n).is_file()]


def stage_artifacts(report: GateReport, out: Path, record: RunRecord, folder: Path) -> None:
    """Lay out every artifact in ``folder`` so one upload call sends them all."""
    for path in report_files(out):
        shutil.copyfile(path, folder / path.name)
    (folder / "kpis.csv").write_text(kpi_table(report), encoding="utf-8")
    (folder / "metric_keys.json").write_text(
        json.dumps({k: list(v) for k, v in record.key_origins.items()}, indent=1,
                   ensure_ascii=False) + "\n", encoding="utf-8")
    policy_dir = folder / "policy"
    policy_dir.mkdir()
    name = report.policy.path.name if report.policy.path.name != "resolved.yaml" else "source.yaml"
    (policy_dir / name).write_text(report.policy.text, encoding="utf-8")
    (policy_dir / "resolved.yaml").write_text(resolved_policy(report), encoding="utf-8")


# ----------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Batch:
    metrics: list[tuple[str, float]]
    params: list[tuple[str, str]]
    tags: list[tuple[str, str]]


def batches(metrics: Mapping[str, float], params: Mapping[str, str],
            tags: Mapping[str, str]) -> Iterator[Batch]:
    """Fill each log_batch call up to MLflow's limits: 100 params, 100 tags, 1000 metrics,
    1000 entities in all, so a typical gate is one request."""
    m, p, t = list(metrics.items()), list(params.items()), list(tags.items())
    while m or p or t:
        bp, p = p[:MAX_PARAMS], p[MAX_PARAMS:]
        bt, t = t[:MAX_TAGS], t[MAX_TAGS:]
        room = min(MAX_METRICS, MAX_ENTITIES - len(bp) - len(bt))
        bm, m = m[:room], m[room:]
        yield Batch(bm, bp, bt)


# ----------------------------------------------------------------------------- where to log


@dataclass(frozen=True)
class Target:
    uri: str | None  # None: MLflow's default store
    source: str  # where the URI came from, for messages

    @property
    def shown(self) -> str:
        return redact(self.uri) if self.uri else "MLflow's default store (./mlflow.db)"


_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_SCHEMES = ("http", "https", "file", "databricks", "databricks-uc", "uc", *_DB_SCHEMES)


def redact(uri: str) -> str:
    """A URI without its password, for messages."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def _plugin_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="mlflow.tracking_store")}


def check_uri(uri: str, source: str) -> str:
    """The URI, stripped; a UsageError (exit 2) naming the source when it is malformed."""
    uri = uri.strip()

    def bad(why: str) -> UsageError:
        return UsageError(f"MLflow tracking URI {redact(uri)!r} ({source}) is malformed: {why}")

    if not uri:
        raise bad("it is empty")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", uri)
    if m is None or len(m.group(1)) == 1:  # a local path (or a Windows drive letter)
        if re.fullmatch(r"[\w.\-]+:\d+(/.*)?", uri):
            raise bad(f"no scheme; did you mean 'http://{uri}'?")
        return uri
    scheme = m.group(1).lower()
    base = scheme.split("+", 1)[0]
    if scheme not in _SCHEMES and base not in _DB_SCHEMES and scheme not in _plugin_schemes():
        hint = (f"; did you mean 'http://{uri}'?" if re.fullmatch(r"[\w.\-]+:\d+(/.*)?", uri)
                else "")
        raise bad(f"unknown scheme {scheme!r} (use http://, https://, sqlite:///, file:, "
                  f"databricks or a database URL){hint}")
    if scheme in ("http", "https"):
        if re.search(r"\s", uri):
            raise bad("it contains whitespace")
        parts = urlsplit(uri)
        if not parts.netloc or not parts.hostname:
            raise bad(f"no host (expected {scheme}://HOST[:PORT])")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError:
            raise bad("the port is not a number from 0 to 65535") from None
    elif base in _DB_SCHEMES and not uri[len(scheme) + 1:].startswith("//"):
        raise bad(f"expected {scheme}://… (for a local file: sqlite:///path/to/mlflow.db)")
    return uri


def target_of(loaded: LoadedPolicy, env: Mapping[str, str] | None = None) -> Target:
    """Where the run goes; raises UsageError for a malformed URI (callable before the gate)."""
    env = os.environ if env is None else env
    spec = loaded.policy.mlflow
    if spec.tracking_uri is not None:
        line = loaded.line_of(("mlflow", "tracking_uri"))
        source = f"{loaded.path}:{line}: mlflow.tracking_uri"
        return Target(check_uri(spec.tracking_uri, source), source)
    if env.get("MLFLOW_TRACKING_URI", "").strip():
        return Target(check_uri(env["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"),
                      "MLFLOW_TRACKING_URI")
    return Target(None, "default")


_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")  # mlflow.utils.validation._RUN_ID_REGEX


def parent_of(parent_run: str | None, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    parent, source = ((parent_run, "--parent-run") if parent_run
                      else (env.get("MLFLOW_RUN_ID", "").strip() or None, "MLFLOW_RUN_ID"))
    if parent is not None and not _RUN_ID.match(parent):
        raise UsageError(f"{source}: {parent!r} is not an MLflow run id")
    return parent


# ----------------------------------------------------------------------------- logging


@dataclass(frozen=True)
class Logged:
    """What happened to the run; ``message`` is the one line the CLI prints."""

    ok: bool
    message: str
    error: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    uri: str | None = None
    seconds: float = 0.0


class _Abandoned(Exception):
    """The caller stopped waiting; the worker stops at its next call."""


T = TypeVar("T")


class _Worker:
    """Logs the run in a daemon thread so the caller can stop waiting at the deadline.

    Before each request the HTTP timeout is set to what is left of the budget (mlflow reads
    it per request), so even an abandoned worker ends shortly after the deadline.
    """

    def __init__(self, report: GateReport, out: Path, target: Target, parent: str | None,
                 deadline: float, env: Mapping[str, str]) -> None:
        self.report, self.out, self.target, self.parent = report, out, target, parent
        self.deadline, self.env = deadline, env
        self.abandoned = threading.Event()
        self.ok = False
        self.error: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.uri: str | None = None
        self.user_timeout = _int_env(env, _TIMEOUT_ENV)
        self.timeout = report.policy.policy.mlflow.timeout

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.abandoned.is_set():
            raise _Abandoned()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"did not finish within {self.timeout:g} s (mlflow.timeout)")
        per_try = max(1, math.ceil(left / (1 + _HTTP_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])))
        if self.user_timeout is not None:
            per_try = max(1, min(per_try, self.user_timeout))
        os.environ[_TIMEOUT_ENV] = str(per_try)
        return fn(*args, **kwargs)

    def run(self) -> None:
        try:
            self._log()
            self.ok = True
        except BaseException as e:  # a failing server must never break the gate
            self.error = why(e)
            if self.run_id is not None:
                self._mark_failed(self.run_id)

    def _log(self) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = self.call(MlflowClient, tracking_uri=self.target.uri)
        self.uri = str(client.tracking_uri)
        report = self.report
        spec = report.policy.policy.mlflow
        tags = {"mlflow.user": _user(), "mlflow.source.name": "fairgate check",
                "mlflow.source.type": "JOB", "fairgate.verdict": report.verdict}
        if self.parent is not None:
            try:
                parent = self.call(client.get_run, self.parent)
            except Exception as e:
                raise LookupError(f"parent run {self.parent} not found or unreadable "
                                  f"({why(e)})") from e
            exp_id = parent.info.experiment_id
            tags["mlflow.parentRunId"] = self.parent
        else:
            name = (spec.experiment or self.env.get("MLFLOW_EXPERIMENT_NAME", "").strip()
                    or DEFAULT_EXPERIMENT)
            exp_id = self._experiment(client, name)
        self.experiment_id = exp_id
        record = collect(report, self.env)
        run = self.call(client.create_run, exp_id, run_name=run_name(report), tags=tags)
        self.run_id = run.info.run_id
        now = int(time.time() * 1000)
        for b in batches(record.metrics, record.params, record.tags):
            self.call(client.log_batch, self.run_id,
                      metrics=[Metric(k, v, now, 0) for k, v in b.metrics],
                      params=[Param(k, v) for k, v in b.params],
                      tags=[RunTag(k, v) for k, v in b.tags], synchronous=True)
        with tempfile.TemporaryDirectory(prefix="fairgate-mlflow-") as tmp:
            stage_artifacts(report, self.out, record, Path(tmp))
            self.call(client.log_artifacts, self.run_id, tmp)
        self.call(client.set_terminated, self.run_id, "FINISHED")

    def _experiment(self, client: Any, name: str) -> str:
        exp = self.call(client.get_experiment_by_name, name)
        if exp is None:
            try:
                return str(self.call(client.create_experiment, name))
            except Exception:  # created meanwhile by a parallel gate
                exp = self.call(client.get_experiment_by_name, name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise LookupError(f"experiment {name!r} is deleted; restore it (mlflow experiments "
                              "restore) or set mlflow.experiment in the policy")
        return str(exp.experiment_id)

    def _mark_failed(self, run_id: str) -> None:
        """Best effort, a few seconds at most: a half-logged run must not look complete."""
        from mlflow.tracking import MlflowClient

        os.environ[_TIMEOUT_ENV] = "2"
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        try:
            client = MlflowClient(tracking_uri=self.target.uri)
            client.set_tag(run_id, "fairgate.logging_error",
                           safe.mlflow_value(self.error or "interrupted", MAX_TAG_VALUE))
            client.set_terminated(run_id, "FAILED")
        except Exception:
            pass


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


_HINTS = (
    ("Connection refused", "connection refused (is the tracking server running?)"),
    ("Read timed out", "the server accepted the connection but did not answer in time"),
    ("timed out", "timed out"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("Max retries exceeded", "the server could not be reached"),
)


def why(e: BaseException) -> str:
    """One line a person can act on, from mlflow's multi-line, nested error texts."""
    if isinstance(e, _Abandoned):
        return "stopped at mlflow.timeout"
    text = " ".join(str(e).split())
    code = getattr(e, "error_code", None)
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:
        return f"the server answered HTTP {status.group(1)} (retried once)"
    for needle, hint in _HINTS:
        if needle in text:
            return hint
    detail = safe.clip(text, 300) if text else type(e).__name__
    if code and code != "INTERNAL_ERROR" and str(code) not in detail:
        detail = f"{code}: {detail}"
    plain = ("MlflowException", "RestException", "LookupError", "TimeoutError")
    return detail if type(e).__name__ in plain else f"{type(e).__name__}: {detail}"


def _http_env(timeout: float, env: Mapping[str, str]) -> dict[str, str]:
    """The HTTP settings while logging; a user's stricter setting is kept."""
    out = dict(_HTTP_FIXED)
    for name, ours in _HTTP_ENV.items():
        mine = _int_env(env, name)
        out[name] = str(ours if mine is None else min(mine, ours))
    out[_TIMEOUT_ENV] = str(max(1, math.ceil(timeout / 2)))
    return out


_active = 0
_saved: dict[str, str | None] = {}


def _enter_http_env(settings: dict[str, str]) -> None:
    """Set mlflow's HTTP settings while any worker runs (an abandoned one may outlive its
    caller and overlap the next run); the first saves the user's values, the last restores."""
    global _active
    with _ENV_LOCK:
        if _active == 0:
            _saved.clear()
            _saved.update({k: os.environ.get(k) for k in settings})
        _active += 1
        os.environ.update(settings)


def _leave_http_env() -> None:
    global _active
    with _ENV_LOCK:
        _active -= 1
        if _active == 0:
            for k, v in _saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def log_gate_run(report: GateReport, out: Path, parent_run: str | None = None,
                 env: Mapping[str, str] | None = None) -> Logged:
    """Log the run within ``mlflow.timeout``; a failure is returned, never raised.

    Raises UsageError (exit 2) only for what the user must fix before any request: a
    malformed tracking URI or parent run id.
    """
    env = dict(os.environ) if env is None else env
    target = target_of(report.policy, env)
    parent = parent_of(parent_run, env)
    timeout = report.policy.policy.mlflow.timeout
    started = time.monotonic()
    deadline = started + timeout
    stand = "The verdict and the reports stand."
    try:
        import mlflow  # noqa: F401 - imported here, in the caller's thread (import lock)

        # mlflow's INFO lines (database migrations) are noise in a gate's output
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    except Exception as e:
        return Logged(False, f"MLflow: run NOT logged: mlflow cannot be imported ({why(e)}). "
                             f"{stand}", why(e))
    imported = time.monotonic() - started
    if imported >= timeout:
        return Logged(False, f"MLflow: run NOT logged: importing mlflow took {imported:.1f} s, "
                             f"all of mlflow.timeout ({timeout:g} s). {stand}",
                      "mlflow.timeout spent importing mlflow", seconds=imported)
    worker = _Worker(report, out, target, parent, deadline, env)
    _enter_http_env(_http_env(timeout, env))

    def body() -> None:
        try:
            worker.run()
        finally:
            _leave_http_env()

    thread = threading.Thread(target=body, name="fairgate-mlflow", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    seconds = time.monotonic() - started
    where = target.shown
    if thread.is_alive():
        worker.abandoned.set()
        partial = (f"; run {worker.run_id} was started there and is incomplete"
                   if worker.run_id else "")
        return Logged(False, f"MLflow: run NOT logged: {where} did not finish within "
                             f"{timeout:g} s (mlflow.timeout){partial}. {stand}",
                      f"no answer within {timeout:g} s", worker.run_id, worker.experiment_id,
                      target.uri, seconds)
    if not worker.ok:
        return Logged(False, f"MLflow: run NOT logged to {where}: {worker.error}. {stand}",
                      worker.error, worker.run_id, worker.experiment_id, target.uri, seconds)
    uri = worker.uri or target.uri or ""
    if uri.startswith(("http://", "https://")):
        link = f"{redact(uri).rstrip('/')}/#/experiments/{worker.experiment_id}/runs/{worker.run_id}"
    else:
        link = f"{redact(uri)} (browse with `mlflow ui --backend-store-uri {redact(uri)}`)"
    return Logged(True, f"MLflow: logged run '{run_name(report)}' ({worker.run_id}): {link}",
                  None, worker.run_id, worker.experiment_id, uri, seconds)
