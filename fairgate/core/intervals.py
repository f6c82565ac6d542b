"""Intervals that hold at ties: max/min-type metrics as the max of smooth pieces (issue 11).

A max − min gap, a min/max ratio, the worst group or the group farthest from a reference
is the max (or min) of *pieces* that are smooth functions of group rates: ordered pairs of
groups (``r_i − r_j``), groups (``−r_g``), groups against the reference. Where two pieces tie
for the max, the percentile interval of the max is biased: at a tie the max of noisy
pieces overshoots, so the change of a gap the teacher does not have is underestimated.

The construction (locally simultaneous inference: Romano, Shaikh & Wolf 2014; Zrnic &
Fithian 2024), with α = 1 − confidence and a small β:

1. **Plausible pieces.** Clopper-Pearson bounds for every group rate a metric reads,
   Bonferroni over them at β/2 per model, give bounds on every piece by interval
   arithmetic; a piece is plausible when its upper bound reaches the largest lower bound.
   The piece that attains the true max is plausible with probability ≥ 1 − β/2, whatever
   the ties. These bounds are exact (conditional on the denominators), so they hold for
   small groups too, and they need no bootstrap: the plausible pieces are known before
   the copies are drawn.
2. **One-sided simultaneous bounds** over the plausible pieces at level γ = (α − β)/2 a side,
   calibrated on fairgate's multinomial copies (max-t: the bootstrap law of the largest
   standardized deviation). With k0 the teacher's estimated max piece,
   ``Δ = max_k s_k − max_j t_j = max_k (s_k − t_k0) − max_j (t_j − t_k0)``: each term is a
   max of smooth pieces, paired between the models, so
   ``Δ ∈ [max_k L(s_k − t_k0) − max_j U(t_j − t_k0), max_k U(s_k − t_k0) − max_j L(t_j − t_k0)]``.
   Each model's own value is ``[max_k L(t_k), max_k U(t_k)]``. For metrics that pick a piece
   (the group farthest from the reference, signed) the max becomes the hull over the
   plausible pieces. The misses add up to at most β + 2γ = α.
3. **Small groups.** Each coordinate is standardized by an analytic standard deviation
   (delta method on the joint cells, every cell counted 1/2 row more: Agresti-Min's
   paired and Agresti-Caffo's unpaired adjustments), and the critical value is never below
   the normal one: a group of 40 rows whose copies show no discordant row still gets the
   width its size warrants, where the percentile bootstrap sees a point mass.

With one plausible piece per model and k0 the same piece (groups clearly apart) the
interval is that of a smooth paired difference at level γ instead of α/2: about 2% wider
than the percentile interval at 95%.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import betaincinv, ndtri

from fairgate.core.metrics import RATES, Context, divide, rate

Kind = Literal["max", "select"]
By = Literal["abs", "abslog"]

#: The share of α spent on finding the plausible pieces (β = BETA_SHARE · α): 0.005 at 95%.
BETA_SHARE = 0.1
#: Pseudo-rows added to every joint cell for the analytic standard deviations.
SMOOTHING = 0.5
FLOOR = 0.9
#: Most plausible pieces a model may have; past it (dozens of indistinguishable groups)
#: the metric keeps the percentile interval and says so.
MAX_PIECES = 2048
#: Most (student piece, teacher piece) pairs bounded one by one; past it the change is
#: bounded through the teacher's estimated max piece (valid, wider at ties).
MAX_PAIRS = 4096
#: Most pieces screened pairwise on the copies (K² differences a copy); past it the
#: Clopper-Pearson screen alone decides which pieces are plausible.
MAX_SCREENED = 512
#: Pieces each piece is compared with in the bootstrap screen: the largest at the point.
ELIMINATORS = 6

_CELL_OF = {(1, 1): "tp", (0, 1): "fp", (0, 0): "tn", (1, 0): "fn"}


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Rate columns of one table: ``col(rate, group)``; group ``G`` is the gated aggregate."""

    rates: tuple[str, ...]
    groups: int

    @property
    def width(self) -> int:
        return self.groups + 1

    @property
    def size(self) -> int:
        return len(self.rates) * self.width

    def col(self, rate_name: str, group: int | np.ndarray) -> np.ndarray:
        return self.rates.index(rate_name) * self.width + np.asarray(group)

    def group_of(self, col: np.ndarray) -> np.ndarray:
        return np.asarray(col) % self.width


def rate_columns(conf: np.ndarray, layout: Layout, gated: np.ndarray) -> np.ndarray:
    """Rates ``[..., R·(G + 1)]`` of a model's ``conf[..., G, 2, 2]``; the last group of each
    rate is the rate over all gated groups together (fairlearn's ``to_overall``). "ppr" is
    Aequitas' share of all positive predictions (of every group of the table)."""
    total = conf[..., gated, :, :].sum(axis=-3, keepdims=True)
    both = np.concatenate([conf, total], axis=-3)
    cols = []
    for r in layout.rates:
        if r == "ppr":
            pp = both[..., 0, 1] + both[..., 1, 1]
            everyone = np.sum(pp[..., :-1], axis=-1, keepdims=True)
            cols.append(divide(pp, everyone))
        else:
            cols.append(rate(both, r))
    return np.concatenate(cols, axis=-1)


