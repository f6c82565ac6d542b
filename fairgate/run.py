"""run_gate: the whole check as one call, from a request to a written report.

The CLI builds a :class:`GateRequest`, calls :func:`run_gate`, and maps the result (or the
exception) to an exit code. Everything here raises :class:`FairgateError` subclasses only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fairgate import __version__
from fairgate.core.bins import suggest_bins
from fairgate.core.counts import Grouping, GroupingCounts, value_label
from fairgate.core.evaluate import (
    GroupRow,
    MetricKey,
    MetricValue,
    Settings,
    context_for,
    evaluate,
    group_rows,
    paired_value,
    report_groups,
)
from fairgate.core.gate import check_keys, decide, metric_groupings
from fairgate.core.individual import (
    SampledRows,
    counterfactual_flips,
    embed,
    knn_consistency,
    lipschitz,
)
from fairgate.core.metrics import CATALOGUE, KPI_METRICS, MULTICLASS_KPI_METRICS
from fairgate.core.multiclass import ClassIndex
from fairgate.core.outcome import GateReport
from fairgate.engine.batch import CountResult, MulticlassPlan, SpuriousCut
from fairgate.engine.run import EngineOptions, count_pass, pass_spec, wants_scores
from fairgate.errors import ModelError, UsageError
from fairgate.inputs.audit import DEFAULT_BATCH_ROWS
from fairgate.inputs.memory import InMemoryTable
from fairgate.inputs.model import ColumnPredictor, OnnxPredictor, Predictor, batch_rows_for
from fairgate.inputs.outputs import ReadSettings
from fairgate.inputs.sources import ModelFiles, ModelSource, model_source
from fairgate.policy import Check, LoadedPolicy, Policy, load_policy
from fairgate.policy.spec import CounterfactualSpec, ModelInputs
from fairgate.report.json import num

#: A model as given: a path, text (a path or an MLflow URI, see inputs/sources.py), parsed,
#: or the bytes of an ONNX file (the Python API).
ModelRef = Path | str | ModelSource | bytes


@dataclass(frozen=True)
class GateRequest:
    policy: Path
    # a file, a directory or glob of files, a URI, table:catalog.db.name, or in memory (API)
    data: Path | str | InMemoryTable
    teacher: ModelRef | None = None
    student: ModelRef | None = None
    teacher_scores: str | None = None
    student_scores: str | None = None
    reference_student: ModelRef | None = None  # multi-class: e.g. a non-distilled student (#SC)
    reference_scores: str | None = None
    out: Path = Path("fairgate-report")
    seed: int | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    formats: tuple[str, ...] = ()  # () = every format
    today: dt.date | None = None
    extra: dict[str, str] = field(default_factory=dict)
    engine: EngineOptions = field(default_factory=EngineOptions)


ALIGNMENT = "bias alignment"  # the derived attribute of audit.spurious: aligned | conflicting


def report_groupings(policy: Policy) -> list[Grouping]:
    """Every table the gate counts: the policy's groupings, then what fairgate derives.

    Multi-class: the top-1 tables of the groupings, the per-class table (the label as a
    derived attribute), and a one-vs-rest table per positive class and grouping.
    """
    base = groupings_of(policy)
    out = list(base)
    if policy.multiclass is not None:
        out.append(Grouping((policy.audit.label,), derived=True))
    if policy.audit.spurious is not None:
        out.append(Grouping((ALIGNMENT,), derived=True))
    if policy.multiclass is not None:
        out += [Grouping(g.attributes, positive=value_label(c)) for c in policy.multiclass.positive_classes
                for g in base]
    return out


def groupings_of(policy: Policy) -> list[Grouping]:
    """Each sensitive attribute, their cross when asked, and any grouping a check names."""
    attrs = policy.audit.attributes
    out = [Grouping((a,)) for a in attrs]
    if policy.audit.intersections and len(attrs) > 1:
        out.append(Grouping(tuple(attrs)))
    for check in policy.checks:
        for g in check.on or []:
            grouping = Grouping((g,) if isinstance(g, str) else tuple(g))
            if grouping not in out:
                out.append(grouping)
    return out


def input_settings(spec: ModelInputs, loaded: LoadedPolicy, role: str) -> Any:
    """A model's text, tensor or image settings, files relative to the policy read here."""
    from fairgate.inputs.text import TensorSettings, TextSettings, read_tokenizer

    if spec.text is not None:
        t = spec.text
        own = getattr(loaded.policy.model, role.replace(" ", "_"))
        at = ("model", role.replace(" ", "_")) if own is not None and own.inputs else ("model",)
        key = (*at, "inputs", "text", "tokenizer")
        text = read_tokenizer(loaded.path.parent / t.tokenizer,
                              f"{loaded.path}:{loaded.line_of(key)}: {'.'.join(key)} {t.tokenizer}")
        return TextSettings(t.column, t.tokenizer, text, t.max_length, t.padding)
    if spec.tensor is not None:
        return TensorSettings(spec.tensor.column, spec.tensor.input)
    assert spec.image is not None
    from fairgate.inputs.image import ImageSettings

    i = spec.image
    return ImageSettings(column=i.column, size=(i.size[0], i.size[1]), mean=tuple(i.mean),
                         std=tuple(i.std), layout=i.layout, channels=i.channels, scale=i.scale,
                         resample=i.resample, input=i.input)


