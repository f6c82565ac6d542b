"""The statistics: the multinomial bootstrap is the row bootstrap, its intervals cover,
McNemar and Holm match independent computations.

Oracles: an explicit row-resampling bootstrap computed by hand from rows (checked against
fairlearn on a few resamples), population values computed by hand from known cell
probabilities, exact binomial tails in rational arithmetic and scipy's binomtest, and
Holm adjustments worked out by hand.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference
from scipy.stats import binomtest, ks_2samp

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import MetricKey, Settings, compute_values, context_for, group_rows
from fairgate.core.metrics import CATALOGUE, Context
from fairgate.core.stats import (
    Interval,
    holm,
    mcnemar_exact,
    percentile_interval,
    resample_cells,
    rng_for,
)

# ----------------------------------------------------------------------------- helpers


def hand_cells(g: np.ndarray, y: np.ndarray, t: np.ndarray, s: np.ndarray,
               groups: int) -> np.ndarray:
    """Joint table cells[g, y, ŷt, ŷs] counted row by row."""
    cells = np.zeros((groups, 2, 2, 2), dtype=np.int64)
    np.add.at(cells, (g, y, t, s), 1)
    return cells


def all_gated(groups: int) -> Context:
    return Context(gated=np.ones(groups, dtype=bool), reference=0)


# ----------------------------------------------------------------------------- mechanics


def test_resample_cells_keeps_total_shape_and_empty_cells() -> None:
    cells = np.array([[[[5, 0], [1, 2]], [[0, 3], [4, 7]]],
                      [[[9, 1], [0, 0]], [[2, 0], [0, 6]]]], dtype=np.int64)
    boot = resample_cells(cells, 300, rng_for(0, "x"))
    assert boot.shape == (300, 2, 2, 2, 2)
    assert (boot.reshape(300, -1).sum(axis=1) == cells.sum()).all()
    assert (boot[:, cells == 0] == 0).all()
    # resamples vary: a bootstrap, not copies of the input
    assert len({b.tobytes() for b in boot}) > 250


def test_resample_cells_of_an_empty_table_is_empty() -> None:
    cells = np.zeros((3, 2, 2, 2), dtype=np.int64)
    assert resample_cells(cells, 4, rng_for(0, "x")).shape == (4, 3, 2, 2, 2)
    assert not resample_cells(cells, 4, rng_for(0, "x")).any()


def test_streams_depend_on_seed_and_key_not_on_order() -> None:
    a = rng_for(3, "race").integers(0, 2**62, 4)
    rng_for(3, "sex").integers(0, 2**62, 4)  # drawing another stream first changes nothing
    assert (rng_for(3, "race").integers(0, 2**62, 4) == a).all()
    assert not (rng_for(4, "race").integers(0, 2**62, 4) == a).all()
    assert not (rng_for(3, "sex").integers(0, 2**62, 4) == a).all()


def test_percentile_interval_reports_the_defined_share() -> None:
    x = np.concatenate([np.arange(100, dtype=float), [np.nan] * 25])
    i = percentile_interval(x, 0.9)
    assert i is not None
    assert i.defined == pytest.approx(100 / 125)
    # numpy's default (linear) quantiles of the 100 defined values 0..99
    assert (i.lo, i.hi) == pytest.approx((0.05 * 99, 0.95 * 99))
    assert percentile_interval(np.full(10, np.nan), 0.95) is None
    assert percentile_interval(np.array([]), 0.95) is None
    inf = percentile_interval(np.array([1.0, np.inf, 2.0, np.nan]), 0.5)
    assert inf is not None and inf.defined == 0.5  # inf is not a number to gate on


# ----------------------------------------------------------------------------- equivalence


def _small_audit() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """300 rows, 3 groups; the student selects more in group 2 and is a bit less accurate."""
    rng = np.random.default_rng(11)
    n = 300
    g = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < np.array([0.3, 0.4, 0.5])[g]).astype(np.int64)
    t = ((rng.random(n) < 0.8) == y.astype(bool)).astype(np.int64)
    flip = rng.random(n) < np.array([0.05, 0.1, 0.25])[g]
    s = np.where(flip, 1 - t, t)
    s = np.where((g == 2) & (rng.random(n) < 0.15), 1, s)
    return g, y, t, s


def _changes_from_rows(g, y, t, s, idx, groups):  # type: ignore[no-untyped-def]
    """By hand, for each row of ``idx[b, n]`` (rows drawn): DP difference and accuracy change."""
    b = idx.shape[0]
    key = (np.arange(b)[:, None] * groups + g[idx]).reshape(-1)
    size = np.bincount(key, minlength=b * groups).reshape(b, groups)
    rate_t = np.bincount(key, weights=t[idx].reshape(-1), minlength=b * groups).reshape(b, groups)
    rate_s = np.bincount(key, weights=s[idx].reshape(-1), minlength=b * groups).reshape(b, groups)
    rate_t, rate_s = rate_t / size, rate_s / size
    dp = (rate_s.max(axis=1) - rate_s.min(axis=1)) - (rate_t.max(axis=1) - rate_t.min(axis=1))
    acc = (s[idx] == y[idx]).mean(axis=1) - (t[idx] == y[idx]).mean(axis=1)
    return dp, acc


def _row_bootstrap(g, y, t, s, groups, resamples, rng):  # type: ignore[no-untyped-def]
    """Explicit row bootstrap: draw n row indices with replacement, recompute from rows."""
    dp, acc = [], []
    for start in range(0, resamples, 2000):
        idx = rng.integers(0, len(y), size=(min(2000, resamples - start), len(y)))
        d, a = _changes_from_rows(g, y, t, s, idx, groups)
        dp.append(d)
        acc.append(a)
    return np.concatenate(dp), np.concatenate(acc)


def _cells_bootstrap(cells, resamples, rng):  # type: ignore[no-untyped-def]
    """fairgate's bootstrap: multinomial on the joint cells, metrics from the catalogue."""
    boot = resample_cells(cells, resamples, rng)
    ctx = all_gated(cells.shape[0])
    out = []
    for name in ("demographic_parity_difference", "accuracy"):
        m = CATALOGUE[name]
        out.append(m.compute(GroupingCounts.student(boot), ctx)
                   - m.compute(GroupingCounts.teacher(boot), ctx))
    return out[0], out[1]


