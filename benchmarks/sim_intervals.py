"""Simulation study of fairgate's intervals and gate: coverage, widths, false fails, detection.

Not a test (the suite runs a seeded subset of it: tests/test_coverage.py). Populations are
joint distributions p[group, y, ŷ_teacher, ŷ_student] whose metric values are computed
exactly by hand below (not by fairgate); audits are drawn by multinomial row sampling
(``rows`` rows each) and go through fairgate's own path from counts to values
(``compute_values``) and to decisions (``evaluate_check``, the pure gate).

    python benchmarks/sim_intervals.py                        # every regime, ~25 min on 2 busy cores
    python benchmarks/sim_intervals.py --audits 200 --regimes tie-teacher0 small-group
    python benchmarks/sim_intervals.py --method percentile    # the intervals before issue 11
    python benchmarks/sim_intervals.py --gate                 # false fails and detection

Coverage is printed with a 95% Clopper-Pearson interval for the share of audits covered
(with 1,000 audits a true coverage of 0.95 shows as about [0.935, 0.963]).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import beta

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import MetricKey, MetricValue, Settings, compute_values

GROUPING = Grouping(("g",))
QUANTITIES = ("delta", "teacher", "student")


# ----------------------------------------------------------------------------- populations


@dataclass(frozen=True)
class GroupSpec:
    """One group: its share of rows, P(y = 1), each model's (TPR, FPR), and how often the
    student flips a positive decision of the teacher (the rest of the coupling follows)."""

    share: float
    p_y: float
    teacher: tuple[float, float]
    student: tuple[float, float] | None = None  # None: the teacher's rates (unchanged)
    flip: float = 0.05


def _coupling(r_t: float, r_s: float, flip: float) -> np.ndarray:
    """P(ŷt, ŷs) given y, with P(ŷt=1) = r_t, P(ŷs=1) = r_s and at least ``flip`` of the
    teacher's positives turned negative (a student that disagrees on some rows)."""
    a = max(flip, 1.0 - r_s / r_t) if r_t > 0 else 0.0
    q = np.zeros((2, 2))
    q[1, 0] = r_t * a
    q[1, 1] = r_t - q[1, 0]
    q[0, 1] = r_s - q[1, 1]
    q[0, 0] = 1.0 - r_t - q[0, 1]
    if (q < -1e-12).any():
        raise ValueError(f"no coupling with r_t={r_t}, r_s={r_s}, flip={flip}")
    return np.clip(q, 0.0, None)


def population(groups: Sequence[GroupSpec]) -> np.ndarray:
    """Cell probabilities p[g, y, ŷt, ŷs] (they sum to 1)."""
    total = sum(gs.share for gs in groups)
    p = np.zeros((len(groups), 2, 2, 2))
    for i, gs in enumerate(groups):
        student = gs.student or gs.teacher
        for y in (0, 1):
            py = gs.p_y if y else 1.0 - gs.p_y
            r_t = gs.teacher[0] if y else gs.teacher[1]
            r_s = student[0] if y else student[1]
            p[i, y] = gs.share / total * py * _coupling(r_t, r_s, gs.flip)
    return p


# ----------------------------------------------------------------------------- truth, by hand


def _model_rates(p: np.ndarray, model: str) -> dict[str, np.ndarray]:
    """Per-group rates of one model from the population: conditional probabilities."""
    q = p.sum(axis=3) if model == "teacher" else p.sum(axis=2)  # [g, y, ŷ]
    size = q.sum(axis=(1, 2))
    return {
        "selection_rate": (q[:, 0, 1] + q[:, 1, 1]) / size,
        "tpr": q[:, 1, 1] / q[:, 1].sum(axis=1),
        "fpr": q[:, 0, 1] / q[:, 0].sum(axis=1),
        "accuracy": (q[:, 0, 0] + q[:, 1, 1]) / size,
        "precision": q[:, 1, 1] / (q[:, 0, 1] + q[:, 1, 1]),
        "overall_accuracy": np.array([q[:, 0, 0].sum() + q[:, 1, 1].sum()]),
    }


def _worst(values: np.ndarray, distance: Callable[[np.ndarray], np.ndarray]) -> float:
    return float(values[int(np.argmax(distance(values)))])


