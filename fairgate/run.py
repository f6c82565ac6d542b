"""run_gate: the whole check as one call, from a request to a written report.

The CLI builds a :class:`GateRequest`, calls :func:`run_gate`, and maps the result (or the
exception) to an exit code. Everything here raises :class:`FairgateError` subclasses only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fairgate import __version__
from fairgate.counts import Grouping
from fairgate.data import DEFAULT_BATCH_ROWS, AuditSet, LabelSpec
from fairgate.engine import count_audit
from fairgate.errors import UsageError
from fairgate.evaluate import MetricKey, Settings, compute_values, context_for, group_rows
from fairgate.gate import check_keys, decide
from fairgate.metrics import CATALOGUE, KPI_METRICS
from fairgate.model import ColumnPredictor, OnnxPredictor, Predictor
from fairgate.outcome import GateReport
from fairgate.policy import LoadedPolicy, Policy, load_policy


@dataclass(frozen=True)
class GateRequest:
    policy: Path
    data: Path
    teacher: Path | None = None
    student: Path | None = None
    teacher_scores: str | None = None
    student_scores: str | None = None
    out: Path = Path("fairgate-report")
    seed: int | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    formats: tuple[str, ...] = ()  # () = every format
    today: dt.date | None = None
    extra: dict[str, str] = field(default_factory=dict)


def groupings_of(policy: Policy) -> list[Grouping]:
    """Each sensitive attribute, their cross when asked, and any grouping a check names."""
    attrs = policy.audit.sensitive
    out = [Grouping((a,)) for a in attrs]
    if policy.audit.intersections and len(attrs) > 1:
        out.append(Grouping(tuple(attrs)))
    for check in policy.checks:
        for g in check.on or []:
            grouping = Grouping((g,) if isinstance(g, str) else tuple(g))
            if grouping not in out:
                out.append(grouping)
    return out


def _predictors(req: GateRequest, policy: Policy) -> tuple[Predictor, Predictor]:
    models = (req.teacher, req.student)
    scores = (req.teacher_scores, req.student_scores)
    if any(models) and any(scores):
        raise UsageError("give either --teacher/--student models or --teacher-scores/"
                         "--student-scores columns, not both")
    m = policy.model
    if all(models):
        assert req.teacher is not None and req.student is not None
        features = tuple(m.features) if m.features else None
        return tuple(  # type: ignore[return-value]
            OnnxPredictor(role, path, features, m.threshold, m.output, m.output_name,
                          policy.audit.positive_label)
            for role, path in (("teacher", req.teacher), ("student", req.student))
        )
    if all(scores):
        assert req.teacher_scores is not None and req.student_scores is not None
        return (ColumnPredictor("teacher", req.teacher_scores, m.threshold),
                ColumnPredictor("student", req.student_scores, m.threshold))
    raise UsageError("give both --teacher and --student (ONNX models), or both "
                     "--teacher-scores and --student-scores (audit-set columns)")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate_policy(loaded: LoadedPolicy, req: GateRequest) -> GateReport:
    """Read, predict, count, compute and decide; no file is written here."""
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    policy = loaded.policy
    if req.seed is not None:
        policy = policy.model_copy(update={
            "statistics": policy.statistics.model_copy(update={"seed": req.seed})
        })
        loaded = replace(loaded, policy=policy)
    t0 = time.perf_counter()
    teacher, student = _predictors(req, policy)
    groupings = groupings_of(policy)
    audit = policy.audit
    columns = [audit.label, *audit.sensitive, *teacher.columns, *student.columns]
    types = {**teacher.column_types(), **student.column_types()}
    audit_set = AuditSet(req.data, tuple(dict.fromkeys(columns)), types, req.batch_rows,
                         text_columns=tuple(audit.sensitive))
    counted = count_audit(audit_set, LabelSpec(audit.label, audit.positive_label),
                          list(audit.sensitive), groupings, teacher, student)
    t1 = time.perf_counter()
    st = policy.statistics
    settings = Settings(audit.min_group_size, dict(audit.reference_groups), st.confidence,
                        st.resamples, st.seed)
    checks = check_keys(policy, groupings)
    kpi_keys = [
        MetricKey(name, None if CATALOGUE[name].scope == "overall" else g)
        for name in KPI_METRICS for g in groupings
    ]
    values = compute_values([k for _, k in checks] + kpi_keys, counted.counts, settings)
    decision = decide(policy, values, groupings, req.today or dt.date.today())
    groups = [
        row for g in groupings
        for row in group_rows(counted.counts[g], context_for(counted.counts[g], settings))
    ]
    t2 = time.perf_counter()
    inputs = {
        "policy": {"path": str(loaded.path), "sha256": loaded.sha256},
        "data": {"path": str(req.data), "sha256": sha256_of(req.data), "rows": counted.rows},
        "teacher": {**teacher.describe(), **_hash_model(req.teacher)},
        "student": {**student.describe(), **_hash_model(req.student)},
    }
    return GateReport(
        policy=loaded, decision=decision, groupings=tuple(groupings),
        kpis=tuple(values[k] for k in dict.fromkeys(kpi_keys)), groups=tuple(groups),
        inputs=inputs, started_at=started, version=__version__,
        timings={"count_seconds": t1 - t0, "statistics_seconds": t2 - t1},
    )


def _hash_model(path: Path | None) -> dict[str, str]:
    return {"sha256": sha256_of(path)} if path is not None else {}


def run_gate(req: GateRequest) -> GateReport:
    """Load the policy and evaluate it; the caller writes reports and logs the run."""
    return evaluate_policy(load_policy(req.policy), req)