def _predictors(req: GateRequest, loaded: LoadedPolicy, files: ModelFiles,
                 described: dict[str, dict[str, Any]],
                 ) -> tuple[Predictor, Predictor, Predictor | None]:
    """A predictor per model: an ONNX file (a path, or an MLflow URI resolved to one by
    ``files``) or a column of precomputed predictions, each read with its own settings
    (teachers and students are often exported differently). ``described`` receives what
    report.json records of each model's file and source, by role."""
    policy = loaded.policy
    multi = policy.multiclass is not None
    if (req.reference_student or req.reference_scores) and not multi:
        raise UsageError("a reference student is compared class by class: it needs a multi-class "
                         "policy (a multiclass: section)")

    def make(role: str, option: str, given: ModelRef | None,
             column: str | None) -> Predictor | None:
        if given is not None and column is not None:
            raise UsageError(f"give --{option} or --{option}-scores for the {role}, not both")
        s = policy.model.for_role(role)
        classes, classes_from = declared_classes(policy, role)
        if column is not None:
            return ColumnPredictor(role, column, s.threshold, multi, classes, classes_from)
        if given is None:
            return None
        local = (files.from_bytes(given, role) if isinstance(given, bytes)
                 else files.local(model_source(given, f"--{option}"), role))
        read = ReadSettings(output=s.output, output_name=s.output_name, threshold=s.threshold,
                            positive_label=policy.audit.positive_label,
                            positive_class=s.positive_class, positive_column=s.positive_column,
                            classes=classes, classes_from=classes_from, multiclass=multi)
        inputs = (input_settings(s.inputs, loaded, role) if s.inputs is not None else None)
        predictor = OnnxPredictor(role, local.path, s.features, read, s.missing, inputs)
        described[role] = local.describe()  # after loading: its errors name the file first
        return predictor

    reference = make("reference student", "reference", req.reference_student,
                     req.reference_scores)
    teacher = make("teacher", "teacher", req.teacher, req.teacher_scores)
    student = make("student", "student", req.student, req.student_scores)
    if teacher is None or student is None:
        raise UsageError("give the teacher (--teacher T.onnx or --teacher-scores COL) and the "
                         "student (--student S.onnx or --student-scores COL)")
    return teacher, student, reference


def declared_classes(policy: Policy, role: str) -> tuple[tuple[str, ...] | None, str]:
    """Multi-class: the classes of a model's columns as the policy declares them, and where."""
    own = policy.model.for_role(role).classes
    if own is not None:
        return tuple(value_label(c) for c in own), f"model.{role.replace(' ', '_')}.classes"
    mc = policy.multiclass
    if mc is not None and mc.classes is not None:
        return tuple(value_label(c) for c in mc.classes), "multiclass.classes"
    return None, ""


