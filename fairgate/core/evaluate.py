"""From joint counts to values: metrics of teacher and student, their change, intervals.

Pure: counts and settings in, frozen values out. The gate and the reports read these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.individual import Estimate, Paired
from fairgate.core.intervals import SHAPES, Layout, Plan, rate_columns
from fairgate.core.metrics import (
    CATALOGUE,
    GROUP_RATES,
    Context,
    Metric,
    explain_undefined,
    rate,
    reference_difference,
    reference_ratio,
)
from fairgate.core.stats import (
    Interval,
    holm,
    mcnemar_exact_many,
    percentile_interval,
    resample_cells,
    rng_for,
)
from fairgate.errors import DataError


@dataclass(frozen=True)
class MetricKey:
    """A metric on one grouping (None for metrics over the whole audit set)."""

    metric: str
    grouping: Grouping | None
    alpha: float | None = None

    @property
    def label(self) -> str:
        name = self.metric if self.alpha is None else f"{self.metric}(alpha={self.alpha:g})"
        return name if self.grouping is None else f"{name} [{self.grouping}]"


@dataclass(frozen=True)
class MetricValue:
    """Teacher, student and paired change of one metric; NaN means undefined (see reasons)."""

    key: MetricKey
    teacher: float
    student: float
    delta: float  # student − teacher
    relative: float  # delta / |teacher|; NaN when the teacher is 0 or undefined
    teacher_reason: str | None = None
    student_reason: str | None = None
    teacher_interval: Interval | None = None
    student_interval: Interval | None = None
    delta_interval: Interval | None = None
    relative_interval: Interval | None = None
    # reference-group metrics: (group, teacher, student) of every gated group but the
    # reference, for the per-group verdicts (Aequitas' tau band) reports show
    per_group: tuple[tuple[str, float, float], ...] = ()
    # set when a max/min-type metric keeps the percentile interval although
    # statistics.interval is uniform (the construction of core/intervals.py did not apply)
    interval_note: str | None = None

    @property
    def reason(self) -> str | None:
        """Why the change is undefined, if it is."""
        if self.teacher_reason and self.student_reason:
            if self.teacher_reason == self.student_reason:
                return f"teacher and student: {self.teacher_reason}"
            return f"teacher: {self.teacher_reason}; student: {self.student_reason}"
        if self.teacher_reason:
            return f"teacher: {self.teacher_reason}"
        if self.student_reason:
            return f"student: {self.student_reason}"
        return None


@dataclass(frozen=True)
class GroupRow:
    """One group of one grouping: its size, whether it is gated, and both models' counts."""

    grouping: Grouping
    group: tuple[str, ...]
    n: int
    gated: bool
    reference: bool
    teacher: dict[str, int]
    student: dict[str, int]
    teacher_rates: dict[str, float]
    student_rates: dict[str, float]
    teacher_only_correct: int  # McNemar discordant pairs
    student_only_correct: int
    mcnemar_p: float
    mcnemar_p_holm: float | None  # over the gated groups of the grouping
    top1: bool = False  # a multi-class top-1 table: counts are correct/wrong, rates accuracy only
    # the joint cells (y, ŷ teacher, ŷ student) in that order, 000 … 111: what `fairgate plan`
    # reads from a report to size the next audit
    joint: tuple[int, ...] = ()
    # per rate of :data:`INTERVAL_RATES`: percentile intervals of teacher, student and change
    # from the grouping's bootstrap copies (gated groups and the reference; interval_targets)
    intervals: Mapping[str, RateIntervals] = field(default_factory=dict)


@dataclass(frozen=True)
class RateIntervals:
    """A group rate's paired percentile intervals: teacher, student, student − teacher."""

    teacher: Interval | None
    student: Interval | None
    delta: Interval | None