def truth(p: np.ndarray, metric: str, model: str, reference: int = 0) -> float:
    """The population value of ``metric`` for ``model``, computed by hand from ``p``."""
    r = _model_rates(p, model)
    others = [g for g in range(p.shape[0]) if g != reference]
    sel, tpr, fpr = r["selection_rate"], r["tpr"], r["fpr"]
    if metric == "accuracy":
        return float(r["overall_accuracy"][0])
    if metric == "demographic_parity_difference":
        return float(sel.max() - sel.min())
    if metric == "demographic_parity_ratio":
        return float(sel.min() / sel.max())
    if metric == "equalized_odds_difference":
        return float(max(tpr.max() - tpr.min(), fpr.max() - fpr.min()))
    if metric == "equalized_odds_ratio":
        return float(min(tpr.min() / tpr.max(), fpr.min() / fpr.max()))
    if metric == "equal_opportunity_difference":
        return float(tpr.max() - tpr.min())
    if metric == "predictive_parity":
        return float(r["precision"].max() - r["precision"].min())
    if metric == "worst_group_accuracy":
        return float(r["accuracy"].min())
    if metric == "statistical_parity_difference":
        return _worst(sel[others] - sel[reference], np.abs)
    if metric == "disparate_impact":
        return _worst(sel[others] / sel[reference], lambda v: np.abs(np.log(v)))
    if metric == "average_odds_difference":
        d = 0.5 * (fpr[others] - fpr[reference] + tpr[others] - tpr[reference])
        return _worst(d, np.abs)
    raise KeyError(metric)


METRICS = ("demographic_parity_difference", "demographic_parity_ratio",
           "equalized_odds_difference", "equalized_odds_ratio", "worst_group_accuracy",
           "statistical_parity_difference", "disparate_impact", "average_odds_difference",
           "accuracy")


@dataclass(frozen=True)
class Regime:
    name: str
    text: str
    groups: tuple[GroupSpec, ...]
    rows: int = 4000
    min_group_size: int = 30
    metrics: tuple[str, ...] = METRICS

    @property
    def p(self) -> np.ndarray:
        return population(self.groups)


def _tied(share: Sequence[float], student: Sequence[tuple[float, float] | None],
          flip: float = 0.05) -> tuple[GroupSpec, ...]:
    """Groups whose teacher rates are all equal (P(y) 0.4, TPR 0.7, FPR 0.1)."""
    return tuple(GroupSpec(w, 0.4, (0.7, 0.1), s, flip) for w, s in zip(share, student, strict=True))


def near_tie(k: float, rows: int = 4000) -> Regime:
    """Teacher: groups A and B tie for the highest rates up to ``k`` standard errors of
    their difference at ``rows`` rows; the student raises B's rates by 0.03 (its max group
    switches to B when k < about 3) and C is clearly lowest."""
    share = (0.4, 0.4, 0.2)
    n = rows * np.array(share)
    p_y = 0.4
    # SE of a difference of two TPRs (FPRs) of groups A and B at these sizes
    se_tpr = math.sqrt(2 * 0.7 * 0.3 / (n[0] * p_y))
    se_fpr = math.sqrt(2 * 0.15 * 0.85 / (n[0] * (1 - p_y)))
    a = GroupSpec(share[0], p_y, (0.7, 0.15))
    b_t = (0.7 - k * se_tpr, 0.15 - k * se_fpr)
    b = GroupSpec(share[1], p_y, b_t, (b_t[0] + 0.03, b_t[1] + 0.03))
    c = GroupSpec(share[2], p_y, (0.5, 0.05))
    return Regime(f"near-tie-{k:g}se", f"teacher max groups {k:g} SE apart, student raises the "
                  "second", (a, b, c), rows)


