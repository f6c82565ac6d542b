"""The pieces behind the uniform intervals (fairgate/core/intervals.py), checked by hand.

Oracles: the catalogue (itself checked against fairlearn, AIF360 and Aequitas) for the
pieces' values; scipy's beta quantiles for Clopper-Pearson; closed-form binomial and paired
(Agresti-Min) variances for the analytic standard deviations; order statistics by hand for
the calibrated bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import MetricKey, Settings, compute_values
from fairgate.core.intervals import (
    MAX_PIECES,
    SHAPES,
    SMOOTHING,
    Layout,
    Plan,
    _criterion,
    _simultaneous,
    clopper_pearson,
    rate_columns,
)
from fairgate.core.metrics import CATALOGUE, Context

G = Grouping(("g",))

#: Grouping metrics that are not a max or min of rates: smooth, counts of tests, scores.
NOT_SHAPED = {"between_group_theil_index", "between_group_generalized_entropy_index",
              "significant_accuracy_loss_groups", "significant_accuracy_change_groups"}


def test_every_max_min_metric_has_pieces() -> None:
    grouping = {n for n, m in CATALOGUE.items()
                if m.scope == "grouping" and not m.scored and not m.sampled}
    assert grouping - NOT_SHAPED <= set(SHAPES)
    for name in ("worst_class_accuracy", "class_accuracy_difference"):  # per-class tables
        assert name in SHAPES


def test_pieces_reproduce_every_shaped_metric() -> None:
    """The max (or the picked piece) of every metric's pieces is the catalogue's value, on
    random tables with empty cells, ungated groups and any reference."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        g = int(rng.integers(2, 6))
        cells = rng.integers(0, 30, (g, 2, 2, 2))
        cells[rng.random(cells.shape) < 0.1] = 0
        gated = rng.random(g) < 0.8
        gated[:2] |= gated.sum() < 2
        ctx = Context(gated, int(rng.integers(0, g)))
        conf = cells.sum(axis=3).astype(float)
        for name, shape in SHAPES.items():
            if name not in CATALOGUE:
                continue
            want = float(CATALOGUE[name].compute(conf, ctx))
            if math.isnan(want):  # no interval is built on an undefined value
                continue
            layout = Layout(shape.rates, g)
            pieces = shape.build(layout, ctx, np.zeros(layout.size), np.ones(layout.size))
            assert pieces is not None
            v = pieces.evaluate(rate_columns(conf, layout, gated))
            if shape.kind == "max":
                got = shape.sign * np.max(np.where(np.isnan(v), -np.inf, v))
            else:
                crit = _criterion(v, shape.by)
                got = v[np.argmax(np.where(np.isnan(crit), -np.inf, crit))]
            assert got == pytest.approx(want, abs=1e-12), name
            checked += 1
    assert checked > 2000


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (17, 250), (0, 0)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    lo, hi = clopper_pearson(np.array([k]), np.array([n]), 0.001)
    want_lo = 0.0 if k == 0 or n == 0 else beta.ppf(0.001, k, n - k + 1)
    want_hi = 1.0 if k == n else beta.ppf(0.999, k + 1, n - k)
    assert (lo[0], hi[0]) == pytest.approx((want_lo, want_hi), abs=1e-12)


def _two_groups() -> np.ndarray:
    """cells[g, y, ŷt, ŷs]: group 0 selects far more than group 1, for both models."""
    c = np.zeros((2, 2, 2, 2), dtype=np.int64)
    c[0, 1, 1, 1], c[0, 1, 1, 0], c[0, 1, 0, 1], c[0, 1, 0, 0] = 300, 12, 7, 81
    c[0, 0, 1, 1], c[0, 0, 1, 0], c[0, 0, 0, 1], c[0, 0, 0, 0] = 90, 5, 9, 496
    c[1, 1, 1, 1], c[1, 1, 1, 0], c[1, 1, 0, 1], c[1, 1, 0, 0] = 60, 4, 6, 130
    c[1, 0, 1, 1], c[1, 0, 1, 0], c[1, 0, 0, 1], c[1, 0, 0, 0] = 20, 3, 2, 575
    return c


def test_standard_errors_by_hand() -> None:
    """DP difference: the teacher's max piece is sr_0 − sr_1, its SD the binomial one of two
    independent rates; the change's the paired (Agresti-Min) one of two groups. Every
    joint cell counts SMOOTHING rows more."""
    cells = _two_groups()
    ctx = Context(np.ones(2, bool), 0)
    plan = Plan(SHAPES["demographic_parity_difference"], cells, ctx, 0.95, 0.0, 1.0)
    assert plan.ok
    se_t, se_s, se_d = plan.standard_errors()
    c = cells + SMOOTHING
    var_t, var_d = 0.0, 0.0
    for g in (0, 1):
        n = c[g].sum()
        t1 = c[g, :, 1, :].sum() / n  # teacher selection rate
        var_t += t1 * (1 - t1) / n
        up, down = c[g, :, 0, 1].sum(), c[g, :, 1, 0].sum()  # student-only, teacher-only
        d = (up - down) / n
        var_d += ((up + down) / n - d**2) / n
    assert se_t == pytest.approx(math.sqrt(var_t), rel=1e-12)
    assert se_d == pytest.approx(math.sqrt(var_d), rel=1e-12)
    s1 = [c[g, :, :, 1].sum() / c[g].sum() for g in (0, 1)]
    var_s = sum(r * (1 - r) / c[g].sum() for g, r in enumerate(s1))
    assert se_s == pytest.approx(math.sqrt(var_s), rel=1e-12)


