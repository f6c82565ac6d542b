"""Score-based metrics per group: ROC AUC, Brier score, expected calibration error (ECE).

These are not functions of decision counts, so they are computed on the row sample
(:class:`fairgate.core.individual.RowSampler`; every row when the audit set fits), which holds per
row the label, both models' positive-class scores and the group code of each grouping.

Point values come from fairlearn's ``MetricFrame`` with sklearn's ``roc_auc_score`` and
``brier_score_loss`` and :func:`expected_calibration_error`, one frame per grouping whose single
metric returns all six values (3 metrics × 2 models): fairlearn converts every row to a Python
object on each metric call, so six scalar metrics cost 3–5× as much (measured at 20k and 200k
rows; benchmarks/bench_scores.py).

Intervals come from a paired row bootstrap. Resampling n rows with replacement gives row i
the weight w_i ~ Multinomial(n, 1/n) (how often it was drawn); one weight vector per replicate
serves teacher and student and every grouping, so the delta interval is of the paired change.
A MetricFrame per replicate would cost seconds, so the replicates are computed by hand,
vectorized over a chunk of replicates, with exact integer weights: AUC as the weighted
Mann–Whitney statistic from cumulative negative weights in score order (ties count ½, as in
sklearn's trapezoid), Brier and ECE from weighted sums per (group, score bin, label) cell.
``tests/test_scores.py`` checks the hand values against MetricFrame on the same weights.

Undefined is not zero: a group without rows, or without one of the two labels for AUC, is
NaN with a reason naming it, and NaN propagates to every difference or worst-group value
over the gated groups (never skipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import MetricKey, MetricValue
from fairgate.core.metrics import SCORE_METRICS, Family, ScoreMetricSpec
from fairgate.core.stats import Interval, percentile_interval, rng_for
from fairgate.errors import DataError

if TYPE_CHECKING:
    import scipy.sparse as sp

#: Order of the metric axis in every value array here: ``values[model, family, group]``.
FAMILIES: tuple[Family, ...] = ("roc_auc", "brier_score", "expected_calibration_error")
MODELS = ("teacher", "student")
#: Bootstrap replicates computed together: 4 was fastest at 20k, 50k and 200k rows (1 is
#: 1.2–1.7× slower, 16 is 1.2–1.9× slower: wider rows push the cumulative sums out of cache).
CHUNK = 4




@dataclass(frozen=True)
class ScoreGroups:
    """One grouping's rows in the sample: group code per row, label and gating per group.

    ``gated`` comes from the full audit-set counts (min_group_size), not from the sample, so a
    gated group may have few or no rows here: its values are then undefined, which fails closed.
    """

    grouping: Grouping
    codes: np.ndarray  # int64 group index per sample row
    labels: Sequence[str]  # label of each group index
    gated: np.ndarray  # bool per group index


# ----------------------------------------------------------------------------- point metrics


def score_bins(score: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each score: equal-width bins ``[k/bins, (k+1)/bins)``, the last closed at 1.

    Edges are ``np.linspace(0, 1, bins + 1)`` and a score s is in bin k when
    ``edges[k] <= s < edges[k + 1]`` (``s == 1`` in the last bin), so the bins are defined by the
    edges' floating-point values, not by ``floor(s * bins)`` which rounds differently at edges.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, score, side="right") - 1, 0, bins - 1)


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, *, bins: int = 10,
                               sample_weight: np.ndarray | None = None) -> float:
    """ECE = Σ_b (n_b/n)·|mean(y in b) − mean(score in b)| over :func:`score_bins`.

    Weighted: n_b and the means use ``sample_weight``. Equal to Σ_b |Σ_b w·y − Σ_b w·s| / Σ w, so
    empty bins add nothing. NaN when the total weight is 0 (no rows): undefined, not 0.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(w.sum())
    if total == 0:
        return math.nan
    b = score_bins(p, bins)
    gap = np.bincount(b, weights=w * y, minlength=bins) - np.bincount(b, weights=w * p, minlength=bins)
    return float(np.abs(gap).sum() / total)


