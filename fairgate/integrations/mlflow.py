"""MLflow: one run per gate, holding everything needed to understand and reproduce the verdict.

Logging never changes the verdict or the reports: an unreachable, slow or failing server
is reported in one plain line, the whole wait is bounded by ``mlflow.timeout`` (mlflow's
own HTTP client would otherwise retry for minutes and honour ``Retry-After``), and only
``mlflow.required: true`` turns a logging failure into exit 3. A malformed tracking URI
is a usage error (exit 2), found before anything is sent.

The MLflow calls themselves run in a child process (:mod:`fairgate.integrations.mlflow_worker`)
that the CLI starts before the gate, so that importing mlflow and opening the store overlap
with the gate; this module builds what that process logs (pure data, tested without a
server) and reads its answers. mlflow is never imported here.

Where the run goes: the policy's ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``,
else MLflow's default store (today ``sqlite:///mlflow.db`` in the working directory). The
experiment is the parent run's when nested (MLflow shows nesting within one experiment),
else the policy's ``mlflow.experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else ``fairgate``;
an experiment fairgate creates (or finds without a kind) is put in MLflow 3's model-training
view.

What a run holds: params, metrics (every value with its interval, per-group rates, and
``fairgate.passed``, 1 or 0, a sortable verdict column), tags (verdict, hashes, the model
sources, CI provenance, the note), the audit set as a dataset input, the logged models gated
as model inputs, and the reports and policy as artifacts. A failed gate ends its run as
FAILED, a pass or a warn as FINISHED. When the student is a registered model version, the
verdict is stamped on it as tags, and ``--promote ALIAS`` moves the alias to it (pass only,
after everything else was logged).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import getpass
import hashlib
import io
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import GroupRow, MetricKey, MetricValue
from fairgate.core.gate import Status
from fairgate.core.outcome import GateReport
from fairgate.errors import UsageError
from fairgate.inputs.sources import model_label
from fairgate.integrations.mlflow_worker import GRACE, RestStore, http_settings
from fairgate.policy import LoadedPolicy
from fairgate.report import safe
from fairgate.report.json import num as json_number
from fairgate.report.markdown import by_evidence
from fairgate.report.safe import mlflow_key_part as key_part
from fairgate.report.terminal import model_reading, model_readings

if TYPE_CHECKING:
    from fairgate.comparison import Comparison

# MLflow's per-request limits (mlflow.utils.validation), kept here so no import is needed.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTITIES = 1000, 100, 100, 1000
MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE, MAX_RUN_NAME = 250, 6000, 8000, 250
DEFAULT_EXPERIMENT = "fairgate"
NOTE_BUDGET = 7800  # mlflow.note.content is a tag: at most MAX_TAG_VALUE characters

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
    d = report.decision
    for name, value in (("fairgate.passed", float(d.exit_code == 0)),  # sortable verdict
                        ("fairgate.blocking_checks", float(sum(r.blocking for r in d.results))),
                        ("fairgate.inconclusive_checks", float(sum(
                            r.status is Status.INCONCLUSIVE for r in d.results)))):
        put(value, (name,), (name,), (name,))
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
    counted it: Spark's version, master, Spark Connect server, partitions and executors."""
    tags = {}
    for key in ("fingerprint", "table", "version", "files"):
        if data.get(key) is not None:
            tags[f"fairgate.data.{key}"] = str(data[key])
    for key in ("name", "spark_version", "master", "remote", "partitions", "executors"):
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
        tags[f"fairgate.{role}"] = model_label(info)
        tags[f"fairgate.{role}.read_as"] = model_reading(info)
        if info.get("sha256"):
            tags[f"fairgate.sha256.{role}"] = str(info["sha256"])
        src = _source(report, role)
        if src:  # a model resolved from MLflow: which one, exactly
            tags[f"fairgate.{role}.uri"] = str(src.get("uri"))
            for field, tag in (("version", "version"), ("model_id", "model_id"),
                               ("run_id", "source_run")):
                if src.get(field):
                    tags[f"fairgate.{role}.{tag}"] = str(src[field])
            if src.get("registered_model"):
                tags[f"fairgate.{role}.registered_model"] = str(src["registered_model"])
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


