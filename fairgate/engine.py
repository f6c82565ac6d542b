"""One streaming pass: read a batch, decide with both models on the same rows, count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fairgate.counts import CountAccumulator, Grouping, GroupingCounts
from fairgate.data import AuditSet, LabelSpec
from fairgate.errors import DataError
from fairgate.individual import RowSampler, SampledRows
from fairgate.model import Predictor

# the teacher runs here while the student runs in the caller: onnxruntime releases the GIL
_POOL = ThreadPoolExecutor(1, thread_name_prefix="fairgate-teacher")


@dataclass(frozen=True)
class CountResult:
    counts: dict[Grouping, GroupingCounts]
    rows: int
    sample: SampledRows | None = None  # rows kept for individual fairness, if asked


def count_audit(
    audit: AuditSet,
    label: LabelSpec,
    sensitive: list[str],
    groupings: list[Grouping],
    teacher: Predictor,
    student: Predictor,
    sampler: RowSampler | None = None,
) -> CountResult:
    """Joint counts of every grouping over the whole audit set, in one pass.

    With a ``sampler``, the same pass keeps a bounded, deterministic sample of rows with
    both models' scores and decisions, for the individual-fairness measures.
    """
    acc = CountAccumulator(groupings)
    others: set[str] = set()
    positives = 0
    offset = 0
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
        acc.add(y, t, s, {a: batch.column(a) for a in sensitive})
        positives += int(np.count_nonzero(y))
        offset += batch.num_rows
    if offset == 0:
        raise DataError(f"{audit.path}: the audit set has no rows")
    if positives == 0:
        raise DataError(
            f"{audit.path}: no row of label column {label.column!r} equals positive_label "
            f"{label.positive!r} (values seen: {', '.join(sorted(others))})"
        )
    return CountResult(acc.result(), offset, sampler.result() if sampler is not None else None)