def _same_distribution(a: np.ndarray, b: np.ndarray) -> list[str]:
    """Differences between two independent Monte-Carlo samples beyond 4.5 standard errors.

    Means: SE(mean_a − mean_b) = sqrt(var_a/B_a + var_b/B_b).
    Spread: the sample variance has Var(s²) ≈ (μ4 − σ⁴)/B, with μ4 the fourth central
    moment, so SE(s²_a − s²_b) = sqrt((μ4_a − s⁴_a)/B_a + (μ4_b − s⁴_b)/B_b).
    Quantiles: instead of inverting a density, compare the two empirical CDFs at the pooled
    sample's p-quantile x_p: each of F_a(x), F_b(x) is a mean of B Bernoulli(F(x)) draws, so
    SE(F_a(x) − F_b(x)) = sqrt(F(1 − F)(1/B_a + 1/B_b)); evaluating both at the same x keeps
    this valid for lattice-valued statistics (ties).
    4.5 SE over the ~13 comparisons of a call gives a false-alarm chance below 1e-4.
    """
    z = 4.5
    problems = []
    na, nb = len(a), len(b)
    se_mean = math.sqrt(a.var() / na + b.var() / nb)
    if abs(a.mean() - b.mean()) > z * se_mean:
        problems.append(f"means {a.mean():.5f} vs {b.mean():.5f} (SE {se_mean:.5f})")
    m4a, m4b = ((a - a.mean()) ** 4).mean(), ((b - b.mean()) ** 4).mean()
    se_var = math.sqrt((m4a - a.var() ** 2) / na + (m4b - b.var() ** 2) / nb)
    if abs(a.var() - b.var()) > z * se_var:
        problems.append(f"variances {a.var():.3g} vs {b.var():.3g} (SE {se_var:.2g})")
    pooled = np.concatenate([a, b])
    for p in (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975):
        x = np.quantile(pooled, p)
        fa, fb = (a <= x).mean(), (b <= x).mean()
        f = (pooled <= x).mean()
        se = math.sqrt(f * (1 - f) * (1 / na + 1 / nb))
        if abs(fa - fb) > z * se:
            problems.append(f"CDF at the {p} quantile {x:.4f}: {fa:.4f} vs {fb:.4f} (SE {se:.4f})")
    return problems