def evaluate_policy(loaded: LoadedPolicy, req: GateRequest,
                    files: ModelFiles | None = None) -> GateReport:
    """Read, predict, count, compute and decide; no file is written here.

    ``files`` resolves model URIs and holds their downloads (default: one for this gate,
    whose downloads are removed when it returns).
    """
    if files is None:
        with ModelFiles(loaded) as own:
            return evaluate_policy(loaded, req, own)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    policy = loaded.policy
    if req.seed is not None:
        policy = policy.model_copy(update={
            "statistics": policy.statistics.model_copy(update={"seed": req.seed})
        })
        loaded = replace(loaded, policy=policy)
    t0 = time.perf_counter()
    described: dict[str, dict[str, Any]] = {}
    teacher, student, reference = _predictors(req, loaded, files, described)
    models = [p for p in (teacher, student, reference) if p is not None]
    if policy.individual is not None and policy.individual.counterfactual is not None:
        _check_counterfactual(policy.individual.counterfactual, teacher, student)
    groupings = report_groupings(policy)
    audit = policy.audit
    spurious = None
    if audit.spurious is not None:
        sp = audit.spurious
        spurious = SpuriousCut(sp.attribute, sp.value, sp.label, Grouping((ALIGNMENT,), derived=True))
    features = _individual_features(policy, teacher, student) if policy.individual else []
    plan = (multiclass_plan(policy, groupings, teacher, spurious)
            if policy.multiclass is not None else None)
    spec = pass_spec(policy, groupings, models, spurious, features, plan)
    batch_rows = batch_rows_for(models, req.batch_rows)
    counted, data_info, engine = count_pass(spec, req.data, (teacher, student, reference),
                                            policy, batch_rows, req.engine)
    derived: dict[str, GroupingCounts] = {}
    if plan is not None:
        derived["classes"] = counted.counts[plan.classes_grouping]
        if counted.reference is not None:
            derived["reference"] = counted.reference
    if spurious is not None:
        derived["alignment"] = counted.counts[spurious.grouping]
    t1 = time.perf_counter()
    st = policy.statistics
    settings = Settings(audit.min_group_size, dict(audit.reference_groups), st.confidence,
                        st.resamples, st.seed, derived, policy.multiclass is not None,
                        st.interval)
    checks = check_keys(policy, groupings)
    kpi_keys = kpi_keys_of(policy, groupings, reference is not None)
    # the group rows' rate intervals come from the copies the metrics' intervals are drawn from
    values, group_intervals = evaluate([k for _, k in checks] + kpi_keys, counted.counts,
                                       settings, groupings)
    individual: dict[str, Any] | None = None
    if counted.sample is not None:
        sampled, individual = individual_values(policy, counted.sample, teacher, student,
                                                features)
        values.update(sampled)
        kpi_keys += list(sampled)
    score_details: list[dict[str, Any]] | None = None
    if counted.score_sample is not None:
        scored, score_details = score_metric_values(
            policy, counted.score_sample, [k for _, k in checks] + kpi_keys, counted.counts,
            settings)
        values.update(scored)
    decision = decide(policy, values, groupings, req.today or dt.date.today())
    groups, unlisted = report_groups(counted.counts, groupings, settings, group_intervals)
    classwise = None
    if policy.multiclass is not None:
        per_class = [r for r in groups if r.grouping == derived["classes"].grouping]
        classwise = classwise_details(counted, per_class, derived.get("reference"), settings)
    t2 = time.perf_counter()
    inputs = {
        "policy": {"path": str(loaded.path), "sha256": loaded.sha256},
        "data": data_info,
        "teacher": {**teacher.describe(), **described.get("teacher", {})},
        "student": {**student.describe(), **described.get("student", {})},
    }
    if reference is not None:
        inputs["reference_student"] = {**reference.describe(),
                                       **described.get("reference student", {})}
    return GateReport(
        policy=loaded, decision=decision, groupings=tuple(groupings),
        kpis=tuple(values[k] for k in dict.fromkeys(kpi_keys)), groups=tuple(groups),
        inputs=inputs, started_at=started, version=__version__,
        timings={"count_seconds": t1 - t0, "statistics_seconds": t2 - t1}, engine=engine,
        warnings=(same_model_warnings(inputs) + batch_warnings(inputs, batch_rows)
                  + interval_warnings(checks, values) + unbinned_warnings(policy, counted.counts)),
        individual=individual, classwise=classwise, unlisted=tuple(unlisted),
        scores=None if score_details is None else {
            "rows_sampled": len(counted.score_sample.rows) if counted.score_sample else 0,
            "rows_seen": counted.score_sample.seen if counted.score_sample else 0,
            "groups": score_details},
    )


