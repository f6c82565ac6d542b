"""The per-batch function every engine runs, and the partial results it leaves.

One batch of audit rows goes through :meth:`BatchPass.add`: the label is checked and read,
both models decide on the same rows (the teacher in a worker thread while the student runs
in the caller: onnxruntime releases the GIL), the joint counts of every grouping are added,
and the row samples (individual fairness, score metrics) are offered the rows. An engine
only decides where batches come from and how partials merge:

- the local engine feeds one :class:`BatchPass` with every batch of every file, in order;
- the Spark engine feeds one per task (a partition of the audit set) on an executor, and
  merges the :class:`Partial` of every task on the driver (:func:`merge`).

A :class:`Partial` is small and keyed by values, never by a task's own codes: count tables
by group value tuples, disagreement cells by class names, row samples by row identity
(:mod:`fairgate.engine.identity`), so merging is exact and the merged partial is the same
for any partitioning and any order of the rows. :func:`finish` then makes the checks that
need the whole audit set (no rows, no positive label, a third label value across
partitions, the cap on groups) and returns the :class:`CountResult` the statistics read.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fairgate.core.bins import Bins
from fairgate.core.counts import (
    MAX_GROUPS,
    CountAccumulator,
    Grouping,
    GroupingCounts,
    TooManyGroups,
    group_order,
)
from fairgate.core.individual import RowSampler, SampledRows
from fairgate.core.multiclass import (
    ClassError,
    ClassIndex,
    Disagreement,
    PairCounter,
    alignment,
    equals,
)
from fairgate.errors import DataError, FairgateError, ModelError
from fairgate.inputs.audit import LabelSpec, cast_columns, require_values
from fairgate.inputs.model import Predictor

# the teacher runs here while the student runs in the caller: onnxruntime releases the GIL
_POOL = ThreadPoolExecutor(1, thread_name_prefix="fairgate-teacher")


@dataclass(frozen=True)
class SpuriousCut:
    """Rows split by whether a spurious attribute agrees with the label it goes with."""

    attribute: str
    value: object
    label: object
    grouping: Grouping  # derived: groups "aligned" and "conflicting"

    def column(self, batch: pa.RecordBatch, label_column: str, path: object,
               seen: dict[str, int]) -> pa.Array:
        """The alignment of a batch's rows; ``seen`` counts rows with the label, the value."""
        attribute = batch.column(self.attribute)
        if attribute.null_count:  # a missing attribute is neither aligned nor conflicting
            raise DataError(f"{path}: column {self.attribute!r} has {attribute.null_count} "
                            "missing value(s); bias alignment (audit.spurious) is undefined there")
        has_value = equals(attribute, self.value)
        has_label = equals(batch.column(label_column), self.label)
        seen["value"] = seen.get("value", 0) + int(has_value.sum())
        seen["label"] = seen.get("label", 0) + int(has_label.sum())
        return alignment(has_value, has_label)

    def check(self, seen: dict[str, int], label_column: str, path: object) -> None:
        """A label or attribute value that never occurs is a typo, not a finding."""
        for what, value, column in (("label", self.label, label_column),
                                    ("value", self.value, self.attribute)):
            if seen.get(what, 0) == 0:
                raise DataError(f"{path}: audit.spurious.{what} {value!r} never occurs in column "
                                f"{column!r}")


@dataclass(frozen=True)
class MulticlassPlan:
    """What to count for a K-class gate (see fairgate/core/multiclass.py)."""

    label: str
    classes: ClassIndex
    top1: list[Grouping]  # top-1 correctness tables, incl. the true-class grouping
    classes_grouping: Grouping  # derived: one group per true class
    positives: tuple[str, ...]  # one-vs-rest tables of these classes, over ``base``
    base: list[Grouping]
    spurious: SpuriousCut | None = None


@dataclass(frozen=True)
class CountResult:
    counts: dict[Grouping, GroupingCounts]
    rows: int
    sample: SampledRows | None = None  # rows kept for individual fairness, if asked
    score_sample: SampledRows | None = None  # rows kept for score metrics (label, scores)
    reference: GroupingCounts | None = None  # multi-class: reference student vs student
    disagreements: tuple[Disagreement, ...] = ()  # multi-class: pairs of models
    classes: tuple[str, ...] = ()  # multi-class: class labels by index