def _roc_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    """sklearn's ROC AUC; NaN (not a warning or an error) when a label class has no weight."""
    from sklearn.metrics import roc_auc_score

    has = y if w is None else y & (w > 0)
    has_not = ~y if w is None else ~y & (w > 0)
    if not has.any() or not has_not.any():
        return math.nan
    return float(roc_auc_score(y, p, sample_weight=w))


def _brier(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    from sklearn.metrics import brier_score_loss

    if len(y) == 0 or (w is not None and w.sum() == 0):
        return math.nan
    return float(brier_score_loss(y, p, sample_weight=w, pos_label=True))


def _both_models(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None,
                 *, bins: int) -> np.ndarray:
    """The MetricFrame metric: ``[model, family]`` for the score columns (teacher, student)."""
    y = np.asarray(y_true, dtype=bool)
    w = None if sample_weight is None else np.asarray(sample_weight)
    out = np.empty((2, len(FAMILIES)))
    for m in range(2):
        p = np.asarray(y_pred[:, m], dtype=np.float64)
        out[m] = (_roc_auc(y, p, w), _brier(y, p, w),
                  expected_calibration_error(y, p, bins=bins, sample_weight=w))
    return out


def frame_values(y: np.ndarray, teacher: np.ndarray, student: np.ndarray, codes: np.ndarray,
                 groups: int, *, bins: int, sample_weight: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """fairlearn MetricFrame values: overall ``[model, family]`` and per group ``[model, family, G]``.

    Groups without rows in the sample (MetricFrame omits them) are NaN.
    """
    from fairlearn.metrics import MetricFrame

    pred = np.column_stack([teacher, student])
    params = None if sample_weight is None else {"scores": {"sample_weight": sample_weight}}
    frame = MetricFrame(metrics={"scores": partial(_both_models, bins=bins)}, y_true=y,
                        y_pred=pred, sensitive_features=codes, sample_params=params)
    by_group = np.full((2, len(FAMILIES), groups), np.nan)
    for code, value in frame.by_group["scores"].items():
        by_group[:, :, int(code)] = value
    return np.asarray(frame.overall["scores"], dtype=np.float64), by_group


@dataclass(frozen=True)
class ScorePoints:
    """Point values of both models, and the sample counts that explain undefined ones.

    Keyed by grouping; ``None`` is the whole sample as one group.
    """

    values: dict[Grouping | None, np.ndarray]  # [model, family, G]; NaN where undefined
    n: dict[Grouping | None, np.ndarray]  # rows per group in the sample
    positives: dict[Grouping | None, np.ndarray]


def _check(y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
           groups: Mapping[Grouping, ScoreGroups], bins: int) -> None:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if y.dtype != np.bool_:
        raise ValueError(f"labels must be boolean (positive class), got {y.dtype}")
    n = len(y)
    for name, arr in (("teacher", teacher), ("student", student)):
        if arr.shape != (n,):
            raise ValueError(f"{name} scores have shape {arr.shape}, labels ({n},)")
        bad = ~((arr >= 0.0) & (arr <= 1.0))  # also NaN
        if bad.any():
            raise DataError(
                f"score-based metrics need positive-class probabilities in [0, 1]: {int(bad.sum())} "
                f"{name} score(s) are not, e.g. {arr[bad][0]!r} (is model.output set to logits "
                "or labels?)")
    for grouping, sg in groups.items():
        if sg.grouping != grouping:
            raise ValueError(f"groups[{grouping}] holds grouping {sg.grouping}")
        g = len(sg.labels)
        if sg.codes.shape != (n,) or sg.gated.shape != (g,):
            raise ValueError(f"{grouping}: codes {sg.codes.shape} for {n} rows, gated "
                             f"{sg.gated.shape} for {g} groups")
        if n and (sg.codes.min() < 0 or sg.codes.max() >= g):
            raise ValueError(f"{grouping}: group codes must be in [0, {g})")


def score_points(y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
                 groups: Mapping[Grouping, ScoreGroups], *, bins: int,
                 groupings: Iterable[Grouping] | None = None) -> ScorePoints:
    """Point values per group (MetricFrame) of ``groupings`` (default: all) and overall.

    Pass the result to :func:`score_values` and :func:`score_group_table` to build the frames
    once (~0.65 s per grouping at 200k rows).
    """
    y, teacher, student = np.asarray(y), np.asarray(teacher, np.float64), np.asarray(student, np.float64)
    _check(y, teacher, student, groups, bins)
    wanted = list(groups if groupings is None else dict.fromkeys(groupings))
    values: dict[Grouping | None, np.ndarray] = {}
    n = len(y)
    overall = np.full((2, len(FAMILIES)), np.nan)
    for grouping in wanted:
        codes = np.asarray(groups[grouping].codes, dtype=np.int64)
        size = len(groups[grouping].labels)
        if n:
            overall, values[grouping] = frame_values(y, teacher, student, codes, size, bins=bins)
        else:
            values[grouping] = np.full((2, len(FAMILIES), size), np.nan)
    if n and not wanted:
        overall, _ = frame_values(y, teacher, student, np.zeros(n, np.int64), 1, bins=bins)
    values[None] = overall[:, :, None]
    sizes: dict[Grouping | None, np.ndarray] = {None: np.array([n])}
    pos: dict[Grouping | None, np.ndarray] = {None: np.array([int(y.sum())])}
    for g in wanted:
        codes = np.asarray(groups[g].codes, np.int64)
        sizes[g] = np.bincount(codes, minlength=len(groups[g].labels))
        pos[g] = np.bincount(codes[y], minlength=len(groups[g].labels))
    return ScorePoints(values, sizes, pos)


# ----------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class _AucPlan:
    """Weighted Mann–Whitney AUC of one model on one partition, for any row weights.

    Rows are first put in the model's score order (one gather of the weights per model), so
    that every index below is increasing within a group: the per-partition gathers then read
    memory in a few forward streams instead of at random. Negatives sorted by (group, score);
    CN = cumulative weights of that order with CN[0] = 0. A positive i of group g beats the
    negatives of g below its score (CN[lo_i] − CN[start_g]) and ties with those at its score
    (CN[hi_i] − CN[lo_i]), so twice the weighted count of won pairs of group g is
    Σ_i w_i·(CN[lo_i] + CN[hi_i]) − 2·W⁺_g·CN[start_g]: integers, exact.
    """

    size: int
    neg: np.ndarray  # negatives by (group, score), as positions in score order
    pos: np.ndarray  # positives by (group, score), as positions in score order
    pos_starts: np.ndarray  # reduceat starts of the groups that have positives
    pos_groups: np.ndarray  # those groups
    lo: np.ndarray  # per positive, into CN
    hi: np.ndarray | None  # None when no positive ties a negative of its group (hi == lo)
    start: np.ndarray  # per group, into CN
    end: np.ndarray


def _auc_plan(y: np.ndarray, score: np.ndarray, codes: np.ndarray, size: int) -> _AucPlan:
    """Plan for rows already in ascending score order (``score`` sorted)."""
    neg, pos = np.flatnonzero(~y), np.flatnonzero(y)
    neg = neg[np.argsort(codes[neg], kind="stable")]  # stable: score order within a group
    pos = pos[np.argsort(codes[pos], kind="stable")]
    neg_codes, neg_scores = codes[neg], score[neg]
    pos_codes, pos_scores = codes[pos], score[pos]
    groups = np.arange(size + 1)
    start = np.searchsorted(neg_codes, groups, side="left")
    pos_bounds = np.searchsorted(pos_codes, groups, side="left")
    lo = np.empty(len(pos), dtype=np.intp)
    hi = np.empty_like(lo)
    for g in range(size):
        sel = slice(pos_bounds[g], pos_bounds[g + 1])
        seg = neg_scores[start[g]:start[g + 1]]
        lo[sel] = start[g] + np.searchsorted(seg, pos_scores[sel], side="left")
        hi[sel] = start[g] + np.searchsorted(seg, pos_scores[sel], side="right")
    has = np.flatnonzero(np.diff(pos_bounds))
    return _AucPlan(size, neg, pos, pos_bounds[has], has, lo,
                    None if np.array_equal(lo, hi) else hi, start[:-1], start[1:])


def _linear_stats(y: np.ndarray, scores: np.ndarray, fine: np.ndarray, cells: int,
                  bins: int) -> sp.csc_matrix:
    """Sparse Xᵀ so that ``Xᵀ @ W`` holds, per model, per fine group × bin × label, the summed
    weights, weighted scores and weighted squared errors: all that Brier and ECE need."""
    import scipy.sparse as sp  # ~0.15 s to import: not at CLI start

    n = len(y)
    k = cells * bins * 2
    cols, vals = [], []
    for m in range(2):
        s = scores[m]
        cell = (fine * bins + score_bins(s, bins)) * 2 + y
        for stat, v in enumerate((np.ones(n), s, (s - y) ** 2)):
            cols.append((m * 3 + stat) * k + cell)
            vals.append(v)
    rows = np.tile(np.arange(n), 6)
    # CSC: each sample row's weights W[i, :] are read once, contiguously (2× faster than CSR)
    return sp.csc_matrix((np.concatenate(vals), (np.concatenate(cols), rows)), shape=(6 * k, n))


class _Replicates:
    """Per-group values of both models for replicate weights ``W[n, C]`` (integer counts)."""

    def __init__(self, y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
                 partitions: Mapping[Grouping | None, tuple[np.ndarray, int]],
                 needs: set[tuple[Grouping | None, Family]], bins: int) -> None:
        self.bins = bins
        self.needs = needs
        scores = np.stack([teacher, student])
        auc = [p for p, fam in needs if fam == "roc_auc"]
        self.order: list[np.ndarray] = []
        self.auc: dict[tuple[Grouping | None, int], _AucPlan] = {}
        if auc:
            for m in range(2):
                order = np.argsort(scores[m], kind="stable")
                self.order.append(order)
                for p in auc:
                    codes, size = partitions[p]
                    self.auc[(p, m)] = _auc_plan(y[order], scores[m][order], codes[order], size)
        linear = sorted({p for p, fam in needs if fam != "roc_auc"}, key=str)
        self.linear: dict[Grouping | None, np.ndarray] = {}
        if linear:
            # the common refinement of the groupings, so one pass serves them all
            fine = np.zeros(len(y), dtype=np.int64)
            for p in linear:
                codes, size = partitions[p]
                fine = np.unique(fine * size + codes, return_inverse=True)[1].reshape(-1)
            self.cells = int(fine.max(initial=-1)) + 1
            self.xt = _linear_stats(y, scores, fine, self.cells, bins)
            for p in linear:
                codes, size = partitions[p]
                onehot = np.zeros((self.cells, size))
                onehot[fine, codes] = 1.0
                self.linear[p] = onehot

    def __call__(self, w: np.ndarray) -> dict[tuple[Grouping | None, Family], np.ndarray]:
        """``{(partition, family): values[C, model, G]}``; NaN where a group is undefined."""
        out: dict[tuple[Grouping | None, Family], np.ndarray] = {}
        c = w.shape[1]
        for m, order in enumerate(self.order):
            ws = np.take(w, order, axis=0)
            for (p, pm), plan in self.auc.items():
                if pm == m:
                    auc = self._auc(ws, plan)
                    out.setdefault((p, "roc_auc"), np.empty((c, 2, plan.size)))[:, m] = auc
        if self.linear:
            stats = (self.xt @ w.astype(np.float64)).T.reshape(c, 2, 3, self.cells, self.bins, 2)
            for p, onehot in self.linear.items():
                # [C, model, stat, group, bin, label]
                per = np.moveaxis(np.tensordot(stats, onehot, axes=([3], [0])), -1, 3)
                total = per[:, :, 0].sum(axis=(-2, -1))
                undefined = total == 0
                total = np.where(undefined, 1.0, total)
                if (p, "brier_score") in self.needs:
                    brier = per[:, :, 2].sum(axis=(-2, -1)) / total
                    out[(p, "brier_score")] = np.where(undefined, np.nan, brier)
                if (p, "expected_calibration_error") in self.needs:
                    gap = per[:, :, 0, :, :, 1] - per[:, :, 1].sum(axis=-1)  # Σw·y − Σw·s per bin
                    ece = np.abs(gap).sum(axis=-1) / total
                    out[(p, "expected_calibration_error")] = np.where(undefined, np.nan, ece)
        return out

    @staticmethod
    def _auc(ws: np.ndarray, plan: _AucPlan) -> np.ndarray:
        """AUC per group ``[C, G]`` from weights ``ws[n, C]`` in the model's score order."""
        c = ws.shape[1]
        cn = np.zeros((len(plan.neg) + 1, c), dtype=ws.dtype)
        np.cumsum(np.take(ws, plan.neg, axis=0), axis=0, out=cn[1:])
        wp = np.take(ws, plan.pos, axis=0)
        won = np.take(cn, plan.lo, axis=0)  # <= 2n: fits the weights' dtype (see draw_weights)
        if plan.hi is None:
            won *= 2
        else:
            won += np.take(cn, plan.hi, axis=0)
        won = np.multiply(won, wp, dtype=np.int64)
        num = np.zeros((plan.size, c), dtype=np.int64)
        wpos = np.zeros((plan.size, c), dtype=np.int64)
        if len(plan.pos):
            num[plan.pos_groups] = np.add.reduceat(won, plan.pos_starts, axis=0)
            wpos[plan.pos_groups] = np.add.reduceat(wp, plan.pos_starts, axis=0, dtype=np.int64)
        base = cn[plan.start].astype(np.int64)
        num -= 2 * wpos * base
        pairs = 2 * wpos * (cn[plan.end] - base)
        auc = np.full(pairs.shape, np.nan)
        np.divide(num, pairs, out=auc, where=pairs > 0)
        return auc.T


def draw_weights(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` row-bootstrap weight vectors as columns ``W[n, count]``: how often each row is drawn.

    Drawing n indices uniformly and counting them is Multinomial(n, 1/n), the exact row
    bootstrap. Replicate r uses the generator's stream in order, so it is the same whatever the
    chunk size. Rows first, so gathering rows moves C contiguous weights at a time.
    """
    idx = rng.integers(0, n, size=(count, n))
    idx *= count
    idx += np.arange(count, dtype=np.int64)[:, None]
    w = np.bincount(idx.reshape(-1), minlength=count * n).reshape(n, count)
    # int32 halves the memory traffic of every gather; cumulative sums stay <= n, and
    # twice that must fit too
    return w.astype(np.int32) if 2 * n < np.iinfo(np.int32).max else w


# ----------------------------------------------------------------------------- values


def _aggregate(vals: np.ndarray, spec: ScoreMetricSpec, gated: np.ndarray) -> np.ndarray:
    """Key value from per-group ``vals[..., G]``; NaN propagates (no ``nan*`` functions)."""
    if spec.aggregate == "overall":
        return vals[..., 0]
    v = vals[..., np.flatnonzero(gated)]
    if spec.aggregate == "difference":
        if v.shape[-1] < 2:
            return np.full(v.shape[:-1], np.nan)
        return np.max(v, axis=-1) - np.min(v, axis=-1)
    if v.shape[-1] == 0:
        return np.full(v.shape[:-1], np.nan)
    return np.min(v, axis=-1) if spec.higher_is_better else np.max(v, axis=-1)


def _missing(family: Family, n: int, positives: int) -> str | None:
    """What a group lacks for ``family`` to be defined: rows, or one label for ROC AUC."""
    if n == 0:
        return "no rows"
    if family == "roc_auc" and positives == 0:
        return "no positive rows"
    if family == "roc_auc" and positives == n:
        return "no negative rows"
    return None


def _reason(spec: ScoreMetricSpec, points: ScorePoints, partition: Grouping | None,
            labels: Sequence[str], gated: np.ndarray) -> str | None:
    """Why the point value of ``spec`` is undefined, naming the groups; None when it is defined."""
    n, pos = points.n[partition], points.positives[partition]
    if spec.aggregate == "overall":
        lack = _missing(spec.family, int(n[0]), int(pos[0]))
        return None if lack is None else f"the row sample has {lack}"
    idx = np.flatnonzero(gated)
    if spec.aggregate == "difference" and len(idx) < 2:
        return f"needs at least two gated groups, found {len(idx)} (see min_group_size)"
    if len(idx) == 0:
        return "no gated group (see min_group_size)"
    why = [f"group {labels[i]} has {lack} in the row sample" for i in idx.tolist()
           if (lack := _missing(spec.family, int(n[i]), int(pos[i])))]
    return "; ".join(why) if why else None


def score_values(
    keys: Iterable[MetricKey],
    y: np.ndarray,
    teacher: np.ndarray,
    student: np.ndarray,
    groups: Mapping[Grouping, ScoreGroups],
    *,
    bins: int,
    resamples: int,
    confidence: float,
    seed: int,
    points: ScorePoints | None = None,
    interval: str = "uniform",
) -> dict[MetricKey, MetricValue]:
    """Teacher, student and paired change of score metrics, with paired bootstrap intervals.

    ``interval`` "uniform": max − min and worst-group metrics get intervals that hold at ties
    (fairgate.core.intervals.ValuePlan); "percentile": every interval the percentile one.

    ``keys``: metrics of :data:`SCORE_METRICS`, grouping None for overall scope. ``y`` is the
    positive class; scores are positive-class probabilities (DataError otherwise). Intervals
    are percentiles of ``resamples`` paired row-bootstrap replicates (none when 0) drawn from
    ``rng_for(seed, "scores")``; each carries its defined share, which the gate checks against
    ``statistics.min_defined``. ``points``: from :func:`score_points`, to build the frames once.
    """
    keys = list(dict.fromkeys(keys))
    y, teacher, student = np.asarray(y), np.asarray(teacher, np.float64), np.asarray(student, np.float64)
    for key in keys:
        spec = SCORE_METRICS.get(key.metric)
        if spec is None:
            raise ValueError(f"{key.metric!r} is not a score metric ({', '.join(SCORE_METRICS)})")
        if (spec.scope == "overall") != (key.grouping is None):
            raise ValueError(f"{key.label}: {spec.scope} metrics take "
                             f"{'no grouping' if spec.scope == 'overall' else 'a grouping'}")
        if key.grouping is not None and key.grouping not in groups:
            raise ValueError(f"{key.label}: grouping {key.grouping} is not in groups")
    needed = list(dict.fromkeys(k.grouping for k in keys if k.grouping is not None))
    if points is None:
        points = score_points(y, teacher, student, groups, bins=bins, groupings=needed)
    else:
        _check(y, teacher, student, groups, bins)
    boot = _bootstrap(keys, y, teacher, student, groups, bins, resamples, seed)
    out = {}
    for key in keys:
        spec = SCORE_METRICS[key.metric]
        f = FAMILIES.index(spec.family)
        part = key.grouping
        gated = np.ones(1, bool) if part is None else np.asarray(groups[part].gated, bool)
        labels = [] if part is None else groups[part].labels
        t, s = (float(_aggregate(points.values[part][m, f], spec, gated)) for m in range(2))
        reason = _reason(spec, points, part, labels, gated)
        value = dict(key=key, teacher=t, student=s, delta=s - t,
                     relative=(s - t) / abs(t) if t != 0 and not math.isnan(t) else math.nan,
                     teacher_reason=reason if math.isnan(t) else None,
                     student_reason=reason if math.isnan(s) else None)
        if (part, spec.family) in boot:
            vals = boot[(part, spec.family)]
            bt, bs = _aggregate(vals[:, 0], spec, gated), _aggregate(vals[:, 1], spec, gated)
            with np.errstate(divide="ignore", invalid="ignore"):
                brel = np.where(bt != 0, (bs - bt) / np.abs(bt), np.nan)
            value.update(teacher_interval=percentile_interval(bt, confidence),
                         student_interval=percentile_interval(bs, confidence),
                         delta_interval=percentile_interval(bs - bt, confidence),
                         relative_interval=percentile_interval(brel, confidence))
            if spec.aggregate != "overall" and interval == "uniform":
                value.update(_uniform(spec, points.values[part][:, f], vals, gated, bt, bs,
                                      t, s, confidence))
        out[key] = MetricValue(**value)  # type: ignore[arg-type]
    return out


def _uniform(spec: ScoreMetricSpec, point: np.ndarray, vals: np.ndarray, gated: np.ndarray,
             bt: np.ndarray, bs: np.ndarray, t: float, s: float, confidence: float
             ) -> dict[str, Interval]:
    """Intervals that hold at ties for a max − min or worst-group score metric: the
    construction of fairgate.core.intervals on the per-group values of the copies
    (ValuePlan), over the copies in which the metric is defined. ``point[model, G]``."""
    from fairgate.core.intervals import SCORE_SHAPES, ValuePlan
    from fairgate.core.metrics import Context

    defined = np.isfinite(bt) & np.isfinite(bs)
    if not (defined.any() and math.isfinite(t) and math.isfinite(s)):
        return {}
    share = float(defined.mean())
    shape = SCORE_SHAPES[spec.aggregate](spec.higher_is_better)
    plan = ValuePlan(shape, point, vals[defined], Context(np.asarray(gated, bool)),
                     confidence, spec.lo, spec.hi)
    if not plan.ok:
        return {}
    res = plan.finish(plan.columns[0], plan.columns[1])
    if res is None:
        return {}
    return {"teacher_interval": Interval(*res.teacher, share, res.se[0]),
            "student_interval": Interval(*res.student, share, res.se[1]),
            "delta_interval": Interval(*res.delta, share, res.se[2])}


def _bootstrap(keys: list[MetricKey], y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
               groups: Mapping[Grouping, ScoreGroups], bins: int, resamples: int,
               seed: int) -> dict[tuple[Grouping | None, Family], np.ndarray]:
    """``{(partition, family): values[resamples, model, G]}`` for the families ``keys`` need.

    One stream, ``rng_for(seed, "scores")``, whatever the keys: a metric's interval does not
    depend on which other metrics are asked for, and replicate r does not depend on the chunk
    size. One thread: threads over chunks gained 1.4× at best on 2 idle cores and lost on busy
    ones (the work is memory-bound).
    """
    n = len(y)
    if resamples <= 0 or n == 0 or not keys:
        return {}
    needs = {(k.grouping, SCORE_METRICS[k.metric].family) for k in keys}
    partitions: dict[Grouping | None, tuple[np.ndarray, int]] = {None: (np.zeros(n, np.int64), 1)}
    for p, _ in needs:
        if p is not None:
            partitions[p] = (np.asarray(groups[p].codes, np.int64), len(groups[p].labels))
    replicates = _Replicates(y, teacher, student, partitions, needs, bins)
    rng = rng_for(seed, "scores")
    parts: dict[tuple[Grouping | None, Family], list[np.ndarray]] = {}
    for start in range(0, resamples, CHUNK):
        w = draw_weights(n, min(CHUNK, resamples - start), rng)
        for k, v in replicates(w).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def score_group_table(y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
                      groups: Mapping[Grouping, ScoreGroups], *, bins: int,
                      points: ScorePoints | None = None) -> list[dict[str, object]]:
    """Per grouping, per group: rows and positives in the sample, and both models' values.

    For the report's details; NaN where a value is undefined (no rows, or one label only for
    ROC AUC). Keys: grouping, group, gated, n, positives, teacher_<metric>, student_<metric>.
    """
    if points is None:
        points = score_points(y, teacher, student, groups, bins=bins)
    rows: list[dict[str, object]] = []
    for grouping, sg in groups.items():
        vals = points.values[grouping]
        for i, label in enumerate(sg.labels):
            row: dict[str, object] = {"grouping": grouping.name, "group": label,
                                      "gated": bool(sg.gated[i]), "n": int(points.n[grouping][i]),
                                      "positives": int(points.positives[grouping][i])}
            for m, model in enumerate(MODELS):
                for f, family in enumerate(FAMILIES):
                    row[f"{model}_{family}"] = float(vals[m, f, i])
            rows.append(row)
    return rows