@functools.lru_cache(maxsize=64)
def _masks(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """num/den membership of the 8 joint cells (y, ŷt, ŷs) per rate, for teacher and student:
    ``[model, R, 2 (num, den), 8]``."""
    out = np.zeros((2, len(layout.rates), 2, 8))
    for m in range(2):
        for ri, name in enumerate(layout.rates):
            # ppr: its denominator is every group's positive predictions; counted here on the
            # group's own cells (the screen then uses the table's total, see Plan)
            spec = RATES["precision"] if name == "ppr" else RATES[name]
            for c in range(8):
                y, yt, ys = c >> 2, (c >> 1) & 1, c & 1
                cell = _CELL_OF[(y, yt if m == 0 else ys)]
                out[m, ri, 0, c] = cell in spec.den if name == "ppr" else cell in spec.num
                out[m, ri, 1, c] = cell in spec.den or spec.den == ("n",)
    return out[0], out[1]


def _table_totals(layout: Layout, den: np.ndarray) -> np.ndarray:
    """Denominators ``[R, G + 1]`` with ppr's replaced by the table's total (every group)."""
    if "ppr" not in layout.rates:
        return den
    den = den.copy()
    i = layout.rates.index("ppr")
    den[i] = den[i, :-1].sum()
    return den


# ----------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Pieces:
    """K pieces of one model's rate columns x: piece k = Σ_t coef[k, t] · x[num] / x[den]
    (den −1: the constant 1). Unused terms have coef 0."""

    coef: np.ndarray
    num: np.ndarray
    den: np.ndarray

    @property
    def size(self) -> int:
        return int(self.coef.shape[0])

    @staticmethod
    def of(terms: list[list[tuple[float, int, int]]]) -> Pieces:
        width = max((len(t) for t in terms), default=1)
        coef = np.zeros((len(terms), width))
        num = np.zeros((len(terms), width), dtype=np.int64)
        den = np.full((len(terms), width), -1, dtype=np.int64)
        for k, ts in enumerate(terms):
            for j, (c, a, b) in enumerate(ts):
                coef[k, j], num[k, j], den[k, j] = c, a, b
        return Pieces(coef, num, den)

    def take(self, idx: np.ndarray) -> Pieces:
        return Pieces(self.coef[idx], self.num[idx], self.den[idx])

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Piece values ``[..., K]`` of rate columns ``x[..., Q]``."""
        if (self.den < 0).all():  # sums of rates (gaps, groups): no ratio term
            out = np.zeros((*x.shape[:-1], self.size))
            for t in range(self.coef.shape[1]):
                c = self.coef[:, t]
                if c.any():
                    out += c * x[..., self.num[:, t]]
            return out
        top = x[..., self.num]
        bottom = np.where(self.den >= 0, x[..., np.maximum(self.den, 0)], 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # a ratio whose denominator rate is 0 is beyond every finite piece: it never
            # attains a min (0/0 included), whatever its numerator
            q = np.where(bottom != 0, top / np.where(bottom != 0, bottom, 1.0), np.inf)
            terms = np.where(self.coef != 0, self.coef * q, 0.0)
        return terms.sum(axis=-1)

    def bounds(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interval arithmetic: every piece's range when each column lies in [lo, hi] ⊂ [0, 1]."""
        a_lo, a_hi = lo[self.num], hi[self.num]
        has = self.den >= 0
        b_lo = np.where(has, lo[np.maximum(self.den, 0)], 1.0)
        b_hi = np.where(has, hi[np.maximum(self.den, 0)], 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            q_lo = np.where(b_hi > 0, a_lo / b_hi, 0.0)
            q_hi = np.where(b_lo > 0, a_hi / b_lo, np.inf)
        c = self.coef
        t_lo = np.where(c > 0, c * q_lo, np.where(c < 0, c * q_hi, 0.0))
        t_hi = np.where(c > 0, c * q_hi, np.where(c < 0, c * q_lo, 0.0))
        return t_lo.sum(axis=-1), t_hi.sum(axis=-1)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(columns [K, 2T], derivatives [K, 2T]) of every piece at rates ``x``."""
        has = self.den >= 0
        bottom = np.where(has, x[np.maximum(self.den, 0)], 1.0)
        top = x[self.num]
        d_num = np.where(self.coef != 0, self.coef / bottom, 0.0)
        d_den = np.where(has & (self.coef != 0), -self.coef * top / bottom**2, 0.0)
        cols = np.concatenate([self.num, np.maximum(self.den, 0)], axis=1)
        return cols, np.concatenate([d_num, d_den], axis=1)


# ----------------------------------------------------------------------------- shapes

Build = Callable[[Layout, Context, np.ndarray, np.ndarray], "Pieces | None"]


@dataclass(frozen=True)
class Shape:
    """How a metric is the max (``sign`` −1: the min) of pieces, or picks one of them.

    ``build(layout, ctx, lo, hi)`` gives the pieces that may attain the max when each rate
    column lies in [lo, hi] (a superset is fine: :func:`plausible` prunes it), or None when
    there are more than :data:`MAX_PIECES`. ``kind`` "select": the metric is the value of the
    piece farthest from parity by ``by`` (|value|, or |log value| for ratios).
    """

    rates: tuple[str, ...]
    build: Build
    kind: Kind = "max"
    sign: float = 1.0
    by: By | None = None
    log: bool = False  # pieces are ratios (−ratios for a min): own values on the log scale


def _top_groups(lo: np.ndarray, hi: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in ``cols``) of the groups that may have the highest / the lowest rate."""
    low, high = lo[cols], hi[cols]
    return np.flatnonzero(high >= low.max()), np.flatnonzero(low <= high.min())


def pairs(rates: tuple[str, ...], op: Literal["difference", "ratio"]) -> Shape:
    """max − min (``difference``) or min / max (``ratio``) of a rate over the gated groups;
    several rates: the worst of them (equalized odds)."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        gated = ctx.gated_index
        terms: list[list[tuple[float, int, int]]] = []
        for r in rates:
            cols = layout.col(r, gated)
            top, bottom = _top_groups(lo, hi, cols)
            if len(top) * len(bottom) > 4 * MAX_PIECES:
                return None
            for i in top:
                for j in bottom:
                    if i == j:
                        continue
                    a, b = int(cols[i]), int(cols[j])
                    terms.append([(1.0, a, -1), (-1.0, b, -1)] if op == "difference"
                                 else [(-1.0, b, a)])
        return Pieces.of(terms)

    return Shape(rates, build, sign=1.0 if op == "difference" else -1.0, log=op == "ratio")


def mean_of_pairs(a: str, b: str, op: Literal["difference", "ratio"]) -> Shape:
    """½ (gap of rate a + gap of rate b): pieces are pairs of pairs (equalized odds, mean)."""
    one, two = pairs((a,), op), pairs((b,), op)

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        pa, pb = (plausible(s.build(layout, ctx, lo, hi), "max", None, lo, hi) for s in (one, two))
        if pa is None or pb is None or pa.size * pb.size > 4 * MAX_PIECES:
            return None
        ia, ib = np.repeat(np.arange(pa.size), pb.size), np.tile(np.arange(pb.size), pa.size)
        return Pieces(np.concatenate([pa.coef[ia], pb.coef[ib]], axis=1) * 0.5,
                      np.concatenate([pa.num[ia], pb.num[ib]], axis=1),
                      np.concatenate([pa.den[ia], pb.den[ib]], axis=1))

    return Shape((a, b), build, sign=one.sign)


def worst_group(rate_name: str) -> Shape:
    """The lowest rate of any gated group: −max of −r_g."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        cols = layout.col(rate_name, ctx.gated_index)
        _, bottom = _top_groups(lo, hi, cols)
        return Pieces.of([[(-1.0, int(cols[j]), -1)] for j in bottom])

    return Shape((rate_name,), build, sign=-1.0)


def highest_group(rate_name: str) -> Shape:
    """The highest value of any gated group (the worst Brier score or calibration error)."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        cols = layout.col(rate_name, ctx.gated_index)
        top, _ = _top_groups(lo, hi, cols)
        return Pieces.of([[(1.0, int(cols[i]), -1)] for i in top])

    return Shape((rate_name,), build)


def _others(ctx: Context) -> np.ndarray:
    gated = ctx.gated_index
    return gated[gated != ctx.reference]


def versus_reference(rates: tuple[str, ...], form: Literal["difference", "ratio", "mean"],
                     by: By) -> Shape:
    """The signed value of the gated group farthest from the reference (AIF360, Aequitas):
    ``difference`` r_g − r_ref, ``ratio`` r_g / r_ref, ``mean`` ½ Σ_rates (r_g − r_ref)."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        ref = ctx.reference
        assert ref is not None
        terms = []
        for g in _others(ctx):
            if form == "ratio":
                (r,) = rates
                terms.append([(1.0, int(layout.col(r, g)), int(layout.col(r, ref)))])
            else:
                w = 1.0 if form == "difference" else 0.5
                ts = []
                for r in rates:
                    ts += [(w, int(layout.col(r, g)), -1), (-w, int(layout.col(r, ref)), -1)]
                terms.append(ts)
        return Pieces.of(terms)

    return Shape(rates, build, kind="select", by=by, log=form == "ratio")


def absolute_odds() -> Shape:
    """max over gated groups of ½(|ΔFPR| + |ΔTPR|) against the reference: four sign pieces."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        ref = ctx.reference
        assert ref is not None
        terms = []
        for g in _others(ctx):
            for s1 in (1.0, -1.0):
                for s2 in (1.0, -1.0):
                    terms.append([(0.5 * s1, int(layout.col("fpr", g)), -1),
                                  (-0.5 * s1, int(layout.col("fpr", ref)), -1),
                                  (0.5 * s2, int(layout.col("tpr", g)), -1),
                                  (-0.5 * s2, int(layout.col("tpr", ref)), -1)])
        return Pieces.of(terms)

    return Shape(("fpr", "tpr"), build)


def to_overall(rates: tuple[str, ...], op: Literal["difference", "ratio"]) -> Shape:
    """fairlearn's ``method="to_overall"``: max |r_g − r_all| or min of r_g/r_all, r_all/r_g
    over the gated groups, r_all the rate over all gated rows; several rates: the worst."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        terms = []
        for r in rates:
            agg = int(layout.col(r, layout.groups))
            for g in ctx.gated_index:
                c = int(layout.col(r, g))
                if op == "difference":
                    terms += [[(1.0, c, -1), (-1.0, agg, -1)], [(-1.0, c, -1), (1.0, agg, -1)]]
                else:
                    terms += [[(-1.0, c, agg)], [(-1.0, agg, c)]]
        return Pieces.of(terms)

    return Shape(rates, build, sign=1.0 if op == "difference" else -1.0, log=op == "ratio")


# ----------------------------------------------------------------------------- plausible pieces


def _selection_bounds(lo: np.ndarray, hi: np.ndarray, by: By | None) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the selection criterion |v| (or |log v|) from bounds [lo, hi] of v."""
    if by == "abslog":
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.where(lo > 0, np.log(np.maximum(lo, 1e-300)), -np.inf)
            hi = np.where(hi > 0, np.log(np.maximum(hi, 1e-300)), -np.inf)
    inside = (lo <= 0) & (hi >= 0)
    low = np.where(inside, 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    return low, np.maximum(np.abs(lo), np.abs(hi))


def plausible_index(pieces: Pieces, kind: Kind, by: By | None, lo: np.ndarray,
                    hi: np.ndarray) -> np.ndarray:
    """Indices of the pieces that may attain the max (or be picked) when every column lies
    in [lo, hi]: those whose upper bound reaches the largest lower bound."""
    if pieces.size == 0:
        return np.zeros(0, dtype=np.int64)
    p_lo, p_hi = pieces.bounds(lo, hi)
    if kind == "select":
        p_lo, p_hi = _selection_bounds(p_lo, p_hi, by)
    return np.flatnonzero(p_hi >= p_lo.max())


def plausible(pieces: Pieces | None, kind: Kind, by: By | None, lo: np.ndarray,
              hi: np.ndarray) -> Pieces | None:
    """The pieces of :func:`plausible_index`; None when there are more than MAX_PIECES."""
    if pieces is None:
        return None
    keep = plausible_index(pieces, kind, by, lo, hi)
    return None if len(keep) > MAX_PIECES else pieces.take(keep)


def clopper_pearson(k: np.ndarray, n: np.ndarray, tail: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial bounds with ``tail`` on each side; [0, 1] where n is 0."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(k > 0, betaincinv(k, n - k + 1, tail), 0.0)
        hi = np.where(k < n, betaincinv(k + 1, n - k, 1 - tail), 1.0)
    return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Result:
    """Intervals of the teacher's value, the student's and the change, with standard errors
    at the estimated max pieces; ``relative`` None where the log-scale construction does not
    apply (then the caller keeps the percentile interval of the relative change)."""

    teacher: tuple[float, float]
    student: tuple[float, float]
    delta: tuple[float, float]
    pieces: tuple[int, int]  # plausible pieces of the teacher and of the student
    se: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # teacher, student, change
    relative: tuple[float, float] | None = None


class Plan:
    """What is known before the copies are drawn: the pieces that may attain the max (a
    Clopper-Pearson screen), the rate columns they read, and the influence of every joint
    cell on every rate column (for the analytic standard deviations).
    :meth:`finish` takes the copies' rate columns and gives the intervals."""

    def __init__(self, shape: Shape, cells: np.ndarray, ctx: Context, confidence: float,
                 lo: float, hi: float, layout: Layout | None = None) -> None:
        self.shape, self.ctx = shape, ctx
        self.layout = layout or Layout(shape.rates, cells.shape[0])
        self.range = (lo, hi)
        alpha = 1.0 - confidence
        self.beta = BETA_SHARE * alpha
        self.gamma = (alpha - self.beta) / 2
        gated = np.asarray(ctx.gated, bool)
        confs = [cells.sum(axis=3), cells.sum(axis=2)]  # teacher, student [G, y, ŷ]
        self.point = [rate_columns(c, self.layout, gated) for c in confs]
        joint = np.concatenate([cells, cells[gated].sum(axis=0, keepdims=True)]).reshape(-1, 8)
        self.masks = _masks(self.layout)
        # Clopper-Pearson bounds of every rate column a piece may read: Bonferroni at β/4
        # per model (the other β/4 is spent by the bootstrap screen in finish)
        screened = len(self.layout.rates) * (len(ctx.gated_index) + 2)
        tail = self.beta / 4 / (2 * screened)
        bounds = []
        for m in range(2):
            k = np.einsum("gc,rc->rg", joint, self.masks[m][:, 0]).reshape(-1)
            n = _table_totals(self.layout, np.einsum("gc,rc->rg", joint, self.masks[m][:, 1]))
            bounds.append(clopper_pearson(k, n.reshape(-1), tail))
        # one list of pieces for both models (piece k is the same functional of each model's
        # rates), then the plausible ones of each model
        c_lo, c_hi = np.minimum(bounds[0][0], bounds[1][0]), np.maximum(bounds[0][1], bounds[1][1])
        self.ok = False
        self.why = (f"more than {MAX_PIECES:,} group pairs may attain the max (groups the "
                    "audit cannot tell apart)")
        raw = plausible(shape.build(self.layout, ctx, c_lo, c_hi), shape.kind, shape.by,
                        c_lo, c_hi)
        if raw is None:
            return
        self.why = "no piece of the metric is defined on both models"
        if raw.size == 0:
            return
        self.kind, self.sign = shape.kind, shape.sign
        self.prescreened = [plausible_index(raw, shape.kind, shape.by, *bounds[m]) for m in range(2)]
        if not all(len(i) for i in self.prescreened):
            return
        self.raw = raw
        self._influence(joint)
        points = [raw.evaluate(self.point[m]) for m in range(2)]
        self.screened = [self._screen(m, points[m]) for m in range(2)]
        if not all(len(k) for k, _ in self.screened):
            return
        self.ok = True
        kept = raw.take(np.union1d(self.screened[0][0], self.screened[1][0]))
        cols = np.r_[kept.num.reshape(-1), kept.den.reshape(-1)]
        self.cols = np.unique(cols[cols >= 0])

    # -- analytic standard deviations -------------------------------------------------

    def _influence(self, joint: np.ndarray) -> None:
        """Influence of one more row in each joint cell on each rate column, and the pieces'
        gradients, on joint cells with SMOOTHING pseudo-rows (Agresti-Min / Agresti-Caffo)."""
        self.smooth = joint + SMOOTHING  # [G + 1, 8]
        width = len(self.layout.rates) * self.layout.width
        self.infl, self.grad = [], []
        for m in range(2):
            num = np.einsum("gc,rc->rg", self.smooth, self.masks[m][:, 0])
            den = _table_totals(self.layout, np.einsum("gc,rc->rg", self.smooth,
                                                       self.masks[m][:, 1]))
            r = num / den  # [R, G + 1]
            f = (self.masks[m][:, None, 0, :] - r[:, :, None] * self.masks[m][:, None, 1, :]) \
                / den[:, :, None]
            self.infl.append(f.reshape(width, 8))
            self.grad.append(self.raw.gradient(r.reshape(-1)))

    def _sd(self, parts: list[tuple[int, np.ndarray, float | np.ndarray]]) -> np.ndarray:
        """SDs of Σ weight · piece[idx] over parts (model, piece indices [K], weight: a sign,
        or one weight per index, e.g. 1/|piece| on the log scale)."""
        cols = np.concatenate([self.grad[m][0][idx] for m, idx, _ in parts], axis=1)
        a = np.concatenate([np.reshape(w, (-1, 1)) * self.grad[m][1][idx]
                            if np.ndim(w) else w * self.grad[m][1][idx]
                            for m, idx, w in parts], axis=1)
        model = np.concatenate([np.full(self.grad[m][0][idx].shape, m) for m, idx, _ in parts],
                               axis=1)
        return self._var(model, cols, a)

    def _var(self, model: np.ndarray, cols: np.ndarray, a: np.ndarray) -> np.ndarray:
        """SD of Σ_e a[k, e] · column[k, e] (of ``model[k, e]``) from the cell influences."""
        f = np.where(model[..., None] == 0, self.infl[0][cols], self.infl[1][cols]) * a[..., None]
        groups = self.layout.group_of(cols)  # [K, E]
        same = (groups[:, :, None] == groups[:, None, :]).astype(np.float64)
        var = np.einsum("kec,kfc,kef->k", f * self.smooth[groups], f, same)
        return np.sqrt(np.maximum(var, 0.0))

    # -- from the copies to the intervals -------------------------------------------

    def _screen(self, m: int, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model m's pieces that may attain the max, and which side of parity each is on.

        Of the pieces the Clopper-Pearson screen kept, k survives unless some j of the
        ELIMINATORS largest beats it beyond c analytic standard deviations of their
        difference, c the normal quantile of β/4 shared (Bonferroni) by those comparisons:
        from the counts alone, so which pieces count does not flicker with the copies drawn.
        A piece infinite at the point (a ratio over a rate of 0) attains no max there and is
        left out. For a picked piece the same comparisons include each piece against parity
        (both sides): side is +1 (−1) where a piece is surely above (below) it.
        """
        idx = self.prescreened[m]
        idx = idx[np.isfinite(point[idx])]
        k = idx.size
        select = self.shape.kind == "select"
        if k == 0 or (k == 1 and not select) or k > MAX_SCREENED:
            return idx, np.zeros(k)
        crit_p = point[idx]
        scale = np.ones(k)
        if select:
            crit_p = _criterion(crit_p, self.shape.by)
            p = point[idx]
            with np.errstate(divide="ignore", invalid="ignore"):  # a ratio of 0: log(0)
                scale = np.sign(p) if self.shape.by == "abs" else np.sign(np.log(p)) / p
        # a piece whose criterion or slope is not finite at the point (a ratio of 0, whose
        # |log| is infinite) has no normal approximation: it neither eliminates a piece nor
        # is eliminated, which keeps it plausible (the conservative side)
        testable = np.isfinite(crit_p) & np.isfinite(scale)
        # challengers: the ELIMINATORS pieces with the largest point values (a piece that
        # beats k beats it by the most when it is among the largest); each compared with all
        order = np.argsort(-np.where(testable, crit_p, -np.inf), kind="stable")
        top = order[testable[order]][:ELIMINATORS]
        j, i = np.repeat(top, k), np.tile(np.arange(k), top.size)
        keep = (j != i) & testable[i]
        j, i = j[keep], i[keep]
        cols = np.concatenate([self.grad[m][0][idx[j]], self.grad[m][0][idx[i]]], axis=1)
        a = np.concatenate([scale[j, None] * self.grad[m][1][idx[j]],
                            -scale[i, None] * self.grad[m][1][idx[i]]], axis=1)
        sd = self._var(np.full(cols.shape, m), cols, a)
        diff_p = crit_p[j] - crit_p[i]
        sd_k = self._sd([(m, idx, 1.0)])
        tests = j.size + (2 * k if select else 0)
        c = float(ndtri(1 - self.beta / 4 / max(tests, 1)))
        beaten = np.zeros(k, bool)
        np.logical_or.at(beaten, i, diff_p > c * sd)
        if beaten.all():
            beaten[:] = False
        side = np.zeros(k)
        if select:
            centre = 1.0 if self.shape.by == "abslog" else 0.0
            p = point[idx]
            side = np.where(p - c * sd_k > centre, 1.0, np.where(p + c * sd_k < centre, -1.0, 0.0))
        return idx[~beaten], side[~beaten]

    def finish(self, x_t: np.ndarray, x_s: np.ndarray) -> Result | None:
        """``x_t``, ``x_s``: the copies' rate columns ``[B, Q]`` (only :attr:`cols` are read),
        resamples in which the metric is undefined already left out."""
        # only the pieces still plausible for either model are read from the copies; the
        # others stay NaN (never indexed)
        used = np.union1d(self.screened[0][0], self.screened[1][0])
        pieces = self.raw.take(used)
        boots = []
        for x in (x_t, x_s):
            b = np.full((len(x), self.raw.size), np.nan)
            b[:, used] = pieces.evaluate(x)
            boots.append(b)
        points = [self.raw.evaluate(self.point[m]) for m in range(2)]
        screened = self.screened
        keep = [k for k, _ in screened]
        self.kind, self.sign = self.shape.kind, self.shape.sign
        if self.kind == "select":
            # a picked piece is a max when every plausible piece of both models is surely
            # on one side of parity: the farthest above is the largest, the farthest below
            # the smallest (the max of the negated pieces); then the paired diagonal of
            # _change keeps the interval of the change as narrow as for a max
            sides = np.concatenate([side for _, side in screened])
            if (sides > 0).all():
                self.kind = "max"
            elif (sides < 0).all():
                self.kind, self.sign = "max", -1.0
                boots, points = [-b for b in boots], [-p for p in points]
        teacher = self._own(0, keep[0], boots[0], points[0])
        student = self._own(1, keep[1], boots[1], points[1])
        delta = self._change(keep, boots, points)
        relative = self._relative(keep, boots, points)
        if self.sign < 0:
            teacher, student, delta = ((-b, -a) for a, b in (teacher, student, delta))
        lo, hi = self.range
        return Result(_clip(teacher, lo, hi), _clip(student, lo, hi),
                      _clip(delta, lo - hi, hi - lo), (keep[0].size, keep[1].size),
                      self.standard_errors(), relative)

    def standard_errors(self) -> tuple[float, float, float]:
        """Analytic standard errors of the teacher's value, the student's and the change at
        the estimated max pieces (what the detectable change and `fairgate plan` use; no
        copies needed)."""
        points = [self.raw.evaluate(self.point[m]) for m in range(2)]
        kind = "select" if self.shape.kind == "select" else "max"
        best = []
        for (k, _), p in zip(self.screened, points, strict=True):
            crit = p[k] if kind == "max" else _criterion(p[k], self.shape.by)
            best.append(int(k[np.argmax(_finite(crit))]))
        t0, s0 = np.array(best[:1]), np.array(best[1:])
        return (float(self._sd([(0, t0, 1.0)])[0]), float(self._sd([(1, s0, 1.0)])[0]),
                float(self._sd([(1, s0, 1.0), (0, t0, -1.0)])[0]))

    def _relative(self, keep: list[np.ndarray], boots: list[np.ndarray], points: list[np.ndarray]
                  ) -> tuple[float, float] | None:
        """(s − t)/|t| on the log scale, where every plausible piece has one sign: the log of
        a max of positive pieces is the max of their logs, so log s − log t is bounded as Δ
        is, and the relative change is exp of it − 1. None otherwise (a tie at 0, or a
        picked piece of either sign): then the percentile interval stays."""
        if self.kind != "max":
            return None
        used = np.union1d(keep[0], keep[1])  # _change pairs pieces across the models
        both = np.concatenate([points[m][used] for m in range(2)])
        if not np.isfinite(both).all():
            return None
        if (both > 0).all():
            flip = 1.0  # f = log p
        elif (both < 0).all() and self.sign < 0:
            flip = -1.0  # f = −log(−p), increasing in p
        else:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):  # pieces outside used are unread
            logs = [flip * np.log(flip * b) for b in boots]
            lpts = [flip * np.log(flip * p) for p in points]
            weights = [1.0 / np.abs(p) for p in points]
        lo, hi = self._change(keep, logs, lpts, weights)
        with np.errstate(over="ignore"):
            if flip < 0:  # metric = min ratio: relative = exp(−Δf) − 1
                return float(np.expm1(-hi)), float(np.expm1(-lo))
            if self.sign < 0:  # metric = −max p, p > 0: relative = 1 − exp(Δf)
                return float(-np.expm1(hi)), float(-np.expm1(lo))
            return float(np.expm1(lo)), float(np.expm1(hi))

    def _own(self, m: int, idx: np.ndarray, boot: np.ndarray, point: np.ndarray
             ) -> tuple[float, float]:
        """A model's own value: [max_k L(p_k), max_k U(p_k)] over its plausible pieces (the
        hull when a piece is picked). Ratios are bounded on the log scale, where their
        spread does not shrink with their value."""
        b, p, sd = boot[:, idx], point[idx], self._sd([(m, idx, 1.0)])
        sign = -1.0 if self.sign < 0 else 1.0  # pieces are −ratio for a min
        log = self.shape.log and bool(np.all(sign * p > 0) and np.all(np.isfinite(p)))
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                b, p, sd = sign * np.log(sign * b), sign * np.log(sign * p), sd / np.abs(p)
        lo = _simultaneous(b, p, sd, 1, self.gamma)
        hi = _simultaneous(b, p, sd, -1, self.gamma)
        if log:
            with np.errstate(over="ignore"):
                lo, hi = sign * np.exp(sign * lo), sign * np.exp(sign * hi)
        if self.kind == "select":
            return float(lo.min()), float(hi.max())
        return float(lo.max()), float(hi.max())

    def _change(self, keep: list[np.ndarray], boots: list[np.ndarray], points: list[np.ndarray],
                weights: list[np.ndarray] | None = None) -> tuple[float, float]:
        """Bounds of Δ = max_k s_k − max_j t_j from simultaneous bounds on e_kj = s_k − t_j.

        With k0 the student's and j0 the teacher's max piece (each plausible): Δ ≥ s_k −
        t_j0 for every k, and Δ ≤ s_k0 − t_j for every j, so
        ``Δ ≥ min_{j plausible for t} max_{k plausible for s, or k = j} L(e_kj)`` and
        ``Δ ≤ max_{k plausible for s} min_{j plausible for t, or j = k} U(e_kj)``; the paired
        diagonal e_kk keeps the interval narrow when both models tie. A picked piece (the
        group farthest from the reference) has no such order: the hull of the e_kj.
        Past MAX_PAIRS pairs: through the teacher's estimated max piece (:meth:`_via_k0`).
        """
        ks, kt = keep[1], keep[0]
        w = weights or [np.ones(len(points[0])), np.ones(len(points[1]))]
        if ks.size * kt.size > MAX_PAIRS:
            return self._via_k0(keep, boots, points, w)
        si, tj = np.repeat(ks, kt.size), np.tile(kt, ks.size)
        diag = np.union1d(ks, kt)
        si, tj = np.r_[si, diag], np.r_[tj, diag]
        sd = self._sd([(1, si, w[1][si]), (0, tj, -w[0][tj])])
        with np.errstate(invalid="ignore"):  # inf − inf (a ratio over 0 in a copy): NaN
            eb, ep = boots[1][:, si] - boots[0][:, tj], points[1][si] - points[0][tj]
        e_lo = _simultaneous(eb, ep, sd, 1, self.gamma)
        e_hi = _simultaneous(eb, ep, sd, -1, self.gamma)
        grid = ks.size * kt.size
        if self.kind == "select":
            return float(e_lo[:grid].min()), float(e_hi[:grid].max())
        lo_grid = e_lo[:grid].reshape(ks.size, kt.size)
        hi_grid = e_hi[:grid].reshape(ks.size, kt.size)
        d_lo = dict(zip(diag.tolist(), e_lo[grid:].tolist(), strict=True))
        d_hi = dict(zip(diag.tolist(), e_hi[grid:].tolist(), strict=True))
        low = min(max(lo_grid[:, c].max(), d_lo[j]) for c, j in enumerate(kt.tolist()))
        high = max(min(hi_grid[r].min(), d_hi[k]) for r, k in enumerate(ks.tolist()))
        return float(low), float(high)

    def _via_k0(self, keep: list[np.ndarray], boots: list[np.ndarray], points: list[np.ndarray],
                w: list[np.ndarray]) -> tuple[float, float]:
        """Many plausible pieces: Δ = max_k u_k − max_j v_j with u_k = s_k − t_j0 and
        v_j = t_j − t_j0 (j0 the teacher's estimated max piece), bounded jointly: linear
        in the pieces, wider at ties."""
        ks, kt = keep[1], keep[0]
        crit = points[0][kt] if self.kind == "max" else _criterion(points[0][kt], self.shape.by)
        j0 = int(kt[np.argmax(np.where(np.isnan(crit), -np.inf, crit))])
        others = kt[kt != j0]
        with np.errstate(invalid="ignore"):
            ub, up = boots[1][:, ks] - boots[0][:, [j0]], points[1][ks] - points[0][j0]
            vb, vp = boots[0][:, others] - boots[0][:, [j0]], points[0][others] - points[0][j0]
        t0 = np.full(ks.size, j0)
        sd = np.r_[self._sd([(1, ks, w[1][ks]), (0, t0, -w[0][t0])]),
                   self._sd([(0, others, w[0][others]),
                             (0, t0[:1].repeat(others.size), -w[0][j0] * np.ones(others.size))])]
        both_b, both_p = np.concatenate([ub, vb], 1), np.concatenate([up, vp])
        ones, minus = np.ones(up.size), -np.ones(vp.size)
        low = _simultaneous(both_b, both_p, sd, np.r_[ones, minus], self.gamma)
        high = _simultaneous(both_b, both_p, sd, np.r_[-ones, -minus], self.gamma)
        u_lo, v_hi = low[:up.size], np.r_[low[up.size:], 0.0]  # v_j0 is 0 exactly
        u_hi, v_lo = high[:up.size], np.r_[high[up.size:], 0.0]
        if self.kind == "select":
            return float(u_lo.min() - v_hi.max()), float(u_hi.max() - v_lo.min())
        return float(u_lo.max() - v_hi.max()), float(u_hi.max() - v_lo.max())


def _order_stat(values: np.ndarray, q: float) -> float:
    """The ⌈q · n⌉-th smallest value (no interpolation, so infinities stay whole)."""
    n = len(values)
    if n == 0:
        return np.inf
    k = min(max(int(np.ceil(q * n)) - 1, 0), n - 1)
    return float(np.partition(values, k)[k])


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, -np.inf)


def _criterion(values: np.ndarray, by: By | None) -> np.ndarray:
    if by == "abslog":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(np.log(values))
    return np.abs(values)


def _clip(iv: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    """The interval within the metric's range; an end that could not be computed (NaN)
    is the end of the range: wide, never wrong."""
    a, b = float(iv[0]), float(iv[1])
    a = lo if np.isnan(a) else a
    b = hi if np.isnan(b) else b
    return (min(max(a, lo), hi), max(min(b, hi), lo))


def _simultaneous(boot: np.ndarray, point: np.ndarray, sd: np.ndarray, side: np.ndarray | int,
                  level: float) -> np.ndarray:
    """Simultaneous one-sided bounds whose misses add up to ``level``.

    ``side`` +1: a lower bound for that coordinate, −1: an upper bound. Calibrated
    percentiles: per copy, the smallest rank any coordinate gives it (how far out the copy
    lies in the direction that would break a bound); its ``level`` quantile r is the rank
    each coordinate's bound gets. With one coordinate this is the percentile bound at
    ``level``; percentiles follow the skew of rates near 0 and of ratios, and a copy at the
    edge of several coordinates counts once. Only ranks up to level · B can matter, so each
    coordinate needs its ⌈level · B⌉ smallest values (a partition, not a sort); tied values
    get distinct ranks, which can only lower r (wider bounds).
    Floor: never closer to the point than FLOOR normal quantiles of the analytic standard
    deviation, so a small group whose copies show no discordant row keeps its width.
    """
    side = np.broadcast_to(np.asarray(side, np.float64), point.shape)
    n = len(boot)
    if point.size == 0 or n == 0:
        return np.where(side > 0, -np.inf, np.inf)
    y = side * boot  # every bound a lower bound of side · x
    if np.isnan(y).any():
        y = np.where(np.isnan(y), -np.inf, y)  # an undefined coordinate counts as breaking it
    allowed = int(np.floor(level * n))  # copies that may break a bound
    depth = min(n, allowed + 2)
    yt = np.ascontiguousarray(y.T)  # [K, B]: each coordinate's copies in one row
    rows = np.argpartition(yt, depth - 1, axis=1)[:, :depth]  # [K, depth] the smallest
    order = np.argsort(np.take_along_axis(yt, rows, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    low = np.take_along_axis(yt, rows, axis=1)  # sorted, [K, depth]
    best = np.full(n, n + 1, dtype=np.int32)  # per copy, the smallest rank it gets
    ranks = np.broadcast_to(np.arange(1, depth + 1, dtype=np.int32), rows.shape)
    np.minimum.at(best, rows.reshape(-1), ranks.reshape(-1))
    # a copy breaks the bounds at rank r when some coordinate ranks it below r: the largest
    # r that at most `allowed` copies break is the (allowed + 1)-th smallest of their ranks
    r = min(int(np.partition(best, allowed)[allowed]), depth)
    bound = low[:, r - 1]
    a = r / n
    floor = side * point - FLOOR * float(ndtri(1.0 - a)) * np.where(np.isfinite(sd), sd, 0.0)
    return side * np.minimum(bound, floor)


# ----------------------------------------------------------------------------- the catalogue


def _registry() -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for r in RATES:
        out[f"{r}_difference"] = pairs((r,), "difference")
        out[f"{r}_ratio"] = pairs((r,), "ratio")
    for name, r in (("demographic_parity", "selection_rate"), ("equal_opportunity", "tpr")):
        out[f"{name}_difference"] = pairs((r,), "difference")
        out[f"{name}_ratio"] = pairs((r,), "ratio")
    out["equalized_odds_difference"] = pairs(("tpr", "fpr"), "difference")
    out["equalized_odds_ratio"] = pairs(("tpr", "fpr"), "ratio")
    out["equalized_odds_difference_mean"] = mean_of_pairs("tpr", "fpr", "difference")
    out["equalized_odds_ratio_mean"] = mean_of_pairs("tpr", "fpr", "ratio")
    for name, r in (("accuracy_equality", "accuracy"), ("predictive_parity", "precision"),
                    ("fpr_parity", "fpr"), ("fnr_parity", "fnr"), ("fdr_parity", "fdr"),
                    ("for_parity", "for"), ("class_accuracy_difference", "accuracy")):
        out[name] = pairs((r,), "difference")
    out["worst_group_accuracy"] = worst_group("accuracy")
    out["worst_class_accuracy"] = worst_group("accuracy")
    out["statistical_parity_difference"] = versus_reference(("selection_rate",), "difference", "abs")
    out["disparate_impact"] = versus_reference(("selection_rate",), "ratio", "abslog")
    out["average_odds_difference"] = versus_reference(("fpr", "tpr"), "mean", "abs")
    out["average_abs_odds_difference"] = absolute_odds()
    for r in RATES:
        out[f"{r}_reference_difference"] = versus_reference((r,), "difference", "abs")
        out[f"{r}_reference_ratio"] = versus_reference((r,), "ratio", "abslog")
        out[f"{r}_difference_to_overall"] = to_overall((r,), "difference")
        out[f"{r}_ratio_to_overall"] = to_overall((r,), "ratio")
    out["ppr_reference_ratio"] = versus_reference(("ppr",), "ratio", "abslog")
    for name, rates in (("demographic_parity", ("selection_rate",)), ("equal_opportunity", ("tpr",)),
                        ("equalized_odds", ("tpr", "fpr"))):
        out[f"{name}_difference_to_overall"] = to_overall(rates, "difference")
        out[f"{name}_ratio_to_overall"] = to_overall(rates, "ratio")
    return out


#: Metrics that are a max or min of pieces, by name; the others are smooth (or counts).
SHAPES: dict[str, Shape] = _registry()


def whole(terms: tuple[tuple[float, str], ...]) -> Shape:
    """A smooth metric over the whole table, Σ weight · rate (accuracy, balanced accuracy):
    one piece on the aggregate column, for planning (``ctx`` gates every group)."""

    def build(layout: Layout, ctx: Context, lo: np.ndarray, hi: np.ndarray) -> Pieces | None:
        return Pieces.of([[(w, int(layout.col(r, layout.groups)), -1) for w, r in terms]])

    return Shape(tuple(r for _, r in terms), build)


#: Metrics over the whole audit set that are a weighted sum of rates (for `fairgate plan`).
WHOLE: dict[str, Shape] = {
    **{r: whole(((1.0, r),)) for r in RATES},
    "balanced_accuracy": whole(((0.5, "tpr"), (0.5, "tnr"))),
}


class ValuePlan(Plan):
    """The same construction on per-group values that are not rates of counts (ROC AUC,
    Brier score, calibration error per group, from scores.py's row bootstrap).

    No Clopper-Pearson screen and no delta method: every pair (or group) is a candidate, and
    the standard deviations, for the pairwise screen and the floor, are those of the
    copies themselves. ``point[model, G]``, ``boot[B, model, G]`` (undefined copies out).
    """

    def __init__(self, shape: Shape, point: np.ndarray, boot: np.ndarray, ctx: Context,
                 confidence: float, lo: float, hi: float) -> None:
        self.shape, self.ctx = shape, ctx
        groups = point.shape[-1]
        self.layout = Layout(shape.rates, groups)
        self.range = (lo, hi)
        alpha = 1.0 - confidence
        self.beta = BETA_SHARE * alpha
        self.gamma = (alpha - self.beta) / 2
        pad = np.full((*boot.shape[:1], 1), np.nan)
        self.point = [np.r_[point[m], np.nan] for m in range(2)]
        self.columns = [np.concatenate([boot[:, m], pad], axis=1) for m in range(2)]
        self.ok = False
        raw = shape.build(self.layout, ctx, np.full(self.layout.size, -np.inf),
                          np.full(self.layout.size, np.inf))
        if raw is None or raw.size == 0 or raw.size > MAX_PIECES:
            return
        self.raw = raw
        self.prescreened = [np.arange(raw.size), np.arange(raw.size)]
        self.grad = [raw.gradient(self.point[m]) for m in range(2)]
        points = [raw.evaluate(self.point[m]) for m in range(2)]
        self.screened = [self._screen(m, points[m]) for m in range(2)]
        self.ok = all(len(k) for k, _ in self.screened)
        self.cols = np.arange(self.layout.size)

    def _var(self, model: np.ndarray, cols: np.ndarray, a: np.ndarray) -> np.ndarray:
        """SD over the copies of Σ_e a[k, e] · column[k, e] (of ``model[k, e]``)."""
        # each model's terms summed apart, then subtracted: identical models give a change
        # whose copies are exactly 0 (an SD of exactly 0, not of rounding)
        totals = [np.zeros((len(self.columns[0]), cols.shape[0])) for _ in range(2)]
        for e in range(cols.shape[1]):
            for m in range(2):
                take = (model[:, e] == m) & (a[:, e] != 0)
                if take.any():
                    x = self.columns[m][:, cols[:, e]]
                    totals[m] += np.where(take, a[:, e] * x, 0.0)
        total = totals[1] + totals[0]
        return np.nanstd(total, axis=0) if len(total) > 1 else np.zeros(cols.shape[0])


#: Score metrics (scores.py) that are a max or min of per-group values.
SCORE_SHAPES: dict[str, Callable[[bool], Shape]] = {
    "difference": lambda higher: pairs(("value",), "difference"),
    "worst": lambda higher: worst_group("value") if higher else highest_group("value"),
}