def _short(info: Mapping[str, Any]) -> str:
    """A model in a run name: file stem, registry label, or the score column."""
    if _is_source(info):
        return model_label(info)
    return Path(str(info["path"])).stem if info.get("path") else str(info.get("column"))


def _is_source(info: Mapping[str, Any]) -> bool:
    return isinstance(info.get("source"), Mapping)


def _clock(started_at: str) -> str:
    """``HH:MM:SS`` (UTC) of an ISO time, for run names; the UI shows the date beside it."""
    try:
        return dt.datetime.fromisoformat(started_at).strftime("%H:%M:%S")
    except ValueError:
        return started_at


def run_name(report: GateReport) -> str:
    """``student_int8 vs teacher · policy · 14:03:27`` (student, teacher, policy file, UTC
    time of the gate), so that runs of one experiment tell apart, unless the policy names
    the run."""
    given = report.policy.policy.mlflow.run_name
    if given:
        return safe.mlflow_value(given, MAX_RUN_NAME)
    name = (f"{_short(report.inputs['student'])} vs {_short(report.inputs['teacher'])} · "
            f"{report.policy.path.stem} · {_clock(report.started_at)}")
    return safe.mlflow_value(name, MAX_RUN_NAME)


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
    teacher, student = (model_label(report.inputs[r]) for r in ("teacher", "student"))
    head = [
        f"### fairgate verdict: **{report.verdict.upper()}** (exit {d.exit_code})",
        "",
        f"Student **{_md(student)}** vs teacher **{_md(teacher)}** on "
        f"{_md(Path(str(report.inputs['data']['path'])).name)} ({report.inputs['data']['rows']:,} rows). "
        f"{len(d.results)} checks: {summary}.",
        "",
        *(f"- {role} read as: {_md(text)}" for role, text in model_readings(report)),
        *(f"- **warning**: {_md(w)}" for w in report.warnings),
        "",
        "| status | check | grouping | teacher | student | change | change interval |",
        "|---|---|---|---|---|---|---|",
    ]
    text = "\n".join(head)
    order = {"fail": 0, "undefined": 1, "inconclusive": 2, "warn": 3, "waived": 4, "pass": 5}
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


# ----------------------------------------------------------------------------- what a job holds


def run_status(report: GateReport) -> str:
    """A failed gate is a FAILED run (red in the UI), a pass or a warn FINISHED; a run whose
    logging broke is FAILED too, with ``fairgate.logging_error`` saying why."""
    return "FINISHED" if report.decision.exit_code == 0 else "FAILED"


_COLSPEC = (("bool", "boolean"), ("int8", "integer"), ("int16", "integer"), ("int32", "integer"),
            ("int64", "long"), ("uint", "long"), ("halffloat", "float"), ("float", "float"),
            ("double", "double"), ("string", "string"), ("large_string", "string"),
            ("binary", "binary"), ("timestamp", "datetime"), ("date", "datetime"))
MAX_SCHEMA_COLUMNS = 1000


def _colspec(path: Path) -> tuple[list[dict[str, Any]], int] | None:
    """The audit set's columns in MLflow's colspec form (at most MAX_SCHEMA_COLUMNS), from the
    file's metadata only (Parquet) or its first block (CSV); None when it cannot be read."""
    try:
        import pyarrow as pa

        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            with pacsv.open_csv(path) as reader:
                schema = reader.schema
        else:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
    except Exception:
        return None
    cols = []
    for f in list(schema)[:MAX_SCHEMA_COLUMNS]:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        name = str(t)
        kind = next((m for p, m in _COLSPEC if name == p or name.startswith(p + "[")
                     or (p == "uint" and name.startswith("uint"))), "string")
        cols.append({"type": kind, "name": safe.mlflow_value(f.name, 500),
                     "required": not f.nullable})
    return cols, len(schema)


def data_identity(data: Mapping[str, Any]) -> str:
    """The audit set's identity as report.json's ``inputs.data`` gives it: the fingerprint of
    its file listing, or for a table without local files a sha256 of its name and version."""
    if data.get("fingerprint"):
        return str(data["fingerprint"])
    named = f"{data.get('table') or data.get('path')}@{data.get('version')}"
    return hashlib.sha256(named.encode()).hexdigest()


