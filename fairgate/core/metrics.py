"""The metric catalogue: every metric is a function of confusion counts.

A model's confusion table for one grouping is an array ``conf[..., G, 2, 2]`` indexed
``[group, y, y_hat]``. Leading axes are free, so the same function computes the point
estimate (no leading axis) and thousands of bootstrap replicates (``[B, G, 2, 2]``) at once.

Undefined is not zero: a rate whose denominator is 0 is NaN, and NaN propagates through
every disparity built on it (``np.max`` and friends propagate NaN; we never use the
``nan*`` variants). :func:`explain_undefined` says why a point value is undefined.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

Array = np.ndarray
Scope = Literal["overall", "grouping"]


@dataclass(frozen=True)
class Rate:
    """A per-group rate num/den of confusion cells; undefined where den is 0."""

    name: str
    formula: str
    meaning: str
    num: tuple[str, ...]
    den: tuple[str, ...]
    empty: str  # what a zero denominator means, for messages


_NO_ROWS, _NO_POS, _NO_NEG = "no rows", "no positive labels", "no negative labels"
_NO_PP, _NO_PN = "no positive predictions", "no negative predictions"
RATES: dict[str, Rate] = {
    r.name: r
    for r in (
        Rate("selection_rate", "(TP+FP)/n", "share predicted positive", ("tp", "fp"), ("n",), _NO_ROWS),
        Rate("tpr", "TP/(TP+FN)", "true positive rate (recall)", ("tp",), ("tp", "fn"), _NO_POS),
        Rate("fnr", "FN/(TP+FN)", "false negative rate", ("fn",), ("tp", "fn"), _NO_POS),
        Rate("fpr", "FP/(FP+TN)", "false positive rate", ("fp",), ("fp", "tn"), _NO_NEG),
        Rate("tnr", "TN/(FP+TN)", "true negative rate (specificity)", ("tn",), ("fp", "tn"), _NO_NEG),
        Rate("precision", "TP/(TP+FP)", "positive predictive value", ("tp",), ("tp", "fp"), _NO_PP),
        Rate("fdr", "FP/(TP+FP)", "false discovery rate", ("fp",), ("tp", "fp"), _NO_PP),
        Rate("npv", "TN/(TN+FN)", "negative predictive value", ("tn",), ("tn", "fn"), _NO_PN),
        Rate("for", "FN/(TN+FN)", "false omission rate", ("fn",), ("tn", "fn"), _NO_PN),
        Rate("accuracy", "(TP+TN)/n", "share decided correctly", ("tp", "tn"), ("n",), _NO_ROWS),
        Rate("error_rate", "(FP+FN)/n", "share decided wrongly", ("fp", "fn"), ("n",), _NO_ROWS),
        Rate("prevalence", "(TP+FN)/n", "share with a positive label", ("tp", "fn"), ("n",), _NO_ROWS),
    )
}


def cells(conf: Array) -> dict[str, Array]:
    """Named confusion cells of ``conf[..., 2, 2]`` (indexed [y, y_hat]) as float64."""
    c = np.asarray(conf, dtype=np.float64)
    tn, fp, fn, tp = c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1]
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": tp + fp + tn + fn}


def _sum(named: dict[str, Array], keys: tuple[str, ...]) -> Array:
    out = named[keys[0]]
    for k in keys[1:]:
        out = out + named[k]
    return out


def divide(num: Array, den: Array) -> Array:
    """num/den with NaN (undefined) where den == 0, never a silent 0 or inf."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def rate(conf: Array, name: str) -> Array:
    """Rate ``name`` of ``conf[..., 2, 2]`` (or per group for ``conf[..., G, 2, 2]``)."""
    r = RATES[name]
    named = cells(conf)
    return divide(_sum(named, r.num), _sum(named, r.den))


# ----------------------------------------------------------------------------- score metrics
# Not functions of counts: computed on a row sample by fairgate/core/scores.py (fairlearn MetricFrame).

Family = Literal["roc_auc", "brier_score", "expected_calibration_error"]
Aggregate = Literal["overall", "difference", "worst"]

@dataclass(frozen=True)
class ScoreMetricSpec:
    """One score-based metric; ``lo``/``hi`` is its attainable range, to reject impossible bounds."""

    name: str
    description: str
    scope: Scope
    lo: float
    hi: float
    higher_is_better: bool
    family: Family
    aggregate: Aggregate


_ECE_TEXT = ("Σ_b (n_b/n)·|mean(y in b) − mean(score in b)| over `bins` equal-width score bins on "
             "[0, 1] (last bin closed at 1)")