def regimes() -> dict[str, Regime]:
    share3 = (0.45, 0.35, 0.2)
    out = [
        Regime("separated", "three groups clearly apart (tests/test_stats.py's population)", (
            GroupSpec(0.45, 0.5, (0.8, 0.08), (0.8 * 0.9 + 0.2 * 0.05, 0.08 * 0.95 + 0.92 * 0.1), 0.1),
            GroupSpec(0.35, 0.35, (0.65, 0.12), (0.65 * 0.95 + 0.35 * 0.1, 0.12 * 0.9 + 0.88 * 0.05),
                      0.05),
            GroupSpec(0.2, 0.25, (0.55, 0.03), (0.55 * 0.97 + 0.45 * 0.15, 0.03 * 0.85 + 0.97 * 0.03),
                      0.03))),
        Regime("smooth", "three groups far apart in every metric, for both models (the "
               "width reference: every metric is smooth here)", (
                   GroupSpec(0.45, 0.5, (0.85, 0.100), (0.84, 0.11)),
                   GroupSpec(0.35, 0.4, (0.75, 0.105), (0.74, 0.11)),
                   GroupSpec(0.2, 0.25, (0.25, 0.110), (0.24, 0.12))), rows=8000),
        Regime("tie-both", "every gap 0 for both models (student flips rows, keeps its rates)",
               _tied(share3, [None, None, None])),
        Regime("tie-teacher0", "teacher gaps 0, the student opens clear gaps",
               _tied(share3, [None, (0.75, 0.13), (0.62, 0.06)])),
        Regime("tie-teacher0-small", "teacher gaps 0, the student opens small gaps (+0.02)",
               _tied(share3, [None, (0.72, 0.12), (0.7, 0.1)])),
        Regime("tie-student0", "the student closes the teacher's gaps to 0", tuple(
            GroupSpec(w, 0.4, t, (0.7, 0.1), 0.05)
            for w, t in zip(share3, [(0.7, 0.1), (0.78, 0.14), (0.62, 0.06)], strict=True))),
        near_tie(0), near_tie(1), near_tie(2), near_tie(4),
        Regime("six-switch", "six groups; the max group switches from teacher to student", (
            GroupSpec(0.25, 0.3, (0.72, 0.12)),
            GroupSpec(0.2, 0.45, (0.75, 0.10), (0.80, 0.16)),
            GroupSpec(0.2, 0.35, (0.66, 0.09)),
            GroupSpec(0.15, 0.5, (0.70, 0.11), (0.66, 0.08)),
            GroupSpec(0.12, 0.4, (0.60, 0.06)),
            GroupSpec(0.08, 0.25, (0.68, 0.08), (0.71, 0.10))), rows=6000),
        Regime("tie-teacher0-50k", "teacher gaps 0, the student opens gaps of 0.01, 50k rows",
               _tied((0.4, 0.3, 0.2, 0.1), [None, (0.71, 0.11), (0.69, 0.095), (0.7, 0.1)]),
               rows=50_000),
        Regime("small-group", "a gated group of about 40 rows (1% of 4,000) whose rates the "
               "student changes", (
                   GroupSpec(0.6, 0.35, (0.75, 0.1), (0.74, 0.11)),
                   GroupSpec(0.39, 0.3, (0.65, 0.08), (0.66, 0.08)),
                   GroupSpec(0.01, 0.35, (0.6, 0.15), (0.55, 0.2), 0.05)),
               min_group_size=20),
        Regime("small-group-unchanged", "a gated group of about 40 rows, every rate unchanged",
               (GroupSpec(0.6, 0.35, (0.75, 0.1)), GroupSpec(0.39, 0.3, (0.65, 0.08)),
                GroupSpec(0.01, 0.35, (0.6, 0.15), None, 0.08)), min_group_size=20),
    ]
    return {r.name: r for r in out}


# ----------------------------------------------------------------------------- coverage


@dataclass
class Tally:
    below: int = 0
    inside: int = 0
    above: int = 0
    missing: int = 0  # no interval (undefined)
    widths: list[float] = field(default_factory=list)

    @property
    def audits(self) -> int:
        return self.below + self.inside + self.above + self.missing

    def coverage(self) -> float:
        return self.inside / max(self.audits, 1)

    def band(self, level: float = 0.95) -> tuple[float, float]:
        """Clopper-Pearson interval of the coverage share."""
        k, n = self.inside, max(self.audits, 1)
        a = (1 - level) / 2
        lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
        hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
        return lo, hi

    def width(self) -> float:
        return float(np.mean(self.widths)) if self.widths else math.nan


def settings_for(regime: Regime, resamples: int, seed: int, method: str | None) -> Settings:
    extra = {} if method is None else {"interval": method}
    return Settings(regime.min_group_size, {"g": "0"}, 0.95, resamples, seed, **extra)  # type: ignore[arg-type]


def audit_values(regime: Regime, audits: int, resamples: int, seed: int,
                 method: str | None = None) -> list[dict[MetricKey, MetricValue]]:
    """fairgate's values on ``audits`` simulated audits of ``regime``."""
    p = regime.p
    labels = tuple((str(i),) for i in range(p.shape[0]))
    keys = [MetricKey(m, None if m == "accuracy" else GROUPING) for m in regime.metrics]
    draws = np.random.default_rng(seed).multinomial(regime.rows, p.reshape(-1), size=audits)
    out = []
    for i, draw in enumerate(draws):
        counts = {GROUPING: GroupingCounts(GROUPING, labels, draw.reshape(p.shape))}
        out.append(compute_values(keys, counts,
                                  settings_for(regime, resamples, seed * 100_003 + i, method)))
    return out