def dataset_input(report: GateReport) -> dict[str, Any]:
    """The audit set as an MLflow dataset input (the run's Datasets panel): its name, a digest
    (the first 16 hex digits of its identity, see :func:`data_identity`), where it is, its
    schema and row count."""
    data = report.inputs["data"]
    given = str(data["path"])
    identity = data_identity(data)
    profile: dict[str, Any] = {"num_rows": data["rows"], "fingerprint": identity}
    local = data.get("table") is None and not is_uri(given)
    path = Path(given)
    spec = _colspec(path) if local and path.is_file() else None
    schema = None
    if spec is not None:
        cols, total = spec
        profile["num_columns"] = total
        schema = json.dumps({"mlflow_colspec": cols}, ensure_ascii=False)
    name = str(data["table"]) if data.get("table") else (path.name or given)
    where = str(path.resolve()) if local else given
    return {"name": safe.mlflow_value(name, 500), "digest": identity[:16],
            "source_type": "local" if local else ("spark" if data.get("table") else "uri"),
            "source": json.dumps({"uri": safe.mlflow_value(where, 4000)}, ensure_ascii=False),
            "schema": schema, "profile": json.dumps(profile), "context": "audit"}


def is_uri(given: str) -> bool:
    from fairgate.inputs.data_source import is_table, uri_scheme

    return is_table(given) or uri_scheme(given) is not None


ROLES = ("teacher", "student", "reference_student")


def _source(report: GateReport, role: str) -> Mapping[str, Any]:
    info = report.inputs.get(role) or {}
    src = info.get("source")
    return src if isinstance(src, Mapping) else {}


def model_inputs(report: GateReport) -> list[str]:
    """Logged-model ids of the models gated (MLflow 3 links them to the run as inputs)."""
    ids = [_source(report, r).get("model_id") for r in ROLES]
    return list(dict.fromkeys(str(i) for i in ids if i))


def registered_student(report: GateReport) -> Mapping[str, Any] | None:
    src = _source(report, "student")
    return src if src.get("registered_model") and src.get("version") else None


def version_tags(report: GateReport) -> dict[str, str]:
    """What is stamped on the judged model version (the worker adds the run's id and link)."""
    teacher = report.inputs["teacher"]
    t_src = _source(report, "teacher")
    tags = {
        "fairgate.verdict": report.verdict,
        "fairgate.passed": "true" if report.decision.exit_code == 0 else "false",
        "fairgate.exit_code": str(report.decision.exit_code),
        "fairgate.inconclusive_checks": str(sum(r.status is Status.INCONCLUSIVE
                                                for r in report.decision.results)),
        "fairgate.checked_at": report.started_at,
        "fairgate.policy": report.policy.path.name,
        "fairgate.policy_sha256": report.policy.sha256,
        "fairgate.data_fingerprint": data_identity(report.inputs["data"]),
        "fairgate.teacher": str(t_src.get("uri") or model_label(teacher)),
        "fairgate.fairgate_version": report.version,
    }
    if teacher.get("sha256"):
        tags["fairgate.teacher_sha256"] = str(teacher["sha256"])
    if t_src.get("registered_model"):
        tags["fairgate.teacher_version"] = f"{t_src['registered_model']}/{t_src['version']}"
    return {k: safe.mlflow_value(v, MAX_TAG_VALUE) for k, v in tags.items()}


def promote_spec(report: GateReport, alias: str) -> dict[str, Any] | None:
    """What the worker needs to move ``alias`` to the student's version; None unless the
    gate passed (exit 0: pass, or pass with warnings) and the student is a registered version.

    ``expect``: when the teacher was given as this very alias, the version it pointed to;
    the worker refuses to promote if the alias has moved since.
    """
    student = registered_student(report)
    if student is None or report.decision.exit_code != 0:
        return None
    t = _source(report, "teacher")
    same = t.get("registered_model") == student["registered_model"] and t.get("alias") == alias
    return {"name": student["registered_model"], "alias": alias,
            "version": str(student["version"]), "expect": str(t["version"]) if same else None}


def ui_base(uri: str | None) -> str | None:
    """The tracking server's web UI, for links (none for a local store)."""
    return redact(uri).rstrip("/") if uri and uri.startswith(("http://", "https://")) else None