_FAMILY_TEXT: dict[Family, tuple[str, bool]] = {
    "roc_auc": ("ROC AUC of the positive-class score (sklearn roc_auc_score)", True),
    "brier_score": ("Brier score: mean (score − y)² (sklearn brier_score_loss)", False),
    "expected_calibration_error": (f"expected calibration error {_ECE_TEXT}", False),
}


def _score_catalogue() -> dict[str, ScoreMetricSpec]:
    out = []
    for family, (text, higher) in _FAMILY_TEXT.items():
        better = "higher" if higher else "lower"
        out.append(ScoreMetricSpec(family, f"{text} over the row sample; {better} is better",
                                   "overall", 0.0, 1.0, higher, family, "overall"))
        out.append(ScoreMetricSpec(f"{family}_difference",
                                   f"max − min over gated groups of the {text.split(' (')[0]} "
                                   "(fairlearn between_groups)", "grouping", 0.0, 1.0, False,
                                   family, "difference"))
        worst = "lowest" if higher else "highest"
        out.append(ScoreMetricSpec(f"worst_group_{family}",
                                   f"{worst} {text.split(' (')[0]} of any gated group",
                                   "grouping", 0.0, 1.0, higher, family, "worst"))
    return {m.name: m for m in out}


SCORE_METRICS: dict[str, ScoreMetricSpec] = _score_catalogue()


# ----------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Context:
    """What a grouping metric needs besides counts: which groups are gated, the reference."""

    gated: Array  # bool[G]: groups with n >= min_group_size
    reference: int | None = None  # index of the reference group
    alpha: float = 2.0  # generalized entropy parameter
    level: float = 0.05  # significance level of paired tests (1 − statistics.confidence)

    @property
    def gated_index(self) -> Array:
        return np.flatnonzero(self.gated)


def _gated_rate(conf: Array, name: str, ctx: Context) -> Array:
    return rate(conf, name)[..., ctx.gated_index]


def _range_or_nan(vals: Array, op: Callable[[Array, Array], Array]) -> Array:
    """op(max, min) over the group axis; NaN when fewer than two groups or any NaN."""
    if vals.shape[-1] < 2:
        return np.full(vals.shape[:-1], np.nan)
    return op(np.max(vals, axis=-1), np.min(vals, axis=-1))


def _group_min(vals: Array) -> Array:
    """Lowest value over the group axis; NaN when there is no group or any NaN."""
    if vals.shape[-1] == 0:
        return np.full(vals.shape[:-1], np.nan)
    return np.min(vals, axis=-1)


def difference(conf: Array, name: str, ctx: Context) -> Array:
    """max − min of a rate over the gated groups (fairlearn ``between_groups``)."""
    return _range_or_nan(_gated_rate(conf, name, ctx), lambda hi, lo: hi - lo)


def ratio(conf: Array, name: str, ctx: Context) -> Array:
    """min / max of a rate over the gated groups (fairlearn ``between_groups``)."""
    return _range_or_nan(_gated_rate(conf, name, ctx), lambda hi, lo: divide(lo, hi))


def _worst_vs_reference(per_group: Array, ctx: Context, distance: Callable[[Array], Array]) -> Array:
    """Signed value of the gated non-reference group farthest from parity.

    ``per_group[..., G]`` holds each group's value against the reference. With two groups
    this is AIF360's unprivileged-vs-privileged value; with more, the worst group decides.
    """
    if ctx.reference is None or not ctx.gated[ctx.reference]:  # a tiny reference decides nothing
        return np.full(per_group.shape[:-1], np.nan)
    gated = ctx.gated_index
    others = gated[gated != ctx.reference]
    if others.size == 0:
        return np.full(per_group.shape[:-1], np.nan)
    vals = per_group[..., others]
    d = distance(vals)
    pick = np.argmax(np.where(np.isnan(d), -np.inf, d), axis=-1)
    out = np.take_along_axis(vals, pick[..., None], axis=-1)[..., 0]
    return np.where(np.isnan(vals).any(axis=-1), np.nan, out)


def reference_difference(conf: Array, name: str, ctx: Context) -> Array:
    """rate(group) − rate(reference) per group, shape [..., G] (AIF360 sign convention)."""
    r = rate(conf, name)
    if ctx.reference is None:
        return np.full(r.shape, np.nan)
    return r - r[..., ctx.reference : ctx.reference + 1]


def statistical_parity_difference(conf: Array, ctx: Context) -> Array:
    per = reference_difference(conf, "selection_rate", ctx)
    return _worst_vs_reference(per, ctx, np.abs)


