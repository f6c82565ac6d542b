"""Independent reference implementations for the metric oracle tests.

Nothing here imports fairgate: predictions come from onnxruntime directly, rates are row
counts over boolean masks, disparities come from fairlearn where it has the metric and
from AIF360's published formulas (computed row-wise over individuals) otherwise. Where
fairgate differs from fairlearn by design (undefined is NaN, never 0), the oracle says so
explicitly (see :func:`fairlearn_oracle`), so the difference is visible, not hidden.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fairlearn.metrics as fm
import numpy as np
import onnxruntime as ort
import pandas as pd
import sklearn.metrics as skm
from scipy.stats import binomtest

NAN = float("nan")
RateFn = Callable[[np.ndarray, np.ndarray], float]


def onnx_decisions(model: Path, frame: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
    """Decisions P(positive) >= threshold of an sklearn-onnx model with per-column inputs."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        column = frame[inp.name]
        if inp.type == "tensor(float)":
            feeds[inp.name] = column.to_numpy(np.float32).reshape(-1, 1)
        elif inp.type == "tensor(string)":
            feeds[inp.name] = column.astype(str).to_numpy(object).reshape(-1, 1)
        else:  # pragma: no cover - the example models have only these two input types
            raise AssertionError(f"{model}: unexpected input type {inp.type}")
    (proba,) = session.run(["probabilities"], feeds)
    assert proba.shape == (len(frame), 2), proba.shape
    return np.asarray(proba[:, 1] >= threshold)


# ----------------------------------------------------------------------------- row rates


def _share(hit: np.ndarray, among: np.ndarray) -> float:
    """Share of rows in ``among`` that are ``hit``; NaN when ``among`` is empty."""
    den = int(np.count_nonzero(among))
    return NAN if den == 0 else int(np.count_nonzero(hit & among)) / den


def _everyone(y: np.ndarray) -> np.ndarray:
    return np.ones(len(y), dtype=bool)


#: Every per-group rate as a share of rows (masks over individuals, no confusion table).
ROW_RATES: dict[str, RateFn] = {
    "selection_rate": lambda y, p: _share(p, _everyone(y)),
    "tpr": lambda y, p: _share(p, y),
    "fnr": lambda y, p: _share(~p, y),
    "fpr": lambda y, p: _share(p, ~y),
    "tnr": lambda y, p: _share(~p, ~y),
    "precision": lambda y, p: _share(y, p),
    "fdr": lambda y, p: _share(~y, p),
    "npv": lambda y, p: _share(~y, ~p),
    "for": lambda y, p: _share(y, ~p),
    "accuracy": lambda y, p: _share(y == p, _everyone(y)),
    "error_rate": lambda y, p: _share(y != p, _everyone(y)),
    "prevalence": lambda y, p: _share(y, _everyone(y)),
}


def _weighted_share(hit: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    among: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., float]:
    """A row share as a metric function with fairlearn's signature (sample_weight aware)."""

    def share(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
              ) -> float:
        y, p = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        den = w[among(y, p)].sum()
        return NAN if den == 0 else float(w[hit(y, p) & among(y, p)].sum() / den)

    return share


#: fairlearn's (or sklearn's) own function for each rate it has; row shares for the rest.
FAIRLEARN_RATES: dict[str, Callable[..., float]] = {
    "selection_rate": fm.selection_rate,
    "tpr": functools.partial(fm.true_positive_rate, pos_label=1),
    "fnr": functools.partial(fm.false_negative_rate, pos_label=1),
    "fpr": functools.partial(fm.false_positive_rate, pos_label=1),
    "tnr": functools.partial(fm.true_negative_rate, pos_label=1),
    "precision": functools.partial(skm.precision_score, zero_division=np.nan),
    "fdr": _weighted_share(lambda y, p: ~y, lambda y, p: p),
    "npv": _weighted_share(lambda y, p: ~y, lambda y, p: ~p),
    "for": _weighted_share(lambda y, p: y, lambda y, p: ~p),
    "accuracy": skm.accuracy_score,
    "error_rate": skm.zero_one_loss,
}


# ----------------------------------------------------------------------------- AIF360