def run_spec(report: GateReport, out: Path, folder: Path, env: Mapping[str, str], *,
             source_name: str = "fairgate check", promote: str | None = None,
             ui: str | None = None, parent_index: int | None = None) -> dict[str, Any]:
    """One gate run as the worker logs it: everything serializable, artifacts staged."""
    record = collect(report, env)
    folder.mkdir(parents=True)
    stage_artifacts(report, out, record, folder)
    student = registered_student(report)
    return {
        "name": run_name(report),
        "tags": {"mlflow.user": _user(), "mlflow.source.name": source_name,
                 "mlflow.source.type": "JOB", "fairgate.verdict": report.verdict},
        "batches": [{"metrics": b.metrics, "params": b.params, "tags": b.tags}
                    for b in batches(record.metrics, record.params, record.tags)],
        "artifacts": str(folder),
        "dataset": dataset_input(report),
        "model_inputs": model_inputs(report),
        "status": run_status(report),
        "stamp": None if student is None else {
            "name": student["registered_model"], "version": str(student["version"]),
            "tags": version_tags(report), "ui": ui},
        "promote": None if promote is None else promote_spec(report, promote),
        "parent_index": parent_index,
    }


def compare_spec(result: Comparison, out: Path, folder: Path, env: Mapping[str, str],
                 ui: str | None = None) -> list[dict[str, Any]]:
    """A comparison: one parent run (the ranking, compare.json, compare.md and compare.html),
    then one nested run per candidate, each a full gate run."""
    first = result.candidates[0].report
    passing = sum(c.report.decision.exit_code == 0 for c in result.candidates)
    metrics = {"fairgate.passed": float(result.exit_code == 0),
               "fairgate.candidates": float(len(result.candidates)),
               "fairgate.candidates_passing": float(passing)}
    tags = {"fairgate.kind": "compare", "fairgate.recommended": result.recommended or "",
            "fairgate.best": ",".join(result.best),
            "fairgate.indistinguishable": ",".join(result.indistinguishable),
            "fairgate.teacher": model_label(first.inputs["teacher"]),
            "fairgate.sha256.policy": first.policy.sha256,
            **engine_tags(first.inputs["data"], first.engine),
            "mlflow.note.content": safe.clip(compare_note(result), MAX_TAG_VALUE, short=True),
            **ci_tags(env)}
    for r in result.ranking:
        tags[f"fairgate.rank/{key_part(r.name)}"] = str(r.rank)
    params = {"policy.sha256": first.policy.sha256, "fairgate.version": first.version,
              "candidates": ",".join(c.name for c in result.candidates)}
    staged = folder / "compare"
    staged.mkdir(parents=True)
    for name in ("compare.json", "compare.md", "compare.html"):
        if (out / name).is_file():
            shutil.copyfile(out / name, staged / name)
    parent = {
        "name": compare_run_name(result),
        "tags": {"mlflow.user": _user(), "mlflow.source.name": "fairgate compare",
                 "mlflow.source.type": "JOB", "fairgate.verdict":
                 "pass" if result.exit_code == 0 else "fail"},
        "batches": [{"metrics": b.metrics, "params": b.params, "tags": b.tags} for b in batches(
            metrics, {k: safe.mlflow_value(v, MAX_PARAM_VALUE) for k, v in params.items()},
            {k: v if k == "mlflow.note.content" else safe.mlflow_value(v, MAX_TAG_VALUE)
             for k, v in tags.items()})],
        "artifacts": str(staged),
        "dataset": dataset_input(first),
        "model_inputs": list(dict.fromkeys(m for c in result.candidates
                                           for m in model_inputs(c.report))),
        "status": "FINISHED" if result.exit_code == 0 else "FAILED",
        "stamp": None, "promote": None, "parent_index": None,
    }
    children = [run_spec(c.report, out / c.name, folder / f"candidate-{i}", env,
                         source_name="fairgate compare", ui=ui, parent_index=0)
                for i, c in enumerate(result.candidates)]
    return [parent, *children]