def disparate_impact(conf: Array, ctx: Context) -> Array:
    sr = rate(conf, "selection_rate")
    if ctx.reference is None:
        return np.full(sr.shape[:-1], np.nan)
    per = divide(sr, sr[..., ctx.reference : ctx.reference + 1])
    with np.errstate(divide="ignore"):
        return _worst_vs_reference(per, ctx, lambda v: np.abs(np.log(v)))


def reference_ratio(conf: Array, name: str, ctx: Context) -> Array:
    """rate(group) / rate(reference) per group (Aequitas' disparity), NaN where the
    reference's rate is 0 (Aequitas fills 10.0 there)."""
    r = ppr(conf) if name == "ppr" else rate(conf, name)
    if ctx.reference is None:
        return np.full(r.shape, np.nan)
    return divide(r, r[..., ctx.reference : ctx.reference + 1])


def worst_reference_difference(conf: Array, ctx: Context, name: str) -> Array:
    """The signed difference to the reference of the gated group farthest from it."""
    return _worst_vs_reference(reference_difference(conf, name, ctx), ctx, np.abs)


def worst_reference_ratio(conf: Array, ctx: Context, name: str) -> Array:
    """The ratio to the reference of the gated group farthest from 1 (by |log|)."""
    with np.errstate(divide="ignore"):
        return _worst_vs_reference(reference_ratio(conf, name, ctx), ctx,
                                   lambda v: np.abs(np.log(v)))


def ppr(conf: Array) -> Array:
    """Aequitas' predicted positive rate: each group's share of all positive predictions
    (every group of the table); NaN when the model predicts no positive at all."""
    c = cells(conf)
    pp = c["tp"] + c["fp"]
    return divide(pp, np.sum(pp, axis=-1, keepdims=True))


def _to_overall(conf: Array, name: str, ctx: Context) -> tuple[Array, Array]:
    """(rate of each gated group, rate over all gated rows together) (fairlearn's overall,
    over the rows it is given: the gated groups')."""
    gated = ctx.gated_index
    per = rate(conf[..., gated, :, :], name)
    whole = rate(np.sum(conf[..., gated, :, :], axis=-3), name)
    return per, whole


def difference_to_overall(conf: Array, name: str, ctx: Context) -> Array:
    """max over gated groups of |rate − rate over all gated rows| (fairlearn to_overall)."""
    per, whole = _to_overall(conf, name, ctx)
    if per.shape[-1] < 2:
        return np.full(per.shape[:-1], np.nan)
    return np.max(np.abs(per - whole[..., None]), axis=-1)


def ratio_to_overall(conf: Array, name: str, ctx: Context) -> Array:
    """min over gated groups of min(rate / overall, overall / rate) (fairlearn to_overall);
    undefined when the overall rate is 0 (every ratio 0/0)."""
    per, whole = _to_overall(conf, name, ctx)
    if per.shape[-1] < 2:
        return np.full(per.shape[:-1], np.nan)
    w = whole[..., None]
    up, down = divide(per, w), divide(w, per)
    with np.errstate(invalid="ignore"):
        lowest = np.where(np.isnan(up) | np.isnan(down) & (per != 0), np.nan,
                          np.where(per == 0, 0.0, np.minimum(up, down)))
    return np.where(np.isnan(lowest).any(axis=-1), np.nan, np.min(lowest, axis=-1))


def _average_odds(conf: Array, ctx: Context, absolute: bool) -> Array:
    dfpr = reference_difference(conf, "fpr", ctx)
    dtpr = reference_difference(conf, "tpr", ctx)
    per = 0.5 * (np.abs(dfpr) + np.abs(dtpr)) if absolute else 0.5 * (dfpr + dtpr)
    return _worst_vs_reference(per, ctx, np.abs)


def _ge_terms(benefit: Array, weight: Array, mean: Array, alpha: float) -> Array:
    """Σ w·f(b/μ) for the generalized entropy index; weights are shares summing to 1."""
    x = divide(benefit, mean[..., None])
    if alpha == 1.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)
        t = np.where(np.isnan(x), np.nan, t)
        return np.sum(weight * t, axis=-1)
    return (np.sum(weight * np.power(x, alpha), axis=-1) - 1.0) / (alpha * (alpha - 1.0))


def generalized_entropy_index(conf: Array, alpha: float) -> Array:
    """AIF360's GE(α) over individuals with benefit b = ŷ − y + 1 (b ∈ {0, 1, 2}).

    b is 0 for FN, 1 for TP and TN, 2 for FP, so the index is a function of the counts.
    """
    c = cells(conf)
    n = c["n"]
    benefit = np.broadcast_to(np.array([0.0, 1.0, 2.0]), (*n.shape, 3))
    weight = np.stack([divide(c["fn"], n), divide(c["tp"] + c["tn"], n), divide(c["fp"], n)], -1)
    mean = divide(c["tp"] + c["tn"] + 2.0 * c["fp"], n)
    out = _ge_terms(benefit, weight, mean, alpha)
    return np.where(mean > 0, out, np.nan)