def ge_index(b: np.ndarray, alpha: float) -> float:
    """AIF360 ``_generalized_entropy_index`` over individual benefits ``b`` (its formula)."""
    b = np.asarray(b, dtype=np.float64)
    mu = np.mean(b)
    if not mu > 0:
        return NAN
    if alpha == 1:
        # AIF360: np.mean(np.log((b / mu) ** b) / mu); (b/mu)**b is 1 for b == 0
        return float(np.mean(np.log((b / mu) ** b) / mu))
    return float(np.mean((b / mu) ** alpha - 1) / (alpha * (alpha - 1)))


def benefit(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AIF360's benefit b = ŷ − y + 1, row by row."""
    return p.astype(np.float64) - y.astype(np.float64) + 1.0


def between_group_ge(y: np.ndarray, p: np.ndarray, labels: np.ndarray, alpha: float) -> float:
    """AIF360 between-group GE: each b_i replaced by its group's mean benefit."""
    b = benefit(y, p)
    replaced = np.empty_like(b)
    for g in np.unique(labels):
        rows = labels == g
        replaced[rows] = np.mean(b[rows])
    return ge_index(replaced, alpha)


# ----------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class Setting:
    """The audit settings a test evaluates under (mirrors policy.audit)."""

    name: str
    min_group_size: int
    reference_groups: dict[str, str] = field(default_factory=dict)


def group_labels(frame: pd.DataFrame, attributes: Sequence[str]) -> np.ndarray:
    """Group label per row, ``White`` or ``Female|White``, as fairgate labels groups."""
    out = frame[attributes[0]].astype(str)
    for a in attributes[1:]:
        out = out + "|" + frame[a].astype(str)
    return out.to_numpy()


@dataclass(frozen=True)
class View:
    """One model's decisions on one grouping under one setting, as the oracle sees them."""

    y: np.ndarray  # bool, every row
    p: np.ndarray  # bool, every row
    frame: pd.DataFrame
    attributes: tuple[str, ...]
    labels: np.ndarray  # group label of every row
    gated: tuple[str, ...]  # groups with at least min_group_size rows, sorted
    reference: str

    @property
    def keep(self) -> np.ndarray:
        return np.isin(self.labels, self.gated)

    @functools.cached_property
    def rates(self) -> dict[str, dict[str, float]]:
        """Row-share rates of every gated group."""
        out = {}
        for g in self.gated:
            rows = self.labels == g
            out[g] = {r: f(self.y[rows], self.p[rows]) for r, f in ROW_RATES.items()}
        return out


def view(y: np.ndarray, p: np.ndarray, frame: pd.DataFrame, attributes: Sequence[str],
         setting: Setting) -> View:
    labels = group_labels(frame, attributes)
    sizes = pd.Series(labels).value_counts()
    gated = tuple(sorted(sizes.index[sizes >= setting.min_group_size]))
    if all(a in setting.reference_groups for a in attributes):
        reference = "|".join(str(setting.reference_groups[a]) for a in attributes)
    else:
        reference = str(sizes.idxmax())
    return View(y, p, frame, tuple(attributes), labels, gated, reference)


def _fairlearn_rows(v: View, collapse: bool
                    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None]:
    """(y, ŷ, sensitive features, weights) of the gated groups' rows, for fairlearn.

    fairlearn slices every metric argument row by row in Python (about 30 ms a metric per
    15,000 rows), so the catalogue-wide sweep collapses identical (group, y, ŷ) rows into one
    weighted row (``collapse``); every fairlearn metric here is a weighted mean, so the values
    are the same. The headline test calls fairlearn on the raw rows.
    """
    keep = v.keep
    df = v.frame.loc[keep, list(v.attributes)].astype(str).reset_index(drop=True)
    df["y"], df["p"] = v.y[keep].astype(int), v.p[keep].astype(int)
    if not collapse:
        return df["y"].to_numpy(), df["p"].to_numpy(), df[list(v.attributes)], None
    g = df.groupby([*v.attributes, "y", "p"], observed=True).size().reset_index(name="w")
    return (g["y"].to_numpy(), g["p"].to_numpy(), g[list(v.attributes)],
            g["w"].to_numpy(np.float64))


#: catalogue name: (fairlearn function, rates it needs defined in every gated group, kwargs)
FAIRLEARN_NAMED: dict[str, tuple[Callable[..., float], tuple[str, ...], dict[str, str]]] = {
    "demographic_parity_difference": (fm.demographic_parity_difference, ("selection_rate",), {}),
    "demographic_parity_ratio": (fm.demographic_parity_ratio, ("selection_rate",), {}),
    "equalized_odds_difference": (fm.equalized_odds_difference, ("tpr", "fpr"),
                                  {"agg": "worst_case"}),
    "equalized_odds_ratio": (fm.equalized_odds_ratio, ("tpr", "fpr"), {"agg": "worst_case"}),
    "equalized_odds_difference_mean": (fm.equalized_odds_difference, ("tpr", "fpr"),
                                       {"agg": "mean"}),
    "equalized_odds_ratio_mean": (fm.equalized_odds_ratio, ("tpr", "fpr"), {"agg": "mean"}),
    "equal_opportunity_difference": (fm.equal_opportunity_difference, ("tpr",), {}),
    "equal_opportunity_ratio": (fm.equal_opportunity_ratio, ("tpr",), {}),
    "accuracy_equality": (fm.accuracy_score_difference, ("accuracy",), {}),
    "fpr_parity": (fm.false_positive_rate_difference, ("fpr",), {}),
    "fnr_parity": (fm.false_negative_rate_difference, ("fnr",), {}),
}


#: fairlearn's named metrics that fairgate offers with method="to_overall" too.
TO_OVERALL_NAMED = frozenset(f"{n}_to_overall" for n in (
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
    "equalized_odds_ratio", "equal_opportunity_difference", "equal_opportunity_ratio"))


def _overall_rate(y: np.ndarray, p: np.ndarray, w: np.ndarray | None, rate: str) -> float:
    return float(FAIRLEARN_RATES[rate](y, p, sample_weight=w))


def fairlearn_oracle(v: View, names: Sequence[str] | None = None, collapse: bool = True
                     ) -> dict[str, float]:
    """fairlearn's value of each metric it has, over the gated groups only.

    Differs by design where a rate is undefined in a gated group (no positives, no
    negatives, no positive or negative predictions): fairlearn returns 0 for such a TPR/FPR
    and its between_groups max/min skip a NaN group, either of which can let a gate pass;
    fairgate reports undefined (NaN), so the oracle's expected value there is NaN.
    """
    undefined = {r: any(math.isnan(x[r]) for x in v.rates.values()) for r in ROW_RATES}
    few = len(v.gated) < 2
    y, p, sf, w = _fairlearn_rows(v, collapse)
    out: dict[str, float] = {}
    wanted = set(names) if names is not None else None
    forms = ("difference", "ratio", "difference_to_overall", "ratio_to_overall")
    rates = [r for r in FAIRLEARN_RATES
             if wanted is None or {f"{r}_{f}" for f in forms} & wanted]
    if rates and not few:
        params = {r: {"sample_weight": w} for r in rates} if w is not None else None
        mf = fm.MetricFrame(metrics={r: FAIRLEARN_RATES[r] for r in rates}, y_true=y, y_pred=p,
                            sensitive_features=sf, sample_params=params)
        diff, ratio = mf.difference(), mf.ratio()
        diff_all, ratio_all = mf.difference(method="to_overall"), mf.ratio(method="to_overall")
    for r in rates:
        bad = few or undefined[r]
        out[f"{r}_difference"] = NAN if bad else float(diff[r])
        out[f"{r}_ratio"] = NAN if bad else float(ratio[r])
        # to_overall: a ratio with an overall rate of 0 is 0/0 for every group (undefined)
        overall_zero = not bad and float(mf.overall[r]) == 0
        out[f"{r}_difference_to_overall"] = NAN if bad else float(diff_all[r])
        out[f"{r}_ratio_to_overall"] = NAN if bad or overall_zero else float(ratio_all[r])
    # fairlearn has no precision/FDR/FOR difference function: MetricFrame's between_groups
    for name, rate in (("predictive_parity", "precision"), ("fdr_parity", "fdr"),
                       ("for_parity", "for")):
        if f"{rate}_difference" in out:
            out[name] = out[f"{rate}_difference"]
    for name, (fn, needs, kw) in FAIRLEARN_NAMED.items():
        for suffix, method in (("", "between_groups"), ("_to_overall", "to_overall")):
            if (wanted is not None and name + suffix not in wanted) or (
                    suffix and name + suffix not in TO_OVERALL_NAMED):
                continue
            bad = few or any(undefined[r] for r in needs)
            if not bad and suffix and "ratio" in name:
                bad = any(_overall_rate(y, p, w, r) == 0 for r in needs)
            out[name + suffix] = NAN if bad else float(
                fn(y, p, sensitive_features=sf, sample_weight=w, method=method, **kw))
    if wanted is None or "worst_group_accuracy" in wanted:
        out["worst_group_accuracy"] = NAN if not v.gated else float(
            fm.accuracy_score_group_min(y, p, sensitive_features=sf, sample_weight=w))
    return out


def aif360_oracle(v: View, alphas: Sequence[float]) -> dict[str, float]:
    """AIF360's reference-group and between-group metrics, computed from their formulas.

    Reference metrics (unprivileged − privileged, or their ratio) per gated non-reference
    group; with more than two groups fairgate reports the group farthest from parity
    (|value|; |log value| for disparate impact). A reference below min_group_size is not
    gated, so nothing is measured against it: undefined (fail closed).
    """
    names = ("statistical_parity_difference", "disparate_impact", "average_odds_difference",
             "average_abs_odds_difference",
             *(f"{r}_reference_{form}" for r in REFERENCE_RATES for form in ("difference", "ratio")))
    per = v.rates
    others = [g for g in v.gated if g != v.reference]
    out: dict[str, float] = {}
    if v.reference not in v.gated or not others:
        out.update(dict.fromkeys(names, NAN))
    else:
        ref = per[v.reference]
        values: dict[str, list[float]] = {n: [] for n in names}
        for g in others:
            r = per[g]
            values["statistical_parity_difference"].append(
                r["selection_rate"] - ref["selection_rate"])
            values["disparate_impact"].append(
                NAN if ref["selection_rate"] == 0 else r["selection_rate"] / ref["selection_rate"])
            d_fpr, d_tpr = r["fpr"] - ref["fpr"], r["tpr"] - ref["tpr"]
            values["average_odds_difference"].append(0.5 * (d_fpr + d_tpr))
            values["average_abs_odds_difference"].append(0.5 * (abs(d_fpr) + abs(d_tpr)))
            # AIF360 ClassificationMetric.difference(metric) and ratio(metric): unprivileged
            # minus (over) privileged, per unprivileged group
            for rate in REFERENCE_RATES:
                values[f"{rate}_reference_difference"].append(r[rate] - ref[rate])
                values[f"{rate}_reference_ratio"].append(
                    NAN if ref[rate] == 0 or math.isnan(ref[rate]) else r[rate] / ref[rate])
        for name, vals in values.items():
            if any(math.isnan(x) for x in vals):
                out[name] = NAN
            elif name == "disparate_impact" or name.endswith("_ratio"):
                out[name] = worst_ratio(vals)
            else:
                out[name] = max(vals, key=abs)
    keep = v.keep
    few = len(v.gated) < 2
    out["between_group_theil_index"] = (
        NAN if few else between_group_ge(v.y[keep], v.p[keep], v.labels[keep], 1.0))
    for a in alphas:
        out[f"between_group_generalized_entropy_index@{a:g}"] = (
            NAN if few else between_group_ge(v.y[keep], v.p[keep], v.labels[keep], a))
    return out


#: The rates with a reference difference and ratio in the catalogue (selection rate's are
#: statistical_parity_difference and disparate_impact).
REFERENCE_RATES = ("tpr", "fnr", "fpr", "tnr", "precision", "fdr", "npv", "for", "accuracy",
                   "error_rate")


def worst_ratio(vals: Sequence[float]) -> float:
    """The ratio farthest from 1 by |log| (0 is farthest of all); the first on ties."""
    return max(vals, key=lambda x: math.inf if x == 0 else abs(math.log(x)))


def aequitas_disparities(y: np.ndarray, p: np.ndarray, labels: np.ndarray, reference: str
                         ) -> pd.DataFrame:
    """Aequitas' per-group disparities (``<metric>_disparity``) and parity verdicts at its
    default tau 0.8, every group of the grouping (Aequitas' ppr counts them all)."""
    from aequitas.bias import Bias
    from aequitas.fairness import Fairness
    from aequitas.group import Group

    df = pd.DataFrame({"score": p.astype(int), "label_value": y.astype(int),
                       "attr": labels.astype(str)})
    xtab, _ = Group().get_crosstabs(df, attr_cols=["attr"])
    bdf = Bias().get_disparity_predefined_groups(xtab, original_df=df,
                                                 ref_groups_dict={"attr": reference})
    fdf = Fairness().get_group_value_fairness(bdf, tau=0.8)
    return fdf.set_index("attribute_value")


def aequitas_oracle(v: View) -> dict[str, float]:
    """ppr_reference_ratio from Aequitas' ppr_disparity, the gated group farthest from 1.

    Aequitas fills a division by zero with 10.0; there the oracle expects NaN (undefined)."""
    others = [g for g in v.gated if g != v.reference]
    if v.reference not in v.gated or not others:
        return {"ppr_reference_ratio": NAN}
    table = aequitas_disparities(v.y, v.p, v.labels, v.reference)
    pp_ref = int(np.count_nonzero(v.p & (v.labels == v.reference)))
    if pp_ref == 0:
        return {"ppr_reference_ratio": NAN}
    return {"ppr_reference_ratio": worst_ratio([float(table.loc[g, "ppr_disparity"])
                                                for g in others])}


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: max over j <= i of min(1, (m − j + 1) p_(j))."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(steps)
    return out


def paired_oracle(v: View, teacher: np.ndarray, student: np.ndarray, level: float
                  ) -> dict[str, float]:
    """Gated groups whose accuracy changed significantly between the two models.

    McNemar's exact test is the two-sided binomial test of the discordant rows (teacher
    right and student wrong against the reverse) at p = 1/2 (scipy's ``binomtest``); the
    p-values of the gated groups are Holm-adjusted; a loss is a significant group where
    the student is wrong more often than the teacher.
    """
    if not v.gated:
        return {"significant_accuracy_loss_groups": NAN,
                "significant_accuracy_change_groups": NAN}
    worse, better, p = [], [], []
    for g in v.gated:
        rows = v.labels == g
        t_right, s_right = teacher[rows] == v.y[rows], student[rows] == v.y[rows]
        w, b = int(np.sum(t_right & ~s_right)), int(np.sum(~t_right & s_right))
        worse.append(w)
        better.append(b)
        p.append(1.0 if w + b == 0 else binomtest(w, w + b, 0.5).pvalue)
    significant = holm(p) < level
    return {
        "significant_accuracy_loss_groups":
            float(np.sum(significant & (np.array(worse) > np.array(better)))),
        "significant_accuracy_change_groups": float(np.sum(significant)),
    }


def overall_oracle(y: np.ndarray, p: np.ndarray, alphas: Sequence[float]) -> dict[str, float]:
    """Overall metrics over every row: sklearn/fairlearn, and AIF360's formula for GE."""
    yi, pi = y.astype(int), p.astype(int)
    out = {}
    for name, f in FAIRLEARN_RATES.items():
        out[name] = NAN if math.isnan(ROW_RATES[name](y, p)) else float(f(yi, pi))
    out["prevalence"] = ROW_RATES["prevalence"](y, p)
    both = y.any() and (~y).any()
    out["balanced_accuracy"] = float(skm.balanced_accuracy_score(yi, pi)) if both else NAN
    out["theil_index"] = ge_index(benefit(y, p), 1.0)
    for a in alphas:
        out[f"generalized_entropy_index@{a:g}"] = ge_index(benefit(y, p), a)
    return out


def aequitas_crosstab(
    y: np.ndarray, p: np.ndarray, frame: pd.DataFrame, groupings: Sequence[Sequence[str]]
) -> pd.DataFrame:
    """Aequitas's per-group counts (tp, fp, tn, fn, group_size) for every grouping."""
    from aequitas.group import Group

    df = pd.DataFrame({"score": p.astype(int), "label_value": y.astype(int)})
    names = []
    for attrs in groupings:
        name = "*".join(attrs)
        df[name] = group_labels(frame, attrs)
        names.append(name)
    xtab, _ = Group().get_crosstabs(df, attr_cols=names)
    return xtab