def compare_run_name(result: Comparison) -> str:
    first = result.candidates[0].report
    given = first.policy.policy.mlflow.run_name
    if given:
        return safe.mlflow_value(given, MAX_RUN_NAME)
    n = len(result.candidates)
    return safe.mlflow_value(
        f"compare {n} candidate{'s' if n != 1 else ''} vs {_short(first.inputs['teacher'])} · "
        f"{first.policy.path.stem} · {_clock(first.started_at)}", MAX_RUN_NAME)


def compare_note(result: Comparison) -> str:
    from fairgate.comparison import render_markdown

    return render_markdown(result)


# ----------------------------------------------------------------------------- logging


@dataclass(frozen=True)
class Logged:
    """What happened to one run; ``message`` is the one line the CLI prints."""

    ok: bool
    message: str
    error: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    uri: str | None = None
    seconds: float = 0.0
    run_name: str | None = None
    run_url: str | None = None
    stamp: dict[str, Any] | None = None  # the tags set on the judged model version
    promotion: dict[str, Any] | None = None  # alias, version, previous_version, status, reason
    link_error: str | None = None  # the run could not be linked to a logged model

    def record(self) -> dict[str, Any]:
        """report.json's ``mlflow`` section (written after logging)."""
        return {"logged": self.ok, "error": self.error, "tracking_uri": redact(self.uri or "")
                or None, "experiment_id": self.experiment_id, "run_id": self.run_id,
                "run_name": self.run_name, "run_url": self.run_url,
                "model_version": self.stamp, "promotion": self.promotion,
                "seconds_after_gate": round(self.seconds, 3),
                **({"link_error": self.link_error} if self.link_error else {})}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


#: The child's program: the folder holding the fairgate package goes first on its path
#: (replacing the working directory, whose files must not shadow mlflow's imports).
_BOOT = ("import sys; sys.path[0] = sys.argv[1]; "
         "from fairgate.integrations.mlflow_worker import main; main(sys.argv[2] == 'prefetch')")
#: Logging processes the CLI stopped waiting for: they end by themselves (end of input, or
#: their watchdog); kept here so that they are never waited for, nor warned about.
_DETACHED: list[subprocess.Popen[str]] = []
#: Seconds the CLI waits, beyond mlflow.timeout, for the logging process to read the job:
#: importing mlflow and opening a local store (not a server) take that long at worst.
START_LIMIT = 60.0


@dataclass(frozen=True)
class _Outcome:
    done: dict[str, Any] | None
    run_ids: dict[int, str]
    promoting: bool
    ready: dict[str, Any] | None
    seconds: float
    died: str | None  # the process ended without an answer: why