#: The per-group rates reports draw, and so the ones that get intervals.
INTERVAL_RATES = ("selection_rate", "tpr", "fpr", "accuracy")
#: Groups per grouping whose rates get intervals: the reference, then the gated groups with
#: the smallest McNemar p, then the largest (the order reports show groups in). The copies'
#: rates are held for every such group until the quantiles are taken: 100 groups × 4 rates ×
#: 2 models × 2,000 copies is 13 MB.
INTERVAL_GROUPS = 100


@dataclass(frozen=True)
class Settings:
    min_group_size: int
    reference_groups: dict[str, object]
    confidence: float
    resamples: int
    seed: int
    # tables of derived metrics (Metric.derived): "classes", "reference", "alignment"
    derived: Mapping[str, GroupingCounts] = field(default_factory=dict)
    multiclass: bool = False  # groupings without a positive class are top-1 correctness
    # "uniform": max/min-type metrics get intervals that hold at ties (core/intervals.py);
    # "percentile": every metric the percentile interval of its copies (before issue 11)
    interval: Literal["uniform", "percentile"] = "uniform"


def _cells_dict(conf: np.ndarray, top1: bool = False) -> dict[str, int]:
    if top1:  # y is 1 for every row and ŷ is "top-1 is right"
        return {"correct": int(conf[1, 1]), "wrong": int(conf[1, 0])}
    return {"tp": int(conf[1, 1]), "fp": int(conf[0, 1]), "tn": int(conf[0, 0]),
            "fn": int(conf[1, 0])}


#: The rates a top-1 correctness table has; the others are meaningless there (NaN).
TOP1_RATES = ("accuracy", "error_rate")


def is_top1(grouping: Grouping, settings: Settings) -> bool:
    return settings.multiclass and grouping.positive is None