def score_metric_values(
    policy: Policy, sample: SampledRows, keys: list[MetricKey],
    counts: dict[Grouping, GroupingCounts], settings: Settings,
) -> tuple[dict[MetricKey, MetricValue], list[dict[str, Any]]]:
    """Score metrics on the row sample; groups and their gating come from the full counts."""
    from fairgate.core.scores import ScoreGroups, score_group_table, score_points, score_values

    wanted = [k for k in dict.fromkeys(keys) if CATALOGUE[k.metric].scored]
    groups = {}
    for g in {k.grouping for k in wanted if k.grouping is not None} | set(_base(counts)):
        gc = counts[g]
        parts = [[value_label(v) for v in sample.table.column(a).to_pylist()] for a in g.attributes]
        codes = np.array([gc.index[row] for row in zip(*parts, strict=True)], dtype=np.int64)
        groups[g] = ScoreGroups(g, codes, gc.labels, context_for(gc, settings).gated)
    spec = policy.scores
    bins = spec.bins if spec is not None else 10
    resamples = (spec.resamples if spec is not None and spec.resamples is not None
                 else min(settings.resamples, 2000))
    ex = sample.extra
    y = ex["y"].astype(bool)
    t, s = ex["teacher_score"].astype(np.float64), ex["student_score"].astype(np.float64)
    points = score_points(y, t, s, groups, bins=bins)
    values = score_values(wanted, y, t, s, groups, bins=bins, resamples=resamples,
                          confidence=settings.confidence, seed=settings.seed, points=points,
                          interval=settings.interval)
    table = score_group_table(y, t, s, groups, bins=bins, points=points)
    return values, [{k: (num(v) if isinstance(v, float) else v) for k, v in row.items()}
                    for row in table]


def _base(counts: dict[Grouping, GroupingCounts]) -> list[Grouping]:
    return [g for g in counts if not g.derived and g.positive is None]


def kpi_keys_of(policy: Policy, groupings: list[Grouping], reference: bool) -> list[MetricKey]:
    """The KPI table: the same metrics for every gate of a kind, whatever the checks are."""
    multi = policy.multiclass is not None
    names = list(MULTICLASS_KPI_METRICS if multi else KPI_METRICS)
    if multi and policy.multiclass is not None and policy.multiclass.positive_classes:
        names += ["demographic_parity_difference", "equalized_odds_difference"]
    if reference:
        names.append("classes_changed_vs_reference")
    if policy.audit.spurious is not None:
        names += ["spurious_gap", "bias_conflicting_accuracy"]
    if wants_scores(policy):
        names += ["roc_auc", "brier_score", "expected_calibration_error", "roc_auc_difference",
                  "expected_calibration_error_difference"]
    keys = []
    for name in names:
        metric = CATALOGUE[name]
        if metric.scope == "overall":
            keys.append(MetricKey(name, None))
        else:
            keys += [MetricKey(name, g) for g in metric_groupings(policy, metric, groupings)]
    return keys