class Logger:
    """The logging process (:mod:`fairgate.integrations.mlflow_worker`) and its protocol.

    Start it before the gate (it imports mlflow and opens the store meanwhile), configure it
    once the policy is loaded, then log one job; :meth:`close` in every case. Logging never
    raises: a failure is returned as :class:`Logged`.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        # mlflow's usage telemetry fetches a config and posts events over the internet from
        # a process that lives for one gate (and ends with os._exit): off unless asked for
        self.env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        root = str(Path(__file__).resolve().parents[2])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.failed_start: str | None = None
        try:
            # a server this module's REST client speaks to needs no mlflow import at all;
            # anything else (the default sqlite store) starts importing it at once
            uri = self.env.get("MLFLOW_TRACKING_URI", "").strip() or None
            prefetch = "no" if RestStore.usable(uri, self.env) else "prefetch"
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, root, prefetch], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr, env=self.env, text=True,
                encoding="utf-8")
        except OSError as e:  # no process to be had: the gate goes on, unlogged
            self.failed_start = f"the logging process could not be started ({e})"
            self._events.put(None)
        else:
            threading.Thread(target=self._read, name="fairgate-mlflow", daemon=True).start()
        self.target = Target(None, "default")
        self.timeout = 15.0
        self.ready: dict[str, Any] | None = None
        self._started = False  # the process has read the job
        self.stand = "The verdict and the reports stand."

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                try:
                    self._events.put(json.loads(line))
                except ValueError:
                    continue
        self._events.put(None)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()

    def _send(self, text: str) -> bool:
        if self.proc is None:
            return False
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # the process ended
            return False

    def configure(self, loaded: LoadedPolicy, parent_run: str | None = None) -> None:
        """Where to log; a malformed URI or run id raises UsageError (exit 2) first."""
        self.target = target_of(loaded, self.env)
        parent = parent_of(parent_run, self.env)
        spec = loaded.policy.mlflow
        self.timeout = spec.timeout
        experiment = (spec.experiment or self.env.get("MLFLOW_EXPERIMENT_NAME", "").strip()
                      or DEFAULT_EXPERIMENT)
        self._send(json.dumps({"tracking_uri": self.target.uri, "experiment": experiment,
                               "parent_run_id": parent, "timeout": self.timeout,
                               "http_env": http_settings(self.timeout, self.env)}))

    def close(self) -> None:
        """End of input: a process with nothing (more) to do exits at once; one still
        logging (the caller stopped waiting) ends by itself, at the latest at its watchdog."""
        if self.proc is not None:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                with contextlib.suppress(OSError, ValueError):
                    self.proc.stdin.close()
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                _DETACHED.append(self.proc)
        self._stderr.close()

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [x for x in self._stderr.read().decode("utf-8", "replace").splitlines()
                     if x.strip()]
        except (OSError, ValueError):
            return ""
        return safe.clip(" ".join(lines[-1].split()), 300) if lines else ""

    def _run(self, runs: list[dict[str, Any]], staging: Path) -> _Outcome:
        """Send the job and collect the answers. The job gets mlflow.timeout from when the
        process reads it (at once if it is ready); waiting for it to be ready (importing
        mlflow, opening the store, finding the experiment within its own mlflow.timeout)
        is bounded by START_LIMIT more."""
        started = time.monotonic()
        job = staging / "job.json"
        job.write_text(json.dumps({"runs": runs}, ensure_ascii=False), encoding="utf-8")
        self._send(str(job))
        deadline = started + self.timeout + START_LIMIT  # until the job is read
        done: dict[str, Any] | None = None
        run_ids: dict[int, str] = {}
        promoting = False
        while True:
            left = deadline + (GRACE if promoting else 0.0) - time.monotonic()
            try:
                event = self._events.get(timeout=left) if left > 0 else None
            except queue.Empty:
                event = None
            if event is None:
                break
            kind = event.get("event")
            if kind == "ready":
                self.ready = event
            elif kind == "started":
                deadline = float(event["deadline"])
                self._started = True
            elif kind == "run":
                run_ids[int(event["index"])] = str(event["run_id"])
            elif kind == "promoting":
                promoting = True
            elif kind == "done":
                done = event
                break
        died = self.failed_start
        if done is None and self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)
            code = self.proc.poll()
            if code is not None:
                tail = self._stderr_tail()
                died = f"the logging process ended (exit {code}) without an answer" + (
                    f": {tail}" if tail else "")
            elif not self._started:
                died = (f"the logging process did not start within "
                        f"{self.timeout + START_LIMIT:g} s (importing mlflow, opening the store)")
        return _Outcome(done, run_ids, promoting, self.ready, time.monotonic() - started, died)

    def _logged(self, outcome: _Outcome, index: int, name: str) -> Logged:
        where = self.target.shown
        uri = (outcome.done or outcome.ready or {}).get("uri") or self.target.uri
        exp = (outcome.done or outcome.ready or {}).get("experiment_id")
        run_id = outcome.run_ids.get(index)
        if outcome.done is None:
            promotion = ({"status": "unknown", "reason": "the alias was being moved when "
                          "mlflow.timeout ran out; check the registry"} if outcome.promoting
                         else None)
            if outcome.died:
                return Logged(False, f"MLflow: run NOT logged to {where}: {outcome.died}. "
                                     f"{self.stand}", outcome.died, run_id, exp, uri,
                              outcome.seconds, name, promotion=promotion)
            partial = (f"; run {run_id} was started there and is incomplete" if run_id else "")
            return Logged(False, f"MLflow: run NOT logged: {where} did not finish within "
                                 f"{self.timeout:g} s (mlflow.timeout){partial}. {self.stand}",
                          f"no answer within {self.timeout:g} s", run_id, exp, uri,
                          outcome.seconds, name, promotion=promotion)
        r = outcome.done["runs"][index]
        run_id = r.get("run_id") or run_id
        base = ui_base(uri)
        url = f"{base}/#/experiments/{exp}/runs/{run_id}" if base and run_id else None
        common = {"run_id": run_id, "experiment_id": exp, "uri": uri, "seconds": outcome.seconds,
                  "run_name": name, "run_url": url, "stamp": r.get("stamp"),
                  "promotion": r.get("promotion"), "link_error": r.get("link_error")}
        if not r["ok"]:
            state = "marked FAILED" if r.get("marked_failed") else "incomplete"
            started = f"; run {run_id} was started there and is {state}" if run_id else ""
            return Logged(False, f"MLflow: run NOT logged to {where}: {r['error']}{started}. "
                                 f"{self.stand}", r["error"], **common)
        link = url or f"{redact(uri or '')} (browse with `mlflow ui --backend-store-uri " \
                      f"{redact(uri or '')}`)"
        return Logged(True, f"MLflow: logged run '{name}' ({run_id}): {link}", None, **common)

    def log_check(self, report: GateReport, out: Path, promote: str | None = None) -> Logged:
        """Log one gate run; with ``promote``, move that alias to the student's version when
        the gate passed and the run and the version's stamp were logged."""
        with tempfile.TemporaryDirectory(prefix="fairgate-mlflow-") as tmp:
            spec = run_spec(report, out, Path(tmp) / "run", self.env, promote=promote,
                            ui=ui_base(self.target.uri))
            return self._logged(self._run([spec], Path(tmp)), 0, spec["name"])

    def log_compare(self, result: Comparison, out: Path) -> tuple[Logged, list[Logged]]:
        """Log a comparison: the parent run, then each candidate's nested run."""
        with tempfile.TemporaryDirectory(prefix="fairgate-mlflow-") as tmp:
            specs = compare_spec(result, out, Path(tmp), self.env, ui_base(self.target.uri))
            outcome = self._run(specs, Path(tmp))
            logged = [self._logged(outcome, i, s["name"]) for i, s in enumerate(specs)]
        return logged[0], logged[1:]