@dataclass(frozen=True)
class SampleSpec:
    """A bottom-S row sample: its size, seed and the audit columns it keeps."""

    size: int
    seed: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class PassSpec:
    """Everything the per-batch function needs besides the models; it travels to executors."""

    columns: tuple[str, ...]  # audit columns, in the order batches hold them
    column_types: dict[str, pa.DataType]
    sensitive: tuple[str, ...]
    groupings: tuple[Grouping, ...] = ()  # binary: every table counted
    label: LabelSpec | None = None  # binary
    multiclass: MulticlassPlan | None = None
    spurious: SpuriousCut | None = None
    sample: SampleSpec | None = None  # individual fairness
    score_sample: SampleSpec | None = None  # score metrics
    identity: tuple[str, ...] = ()  # columns hashed into a row's identity (for the samples)
    max_groups: int | None = MAX_GROUPS
    bins: tuple[Bins, ...] = ()  # numeric sensitive columns counted by interval


@dataclass
class Partial:
    """What one pass over some batches found: small, keyed by values, mergeable exactly."""

    rows: int = 0
    counts: dict[Grouping, GroupingCounts] = field(default_factory=dict)
    reference: GroupingCounts | None = None  # multi-class reference table
    positives: int = 0  # binary: rows with the positive label
    others: set[str] = field(default_factory=set)  # binary: the other label values seen
    seen: dict[str, int] = field(default_factory=dict)  # audit.spurious label / value rows
    sample: RowSampler | None = None
    score_sample: RowSampler | None = None
    plans: dict[str, list[Any]] = field(default_factory=dict)  # role -> output plans seen
    pairs: dict[tuple[str, str], Counter[tuple[str, str]]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # multi-class: class names seen
    error: tuple[str, str] | None = None  # (FairgateError class name, message)
    error_at: tuple[int, int] = (0, 0)  # where the error was met: (file index, row)
    tasks: int = 1  # partials merged into this one


# ----------------------------------------------------------------------------- the pass


class BatchPass:
    """One pass over batches: :meth:`add` is the per-batch function of every engine."""

    def __init__(self, spec: PassSpec, teacher: Predictor, student: Predictor,
                 reference: Predictor | None = None, source: str = "",
                 parallel: bool = True) -> None:
        self.spec = spec
        self.parallel = parallel  # teacher and student at once (a Spark task: one core)
        self.teacher, self.student, self.reference = teacher, student, reference
        self.source = source
        self.rows = 0
        self.seen: dict[str, int] = {}
        self.sampler = _sampler(spec.sample)
        self.score_sampler = _sampler(spec.score_sample)
        if spec.multiclass is not None:
            mc = spec.multiclass
            self.classes = copy.deepcopy(mc.classes)  # grows with the labels this pass sees
            self.top1 = CountAccumulator(list(mc.top1), spec.max_groups, source)
            self.ovr = {c: CountAccumulator([Grouping(g.attributes, positive=c) for g in mc.base],
                                            spec.max_groups, source) for c in mc.positives}
            self.ref = CountAccumulator([mc.classes_grouping]) if reference is not None else None
            self.pair_counters = {("teacher", "student"): PairCounter()}
            if reference is not None:
                self.pair_counters.update({("teacher", "reference student"): PairCounter(),
                                           ("reference student", "student"): PairCounter()})
            self.column_maps: dict[str, np.ndarray] = {}
        else:
            self.acc = CountAccumulator(list(spec.groupings), spec.max_groups, source)
            self.others: set[str] = set()
            self.positives = 0

    def add(self, batch: pa.RecordBatch, path: str, offset: int) -> None:
        """Count one batch read from ``path`` whose first row is row ``offset`` of it."""
        n = batch.num_rows
        if n == 0:
            return
        batch = cast_columns(batch, self.spec.columns, self.spec.column_types, path)
        if self.spec.multiclass is not None:
            self._add_multiclass(batch, path, offset)
        else:
            self._add_binary(batch, path, offset)
        self.rows += n

    def _predict(self, method: str, batch: pa.RecordBatch, path: str, offset: int,
                 ) -> tuple[Any, Any, Any]:
        """Teacher, student (and reference) outputs on the same rows, the teacher in the pool.
        The feature matrix is built once when both models read the same one."""
        t, s, r = self.teacher, self.student, self.reference
        try:
            shared = _shared_matrix(s, t, batch, offset)
            if s is t:  # fairgate plan: the teacher in both seats, run once
                out = getattr(t, method)(batch, offset, **shared)
                return out, out, getattr(r, method)(batch, offset) if r is not None else None
            if not self.parallel:
                s_out = getattr(s, method)(batch, offset, **shared)
                t_out = getattr(t, method)(batch, offset, **shared)
                r_out = getattr(r, method)(batch, offset) if r is not None else None
                return t_out, s_out, r_out
            pending = _POOL.submit(getattr(t, method), batch, offset, **shared)
            s_out = getattr(s, method)(batch, offset, **shared)
            r_out = getattr(r, method)(batch, offset) if r is not None else None
            t_out = pending.result()
        except DataError as e:  # name the file: the predictor only knows the column
            raise DataError(f"{path}: {e}") from None
        return t_out, s_out, r_out

    def _add_binary(self, batch: pa.RecordBatch, path: str, offset: int) -> None:
        spec = self.spec
        label = spec.label
        assert label is not None
        y = label.positives(batch.column(label.column), path, offset, self.others)
        columns = self._group_columns(batch, path, offset)
        (t_score, t), (s_score, s), _ = self._predict("predict", batch, path, offset)
        ids = None
        if self.sampler is not None or self.score_sampler is not None:
            ids = self._identities(batch, path)
        if self.sampler is not None:
            assert ids is not None
            self.sampler.add(batch, ids, {"teacher_score": t_score, "student_score": s_score,
                                          "teacher_decision": t, "student_decision": s})
        if self.score_sampler is not None:  # keeps the sensitive columns as groups: binned
            assert ids is not None
            self.score_sampler.add(_replaced(batch, columns), ids, {
                "y": y, "teacher_score": t_score, "student_score": s_score})
        if spec.spurious is not None:
            columns[spec.spurious.grouping.attributes[0]] = spec.spurious.column(
                batch, label.column, path, self.seen)
        self.acc.add(y, t, s, columns)
        self.positives += int(np.count_nonzero(y))

    def _group_columns(self, batch: pa.RecordBatch, path: str, offset: int
                       ) -> dict[str, pa.Array | pa.ChunkedArray]:
        """The sensitive columns as groups: a binned column's values replaced by the label
        of their interval (a value outside every interval stops the gate here)."""
        columns = {a: batch.column(a) for a in self.spec.sensitive}
        for b in self.spec.bins:
            columns[b.column] = b.assign(columns[b.column], path, offset)
        return columns

    def _identities(self, batch: pa.RecordBatch, path: str) -> np.ndarray:
        from fairgate.engine.identity import row_identity

        return row_identity(batch, self.spec.identity, path)

    def _add_multiclass(self, batch: pa.RecordBatch, path: str, offset: int) -> None:
        mc, classes = self.spec.multiclass, self.classes
        assert mc is not None
        label_col = batch.column(mc.label)
        try:
            require_values(label_col, f"label column {mc.label!r}", offset)
            y = classes.encode(label_col, f"label column {mc.label!r}")
        except (ClassError, DataError) as e:
            raise DataError(f"{path}: {e}") from None
        # predict in parallel; map to class indices here, as the index may grow
        t_raw, s_raw, r_raw = self._predict("predict_classes", batch, path, offset)
        t = _indices(self.teacher, t_raw, classes, self.column_maps)
        s = _indices(self.student, s_raw, classes, self.column_maps)
        r = (_indices(self.reference, r_raw, classes, self.column_maps)
             if self.reference is not None else None)
        columns = self._group_columns(batch, path, offset)
        columns[mc.classes_grouping.attributes[0]] = label_col
        if mc.spurious is not None:
            columns[mc.spurious.grouping.attributes[0]] = mc.spurious.column(
                batch, mc.label, path, self.seen)
        ones = np.ones(len(y), dtype=bool)
        self.top1.add(ones, t == y, s == y, columns)
        for c, acc in self.ovr.items():
            k = _index_of(classes, c)
            acc.add(y == k, t == k, s == k, columns)
        if self.ref is not None and r is not None:
            self.ref.add(ones, r == y, s == y, {mc.classes_grouping.attributes[0]: label_col})
            self.pair_counters[("teacher", "reference student")].add(t, r)
            self.pair_counters[("reference student", "student")].add(r, s)
        self.pair_counters[("teacher", "student")].add(t, s)

    def partial(self) -> Partial:
        """What this pass found, keyed by values (see the module doc)."""
        out = Partial(rows=self.rows, seen=dict(self.seen), sample=self.sampler,
                      score_sample=self.score_sampler, plans=_plans(self._models()))
        if self.spec.multiclass is not None:
            counts = self.top1.result()
            for acc in self.ovr.values():
                counts.update(acc.result())
            out.counts = counts
            if self.ref is not None:
                out.reference = self.ref.result()[self.spec.multiclass.classes_grouping]
            names = self.classes.names
            out.classes = list(names)
            out.pairs = {pair: Counter({(names[a], names[b]): n for a, b, n in p.cells()})
                         for pair, p in self.pair_counters.items()}
        else:
            out.counts = self.acc.result()
            out.others = set(self.others)
            out.positives = self.positives
        return out

    def _models(self) -> dict[str, Predictor]:
        out = {"teacher": self.teacher, "student": self.student}
        if self.reference is not None:
            out["reference student"] = self.reference
        return out


def _replaced(batch: pa.RecordBatch, columns: Mapping[str, pa.Array | pa.ChunkedArray]
              ) -> pa.RecordBatch:
    """``batch`` with some of its columns replaced (same names, same order)."""
    names = batch.schema.names
    if not any(columns[n] is not batch.column(n) for n in names if n in columns):
        return batch
    return pa.RecordBatch.from_arrays([columns.get(n, batch.column(n)) for n in names],
                                      names=names)


def _sampler(spec: SampleSpec | None) -> RowSampler | None:
    return None if spec is None else RowSampler(spec.size, spec.seed, columns=list(spec.columns))


def _shared_matrix(a: Predictor, b: Predictor, batch: pa.RecordBatch,
                   offset: int) -> dict[str, Any]:
    """``{"matrix": m}`` when both models read the same feature matrix, else ``{}``."""
    sig_a = getattr(a, "matrix_signature", None)
    sig_b = getattr(b, "matrix_signature", None)
    if sig_a is None or sig_a != sig_b:
        return {}
    return {"matrix": a.matrix(batch, offset)}  # type: ignore[attr-defined]


def _plans(models: Mapping[str, Predictor]) -> dict[str, list[Any]]:
    out = {}
    for role, p in models.items():
        plan = getattr(p, "plan", None)
        if plan is not None:
            out[role] = [plan]
    return out


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


# ----------------------------------------------------------------------------- merging


def merge(partials: Iterable[Partial]) -> Partial:
    """One partial from many: counts added per group value, samples merged exactly.

    The first error wins (the one met first in the order of the file listing), so a bad
    row is reported as the local engine, reading the files in that order, would report it.
    """
    out = Partial(tasks=0)
    for p in partials:
        _merge_into(out, p)
    return out


def _merge_into(out: Partial, p: Partial) -> None:
    out.tasks += p.tasks
    if p.error is not None and (out.error is None or p.error_at < out.error_at):
        out.error, out.error_at = p.error, p.error_at
    if out.error is not None:
        return
    out.rows += p.rows
    out.positives += p.positives
    out.others |= p.others
    for k, v in p.seen.items():
        out.seen[k] = out.seen.get(k, 0) + v
    for g, gc in p.counts.items():
        out.counts[g] = gc if g not in out.counts else merge_counts(out.counts[g], gc)
    if p.reference is not None:
        out.reference = (p.reference if out.reference is None
                         else merge_counts(out.reference, p.reference))
    out.sample = _merge_samplers(out.sample, p.sample)
    out.score_sample = _merge_samplers(out.score_sample, p.score_sample)
    for role, plans in p.plans.items():
        out.plans.setdefault(role, []).extend(plans)
    for pair, cells in p.pairs.items():
        out.pairs.setdefault(pair, Counter()).update(cells)
    out.classes = sorted(set(out.classes) | set(p.classes)) if out.classes else list(p.classes)


def _merge_samplers(a: RowSampler | None, b: RowSampler | None) -> RowSampler | None:
    if a is None:
        return b
    if b is not None:
        a.merge(b)
    return a


def merge_counts(a: GroupingCounts, b: GroupingCounts) -> GroupingCounts:
    """The counts of one grouping over two disjoint sets of rows, groups in label order."""
    groups = sorted(set(a.groups) | set(b.groups), key=group_order)
    index = {g: i for i, g in enumerate(groups)}
    cells = np.zeros((len(groups), 2, 2, 2), dtype=np.int64)
    for gc in (a, b):
        if len(gc.groups):
            cells[[index[g] for g in gc.groups]] += gc.cells.reshape(len(gc.groups), 2, 2, 2)
    return GroupingCounts(a.grouping, tuple(groups), cells)


def failed(e: FairgateError, at: tuple[int, int] = (0, 0)) -> Partial:
    """The partial of a pass that stopped on ``e`` (re-raised on the driver)."""
    return Partial(error=(type(e).__name__, str(e)), error_at=at)


def reraise(p: Partial) -> None:
    """Raise the error a partial carries, as the class the pass raised."""
    if p.error is None:
        return
    import fairgate.core.counts as counts_module
    import fairgate.errors as errors

    name, message = p.error
    cls = getattr(errors, name, None) or getattr(counts_module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, FairgateError)):
        cls = errors.InputError
    raise cls(message)