def multiclass_plan(policy: Policy, groupings: list[Grouping], teacher: Predictor,
                    spurious: SpuriousCut | None) -> MulticlassPlan:
    """The class index (fixed when the policy or the teacher names the classes) and tables."""
    mc = policy.multiclass
    assert mc is not None
    if mc.classes is not None:
        index = ClassIndex([value_label(c) for c in mc.classes], "in multiclass.classes of the policy")
    elif teacher.class_columns is not None:
        index = ClassIndex(list(teacher.class_columns), "of the teacher model's columns")
    else:
        index = ClassIndex(None, "")
    positives = tuple(value_label(c) for c in mc.positive_classes)
    for c in positives:
        if index.fixed and index.index_of(c) is None:
            raise ModelError(f"positive class {c!r} is not one of the {len(index)} classes "
                             f"{index.source} ({', '.join(index.names[:12])})")
        if not index.fixed:
            index.encode(np.array([c], dtype=object), "multiclass.positive_classes")
    label = policy.audit.label
    classes_grouping = Grouping((label,), derived=True)
    base = [g for g in groupings if g.positive is None and not g.derived]
    top1 = [g for g in groupings if g.positive is None]
    return MulticlassPlan(label, index, top1, classes_grouping, positives, base, spurious)


#: Disagreement cells kept in report.json per pair of models (K = 1000 can have ~10⁵).
MAX_CELLS = 10_000


def classwise_details(counted: CountResult, per_class: list[GroupRow],
                      reference: GroupingCounts | None, settings: Settings) -> dict[str, Any]:
    """Class-wise findings for reports: classes, per-class tests, disagreement matrices.

    ``per_class``: the report's rows of the per-class table; the reference student's table
    is not among the report's groups, so its rows are made here.

    A disagreement matrix is given sparsely, as its nonzero off-diagonal cells, most rows
    first: all of them up to MAX_CELLS (``truncated`` says when there were more).
    """
    out: dict[str, Any] = {"classes": list(counted.classes), "disagreement": []}
    for d in counted.disagreements:
        out["disagreement"].append({
            "a": d.a, "b": d.b, "rows": d.rows, "disagreeing_rows": d.total, "rate": num(d.rate),
            "pairs": len(d.cells), "truncated": len(d.cells) > MAX_CELLS,
            "cells": [{"a": a, "b": b, "rows": n} for a, b, n in d.cells[:MAX_CELLS]],
        })
    tables = {"teacher_vs_student": per_class}
    if reference is not None:
        tables["reference_vs_student"] = group_rows(reference, context_for(reference, settings),
                                                    top1=True)
    level = 1.0 - settings.confidence
    for name, rows in tables.items():
        out[name] = [{
            "class": r.group[0], "n": r.n, "gated": r.gated,
            "teacher_accuracy": num(r.teacher_rates["accuracy"]),
            "student_accuracy": num(r.student_rates["accuracy"]),
            "teacher_only_correct": r.teacher_only_correct,
            "student_only_correct": r.student_only_correct,
            "p": num(r.mcnemar_p), "p_holm": num(r.mcnemar_p_holm),
            "significant": r.mcnemar_p_holm is not None and r.mcnemar_p_holm < level,
        } for r in rows]
    return out


def _individual_features(policy: Policy, teacher: Predictor, student: Predictor) -> list[str]:
    """Distance features (default: the models' inputs minus the sensitive attributes)."""
    ind = policy.individual
    assert ind is not None
    if ind.features is not None:
        features = list(ind.features)
    else:
        onnx = [p for p in (teacher, student) if isinstance(p, OnnxPredictor)]
        inputs = [c for p in onnx if p.inputs is None for c in p.columns]
        features = [c for c in dict.fromkeys(inputs) if c not in policy.audit.attributes]
        if not features and onnx and all(p.inputs is not None for p in onnx):
            # texts, images and tensors have no distance here: only the counterfactual runs
            distance = [c.id for c in policy.checks if c.metric in DISTANCE_METRICS]
            if distance:
                raise UsageError(f"check {distance[0]!r}: the models read text, image or tensor "
                                 "inputs, which have no distance; list numeric distance "
                                 "features under individual.features")
            return []
        if not features:
            raise UsageError("individual fairness needs distance features: list them under "
                             "individual.features (precomputed scores carry no model inputs)")
    return list(dict.fromkeys(features))