# ----------------------------------------------------------------------------- after logging


def record_in_report(path: Path, logged: Logged) -> None:
    """Add what MLflow holds (run, stamp, promotion) to a written report.json or
    compare.json as its ``mlflow`` section. The copy logged as an artifact is the report as
    the gate wrote it; the run's tags carry the same facts."""
    from fairgate.report import write_atomic

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data["mlflow"] = logged.record()
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def stamp_line(logged: Logged) -> str | None:
    """One line saying which model version now carries the verdict."""
    if not logged.stamp:
        return None
    t = safe.terminal
    return (f"MLflow: verdict stamped on {t(logged.stamp['name'])}/{t(logged.stamp['version'])} "
            f"(fairgate.verdict={t(logged.stamp['tags'].get('fairgate.verdict'))}, "
            f"fairgate.run_id={t(logged.run_id)})")


def promotion_outcome(report: GateReport, logged: Logged, alias: str) -> tuple[str, bool]:
    """The line to print about ``--promote alias``, and whether it ended as asked: a gate
    that failed keeps its exit 1 (True); a pass that did not move the alias to the student
    is False (the CLI exits 3)."""
    t = safe.terminal
    student = registered_student(report)
    name = t(student["registered_model"]) if student else "?"
    at = f"{name}@{t(alias)}"
    if report.decision.exit_code != 0:
        return f"MLflow: {at} not moved: the gate did not pass (verdict {report.verdict})", True
    p = logged.promotion
    if p is None:
        why_not = (f"the run was not logged ({logged.error})" if not logged.ok
                   else "it was not attempted")
        return f"--promote {t(alias)}: NOT promoted: {why_not}; {at} was not moved", False
    version, previous = t(p.get("version")), p.get("previous_version")
    before = f"v{t(previous)}" if previous else "no version"
    status = p.get("status")
    if status == "promoted":
        return f"MLflow: promoted {at} to v{version} (it pointed to {before})", True
    if status == "unchanged":
        return f"MLflow: {at} already points to v{version}", True
    if status == "unknown":
        return (f"--promote {t(alias)}: outcome unknown: {t(p.get('reason'), 500)}; {at} may "
                f"or may not have moved to v{version} (it pointed to {before})"), False
    return (f"--promote {t(alias)}: NOT promoted to v{version}: {t(p.get('reason'), 500)} "
            f"({at} points to {before})"), False