# ----------------------------------------------------------------------------- the end


def finish(p: Partial, spec: PassSpec, models: Sequence[Predictor], source: str,
           fixed_classes: Sequence[str] | None = None) -> CountResult:
    """The checks that need every row, then the counts, samples and tables of the pass.

    ``models``: teacher, student (and reference), whose output plans the engine has made
    the ones every task agreed on (see :func:`adopt_plans`).
    """
    reraise(p)
    if p.rows == 0:
        raise DataError(f"{source}: the audit set has no rows")
    _check_cap(p, spec, source)
    sample = p.sample.result() if p.sample is not None else None
    score_sample = p.score_sample.result() if p.score_sample is not None else None
    if spec.multiclass is not None:
        mc = spec.multiclass
        if mc.spurious is not None:
            mc.spurious.check(p.seen, mc.label, source)
        names = _class_order(mc.classes, p.classes)
        index = {c: i for i, c in enumerate(names)}
        disagreements = []
        for (a, b), cells in p.pairs.items():  # most rows first, then by class index
            ordered = sorted(((index[x], index[y], n) for (x, y), n in cells.items()),
                             key=lambda c: (-c[2], c[0], c[1]))
            disagreements.append(Disagreement(a, b, p.rows, tuple(
                (names[i], names[j], n) for i, j, n in ordered)))
        return CountResult(p.counts, p.rows, reference=p.reference,
                           disagreements=tuple(disagreements), classes=tuple(names))
    label = spec.label
    assert label is not None
    if len(p.others) > 1:
        shown = ", ".join(sorted(p.others)[:5])
        raise DataError(f"{source}: label column {label.column!r} must hold positive_label "
                        f"{label.positive!r} and one other value, found {len(p.others)} others: "
                        f"{shown}")
    if spec.spurious is not None:
        spec.spurious.check(p.seen, label.column, source)
    check_zero_one(label, p.others, models)
    if p.positives == 0:
        raise DataError(
            f"{source}: no row of label column {label.column!r} equals positive_label "
            f"{label.positive!r} (values seen: {', '.join(sorted(p.others))})"
        )
    return CountResult(p.counts, p.rows, sample, score_sample=score_sample)