#: Individual-fairness metrics that compare rows by their distance (individual.features).
DISTANCE_METRICS = ("individual_lipschitz", "knn_consistency")


def individual_values(
    policy: Policy, sample: SampledRows, teacher: Predictor, student: Predictor,
    features: list[str],
) -> tuple[dict[MetricKey, MetricValue], dict[str, Any]]:
    """The individual-fairness metrics of both models on the row sample, and their details."""
    ind = policy.individual
    assert ind is not None
    seed, conf = policy.statistics.seed, policy.statistics.confidence
    cf = ind.counterfactual
    out: dict[MetricKey, MetricValue] = {}
    details: dict[str, Any] = {"rows_sampled": len(sample.rows), "rows_seen": sample.seen}
    if features:  # none: text, image or tensor models, the counterfactual alone
        z = embed(sample.table, features, ind.categorical)
        ex = sample.extra
        lip = lipschitz(z, ex["teacher_score"], ex["student_score"], pairs=ind.pairs, seed=seed)
        knn = knn_consistency(z, ex["teacher_decision"].astype(np.float64),
                              ex["student_decision"].astype(np.float64), k=ind.k,
                              queries=ind.queries, seed=seed)
        out[MetricKey("individual_lipschitz", None)] = paired_value(
            MetricKey("individual_lipschitz", None), lip.paired, conf)
        out[MetricKey("knn_consistency", None)] = paired_value(
            MetricKey("knn_consistency", None), knn.paired, conf)
        details.update({
            "features": {"numeric": list(z.numeric), "categorical": list(z.categorical),
                         "dropped_constant": list(z.constant)},
            "lipschitz": {"pairs_drawn": lip.pairs_drawn, "pairs_used": lip.pairs_used,
                          "exact": lip.exact, "zero_distance_pairs": lip.zero_distance_pairs,
                          "zero_distance_conflicts": list(lip.zero_distance_conflicts)},
            "knn": {"k": knn.k, "queries": knn.queries, "reference_rows": knn.reference},
        })
    if cf is not None and cf.text is not None:
        out.update(_text_flip_values(cf, sample, teacher, student, conf, details))
    elif cf is not None:
        assert cf.column is not None and cf.values is not None
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


def _text_flip_values(cf: CounterfactualSpec, sample: SampledRows, teacher: Predictor,
                      student: Predictor, conf: float,
                      details: dict[str, Any]) -> dict[MetricKey, MetricValue]:
    """counterfactual_flip_rate of a text probe, and its per-substitution rates in
    ``details["counterfactual"]`` (most flipping first, then in the policy's order)."""
    from fairgate.core.individual import text_counterfactual_flips
    from fairgate.inputs.text_swap import substitutions

    assert cf.text is not None
    rewrites = substitutions(cf.swap, cf.groups)
    flips = text_counterfactual_flips(sample.batch(), cf.text, rewrites,
                                      lambda b: teacher.decide(b, 0),
                                      lambda b: student.decide(b, 0))
    key = MetricKey("counterfactual_flip_rate", None)
    rows: list[dict[str, Any]] = []
    for r in rewrites:
        n, p = flips.by_substitution[r.label]
        rows.append({"from": r.source, "to": r.target, "rows": n, "teacher": num(p.teacher.value),
                     "student": None if p.student is None else num(p.student.value)})
    order = sorted(range(len(rows)), key=lambda i: (-_rate(rows[i]["student"]),
                                                    -_rate(rows[i]["teacher"]), i))
    details["counterfactual"] = {
        "text": flips.column, "terms_from": "file" if cf.file else
        ("swap" if cf.swap else "groups"), "rows": flips.rows,
        "rows_with_terms": flips.rows_with_terms,
        "substitutions": [rows[i] for i in order]}
    if cf.file:
        details["counterfactual"]["file"] = cf.file
    return {key: paired_value(key, flips.overall, conf)}