def test_one_coordinate_is_the_percentile_bound() -> None:
    """With one coordinate the calibrated bound is the copies' order statistic at rank
    ⌊level·B⌋ + 1 (no copy below it breaks more than level of them)."""
    rng = np.random.default_rng(1)
    boot = rng.normal(0.3, 0.02, size=(1000, 1))
    level = 0.0225
    lo = _simultaneous(boot, np.array([0.3]), np.array([1e-9]), 1, level)
    hi = _simultaneous(boot, np.array([0.3]), np.array([1e-9]), -1, level)
    ordered = np.sort(boot[:, 0])
    allowed = math.floor(level * 1000)
    assert lo[0] == ordered[allowed]
    assert hi[0] == ordered[-allowed - 1]


def test_several_coordinates_share_the_level() -> None:
    """Two independent coordinates: each gets about half the misses, jointly level."""
    rng = np.random.default_rng(2)
    boot = rng.normal(0.0, 1.0, size=(4000, 2))
    lo = _simultaneous(boot, np.zeros(2), np.full(2, 1e-9), 1, 0.05)
    jointly = np.mean((boot < lo).any(axis=1))
    assert 0.045 <= jointly <= 0.05
    assert np.all(lo < np.quantile(boot, 0.05, axis=0))  # each further out than alone


def test_the_floor_keeps_a_width_the_copies_do_not_show() -> None:
    """Copies that never move (no discordant row) still give the analytic width."""
    boot = np.full((500, 1), 0.1)
    lo = _simultaneous(boot, np.array([0.1]), np.array([0.05]), 1, 0.0225)
    assert 0.1 - 0.9 * 2.0 * 0.05 < lo[0] < 0.1 - 0.9 * 1.9 * 0.05  # 0.9 · z(a) · sd below


def test_a_perfectly_fair_teacher_gets_an_interval_holding_0() -> None:
    """Every group selects exactly 30%: the percentile interval of the max − min gap lies
    above 0 (the max of noise is positive); the uniform one reaches 0."""
    cells = np.zeros((3, 2, 2, 2), dtype=np.int64)
    for g in range(3):
        cells[g, 1, 1, 1], cells[g, 1, 0, 0] = 150, 150   # y=1: 50% selected
        cells[g, 0, 1, 1], cells[g, 0, 0, 0] = 150, 550   # y=0: 150 of 700 selected
    counts = {G: GroupingCounts(G, (("a",), ("b",), ("c",)), cells)}
    key = MetricKey("demographic_parity_difference", G)
    old = compute_values([key], counts, Settings(30, {}, 0.95, 1000, 1, interval="percentile"))
    new = compute_values([key], counts, Settings(30, {}, 0.95, 1000, 1))
    assert old[key].teacher == 0.0
    assert old[key].teacher_interval.lo > 0  # type: ignore[union-attr]
    assert new[key].teacher_interval.lo == 0.0  # type: ignore[union-attr]
    assert new[key].delta_interval.lo < 0 < new[key].delta_interval.hi  # type: ignore[union-attr]


def test_relative_interval_on_the_log_scale() -> None:
    """DP difference, groups far apart: (s − t)/t from log s − log t agrees with the
    percentile interval of the copies' relative change (both valid there)."""
    counts = {G: GroupingCounts(G, (("a",), ("b",)), _two_groups())}
    key = MetricKey("demographic_parity_difference", G)
    new = compute_values([key], counts, Settings(30, {}, 0.95, 2000, 3))[key]
    old = compute_values([key], counts, Settings(30, {}, 0.95, 2000, 3, interval="percentile"))[key]
    assert new.relative_interval is not None and old.relative_interval is not None
    assert new.relative_interval.lo <= new.relative <= new.relative_interval.hi
    width_new = new.relative_interval.hi - new.relative_interval.lo
    width_old = old.relative_interval.hi - old.relative_interval.lo
    assert 0.95 <= width_new / width_old <= 1.15