def coverage(regime: Regime, audits: int, resamples: int, seed: int,
             method: str | None = None) -> dict[tuple[str, str], Tally]:
    """Per (metric, quantity): where the truth fell relative to the 95% interval."""
    p = regime.p
    tallies: dict[tuple[str, str], Tally] = {}
    for values in audit_values(regime, audits, resamples, seed, method):
        for key, v in values.items():
            t, s = truth(p, key.metric, "teacher"), truth(p, key.metric, "student")
            for quantity, x in (("delta", s - t), ("teacher", t), ("student", s)):
                tally = tallies.setdefault((key.metric, quantity), Tally())
                iv = getattr(v, f"{quantity}_interval")
                if iv is None:
                    tally.missing += 1
                    continue
                tally.widths.append(iv.hi - iv.lo)
                # a value equal to its bound is inside: compare with a tolerance of rounding
                eps = 1e-12 * max(1.0, abs(x))
                if x < iv.lo - eps:
                    tally.below += 1
                elif x > iv.hi + eps:
                    tally.above += 1
                else:
                    tally.inside += 1
    return tallies


def print_coverage(names: Sequence[str], audits: int, resamples: int, seed: int,
                   method: str | None) -> None:
    all_regimes = regimes()
    print(f"\nCoverage of 95% intervals: {audits} audits per regime, {resamples} resamples"
          f"{'' if method is None else f', method {method}'}; columns: coverage "
          "[Clopper-Pearson 95%] · below/above · mean width")
    for name in names:
        regime = all_regimes[name]
        start = time.perf_counter()
        tallies = coverage(regime, audits, resamples, seed, method)
        print(f"\n{name}: {regime.text} ({regime.rows:,} rows, {len(regime.groups)} groups; "
              f"{time.perf_counter() - start:.0f} s)")
        p = regime.p
        for metric in regime.metrics:
            t, s = truth(p, metric, "teacher"), truth(p, metric, "student")
            cells = []
            for q in QUANTITIES:
                tl = tallies[(metric, q)]
                lo, hi = tl.band()
                n = max(tl.audits, 1)
                cells.append(f"{q} {tl.coverage():.3f} [{lo:.3f}, {hi:.3f}] "
                             f"{tl.below / n:.3f}/{tl.above / n:.3f} w {tl.width():.4f}"
                             + (f" undef {tl.missing}" if tl.missing else ""))
            print(f"  {metric:30s} t {t:.4f} s {s:.4f}")
            print("      " + " | ".join(cells))


# ----------------------------------------------------------------------------- the gate


GATE_GROUPS = (GroupSpec(0.5, 0.4, (0.75, 0.12)), GroupSpec(0.3, 0.35, (0.70, 0.10)),
               GroupSpec(0.2, 0.3, (0.65, 0.08)))
MODES = {  # what each decide_on does with an interval that straddles the bound
    "estimate": {"decide_on": "estimate"},
    "interval (default: inconclusive warns)": {"decide_on": "interval"},
    "significant (inconclusive passes)": {"decide_on": "significant"},
    "conservative (inconclusive fails)": {"decide_on": "conservative"},
}


def gate_populations(bound: float) -> dict[str, np.ndarray]:
    """An unchanged student (5% of decisions flipped, every rate kept) and two that widen a
    gap by twice the bound: DP (group 0's TPR and FPR up by 2b, so its selection rate is)
    and EO (group 0's TPR up by 2b)."""
    up = 2 * bound
    g0 = GATE_GROUPS[0]
    dp = replace(g0, student=(g0.teacher[0] + up, g0.teacher[1] + up))
    eo = replace(g0, student=(g0.teacher[0] + up, g0.teacher[1]))
    return {"unchanged": population(GATE_GROUPS),
            f"DP +{up:g}": population((dp, *GATE_GROUPS[1:])),
            f"EO +{up:g}": population((eo, *GATE_GROUPS[1:]))}


def gate_policy(bound: float, mode: dict[str, str], resamples: int) -> Any:
    from fairgate.policy import validate

    return validate({"version": 1, "audit": {"label": "y", "positive_label": 1,
                                             "sensitive": ["g"], "min_group_size": 30},
                     "checks": [{"id": "dp", "metric": "demographic_parity_difference",
                                 "max_increase": bound},
                                {"id": "eo", "metric": "equalized_odds_difference",
                                 "max_increase": bound}],
                     "statistics": {"resamples": resamples, **mode}}, {}, "sim")