def _rate(x: float | None) -> float:
    return -1.0 if x is None else x


def _check_counterfactual(cf: CounterfactualSpec, teacher: Predictor, student: Predictor) -> None:
    """Flipping a column that no model reads cannot change a decision: a flip rate of 0 there
    would pass the check without measuring anything."""
    onnx = [p for p in (teacher, student) if isinstance(p, OnnxPredictor)]
    if len(onnx) < 2:
        raise UsageError("counterfactual_flip_rate needs ONNX models (--teacher/--student), "
                         "not precomputed scores")
    if cf.text is not None:
        from fairgate.inputs.text import TextSettings

        if not any(isinstance(p.inputs, TextSettings) and p.inputs.column == cf.text
                   for p in onnx):
            raise ModelError(f"individual.counterfactual.text {cf.text!r} is not the text input "
                             "of either model (model.inputs.text.column), so no decision can "
                             "flip; name the text column a model reads")
        return
    column = cf.column
    if not any(column in p.columns for p in onnx):
        inputs = "; ".join(f"{p.role} reads {', '.join(p.columns)}" for p in onnx)
        raise ModelError(f"individual.counterfactual.column {column!r} is not an input of either "
                         f"model ({inputs}), so no decision can flip; name a column a model reads")


def interval_warnings(checks: list[tuple[Check, MetricKey]],
                      values: Mapping[MetricKey, MetricValue]) -> tuple[str, ...]:
    """Checks whose max/min-type metric kept the percentile interval (core/intervals.py's
    construction did not apply), one warning each, in every report."""
    out = []
    for check, key in checks:
        v = values.get(key)
        if v is not None and v.interval_note:
            out.append(f"check {check.id}, {key.label}: {v.interval_note}")
    return tuple(dict.fromkeys(out))


def unbinned_warnings(policy: Policy, counts: Mapping[Grouping, GroupingCounts]) -> tuple[str, ...]:
    """A numeric sensitive attribute without bins whose values make many groups, most too
    small to gate: suggest bins (at the quartiles of its values)."""
    out = []
    for a in policy.audit.attributes:
        gc = counts.get(Grouping((a,)))
        if a in policy.audit.binned or gc is None:
            continue
        hint = suggest_bins(a, gc.groups, gc.sizes.tolist(), policy.audit.min_group_size)
        if hint:
            out.append(hint)
    return tuple(out)


def same_model_warnings(inputs: dict[str, Any]) -> tuple[str, ...]:
    """A student that is the teacher (same file bytes, or the same scores column) passes every
    check with a change of exactly 0: say so, in every report."""
    out = []
    for a, b in (("teacher", "student"), ("reference_student", "student")):
        x, y = inputs.get(a), inputs.get(b)
        if x is None or y is None:
            continue
        same = (x.get("sha256") is not None and x.get("sha256") == y.get("sha256")) or \
            (x.get("column") is not None and x.get("column") == y.get("column"))
        if same:
            what = f"sha256 {x['sha256'][:12]}…" if x.get("sha256") else f"column {x['column']!r}"
            out.append(f"the {b} is the {a.replace('_', ' ')} ({what}): every change is 0 by "
                       f"construction, so this gate says nothing about a compressed model")
    return tuple(out)


def batch_warnings(inputs: dict[str, Any], batch_rows: int) -> tuple[str, ...]:
    """A model whose output for a row depends on the other rows of its batch (dynamic
    quantization: one scale per batch) is audited as it runs with this batching only."""
    out = []
    for role in ("teacher", "student", "reference_student"):
        ops = (inputs.get(role) or {}).get("batch_coupled")
        if ops:
            out.append(f"the {role.replace('_', ' ')} model's output for a row depends on the other "
                       f"rows of its batch ({', '.join(ops)}: one quantization scale per batch), so "
                       f"its decisions depend on how rows are batched: these are its decisions in "
                       f"batches of {batch_rows:,} rows taken in file order (each Parquet row group, "
                       "each CSV or ORC file from its first row); another --batch-size or row "
                       "order gives other decisions")
    return tuple(out)