def test_multinomial_on_cells_is_the_row_bootstrap() -> None:
    g, y, t, s = _small_audit()
    groups = 3
    cells = hand_cells(g, y, t, s, groups)
    resamples = 20_000

    # the hand computation from rows agrees with fairlearn on the same resampled rows
    rng = np.random.default_rng(5)
    for _ in range(5):
        idx = rng.integers(0, len(y), len(y))
        one_dp, _ = _changes_from_rows(g, y, t, s, idx[None, :], groups)
        expected = (demographic_parity_difference(y[idx], s[idx], sensitive_features=g[idx])
                    - demographic_parity_difference(y[idx], t[idx], sensitive_features=g[idx]))
        assert one_dp[0] == pytest.approx(expected, abs=1e-12)

    row_dp, row_acc = _row_bootstrap(g, y, t, s, groups, resamples, np.random.default_rng(1))
    cell_dp, cell_acc = _cells_bootstrap(cells, resamples, rng_for(2, "equivalence"))
    assert not np.isnan(cell_dp).any() and not np.isnan(row_dp).any()
    assert _same_distribution(cell_dp, row_dp) == []
    assert _same_distribution(cell_acc, row_acc) == []
    assert ks_2samp(cell_dp, row_dp).pvalue > 1e-4
    assert ks_2samp(cell_acc, row_acc).pvalue > 1e-4

    # the comparison has power: resampling teacher and student independently (an unpaired
    # bootstrap) inflates the spread of the change, and the same check sees it
    b1 = resample_cells(cells, resamples, rng_for(3, "teacher"))
    b2 = resample_cells(cells, resamples, rng_for(3, "student"))
    acc = CATALOGUE["accuracy"]
    unpaired = (acc.compute(GroupingCounts.student(b2), all_gated(groups))
                - acc.compute(GroupingCounts.teacher(b1), all_gated(groups)))
    assert _same_distribution(unpaired, row_acc) != []


# ----------------------------------------------------------------------------- coverage

G = Grouping(("g",))


def _population(p_y: list[float], tpr_t: list[float], fpr_t: list[float],
                keep: list[tuple[float, float]], share: list[float]) -> np.ndarray:
    """Cell probabilities p[g, y, ŷt, ŷs] of a population.

    Per group: P(y=1), the teacher's TPR and FPR, and the chance that the student keeps the
    teacher's decision given ŷt = 0 or 1.
    """
    p = np.zeros((len(share), 2, 2, 2))
    for gi, w in enumerate(share):
        for y in (0, 1):
            py = p_y[gi] if y else 1 - p_y[gi]
            pt1 = tpr_t[gi] if y else fpr_t[gi]
            for yt in (0, 1):
                pt = pt1 if yt else 1 - pt1
                k = keep[gi][yt]
                for ys in (0, 1):
                    p[gi, y, yt, ys] = w * py * pt * (k if ys == yt else 1 - k)
    return p


def _truth(p: np.ndarray) -> dict[str, float]:
    """Population values by hand: rates are conditional probabilities of the cells."""
    out = {}
    for name in ("demographic_parity_difference", "equalized_odds_difference", "accuracy"):
        vals = []
        for model in ("teacher", "student"):
            q = p.sum(axis=3) if model == "teacher" else p.sum(axis=2)  # [g, y, ŷ]
            if name == "accuracy":
                vals.append(float(q[:, 0, 0].sum() + q[:, 1, 1].sum()))
                continue
            sel = (q[:, 0, 1] + q[:, 1, 1]) / q.sum(axis=(1, 2))
            tpr = q[:, 1, 1] / q[:, 1].sum(axis=1)
            fpr = q[:, 0, 1] / q[:, 0].sum(axis=1)
            if name == "demographic_parity_difference":
                vals.append(float(sel.max() - sel.min()))
            else:
                vals.append(float(max(tpr.max() - tpr.min(), fpr.max() - fpr.min())))
        out[name] = vals[1] - vals[0]
    return out