def test_relative_interval_where_a_piece_is_0_for_the_other_model() -> None:
    """Four groups of 40 rows, every rate 0 or 1 (a CSV folder test found it): a piece the
    teacher may attain the max with is 0 for the student, so log s − log t does not exist.
    No log(0) reaches the arithmetic (warnings are errors here), and the relative change is
    bounded through the box of the change's and the teacher's intervals, not by the copies'
    percentiles, which are all 0 here."""
    cells = np.zeros((4, 2, 2, 2), dtype=np.int64)  # [group, y, ŷ_t, ŷ_s]
    cells[0, 1, 1, 1] = 40  # both select everyone
    cells[1, 0, 0, 0] = 40  # both select no one
    cells[2, 0, 1, 0] = 40  # the teacher selects everyone, the student no one
    cells[3, 1, 1, 1] = 40
    counts = {G: GroupingCounts(G, (("a",), ("b",), ("c",), ("d",)), cells)}
    key = MetricKey("demographic_parity_difference", G)
    v = compute_values([key], counts, Settings(30, {}, 0.95, 1000, 1))[key]
    old = compute_values([key], counts, Settings(30, {}, 0.95, 1000, 1, interval="percentile"))[key]
    assert (v.teacher, v.student, v.relative) == (1.0, 1.0, 0.0)
    assert old.relative_interval is not None and old.relative_interval.hi == 0.0  # point mass
    d, t, r = v.delta_interval, v.teacher_interval, v.relative_interval
    assert d is not None and t is not None and r is not None
    assert 0 < t.lo <= t.hi <= 1 and d.lo < 0 < d.hi
    by_hand = [d.lo / t.lo, d.lo / t.hi, d.hi / t.lo, d.hi / t.hi]
    assert (r.lo, r.hi) == (min(by_hand), max(by_hand))
    # every max/min-type metric on the same table: ratios of 0 (|log| infinite) among the
    # pieces to screen, and no warning; each interval holds its point
    keys = [MetricKey(n, G) for n in SHAPES if n in CATALOGUE and CATALOGUE[n].scope == "grouping"]
    values = compute_values(keys, counts, Settings(30, {}, 0.95, 500, 1))
    for k in keys:
        for point, interval in ((values[k].teacher, values[k].teacher_interval),
                                (values[k].delta, values[k].delta_interval)):
            if interval is not None and math.isfinite(point):
                assert interval.lo - 1e-12 <= point <= interval.hi + 1e-12, k.metric


def _tied_groups(groups: int) -> dict[Grouping, GroupingCounts]:
    """``groups`` groups with the same joint cells (50 rows each): every gap is 0."""
    grouping = Grouping(("g",))
    cell = np.array([[[40, 2], [3, 5]], [[4, 2], [6, 38]]], np.int64)  # [y, ŷ_t, ŷ_s]
    cells = np.broadcast_to(cell, (groups, 2, 2, 2)).copy()
    return {grouping: GroupingCounts(grouping, tuple((str(i),) for i in range(groups)), cells)}


@pytest.mark.parametrize("groups, falls_back", [(60, True), (3, False)])
def test_too_many_tied_pieces_keep_the_percentile_interval_and_say_so(groups: int,
                                                                       falls_back: bool) -> None:
    """60 indistinguishable groups give 60·59 ordered pairs that may attain the max, more than
    MAX_PIECES: the metric keeps exactly the percentile interval (the same as
    statistics.interval: percentile) and carries a note, which run.py turns into a warning
    in every report. With 3 groups the uniform construction applies and there is no note."""
    counts = _tied_groups(groups)
    key = MetricKey("demographic_parity_difference", Grouping(("g",)))
    uniform = compute_values([key], counts, Settings(30, {}, 0.95, 200, 0))[key]
    percentile = compute_values([key], counts, Settings(30, {}, 0.95, 200, 0,
                                                        interval="percentile"))[key]
    assert percentile.interval_note is None
    if falls_back:
        assert groups * (groups - 1) > MAX_PIECES
        assert uniform.delta_interval == percentile.delta_interval
        assert uniform.interval_note is not None
        assert uniform.interval_note.startswith("percentile interval, which may under-cover")
        assert f"more than {MAX_PIECES:,} group pairs" in uniform.interval_note
    else:
        assert uniform.interval_note is None
        assert uniform.delta_interval != percentile.delta_interval


def test_the_fallback_is_a_warning_in_the_report(write_policy, run_cli, tmp_path) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 6000
    frame = pd.DataFrame({"g": rng.integers(0, 60, n).astype(str), "y": rng.integers(0, 2, n)})
    frame["t"] = rng.random(n)
    frame["s"] = np.where(rng.random(n) < 0.05, rng.random(n), frame["t"])
    data = tmp_path / "audit.parquet"
    frame.to_parquet(data)
    policy = write_policy("version: 1\naudit: {label: y, positive_label: 1, sensitive: [g], "
                          "min_group_size: 30}\nchecks:\n  - id: dp\n"
                          "    metric: demographic_parity_difference\n    max_increase: 0.5\n"
                          "statistics: {resamples: 200}\n")
    r = run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    notes = [w for w in r.report["warnings"] if w.startswith("check dp, ")]
    assert len(notes) == 1 and "percentile interval, which may under-cover" in notes[0]
    assert "under-cover" in r.stdout