def between_group_generalized_entropy_index(conf: Array, ctx: Context) -> Array:
    """GE(α) after replacing each benefit by its group's mean (AIF360 between-group form)."""
    c = cells(conf[..., ctx.gated_index, :, :])
    n_g = c["n"]
    mean_g = divide(c["tp"] + c["tn"] + 2.0 * c["fp"], n_g)
    n = np.sum(n_g, axis=-1)
    weight = divide(n_g, n[..., None])
    mean = divide(np.sum(c["tp"] + c["tn"] + 2.0 * c["fp"], axis=-1), n)
    out = _ge_terms(mean_g, weight, mean, ctx.alpha)
    bad = np.isnan(mean_g).any(axis=-1) | ~(mean > 0)
    if n_g.shape[-1] < 2:
        bad = np.ones_like(bad, dtype=bool)
    return np.where(bad, np.nan, out)


def significant_accuracy_changes(cells: Array, ctx: Context, direction: int) -> Array:
    """Gated groups whose accuracy changed significantly (McNemar exact, Holm across groups).

    ``direction`` -1 counts losses (student worse), +1 gains, 0 either. A paired test
    on the discordant rows, so it is a property of the teacher–student pair. Point counts
    ``cells[G, 2, 2, 2]`` only: a count of significant tests has no bootstrap interval.
    """
    from fairgate.core.stats import holm, mcnemar_exact_many

    idx = ctx.gated_index
    if idx.size == 0:
        return np.array(np.nan)
    c = np.asarray(cells)[..., idx, :, :, :]
    if c.ndim != 4:
        raise ValueError("significant_accuracy_changes takes point counts [G, 2, 2, 2]")
    worse = c[:, 0, 0, 1] + c[:, 1, 1, 0]  # teacher right, student wrong
    better = c[:, 0, 1, 0] + c[:, 1, 0, 1]
    p = holm(mcnemar_exact_many(worse, better).tolist())
    hits = [
        pv < ctx.level and (direction == 0 or np.sign(b - w) == direction)
        for pv, w, b in zip(p, worse, better, strict=True)
    ]
    return np.array(float(sum(hits)))


def _overall(conf: Array) -> Array:
    """The whole audit set's confusion table: every group, gated or not."""
    return np.sum(conf, axis=-3)


# ----------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Metric:
    """One catalogue entry. ``compute(conf[..., G, 2, 2], ctx) -> value[...]``."""

    name: str
    scope: Scope
    definition: str
    compute: Callable[[Array, Context], Array]
    rates: tuple[str, ...]  # rates it is built on, to explain undefined values
    lo: float  # attainable range, to reject impossible bounds
    hi: float
    uses_reference: bool = False
    uses_alpha: bool = False
    paired: bool = False  # computed from the joint table cells[G, y, ŷt, ŷs], not per model
    sampled: bool = False  # individual fairness: from the row sample, not from counts
    # computed on a table fairgate derives rather than on the policy's groupings: "classes"
    # (top-1 correctness per true class), "reference" (the same, reference student as the
    # teacher) or "alignment" (bias-aligned vs bias-conflicting rows)
    derived: Literal["classes", "reference", "alignment"] | None = None
    scored: bool = False  # from per-row scores on a row sample: fairgate/core/scores.py
    note: str = ""  # where the definition differs on purpose from a peer library's


def _bind(fn: Callable[[Array, Context, Any], Array], arg: Any) -> Callable[[Array, Context], Array]:
    """fn with its third argument fixed (a loop variable, bound now rather than late)."""
    return lambda conf, ctx: fn(conf, ctx, arg)


def difference_of(conf: Array, ctx: Context, name: str) -> Array:
    return difference(conf, name, ctx)


def ratio_of(conf: Array, ctx: Context, name: str) -> Array:
    return ratio(conf, name, ctx)