def _coverage(p: np.ndarray, audits: int, rows: int, resamples: int, seed: int
              ) -> dict[str, float]:
    """Share of simulated audits whose 95% interval of the change holds the true change."""
    truth = _truth(p)
    keys = [MetricKey(m, G) for m in ("demographic_parity_difference",
                                      "equalized_odds_difference")] + [MetricKey("accuracy", None)]
    draws = np.random.default_rng(seed).multinomial(rows, p.reshape(-1), size=audits)
    groups = tuple((str(i),) for i in range(p.shape[0]))
    hits = dict.fromkeys(truth, 0)
    for i, draw in enumerate(draws):
        counts = {G: GroupingCounts(G, groups, draw.reshape(p.shape))}
        settings = Settings(min_group_size=30, reference_groups={}, confidence=0.95,
                            resamples=resamples, seed=seed * 100_000 + i, interval="percentile")
        values = compute_values(keys, counts, settings)
        for key in keys:
            iv = values[key].delta_interval
            assert iv is not None and iv.defined == 1.0
            hits[key.metric] += iv.lo <= truth[key.metric] <= iv.hi
    return {m: h / audits for m, h in hits.items()}


# Clearly separated groups: teacher selection rates about 0.44 / 0.28 / 0.16, TPR gaps of
# about 0.25, FPR gaps of about 0.1, so the max and min groups are never in doubt.
SEPARATED = _population(
    p_y=[0.5, 0.35, 0.25], tpr_t=[0.8, 0.65, 0.55], fpr_t=[0.08, 0.12, 0.03],
    keep=[(0.9, 0.95), (0.95, 0.9), (0.97, 0.85)], share=[0.45, 0.35, 0.2],
)


def test_percentile_interval_of_the_change_covers_the_truth() -> None:
    """statistics.interval: percentile (fairgate before issue 11) where it is valid: groups
    clearly apart. Ties and small groups: tests/test_coverage.py."""
    truth = _truth(SEPARATED)
    assert all(abs(v) > 0.005 for v in truth.values())  # the student really changes
    cov = _coverage(SEPARATED, audits=1000, rows=4000, resamples=1000, seed=1)
    # 1000 audits: if the true coverage is 0.95 the observed share has SE 0.0069, so the
    # 0.93-0.97 band is about ±2.9 SE
    assert all(0.93 <= c <= 0.97 for c in cov.values()), cov


# ----------------------------------------------------------------------------- McNemar, Holm


def _exact_mcnemar(b: int, c: int) -> float:
    """2 · P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1, in exact rationals."""
    n = b + c
    if n == 0:
        return 1.0
    term, total = 1, 1  # C(n, 0); then C(n, k + 1) = C(n, k) · (n − k) / (k + 1), exactly
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        total += term
    return float(min(Fraction(1), Fraction(2 * total, 2**n)))


@pytest.mark.parametrize("worse, better", [
    (0, 0), (1, 0), (0, 6), (6, 0), (10, 3), (3, 10), (7, 7), (8, 7), (25, 40), (400, 330),
    (1000, 1000), (2500, 2350),
])
def test_mcnemar_matches_exact_binomial_and_scipy(worse: int, better: int) -> None:
    p = mcnemar_exact(worse, better)
    assert p == pytest.approx(_exact_mcnemar(worse, better), rel=1e-9, abs=1e-300)
    if worse + better:
        assert p == pytest.approx(binomtest(worse, worse + better, 0.5).pvalue, rel=1e-9)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 3)