def gate_and_write(loaded: LoadedPolicy, req: GateRequest, out: Path | None) -> GateReport:
    """The gate as ``fairgate check`` and :func:`fairgate.check` run it: ``out`` checked before
    any work (a verdict that cannot be written is lost), the gate, then its reports in
    ``req.formats``; with ``out`` None nothing is written."""
    from fairgate.report import prepare_out_dir, write_reports

    if out is not None:
        prepare_out_dir(out)
    report = evaluate_policy(loaded, req)
    if out is not None:
        write_reports(report, out, req.formats)
    return report


def run_gate(req: GateRequest, files: ModelFiles | None = None) -> GateReport:
    """Load the policy and evaluate it; the caller writes reports and logs the run."""
    return evaluate_policy(load_policy(req.policy), req, files)


@dataclass(frozen=True)
class PlanRequest:
    policy: Path
    data: Path | None = None
    teacher: Path | None = None
    teacher_scores: str | None = None
    report: Path | None = None
    disagreement: float | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS


def plan_audit(req: PlanRequest) -> Any:
    """`fairgate plan`: rows needed per check and bound (fairgate/plan.py), from the teacher's
    predictions on an audit set or from the joint counts of an earlier report."""
    from fairgate.plan import (
        DEFAULT_DISAGREEMENT,
        assumed_student,
        check_plannable,
        counts_from_report,
        plan_counts,
        read_report,
    )

    loaded = load_policy(req.policy)
    policy = loaded.policy
    check_plannable(policy)
    given = [x for x in (req.teacher, req.teacher_scores, req.report) if x is not None]
    if len(given) != 1:
        raise UsageError("give one of --teacher T.onnx, --teacher-scores COL or --report "
                         "report.json")
    if req.report is not None:
        if req.disagreement is not None:
            raise UsageError("--disagreement is for planning from the teacher alone; a report "
                             "holds the student's own disagreement")
        counts, rows = counts_from_report(read_report(req.report), policy)
        return plan_counts(policy, counts, rows, f"the student of {req.report}")
    if req.data is None:
        raise UsageError("give the audit set (--data) to plan from the teacher's predictions")
    q = DEFAULT_DISAGREEMENT if req.disagreement is None else req.disagreement
    if not 0.0 < q <= 1.0:
        raise UsageError(f"--disagreement must be in (0, 1], got {q:g}")
    teacher = _plan_teacher(req, loaded)
    groupings = groupings_of(policy)
    # the gate's own counting pass on the local engine, the teacher in both seats and no row
    # samples; plan_counts then assumes the student's disagreement
    spec = replace(pass_spec(policy, groupings, [teacher, teacher], None, [], None),
                   sample=None, score_sample=None, identity=())
    counted, _, _ = count_pass(spec, req.data, (teacher, teacher, None), policy,
                               batch_rows_for([teacher], req.batch_rows), EngineOptions())
    counts = {g: GroupingCounts(g, c.groups, assumed_student(c.cells, q))
              for g, c in counted.counts.items()}
    return plan_counts(policy, counts, counted.rows,
                       f"a student that disagrees with the teacher on {q:.0%} of the rows "
                       "(--disagreement)")


def _plan_teacher(req: PlanRequest, loaded: LoadedPolicy) -> Predictor:
    policy = loaded.policy
    s = policy.model.for_role("teacher")
    if req.teacher_scores is not None:
        return ColumnPredictor("teacher", req.teacher_scores, s.threshold, False, None, "")
    assert req.teacher is not None
    read = ReadSettings(output=s.output, output_name=s.output_name, threshold=s.threshold,
                        positive_label=policy.audit.positive_label,
                        positive_class=s.positive_class, positive_column=s.positive_column,
                        classes=None, classes_from="", multiclass=False)
    inputs = input_settings(s.inputs, loaded, "teacher") if s.inputs is not None else None
    return OnnxPredictor("teacher", req.teacher, s.features, read, s.missing, inputs)