def _catalogue() -> dict[str, Metric]:
    out: list[Metric] = []
    inf = float("inf")
    for spec in RATES.values():
        out.append(
            Metric(spec.name, "overall", f"{spec.meaning} over the whole audit set: {spec.formula}",
                   _bind(lambda conf, ctx, n: rate(_overall(conf), n), spec.name), (spec.name,),
                   0.0, 1.0)
        )
    out.append(Metric("balanced_accuracy", "overall", "(TPR + TNR) / 2 over the whole audit set",
                      lambda conf, ctx: 0.5 * (rate(_overall(conf), "tpr") + rate(_overall(conf), "tnr")),
                      ("tpr", "tnr"), 0.0, 1.0))
    out.append(Metric("theil_index", "overall",
                      "AIF360 Theil index (GE α=1) of benefits b = ŷ − y + 1 over all individuals",
                      lambda conf, ctx: generalized_entropy_index(_overall(conf), 1.0), (), 0.0, inf))
    out.append(Metric("generalized_entropy_index", "overall",
                      "AIF360 generalized entropy index GE(α) of b = ŷ − y + 1 (alpha, default 2)",
                      lambda conf, ctx: generalized_entropy_index(_overall(conf), ctx.alpha), (),
                      0.0, inf, uses_alpha=True))
    for r in RATES:
        if r == "prevalence":  # a property of the labels, not of the model
            continue
        out.append(Metric(f"{r}_difference", "grouping",
                          f"max − min over gated groups of {RATES[r].formula} ({RATES[r].meaning})",
                          _bind(difference_of, r), (r,), 0.0, 1.0))
        out.append(Metric(f"{r}_ratio", "grouping",
                          f"min / max over gated groups of {RATES[r].formula} ({RATES[r].meaning})",
                          _bind(ratio_of, r), (r,), 0.0, 1.0))
    named = [
        ("demographic_parity_difference", "selection rate max − min (fairlearn)",
         lambda conf, ctx: difference(conf, "selection_rate", ctx), ("selection_rate",), 0.0, 1.0),
        ("demographic_parity_ratio", "selection rate min / max (fairlearn; between-groups disparate impact)",
         lambda conf, ctx: ratio(conf, "selection_rate", ctx), ("selection_rate",), 0.0, 1.0),
        ("equalized_odds_difference", "worst of TPR and FPR max − min (fairlearn, agg=worst_case)",
         lambda conf, ctx: np.maximum(difference(conf, "tpr", ctx), difference(conf, "fpr", ctx)),
         ("tpr", "fpr"), 0.0, 1.0),
        ("equalized_odds_ratio", "worst of TPR and FPR min / max (fairlearn, agg=worst_case)",
         lambda conf, ctx: np.minimum(ratio(conf, "tpr", ctx), ratio(conf, "fpr", ctx)),
         ("tpr", "fpr"), 0.0, 1.0),
        ("equalized_odds_difference_mean", "mean of TPR and FPR max − min (fairlearn, agg=mean)",
         lambda conf, ctx: 0.5 * (difference(conf, "tpr", ctx) + difference(conf, "fpr", ctx)),
         ("tpr", "fpr"), 0.0, 1.0),
        ("equalized_odds_ratio_mean", "mean of TPR and FPR min / max (fairlearn, agg=mean)",
         lambda conf, ctx: 0.5 * (ratio(conf, "tpr", ctx) + ratio(conf, "fpr", ctx)),
         ("tpr", "fpr"), 0.0, 1.0),
        ("equal_opportunity_difference", "TPR max − min (fairlearn)",
         lambda conf, ctx: difference(conf, "tpr", ctx), ("tpr",), 0.0, 1.0),
        ("equal_opportunity_ratio", "TPR min / max (fairlearn)",
         lambda conf, ctx: ratio(conf, "tpr", ctx), ("tpr",), 0.0, 1.0),
        ("accuracy_equality", "accuracy max − min (accuracy equality)",
         lambda conf, ctx: difference(conf, "accuracy", ctx), ("accuracy",), 0.0, 1.0),
        ("predictive_parity", "precision max − min (predictive parity)",
         lambda conf, ctx: difference(conf, "precision", ctx), ("precision",), 0.0, 1.0),
        ("fpr_parity", "FPR max − min (predictive equality)",
         lambda conf, ctx: difference(conf, "fpr", ctx), ("fpr",), 0.0, 1.0),
        ("fnr_parity", "FNR max − min", lambda conf, ctx: difference(conf, "fnr", ctx), ("fnr",), 0.0, 1.0),
        ("fdr_parity", "FDR max − min", lambda conf, ctx: difference(conf, "fdr", ctx), ("fdr",), 0.0, 1.0),
        ("for_parity", "FOR max − min", lambda conf, ctx: difference(conf, "for", ctx), ("for",), 0.0, 1.0),
        ("worst_group_accuracy", "lowest accuracy of any gated group",
         lambda conf, ctx: _group_min(_gated_rate(conf, "accuracy", ctx)),
         ("accuracy",), 0.0, 1.0),
    ]
    for name, text, fn, rates_, lo, hi in named:
        out.append(Metric(name, "grouping", text, fn, rates_, lo, hi))
    reference = [
        ("statistical_parity_difference", "SR(group) − SR(reference) (AIF360), worst group by |value|",
         statistical_parity_difference, ("selection_rate",), -1.0, 1.0),
        ("disparate_impact", "SR(group) / SR(reference) (AIF360), worst group by |log value|",
         disparate_impact, ("selection_rate",), 0.0, inf),
        ("average_odds_difference", "½[ΔFPR + ΔTPR] against the reference (AIF360), worst group",
         lambda conf, ctx: _average_odds(conf, ctx, absolute=False), ("fpr", "tpr"), -1.0, 1.0),
        ("average_abs_odds_difference", "½[|ΔFPR| + |ΔTPR|] against the reference (AIF360), worst group",
         lambda conf, ctx: _average_odds(conf, ctx, absolute=True), ("fpr", "tpr"), 0.0, 1.0),
    ]
    for name, text, fn, rates_, lo, hi in reference:
        out.append(Metric(name, "grouping", text, fn, rates_, lo, hi, uses_reference=True))
    # every rate against the reference (AIF360's difference()/ratio(), Aequitas' disparities)
    aliases = {"tpr": "true_positive_rate", "fpr": "false_positive_rate",
               "fnr": "false_negative_rate", "tnr": "true_negative_rate",
               "precision": "positive_predictive_value", "fdr": "false_discovery_rate",
               "for": "false_omission_rate", "npv": "negative_predictive_value",
               "accuracy": "accuracy", "error_rate": "error_rate"}
    for r, long in aliases.items():
        text = f"{RATES[r].formula} ({RATES[r].meaning})"
        out.append(Metric(f"{r}_reference_difference", "grouping",
                          f"{text} of a group − of the reference (AIF360 {long}_difference), "
                          "the gated group farthest from it, signed",
                          _bind(worst_reference_difference, r), (r,), -1.0, 1.0,
                          uses_reference=True))
        out.append(Metric(f"{r}_reference_ratio", "grouping",
                          f"{text} of a group / of the reference (AIF360 {long}_ratio, Aequitas "
                          f"{r}_disparity), the gated group farthest from 1 (|log|)",
                          _bind(worst_reference_ratio, r), (r,), 0.0, inf, uses_reference=True,
                          note="undefined where the reference's rate is 0 (Aequitas fills 10)"))
    out.append(Metric("ppr_reference_ratio", "grouping",
                      "Aequitas ppr_disparity: a group's share of all positive predictions / the "
                      "reference's, the gated group farthest from 1 (|log|); Aequitas' tau "
                      "band is min: tau, max: 1/tau on it",
                      _bind(worst_reference_ratio, "ppr"), ("selection_rate",), 0.0, inf,
                      uses_reference=True))
    # fairlearn's method="to_overall": each gated group against all gated rows together
    overall_note = "overall = the gated groups' rows together (fairlearn: the rows it is given)"
    for r in RATES:
        if r == "prevalence":
            continue
        text = f"{RATES[r].formula} ({RATES[r].meaning})"
        out.append(Metric(f"{r}_difference_to_overall", "grouping",
                          f"max over gated groups of |{r} − {r} overall| (fairlearn "
                          f"to_overall): {text}", _bind(lambda c, x, n: difference_to_overall(
                              c, n, x), r), (r,), 0.0, 1.0, note=overall_note))
        out.append(Metric(f"{r}_ratio_to_overall", "grouping",
                          f"min over gated groups of min({r} / overall, overall / {r}) "
                          f"(fairlearn to_overall): {text}", _bind(lambda c, x, n: ratio_to_overall(
                              c, n, x), r), (r,), 0.0, 1.0, note=overall_note))
    for name, rates_, fairlearn in (
        ("demographic_parity", ("selection_rate",), "demographic_parity"),
        ("equal_opportunity", ("tpr",), "equal_opportunity"),
        ("equalized_odds", ("tpr", "fpr"), "equalized_odds (agg=worst_case)"),
    ):
        out.append(Metric(f"{name}_difference_to_overall", "grouping",
                          f"fairlearn {fairlearn}_difference(method='to_overall'): the worst of "
                          f"{', '.join(rates_)} max |group − overall|",
                          _bind(lambda c, x, rs: np.max(np.stack(
                              [difference_to_overall(c, q, x) for q in rs]), axis=0), rates_),
                          rates_, 0.0, 1.0, note=overall_note))
        out.append(Metric(f"{name}_ratio_to_overall", "grouping",
                          f"fairlearn {fairlearn}_ratio(method='to_overall'): the worst of "
                          f"{', '.join(rates_)} min ratio to overall",
                          _bind(lambda c, x, rs: np.min(np.stack(
                              [ratio_to_overall(c, q, x) for q in rs]), axis=0), rates_),
                          rates_, 0.0, 1.0, note=overall_note))
    for name, direction, what in (("significant_accuracy_loss_groups", -1, "lost"),
                                  ("significant_accuracy_change_groups", 0, "changed")):
        out.append(Metric(name, "grouping",
                          f"gated groups whose accuracy {what} significantly (McNemar exact on "
                          "discordant rows, Holm across groups, level 1 − confidence)",
                          _bind(lambda cells, ctx, d: significant_accuracy_changes(cells, ctx, d),
                                direction),
                          (), 0.0, inf, paired=True))
    def from_sample(conf: Array, ctx: Context) -> Array:
        raise TypeError("individual-fairness metrics are computed from the row sample")

    for name, text, hi in (
        ("individual_lipschitz", "I(f) = mean over sampled pairs of |f(x) − f(x')| / d(x, x') on "
         "P(positive), standardized distance (Mohammadshahi & Ioannou 2025); lower is fairer", inf),
        ("knn_consistency", "1 − mean |ŷ_i − mean ŷ of its k nearest neighbours| on a row sample "
         "(Zemel et al. 2013); higher is fairer", 1.0),
        ("counterfactual_flip_rate", "share of sampled rows whose decision changes when only the "
         "sensitive input is set to another value; lower is fairer", 1.0),
    ):
        out.append(Metric(name, "overall", text, from_sample, (), 0.0, hi, sampled=True))
    out.append(Metric("between_group_theil_index", "grouping",
                      "Theil index of group-mean benefits over the gated groups (AIF360 between-group)",
                      lambda conf, ctx: between_group_generalized_entropy_index(
                          conf, Context(ctx.gated, ctx.reference, 1.0)), (), 0.0, inf))
    out.append(Metric("between_group_generalized_entropy_index", "grouping",
                      "GE(α) of group-mean benefits over the gated groups (AIF360; alpha, default 2)",
                      between_group_generalized_entropy_index, (), 0.0, inf, uses_alpha=True))
    by_name = {m.name: m for m in out}
    for name, base, table, text in (
        ("classes_changed", "significant_accuracy_change_groups", "classes",
         "#TC: classes whose top-1 accuracy (recall) changed significantly, teacher vs student "
         "(McNemar exact, Holm across classes with n >= min_group_size; multi-class)"),
        ("classes_lost", "significant_accuracy_loss_groups", "classes",
         "classes whose top-1 accuracy (recall) dropped significantly from teacher to student "
         "(McNemar exact, Holm across classes; multi-class)"),
        ("classes_changed_vs_reference", "significant_accuracy_change_groups", "reference",
         "#SC: classes whose accuracy differs significantly between the student and the "
         "--reference-student, e.g. a non-distilled student (McNemar, Holm; multi-class)"),
        ("worst_class_accuracy", "worst_group_accuracy", "classes",
         "lowest per-class top-1 accuracy (recall) over classes with n >= min_group_size "
         "(multi-class)"),
        ("class_accuracy_difference", "accuracy_difference", "classes",
         "max − min per-class top-1 accuracy (recall) over classes with n >= min_group_size "
         "(multi-class)"),
    ):
        b = by_name[base]
        by_name[name] = Metric(name, "overall", text, b.compute, b.rates, b.lo, b.hi,
                               paired=b.paired, derived=table)  # type: ignore[arg-type]
    notes = {
        "knn_consistency": "a row is not its own neighbour (AIF360's consistency() counts it)",
        "between_group_theil_index": "over the gated groups' rows (AIF360: every group's)",
        "between_group_generalized_entropy_index": "over the gated groups' rows (AIF360: every "
                                                   "group's)",
    }
    for name, text in notes.items():
        by_name[name] = replace(by_name[name], note=text)

    def from_scores(conf: Array, ctx: Context) -> Array:
        raise TypeError("score metrics are computed from the row sample (fairgate/core/scores.py)")

    for score in SCORE_METRICS.values():
        by_name[score.name] = Metric(score.name, score.scope, score.description, from_scores, (),
                                     score.lo, score.hi, scored=True)
    by_name["spurious_gap"] = Metric(
        "spurious_gap", "overall",
        "accuracy of bias-aligned rows − accuracy of bias-conflicting rows (audit.spurious); "
        "a model that leans on the spurious attribute has a large gap",
        lambda conf, ctx: _aligned_minus_conflicting(conf, ctx), ("accuracy",), -1.0, 1.0,
        derived="alignment")
    by_name["bias_conflicting_accuracy"] = Metric(
        "bias_conflicting_accuracy", "overall",
        "accuracy on bias-conflicting rows (audit.spurious: the attribute without the label "
        "it goes with, or the label without it)",
        lambda conf, ctx: _conflicting(conf, ctx), ("accuracy",), 0.0, 1.0, derived="alignment")
    return by_name