def test_group_rows_count_discordant_pairs_and_holm_over_gated_groups() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    g = rng.choice(4, n, p=[0.5, 0.3, 0.19, 0.01])
    y = rng.integers(0, 2, n)
    t = np.where(rng.random(n) < 0.8, y, 1 - y)
    # the student gets much worse in group 1 only
    s = np.where(rng.random(n) < np.array([0.03, 0.2, 0.03, 0.03])[g], 1 - t, t)
    s = np.where((g == 1) & (t == y) & (rng.random(n) < 0.1), 1 - y, s)
    cells = hand_cells(g, y, t, s, 4)
    counts = GroupingCounts(G, tuple((str(i),) for i in range(4)), cells)
    settings = Settings(min_group_size=100, reference_groups={}, confidence=0.95, resamples=0,
                        seed=0)
    rows = group_rows(counts, context_for(counts, settings))
    raw = []
    for i, row in enumerate(rows):
        worse = int(((g == i) & (t == y) & (s != y)).sum())
        better = int(((g == i) & (t != y) & (s == y)).sum())
        assert (row.teacher_only_correct, row.student_only_correct) == (worse, better)
        assert row.mcnemar_p == pytest.approx(binomtest(worse, worse + better).pvalue, rel=1e-9)
        raw.append(row.mcnemar_p)
    assert [r.gated for r in rows] == [True, True, True, False]
    assert rows[3].mcnemar_p_holm is None
    # Holm over the three gated groups, by hand
    order = sorted(range(3), key=lambda i: raw[i])
    expected, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * raw[i]))
        expected[i] = running
    got = [rows[i].mcnemar_p_holm for i in range(3)]
    assert got == pytest.approx([expected[i] for i in range(3)])
    assert rows[1].mcnemar_p_holm is not None and rows[1].mcnemar_p_holm < 1e-6
    assert rows[1].teacher_only_correct > rows[1].student_only_correct


@pytest.mark.parametrize("pvalues, expected", [
    # m = 5; sorted 0.005, 0.01, 0.03, 0.04, 0.04 -> 5·0.005, 4·0.01, 3·0.03 = 0.09,
    # then 2·0.04 = 0.08 and 1·0.04 are raised to 0.09 by monotonicity (ties share it)
    ([0.01, 0.04, 0.03, 0.005, 0.04], [0.04, 0.09, 0.09, 0.025, 0.09]),
    # tied smallest: 3·0.01 = 0.03, then 2·0.01 = 0.02 raised to 0.03; 1·0.5
    ([0.01, 0.5, 0.01], [0.03, 0.5, 0.03]),
    # capped at 1: 3·0.4 = 1.2 -> 1, 2·0.5 = 1, 0.6 raised to 1
    ([0.6, 0.4, 0.5], [1.0, 1.0, 1.0]),
    # a step-down stop: 4·0.001, 3·0.2 = 0.6, 2·0.25 = 0.5 -> 0.6, 1·0.3 -> 0.6
    ([0.3, 0.001, 0.25, 0.2], [0.6, 0.004, 0.6, 0.6]),
    ([0.02], [0.02]),
    ([], []),
])
def test_holm_by_hand(pvalues: list[float], expected: list[float]) -> None:
    assert holm(pvalues) == pytest.approx(expected)


def test_holm_keeps_undefined_undefined_and_counts_it() -> None:
    out = holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1])
    assert out[0] == pytest.approx(0.03) and out[2] == pytest.approx(0.04)  # m = 3, not 2


def test_interval_is_a_frozen_value() -> None:
    i = Interval(0.1, 0.2, 1.0)
    assert i.as_list() == [0.1, 0.2]
    with pytest.raises(AttributeError):
        i.lo = 0.0  # type: ignore[misc]


def test_bootstrap_in_chunks_equals_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """compute_values holds CHUNK copies at a time; the intervals are those of one draw."""
    import fairgate.core.evaluate as ev

    rng = np.random.default_rng(5)
    cells = rng.integers(0, 40, size=(6, 2, 2, 2))
    g = Grouping(("g",))
    counts = {g: GroupingCounts(g, tuple((str(i),) for i in range(6)), cells)}
    keys = [MetricKey(m, g) for m in ("demographic_parity_difference", "disparate_impact",
                                      "worst_group_accuracy", "equalized_odds_ratio")]
    settings = Settings(30, {}, 0.95, 1000, 7)
    assert settings.resamples > ev.CHUNK  # so this run draws several chunks
    chunked = compute_values(keys, counts, settings)
    monkeypatch.setattr(ev, "CHUNK", 10_000)
    whole = compute_values(keys, counts, settings)
    assert chunked == whole