def _fmt(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def context_for(counts: GroupingCounts, settings: Settings, alpha: float | None = None) -> Context:
    """Gated groups and the reference group of one grouping."""
    sizes = counts.sizes
    gated = sizes >= settings.min_group_size
    attrs = counts.grouping.attributes
    refs = settings.reference_groups
    reference: int | None
    if counts.grouping.derived:  # the aligned side for spurious metrics; none for classes
        reference = counts.index.get(("aligned",))
    elif all(a in refs for a in attrs):
        want = tuple(_fmt(refs[a]) for a in attrs)
        if want not in counts.index:
            raise DataError(
                f"reference group {'|'.join(want)} for {counts.grouping} is not in the audit set "
                f"(groups: {', '.join(counts.labels[:20])})"
            )
        reference = counts.index[want]
    else:
        reference = int(np.argmax(sizes)) if len(sizes) else None
    return Context(gated=gated, reference=reference, alpha=2.0 if alpha is None else alpha,
                   level=1.0 - settings.confidence)


#: Reference-group metrics and the per-group value behind each: (rate, difference | ratio).
PER_GROUP: dict[str, tuple[str, str]] = {
    "statistical_parity_difference": ("selection_rate", "difference"),
    "disparate_impact": ("selection_rate", "ratio"),
    "ppr_reference_ratio": ("ppr", "ratio"),
    **{f"{r}_reference_{form}": (r, form) for r in GROUP_RATES for form in ("difference", "ratio")},
}


def _per_group(name: str, t_conf: np.ndarray, s_conf: np.ndarray, ctx: Context,
               labels: list[str]) -> tuple[tuple[str, float, float], ...]:
    """Each gated group's value against the reference, both models (reference metrics)."""
    if name not in PER_GROUP or ctx.reference is None or not ctx.gated[ctx.reference]:
        return ()
    r, form = PER_GROUP[name]
    fn = reference_difference if form == "difference" else reference_ratio
    t, s = fn(t_conf, r, ctx), fn(s_conf, r, ctx)
    return tuple((labels[i], float(t[i]), float(s[i])) for i in ctx.gated_index.tolist()
                 if i != ctx.reference)


def _point(metric: Metric, conf: np.ndarray, ctx: Context) -> float:
    return float(metric.compute(conf, ctx))


def group_rows(counts: GroupingCounts, ctx: Context, top1: bool = False,
               keep: np.ndarray | None = None) -> list[GroupRow]:
    """Per-group counts, rates and McNemar tests (Holm over the gated groups).

    ``top1``: a multi-class top-1 table, whose only rates are accuracy and error rate.
    ``keep``: the indices of the groups to make rows of (default: all, in table order);
    the tests and Holm's correction are over the whole table either way.
    """
    t = GroupingCounts.teacher(counts.cells)
    s = GroupingCounts.student(counts.cells)
    c = counts.cells
    # teacher right, student wrong: y == ŷt != ŷs; and the reverse
    t_only = c[:, 0, 0, 1] + c[:, 1, 1, 0]
    s_only = c[:, 0, 1, 0] + c[:, 1, 0, 1]
    p = mcnemar_exact_many(t_only, s_only)
    gated_idx = ctx.gated_index
    adjusted = dict(zip(gated_idx.tolist(), holm(p[gated_idx].tolist()), strict=True))
    nan = np.full(len(counts.groups), np.nan)
    t_rates = {r: rate(t, r) if not top1 or r in TOP1_RATES else nan for r in GROUP_RATES}
    s_rates = {r: rate(s, r) if not top1 or r in TOP1_RATES else nan for r in GROUP_RATES}
    sizes = counts.sizes
    rows = range(len(counts.groups)) if keep is None else keep.tolist()
    return [
        GroupRow(
            grouping=counts.grouping, group=counts.groups[i], n=int(sizes[i]),
            gated=bool(ctx.gated[i]), reference=ctx.reference == i and not counts.grouping.derived,
            teacher=_cells_dict(t[i], top1), student=_cells_dict(s[i], top1),
            teacher_rates={r: float(v[i]) for r, v in t_rates.items()},
            student_rates={r: float(v[i]) for r, v in s_rates.items()},
            teacher_only_correct=int(t_only[i]), student_only_correct=int(s_only[i]),
            mcnemar_p=float(p[i]), mcnemar_p_holm=adjusted.get(i), top1=top1,
            joint=tuple(int(x) for x in c[i].reshape(-1)),
        )
        for i in rows
    ]


#: Groups below min_group_size that reports list one by one, per grouping: the largest. A
#: column of 100,000 values made a report.json of 108 MB, almost all of it ungated groups;
#: the rest are summed up in :class:`Unlisted`. Gated groups and the reference are always
#: listed.
LISTED_UNGATED = 1000


@dataclass(frozen=True)
class Unlisted:
    """The groups of one grouping that reports leave out, all below min_group_size.

    They are still counted in every metric over the whole audit set and in the bootstrap;
    no check reads them one by one, so leaving them out changes no verdict.
    """

    grouping: Grouping
    groups: int
    rows: int
    largest: int  # rows of the largest group left out


def listed_groups(counts: GroupingCounts, ctx: Context,
                  limit: int = LISTED_UNGATED) -> tuple[np.ndarray, Unlisted | None]:
    """Indices (in table order) of the groups reports list, and what is left out.

    Every gated group and the reference, then the ``limit`` largest other groups (ties in
    table order).
    """
    keep = ctx.gated.copy()
    if ctx.reference is not None:
        keep[ctx.reference] = True
    others = np.flatnonzero(~keep)
    if len(others) <= limit:
        return np.arange(len(keep)), None
    sizes = counts.sizes
    by_size = others[np.argsort(-sizes[others], kind="stable")]
    keep[by_size[:limit]] = True
    cut = sizes[by_size[limit:]]
    return np.flatnonzero(keep), Unlisted(counts.grouping, len(cut), int(cut.sum()), int(cut.max()))


def report_groups(counts: Mapping[Grouping, GroupingCounts], groupings: Iterable[Grouping],
                  settings: Settings,
                  intervals: Mapping[Grouping, GroupIntervals] | None = None,
                  ) -> tuple[list[GroupRow], list[Unlisted]]:
    """The group rows of every report, and per grouping the groups left out of them.

    ``intervals``: the rows' rate intervals as :func:`evaluate` found them in the metrics'
    pass over the copies; a grouping without them draws its copies again (the same ones).
    """
    rows: list[GroupRow] = []
    unlisted: list[Unlisted] = []
    for g in groupings:
        gc = counts[g]
        ctx = context_for(gc, settings)
        keep, cut = listed_groups(gc, ctx)
        found = (intervals[g] if intervals is not None and g in intervals
                 else draw_rate_intervals(gc, ctx, settings))
        rows += [replace(r, intervals=found[r.group]) if r.group in found else r
                 for r in group_rows(gc, ctx, top1=is_top1(g, settings), keep=keep)]
        if cut is not None:
            unlisted.append(cut)
    return rows, unlisted


#: Per group (its values), per rate: the paired percentile intervals of the rate.
GroupIntervals = dict[tuple[str, ...], dict[str, RateIntervals]]


def interval_targets(counts: GroupingCounts, ctx: Context) -> np.ndarray:
    """Table indices of the groups whose rates get intervals: the reference, then gated
    groups by smallest Holm-adjusted McNemar p, then largest; at most INTERVAL_GROUPS.

    Only these are in every copy on their own: the copies pool the groups below
    min_group_size (:func:`pool_ungated`).
    """
    c = counts.cells
    p = mcnemar_exact_many(c[:, 0, 0, 1] + c[:, 1, 1, 0], c[:, 0, 1, 0] + c[:, 1, 0, 1])
    gated_idx = ctx.gated_index
    p[gated_idx] = holm(p[gated_idx].tolist())
    idx = np.flatnonzero(_kept(ctx))
    # by (not the reference, p, −size); lexsort is stable, so ties keep table order
    order = np.lexsort((-counts.sizes[idx], np.nan_to_num(p[idx], nan=1.0),
                        idx != ctx.reference))
    return idx[order][:INTERVAL_GROUPS]


class _RateCopies:
    """The rates of the target groups in each bootstrap copy of one grouping, gathered chunk
    by chunk as the copies are drawn, and their percentile intervals at the end."""

    def __init__(self, counts: GroupingCounts, ctx: Context, settings: Settings,
                 drawn_groups: int) -> None:
        targets = interval_targets(counts, ctx)
        keep = _kept(ctx)
        # where each group is in the table the copies are drawn from (pooled or not)
        where = np.flatnonzero(keep) if drawn_groups < len(keep) else np.arange(len(keep))
        self.groups = [counts.groups[i] for i in targets.tolist()]
        self.pos = np.searchsorted(where, targets)
        self.rates = ("accuracy",) if is_top1(counts.grouping, settings) else INTERVAL_RATES
        self.level = settings.confidence
        self.t: list[np.ndarray] = []
        self.s: list[np.ndarray] = []

    def add(self, boot_t: np.ndarray, boot_s: np.ndarray) -> None:
        """One chunk of copies: float confusion tables ``[b, groups, 2, 2]`` of each model."""
        for parts, conf in ((self.t, boot_t), (self.s, boot_s)):
            picked = conf[:, self.pos]
            parts.append(np.stack([rate(picked, r) for r in self.rates], axis=-1))

    def intervals(self) -> GroupIntervals:
        if not self.t or not self.groups:
            return {}
        bt, bs = np.concatenate(self.t), np.concatenate(self.s)  # [B, groups, rates]
        level = self.level
        return {group: {name: RateIntervals(percentile_interval(bt[:, k, j], level),
                                            percentile_interval(bs[:, k, j], level),
                                            percentile_interval(bs[:, k, j] - bt[:, k, j],
                                                                level))
                        for j, name in enumerate(self.rates)}
                for k, group in enumerate(self.groups)}


def draw_rate_intervals(counts: GroupingCounts, ctx: Context, settings: Settings
                        ) -> GroupIntervals:
    """Rate intervals of a grouping's target groups from its own copies, drawn here: the
    very copies its metric intervals come from (the same stream, :func:`rng_for` of the seed
    and the grouping's name; the same pooled table and chunks). :func:`evaluate` takes them
    from the metrics' pass instead; this serves a grouping no metric draws copies for."""
    if settings.resamples <= 0:
        return {}
    cells, _ = pool_ungated(counts.cells, ctx)
    copies = _RateCopies(counts, ctx, settings, len(cells))
    rng = rng_for(settings.seed, counts.grouping.name)
    chunk = max(1, min(CHUNK, CHUNK_CELLS // max(cells.size, 1)))
    for start in range(0, settings.resamples, chunk):
        boot = resample_cells(cells, min(chunk, settings.resamples - start), rng)
        copies.add(GroupingCounts.teacher(boot).astype(np.float64),
                   GroupingCounts.student(boot).astype(np.float64))
    return copies.intervals()


#: Bootstrap copies held at once: memory is O(cells × CHUNK), not O(cells × resamples), which
#: matters for the per-class table of K = 1000 classes (353 MiB at 2,000 resamples unchunked).
#: Drawing in chunks from one generator gives the same copies as one draw.
CHUNK = 250
#: ...and at most this many cells of copies (16 MiB of int64) for tables of many gated
#: groups, so that the statistics' memory does not grow with the number of groups.
CHUNK_CELLS = 2_000_000


def _kept(ctx: Context) -> np.ndarray:
    """The groups the bootstrap keeps apart (:func:`pool_ungated`): gated ones and the
    reference."""
    keep = ctx.gated.copy()
    if ctx.reference is not None:
        keep[ctx.reference] = True
    return keep


def pool_ungated(cells: np.ndarray, ctx: Context) -> tuple[np.ndarray, Context]:
    """The table the bootstrap draws from: ungated groups summed into one pooled group.

    The gated groups and the reference (gated or not) keep their order; the pooled group
    comes last, is never gated and never the reference, and keeps its 8 cells (y, ŷt, ŷs).

    Why every interval is unchanged in distribution: a bootstrap copy is Multinomial(N,
    cell shares), and summing some cells of a multinomial gives the multinomial of the summed
    shares, the other cells' joint law unchanged. So the kept groups' cells and the
    whole-table sums (kept + pooled, per cell) have the same joint law drawn from the pooled
    table as from the full one, and every metric reads only those: grouping metrics the gated
    groups and the reference, overall metrics and the individual-level Theil index the
    whole-table sums. The cost of a copy falls from O(all groups) to O(gated groups). The
    copies themselves differ (fewer draws from the generator), so the table is pooled only
    when that removes a group: two or more ungated groups besides the reference.
    """
    keep = _kept(ctx)
    if len(keep) - int(keep.sum()) < 2:
        return cells, ctx
    kept = np.flatnonzero(keep)
    pooled = np.concatenate([cells[kept], cells[~keep].sum(axis=0, keepdims=True)])
    reference = None if ctx.reference is None else int(np.searchsorted(kept, ctx.reference))
    return pooled, replace(ctx, gated=np.append(ctx.gated[kept], False), reference=reference)


def compute_values(
    keys: Iterable[MetricKey],
    counts: dict[Grouping, GroupingCounts],
    settings: Settings,
) -> dict[MetricKey, MetricValue]:
    """Point values, and paired bootstrap intervals when ``settings.resamples`` > 0."""
    return evaluate(keys, counts, settings, ())[0]


def evaluate(
    keys: Iterable[MetricKey],
    counts: dict[Grouping, GroupingCounts],
    settings: Settings,
    groupings: Iterable[Grouping],
) -> tuple[dict[MetricKey, MetricValue], dict[Grouping, GroupIntervals]]:
    """:func:`compute_values`, and the rate intervals of the groups of ``groupings`` (for
    :func:`report_groups`), taken from the same copies in the same pass: a grouping's copies
    are drawn once for its metrics and its groups' rates. A grouping no metric reads gets
    its own draw of the same stream. None without resamples."""
    keys = list(dict.fromkeys(keys))
    wanted = set(groupings) if settings.resamples > 0 else set()
    first = next(iter(counts))
    out: dict[MetricKey, MetricValue] = {}
    # bootstrap copies are drawn once per table (stream) for all the metrics on it
    pending: dict[str, list[tuple[MetricKey, Metric, Context, dict[str, object]]]] = {}
    tables: dict[str, GroupingCounts] = {}
    for key in keys:
        metric = CATALOGUE[key.metric]
        if metric.sampled or metric.scored:  # row samples: run.individual_values, run.scores
            continue
        if metric.derived is not None:
            if metric.derived not in settings.derived:
                out[key] = _missing_table(key, metric.derived)
                continue
            gc = settings.derived[metric.derived]
        else:
            gc = counts[key.grouping or first]
        stream = gc.grouping.name if metric.derived != "reference" else "reference student"
        ctx = context_for(gc, settings, key.alpha)
        if metric.paired:  # a test on the pair: the teacher against itself changes nothing
            s = _point(metric, gc.cells, ctx)
            reason = explain_undefined(metric, gc.cells, ctx, gc.labels)
            out[key] = MetricValue(key, 0.0, s, s, np.nan, None, reason)
            continue
        t_conf, s_conf = GroupingCounts.teacher(gc.cells), GroupingCounts.student(gc.cells)
        t, s = _point(metric, t_conf, ctx), _point(metric, s_conf, ctx)
        labels = gc.labels
        value: dict[str, object] = dict(
            key=key, teacher=t, student=s, delta=s - t,
            relative=(s - t) / abs(t) if t != 0 and not np.isnan(t) else np.nan,
            teacher_reason=explain_undefined(metric, t_conf, ctx, labels),
            student_reason=explain_undefined(metric, s_conf, ctx, labels),
            per_group=_per_group(metric.name, t_conf, s_conf, ctx, labels),
        )
        if settings.resamples > 0:
            pending.setdefault(stream, []).append((key, metric, ctx, value))
            tables[stream] = gc
        else:
            out[key] = MetricValue(**value)  # type: ignore[arg-type]
    intervals: dict[Grouping, GroupIntervals] = {}
    for stream, items in pending.items():
        gc = tables[stream]
        rates = gc.grouping in wanted and stream == gc.grouping.name
        values, found = _with_intervals(gc, items, stream, settings, rates)
        out.update(values)
        if found is not None:
            intervals[gc.grouping] = found
    for g in wanted - set(intervals):
        intervals[g] = draw_rate_intervals(counts[g], context_for(counts[g], settings), settings)
    return {k: out[k] for k in keys if k in out}, intervals


def _with_intervals(
    gc: GroupingCounts, items: list[tuple[MetricKey, Metric, Context, dict[str, object]]],
    stream: str, settings: Settings, group_rates: bool = False,
) -> tuple[list[tuple[MetricKey, MetricValue]], GroupIntervals | None]:
    """Paired intervals of every metric on one table, from chunks of copies; with
    ``group_rates``, also the rate intervals of its groups (:func:`interval_targets`).

    Copies are drawn from the pooled table (:func:`pool_ungated`); every metric on a table
    has the same gated groups and reference, so one pooled table serves them all. Smooth
    metrics get percentile intervals; max/min-type metrics (:data:`SHAPES`) the intervals of
    :mod:`fairgate.core.intervals`, from the rate columns of the same copies.
    """
    rng = rng_for(settings.seed, stream)
    cells, pooled = pool_ungated(gc.cells, items[0][2])
    copies = _RateCopies(gc, items[0][2], settings, len(cells)) if group_rates else None
    contexts = {key: replace(ctx, gated=pooled.gated, reference=pooled.reference)
                for key, _, ctx, _ in items}
    layout, plans, fallbacks = _plans(items, cells, contexts, settings)
    parts: dict[MetricKey, tuple[list[np.ndarray], list[np.ndarray]]] = {
        key: ([], []) for key, _, _, _ in items}
    columns: dict[MetricKey, tuple[list[np.ndarray], list[np.ndarray]]] = {
        key: ([], []) for key in plans}
    chunk = max(1, min(CHUNK, CHUNK_CELLS // max(cells.size, 1)))
    for start in range(0, settings.resamples, chunk):
        boot = resample_cells(cells, min(chunk, settings.resamples - start), rng)
        # float64 once here, not in every rate of every metric
        boot_t = GroupingCounts.teacher(boot).astype(np.float64)
        boot_s = GroupingCounts.student(boot).astype(np.float64)
        del boot
        if copies is not None:
            copies.add(boot_t, boot_s)
        # metrics over the whole audit set read only its sums: one group, summed once
        whole_t, whole_s = boot_t.sum(axis=-3, keepdims=True), boot_s.sum(axis=-3, keepdims=True)
        for key, metric, _, _ in items:
            whole = metric.scope == "overall" and metric.derived is None
            parts[key][0].append(metric.compute(whole_t if whole else boot_t, contexts[key]))
            parts[key][1].append(metric.compute(whole_s if whole else boot_s, contexts[key]))
        if plans:
            gated = np.asarray(pooled.gated, bool)
            x_t, x_s = rate_columns(boot_t, layout, gated), rate_columns(boot_s, layout, gated)
            for key, plan in plans.items():
                cols = _remap(plan, layout)
                columns[key][0].append(x_t[:, cols])
                columns[key][1].append(x_s[:, cols])
    conf = settings.confidence
    out: list[tuple[MetricKey, MetricValue]] = []
    for key, _, _, value in items:
        bt, bs = np.concatenate(parts[key][0]), np.concatenate(parts[key][1])
        with np.errstate(divide="ignore", invalid="ignore"):
            brel = np.where(bt != 0, (bs - bt) / np.abs(bt), np.nan)
        value.update(
            teacher_interval=percentile_interval(bt, conf),
            student_interval=percentile_interval(bs, conf),
            delta_interval=percentile_interval(bs - bt, conf),
            relative_interval=percentile_interval(brel, conf),
        )
        if key in plans:
            x_t, x_s = (np.concatenate(columns[key][m]) for m in range(2))
            value.update(_uniform(plans[key], layout, bt, bs, x_t, x_s, value))
        elif key in fallbacks:
            value["interval_note"] = fallbacks[key]
        out.append((key, MetricValue(**value)))  # type: ignore[arg-type]
    return out, None if copies is None else copies.intervals()


def _uniform(plan: Plan, layout: Layout, bt: np.ndarray, bs: np.ndarray, x_t: np.ndarray,
             x_s: np.ndarray, value: dict[str, object]) -> dict[str, object]:
    """The intervals of :mod:`fairgate.core.intervals` from the copies' rate columns, over the
    copies in which the metric is defined (their share travels with the intervals)."""
    defined = np.isfinite(bt) & np.isfinite(bs)
    share = float(defined.mean()) if len(defined) else 0.0
    if not defined.any():
        return {}
    res = plan.finish(_scatter(x_t[defined], plan, layout), _scatter(x_s[defined], plan, layout))
    if res is None:
        return {}
    out: dict[str, object] = {
        "teacher_interval": Interval(*res.teacher, share, res.se[0]),
        "student_interval": Interval(*res.student, share, res.se[1]),
        "delta_interval": Interval(*res.delta, share, res.se[2]),
    }
    rel = value.get("relative_interval")
    relative = res.relative if res.relative is not None else _relative_box(res.delta, res.teacher)
    out["relative_interval"] = Interval(*relative, share,
                                        rel.se if isinstance(rel, Interval) else np.nan)
    return out


def _relative_box(delta: tuple[float, float], teacher: tuple[float, float]) -> tuple[float, float]:
    """The relative change Δ/|t| over the box of the change's and the teacher's intervals,
    where the log-scale construction does not apply (pieces of either sign or at 0): valid
    with the two (each at the policy's level), where the percentile interval of the ratio
    is not at ties. Unbounded when the teacher's interval reaches 0."""
    (d_lo, d_hi), (t_lo, t_hi) = delta, teacher
    if t_lo <= 0.0 <= t_hi:
        return -np.inf if d_lo < 0 else 0.0, np.inf if d_hi > 0 else 0.0
    a = sorted((abs(t_lo), abs(t_hi)))
    corners = [d / t for d in (d_lo, d_hi) for t in a]
    return min(corners), max(corners)


def _plans(items: list[tuple[MetricKey, Metric, Context, dict[str, object]]], cells: np.ndarray,
           contexts: dict[MetricKey, Context], settings: Settings
           ) -> tuple[Layout, dict[MetricKey, Plan], dict[MetricKey, str]]:
    """The rate columns every plan reads, and a plan (plausible pieces, coordinates) per
    max/min-type metric whose point value is defined; for those where the construction does
    not apply, why (they keep the percentile interval, and reports say so)."""
    rates = sorted({r for _, m, _, _ in items if m.name in SHAPES for r in SHAPES[m.name].rates})
    layout = Layout(tuple(rates), cells.shape[0])
    out: dict[MetricKey, Plan] = {}
    fallbacks: dict[MetricKey, str] = {}
    if settings.interval != "uniform":
        return layout, out, fallbacks
    for key, metric, _, value in items:
        shape = SHAPES.get(metric.name)
        if shape is None or metric.paired:
            continue
        t, s = value["teacher"], value["student"]
        if not (np.isfinite(t) and np.isfinite(s)):  # type: ignore[call-overload]
            continue
        plan = Plan(shape, cells, contexts[key], settings.confidence, metric.lo, metric.hi, layout)
        if plan.ok:
            out[key] = plan
        elif settings.resamples > 0:
            fallbacks[key] = (f"percentile interval, which may under-cover at ties: {plan.why} "
                              "(statistics.interval: uniform did not apply)")
    return layout, out, fallbacks


def _remap(plan: Plan, layout: Layout) -> np.ndarray:
    """The plan's columns in ``layout`` (the same layout: plans are built with it)."""
    assert plan.layout == layout
    return plan.cols


def _scatter(x: np.ndarray, plan: Plan, layout: Layout) -> np.ndarray:
    """Columns ``x[B, len(plan.cols)]`` back into a full ``[B, layout.size]`` array."""
    out = np.full((x.shape[0], layout.size), np.nan)
    out[:, plan.cols] = x
    return out


_MISSING = {
    "reference": "no reference student (--reference-student or --reference-scores)",
    "classes": "per-class tables need a multi-class policy (multiclass:)",
    "alignment": "no spurious attribute (audit.spurious)",
}


def _missing_table(key: MetricKey, table: str) -> MetricValue:
    reason = _MISSING[table]
    return MetricValue(key, np.nan, np.nan, np.nan, np.nan, reason, reason)


def paired_value(key: MetricKey, paired: Paired, confidence: float) -> MetricValue:
    """A MetricValue from sample estimates: normal intervals from their standard errors.

    No relative interval: it would need the teacher's uncertainty too, so relative bounds
    under ``significant``/``conservative`` are undefined (fail closed).
    """
    t, s, d = paired.teacher, paired.student, paired.delta
    assert s is not None and d is not None

    def interval(e: Estimate) -> Interval | None:
        if not (np.isfinite(e.value) and np.isfinite(e.se)):
            return None
        lo, hi = e.interval(confidence)
        return Interval(lo, hi, 1.0)

    rel = d.value / abs(t.value) if np.isfinite(t.value) and t.value != 0 else np.nan
    return MetricValue(key, t.value, s.value, d.value, rel, t.reason, s.reason,
                       interval(t), interval(s), interval(d), None)