def _aligned_minus_conflicting(conf: Array, ctx: Context) -> Array:
    """``ctx.reference`` is the aligned group; NaN unless both sides are gated."""
    acc = rate(conf, "accuracy")
    if ctx.reference is None or acc.shape[-1] != 2 or not ctx.gated.all():
        return np.full(acc.shape[:-1], np.nan)
    return acc[..., ctx.reference] - acc[..., 1 - ctx.reference]


def _conflicting(conf: Array, ctx: Context) -> Array:
    acc = rate(conf, "accuracy")
    if ctx.reference is None or acc.shape[-1] != 2 or not ctx.gated[1 - ctx.reference]:
        return np.full(acc.shape[:-1], np.nan)
    return acc[..., 1 - ctx.reference]


CATALOGUE: dict[str, Metric] = _catalogue()

#: Metrics of top-1 correctness: for multi-class models these are gated on top-1 tables,
#: every other grouping metric on the one-vs-rest tables of the positive classes.
TOP1_METRICS: frozenset[str] = frozenset({
    "accuracy", "error_rate", "accuracy_difference", "accuracy_ratio", "error_rate_difference",
    "error_rate_ratio", "accuracy_equality", "worst_group_accuracy",
    "significant_accuracy_loss_groups", "significant_accuracy_change_groups",
})