def recommended_rows(bound: float) -> int:
    """The audit size `fairgate plan` asks for under the default rule: the most rows any
    bound needs, planned from the unchanged student's expected counts."""
    from fairgate.plan import plan_counts

    p = population(GATE_GROUPS)
    labels = tuple((str(i),) for i in range(p.shape[0]))
    counts = {GROUPING: GroupingCounts(GROUPING, labels, p * 10_000)}
    plan = plan_counts(gate_policy(bound, {}, 1000), counts, 10_000, "simulation")
    return max(r.rows_needed or 0 for r in plan.rows)


def gate_study(sizes: Sequence[int], bound: float, audits: int, resamples: int, seed: int
               ) -> None:
    """False fails of an unchanged student and detection of a change of twice the bound,
    per decide_on, at each audit size (a verdict of fail counts; 95% Clopper-Pearson)."""
    from fairgate.core.gate import decide

    today = __import__("datetime").date(2025, 1, 1)
    policies = {name: gate_policy(bound, mode, resamples) for name, mode in MODES.items()}
    keys = [MetricKey(m, GROUPING) for m in ("demographic_parity_difference",
                                              "equalized_odds_difference")]
    print(f"\nGate: checks dp and eo with max_increase {bound:g} on 3 groups (50/30/20%), "
          f"{audits} audits a cell, {resamples} resamples; share of audits whose verdict is "
          "fail [Clopper-Pearson 95%], and in brackets the share with an inconclusive check")
    for rows in sizes:
        print(f"\n  {rows:,} rows")
        for name, p in gate_populations(bound).items():
            truth_text = ", ".join(f"{m.split('_')[0]} {truth(p, m, 'student') - truth(p, m, 'teacher'):+.3f}"
                                   for m in ("demographic_parity_difference",
                                             "equalized_odds_difference"))
            fails = dict.fromkeys(MODES, 0)
            unsure = dict.fromkeys(MODES, 0)
            labels = tuple((str(i),) for i in range(p.shape[0]))
            draws = np.random.default_rng(seed + rows).multinomial(rows, p.reshape(-1),
                                                                   size=audits)
            for i, draw in enumerate(draws):
                counts = {GROUPING: GroupingCounts(GROUPING, labels, draw.reshape(p.shape))}
                values = compute_values(keys, counts, Settings(30, {}, 0.95, resamples,
                                                               seed * 7919 + i))
                for mode, policy in policies.items():
                    d = decide(policy, values, [GROUPING], today)
                    fails[mode] += d.verdict.value == "fail"
                    unsure[mode] += any(r.status.value == "inconclusive" for r in d.results)
            print(f"    {name} (true change {truth_text})")
            for mode in MODES:
                t = Tally(inside=fails[mode], below=audits - fails[mode])
                lo, hi = t.band()
                print(f"      {mode:42s} fail {fails[mode] / audits:.3f} [{lo:.3f}, {hi:.3f}]"
                      f"  (inconclusive {unsure[mode] / audits:.3f})")


def machine_note() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: nproc {cores}, {platform.machine()}, load average {load}; "
            f"python {platform.python_version()}, numpy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audits", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--method", default=None, help="statistics.interval to use")
    parser.add_argument("--regimes", nargs="*", default=None)
    parser.add_argument("--gate", action="store_true",
                        help="false fails and detection per decide_on instead of coverage")
    parser.add_argument("--bound", type=float, default=0.02, help="max_increase of the gate study")
    parser.add_argument("--sizes", default="400,3000,plan",
                        help="audit sizes of the gate study; plan: what `fairgate plan` asks for")
    args = parser.parse_args()
    print(machine_note())
    if args.gate:
        sizes = [recommended_rows(args.bound) if x == "plan" else int(x)
                 for x in args.sizes.split(",")]
        if "plan" in args.sizes:
            print(f"fairgate plan asks for {recommended_rows(args.bound):,} rows "
                  f"(max_increase {args.bound:g}, default rule)")
        gate_study(sizes, args.bound, min(args.audits, 1000), args.resamples, args.seed)
        return
    names = args.regimes or list(regimes())
    print_coverage(names, args.audits, args.resamples, args.seed, args.method)


if __name__ == "__main__":
    main()
