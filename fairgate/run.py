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
from typing import Any

import numpy as np

from fairgate import __version__
from fairgate.counts import Grouping
from fairgate.data import DEFAULT_BATCH_ROWS, AuditSet, LabelSpec
from fairgate.engine import count_audit
from fairgate.errors import UsageError
from fairgate.evaluate import (
    MetricKey,
    MetricValue,
    Settings,
    compute_values,
    context_for,
    group_rows,
    paired_value,
)
from fairgate.gate import check_keys, decide
from fairgate.individual import (
    RowSampler,
    SampledRows,
    counterfactual_flips,
    embed,
    knn_consistency,
    lipschitz,
)
from fairgate.metrics import CATALOGUE, KPI_METRICS
from fairgate.model import ColumnPredictor, OnnxPredictor, Predictor
from fairgate.outcome import GateReport
from fairgate.policy import LoadedPolicy, Policy, load_policy
from fairgate.report.json import num


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
    sampler = None
    features: list[str] = []
    if policy.individual is not None:
        ind = policy.individual
        features = _individual_features(policy, teacher, student)
        wanted = features
        if ind.counterfactual is not None:
            wanted = list(dict.fromkeys([*wanted, ind.counterfactual.column]))
        columns += wanted
        sampler = RowSampler(ind.sample_rows, policy.statistics.seed,
                             columns=list(dict.fromkeys([*wanted, *teacher.columns,
                                                         *student.columns])))
    audit_set = AuditSet(req.data, tuple(dict.fromkeys(columns)), types, req.batch_rows,
                         text_columns=tuple(audit.sensitive))
    counted = count_audit(audit_set, LabelSpec(audit.label, audit.positive_label),
                          list(audit.sensitive), groupings, teacher, student, sampler)
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
    individual: dict[str, Any] | None = None
    if counted.sample is not None:
        sampled, individual = individual_values(policy, counted.sample, teacher, student,
                                                features)
        values.update(sampled)
        kpi_keys += list(sampled)
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
        individual=individual,
    )


def _individual_features(policy: Policy, teacher: Predictor, student: Predictor) -> list[str]:
    """Distance features (default: the models' inputs minus the sensitive attributes)."""
    ind = policy.individual
    assert ind is not None
    if ind.features is not None:
        features = list(ind.features)
    else:
        inputs = [c for p in (teacher, student) if isinstance(p, OnnxPredictor) for c in p.columns]
        features = [c for c in dict.fromkeys(inputs) if c not in policy.audit.sensitive]
        if not features:
            raise UsageError("individual fairness needs distance features: list them under "
                             "individual.features (precomputed scores carry no model inputs)")
    return list(dict.fromkeys(features))


def individual_values(
    policy: Policy, sample: SampledRows, teacher: Predictor, student: Predictor,
    features: list[str],
) -> tuple[dict[MetricKey, MetricValue], dict[str, Any]]:
    """The individual-fairness metrics of both models on the row sample, and their details."""
    ind = policy.individual
    assert ind is not None
    seed, conf = policy.statistics.seed, policy.statistics.confidence
    cf = ind.counterfactual
    z = embed(sample.table, features, ind.categorical)
    ex = sample.extra
    lip = lipschitz(z, ex["teacher_score"], ex["student_score"], pairs=ind.pairs, seed=seed)
    knn = knn_consistency(z, ex["teacher_decision"].astype(np.float64),
                          ex["student_decision"].astype(np.float64), k=ind.k,
                          queries=ind.queries, seed=seed)
    out = {
        MetricKey("individual_lipschitz", None): paired_value(
            MetricKey("individual_lipschitz", None), lip.paired, conf),
        MetricKey("knn_consistency", None): paired_value(
            MetricKey("knn_consistency", None), knn.paired, conf),
    }
    details: dict[str, Any] = {
        "rows_sampled": len(sample.rows), "rows_seen": sample.seen,
        "features": {"numeric": list(z.numeric), "categorical": list(z.categorical),
                     "dropped_constant": list(z.constant)},
        "lipschitz": {"pairs_drawn": lip.pairs_drawn, "pairs_used": lip.pairs_used,
                      "exact": lip.exact, "zero_distance_pairs": lip.zero_distance_pairs,
                      "zero_distance_conflicts": list(lip.zero_distance_conflicts)},
        "knn": {"k": knn.k, "queries": knn.queries, "reference_rows": knn.reference},
    }
    if cf is not None:
        if not all(isinstance(p, OnnxPredictor) for p in (teacher, student)):
            raise UsageError("counterfactual_flip_rate needs ONNX models (--teacher/--student), "
                             "not precomputed scores")
        flips = counterfactual_flips(sample.batch(), cf.column, cf.values,
                                     lambda b: teacher.decide(b, 0),
                                     lambda b: student.decide(b, 0))
        key = MetricKey("counterfactual_flip_rate", None)
        out[key] = paired_value(key, flips.overall, conf)
        details["counterfactual"] = {
            "column": flips.column, "values": list(flips.values), "rows": flips.rows,
            "by_value": {v: {"teacher": num(p.teacher.value),
                             "student": None if p.student is None else num(p.student.value)}
                         for v, p in flips.by_value.items()},
        }
    return out, details


def _hash_model(path: Path | None) -> dict[str, str]:
    return {"sha256": sha256_of(path)} if path is not None else {}


def run_gate(req: GateRequest) -> GateReport:
    """Load the policy and evaluate it; the caller writes reports and logs the run."""
    return evaluate_policy(load_policy(req.policy), req)