#: The KPI table of multi-class gates (one-vs-rest metrics join it for positive classes).
MULTICLASS_KPI_METRICS: tuple[str, ...] = (
    "accuracy", "worst_group_accuracy", "accuracy_equality", "worst_class_accuracy",
    "classes_changed", "classes_lost",
)

#: The KPI table every report shows, whatever the checks are.
KPI_METRICS: tuple[str, ...] = (
    "accuracy",
    "selection_rate",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "statistical_parity_difference",
    "disparate_impact",
    "average_odds_difference",
    "accuracy_equality",
    "predictive_parity",
    "theil_index",
)

#: Per-group rates in the groups section of reports.
GROUP_RATES: tuple[str, ...] = tuple(RATES)


def lookup(name: str) -> Metric:
    """The catalogue entry for ``name``; KeyError with the closest names otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(suggest(name)) from None


def suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(CATALOGUE), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown metric {name!r}{hint} (`fairgate metrics` lists them all)"


# ----------------------------------------------------------------------------- explanations


def explain_undefined(
    metric: Metric, conf: Array, ctx: Context, labels: list[str]
) -> str | None:
    """Why ``metric`` is undefined on the point counts ``conf[G, 2, 2]``; None if defined."""
    value = metric.compute(conf, ctx)
    if not np.isnan(value):
        return None
    if metric.paired:
        return "no gated group (see min_group_size)"
    if metric.derived == "alignment":
        kept = [labels[i] for i in ctx.gated_index]
        short = [g for g in labels if g not in kept] + [
            s for s in ("aligned", "conflicting") if s not in labels]
        if short:
            return (f"no or too few bias-{' and bias-'.join(short)} rows (need min_group_size "
                    "on each side)")
    if metric.scope == "overall" and metric.derived is None:
        total = _overall(conf)
        for r in metric.rates:
            if np.isnan(rate(total, r)):
                return f"{r} is undefined over the audit set: {RATES[r].empty}"
        return "undefined over the audit set: every benefit is 0 (all rows are false negatives)"
    gated = ctx.gated_index
    if len(gated) < 2:
        return f"needs at least two gated groups, found {len(gated)} (see min_group_size)"
    if metric.uses_reference:
        if ctx.reference is None:
            return "no reference group"
        if not ctx.gated[ctx.reference]:
            return f"reference group {labels[ctx.reference]} is below min_group_size"
    for r in metric.rates:
        per = rate(conf, r)
        empty = [labels[i] for i in gated if np.isnan(per[i])]
        if empty:
            return f"{r} is undefined for {', '.join(empty)}: {RATES[r].empty}"
    for r in metric.rates:
        per = rate(conf, r)
        if "ratio" in metric.name and np.max(per[gated]) == 0:
            return f"{r} is 0 for every gated group, so the ratio is 0/0"
        ref = ctx.reference
        if metric.name == "disparate_impact" and ref is not None and per[ref] == 0:
            return f"{r} of reference group {labels[ref]} is 0"
    return "undefined: a denominator is 0"
