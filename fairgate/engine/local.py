"""One streaming pass: read a batch, decide with both models on the same rows, count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fairgate.core.counts import MAX_GROUPS, CountAccumulator, Grouping
from fairgate.core.individual import RowSampler
from fairgate.core.multiclass import (
    ClassError,
    ClassIndex,
    PairCounter,
    disagreement,
)
from fairgate.engine.batch import CountResult, MulticlassPlan, SpuriousCut
from fairgate.errors import DataError, ModelError
from fairgate.inputs.audit import AuditSet, LabelSpec, require_values
from fairgate.inputs.model import Predictor

# the teacher runs here while the student runs in the caller: onnxruntime releases the GIL
_POOL = ThreadPoolExecutor(1, thread_name_prefix="fairgate-teacher")


def count_audit(
    audit: AuditSet,
    label: LabelSpec,
    sensitive: list[str],
    groupings: list[Grouping],
    teacher: Predictor,
    student: Predictor,
    sampler: RowSampler | None = None,
    spurious: SpuriousCut | None = None,
    score_sampler: RowSampler | None = None,
    max_groups: int | None = MAX_GROUPS,
) -> CountResult:
    """Joint counts of every grouping over the whole audit set, in one pass.

    With a ``sampler``, the same pass keeps a bounded, deterministic sample of rows with
    both models' scores and decisions, for the individual-fairness measures; with a
    ``score_sampler``, one with the label and both scores, for the score metrics. A
    grouping with more than ``max_groups`` groups ends the pass (DataError).
    """
    acc = CountAccumulator(groupings, max_groups, audit.path)
    others: set[str] = set()
    positives = 0
    offset = 0
    seen: dict[str, int] = {}  # rows with audit.spurious's label and value
    for batch in audit.batches():
        if batch.num_rows == 0:
            continue
        y = label.positives(batch.column(label.column), audit.path, offset, others)
        try:
            pending = _POOL.submit(teacher.predict, batch, offset)
            s_score, s = student.predict(batch, offset)
            t_score, t = pending.result()
        except DataError as e:  # name the file: the predictor only knows the column
            raise DataError(f"{audit.path}: {e}") from None
        if sampler is not None:
            sampler.add(batch, offset, {"teacher_score": t_score, "student_score": s_score,
                                        "teacher_decision": t, "student_decision": s})
        if score_sampler is not None:
            score_sampler.add(batch, offset, {"y": y, "teacher_score": t_score,
                                              "student_score": s_score})
        columns = {a: batch.column(a) for a in sensitive}
        if spurious is not None:
            columns[spurious.grouping.attributes[0]] = spurious.column(batch, label.column,
                                                                        audit.path, seen)
        acc.add(y, t, s, columns)
        positives += int(np.count_nonzero(y))
        offset += batch.num_rows
    if offset == 0:
        raise DataError(f"{audit.path}: the audit set has no rows")
    if spurious is not None:
        spurious.check(seen, label.column, audit.path)
    _check_zero_one(label, others, (teacher, student))
    if positives == 0:
        raise DataError(
            f"{audit.path}: no row of label column {label.column!r} equals positive_label "
            f"{label.positive!r} (values seen: {', '.join(sorted(others))})"
        )
    return CountResult(acc.result(), offset, sampler.result() if sampler is not None else None,
                       score_sample=score_sampler.result() if score_sampler is not None else None)


def _check_zero_one(label: LabelSpec, others: set[str], models: tuple[Predictor, ...]) -> None:
    """A model whose positive column was taken from a 0/1 positive_label (unnamed [N, 2]
    columns, or an argmax label) is right only if the labels are 0 and 1: confirm it."""
    for p in models:
        if not p.zero_one:
            continue
        expected = {"0"} if label.positive == 1 else {"1"}
        if not others <= expected:
            raise ModelError(
                f"{p.role} model: its output columns are unnamed and positive_label "
                f"{label.positive!r} was read as a column position, which holds only when the "
                f"labels are 0 and 1, but label column {label.column!r} also holds "
                f"{', '.join(sorted(others))}; set model.positive_column (0 or 1)")


def _indices(predictor: Predictor, raw: Any, classes: ClassIndex,
             columns: dict[str, np.ndarray]) -> np.ndarray:
    """Class indices of a model's top-1: positions into its named columns, or labels."""
    names = predictor.class_columns
    try:
        if names is None:
            return classes.encode(raw, f"{predictor.role} predictions")
        if predictor.role not in columns:
            columns[predictor.role] = classes.encode(np.asarray(names, dtype=object),
                                                     f"{predictor.role} model (class of a column)")
        return columns[predictor.role][raw]
    except ClassError as e:
        raise ModelError(str(e)) from None