def _class_order(index: ClassIndex, seen: Sequence[str]) -> list[str]:
    """The classes by index: as declared when fixed, else every class seen in a canonical
    order (numbers by value, then text), so no engine's reading order shows."""
    if index.fixed:
        return list(index.names)
    names = set(index.names) | set(seen)

    def key(name: str) -> tuple[int, float, str]:
        try:
            return (0, float(name), name)
        except ValueError:
            return (1, 0.0, name)

    return sorted(names, key=key)


def _check_cap(p: Partial, spec: PassSpec, source: str) -> None:
    """The cap on groups over the merged counts (each task checked its own rows already)."""
    cap = spec.max_groups
    if cap is None:
        return
    for g, gc in p.counts.items():
        if not g.derived and len(gc.groups) > cap:
            columns = ", ".join(repr(a) for a in g.attributes)
            what = (f"column {columns} has" if len(g.attributes) == 1 else
                    f"intersection {'*'.join(g.attributes)} (columns {columns}) has")
            raise TooManyGroups(
                f"{source}: {what} {len(gc.groups):,} distinct values over all partitions; "
                f"fairgate gates at most {cap:,} groups per grouping (audit.max_groups). Bin the "
                "column(s) into fewer values (groups below audit.min_group_size are not gated "
                "anyway), or raise audit.max_groups.")


def check_zero_one(label: LabelSpec, others: set[str], models: Iterable[Predictor]) -> None:
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


def adopt_plans(models: Mapping[str, Predictor], plans: Mapping[str, list[Any]]) -> None:
    """Give the driver's predictors the output plan the tasks settled on.

    Tasks that read no batch leave a plan undecided; the others must agree on how each
    output was read (probabilities or logits, the labels a binary label output gives), or
    the gate stops: the model's graph does not say, and the values did not agree.
    """
    from fairgate.inputs.outputs import reconcile

    for role, p in models.items():
        seen = plans.get(role)
        if seen and hasattr(p, "adopt_plan"):
            p.adopt_plan(reconcile(seen, f"{role} model"))