def _index_of(classes: ClassIndex, name: str) -> int:
    i = classes.index_of(name)
    assert i is not None, f"positive class {name!r} was not registered"
    return i


def count_multiclass(
    audit: AuditSet,
    plan: MulticlassPlan,
    sensitive: list[str],
    teacher: Predictor,
    student: Predictor,
    reference: Predictor | None = None,
    max_groups: int | None = MAX_GROUPS,
) -> CountResult:
    """Top-1, per-class and one-vs-rest joint tables and sparse disagreement, in one pass."""
    classes = plan.classes
    top1 = CountAccumulator(plan.top1, max_groups, audit.path)
    # positive classes are in the index already (run.multiclass_plan registers them)
    ovr = {_index_of(classes, c): CountAccumulator([Grouping(g.attributes, positive=c)
                                                    for g in plan.base], max_groups, audit.path)
           for c in plan.positives}
    ref = CountAccumulator([plan.classes_grouping]) if reference is not None else None
    pairs = {("teacher", "student"): PairCounter()}
    if reference is not None:
        pairs.update({("teacher", "reference student"): PairCounter(),
                      ("reference student", "student"): PairCounter()})
    column_maps: dict[str, np.ndarray] = {}
    offset = 0
    seen: dict[str, int] = {}  # rows with audit.spurious's label and value
    for batch in audit.batches():
        if batch.num_rows == 0:
            continue
        label_col = batch.column(plan.label)
        try:
            require_values(label_col, f"label column {plan.label!r}", offset)
            y = classes.encode(label_col, f"label column {plan.label!r}")
        except (ClassError, DataError) as e:
            raise DataError(f"{audit.path}: {e}") from None
        try:  # predict in parallel; map to class indices here, as the index may grow
            pending = _POOL.submit(teacher.predict_classes, batch, offset)
            s_raw = student.predict_classes(batch, offset)
            r_raw = reference.predict_classes(batch, offset) if reference is not None else None
            t_raw = pending.result()
        except DataError as e:
            raise DataError(f"{audit.path}: {e}") from None
        t = _indices(teacher, t_raw, classes, column_maps)
        s = _indices(student, s_raw, classes, column_maps)
        r = _indices(reference, r_raw, classes, column_maps) if reference is not None else None
        columns = {a: batch.column(a) for a in sensitive}
        columns[plan.classes_grouping.attributes[0]] = label_col
        if plan.spurious is not None:
            columns[plan.spurious.grouping.attributes[0]] = plan.spurious.column(
                batch, plan.label, audit.path, seen)
        ones = np.ones(len(y), dtype=bool)
        top1.add(ones, t == y, s == y, columns)
        for k, acc in ovr.items():
            acc.add(y == k, t == k, s == k, columns)
        if ref is not None and r is not None:
            ref.add(ones, r == y, s == y, {plan.classes_grouping.attributes[0]: label_col})
            pairs[("teacher", "reference student")].add(t, r)
            pairs[("reference student", "student")].add(r, s)
        pairs[("teacher", "student")].add(t, s)
        offset += batch.num_rows
    if offset == 0:
        raise DataError(f"{audit.path}: the audit set has no rows")
    if plan.spurious is not None:
        plan.spurious.check(seen, plan.label, audit.path)
    counts = top1.result()
    for acc in ovr.values():
        counts.update(acc.result())
    names = tuple(classes.names)
    return CountResult(
        counts, offset,
        reference=ref.result()[plan.classes_grouping] if ref is not None else None,
        disagreements=tuple(disagreement(a, b, p, names) for (a, b), p in pairs.items()),
        classes=names,
    )
