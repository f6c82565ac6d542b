"""Inconclusive, on_inconclusive, exact comparisons at a bound and the detectable change:
tables of cases for the pure gate, written from DESIGN.md ("Outcomes") and the issue.

An interval that straddles a bound is inconclusive; what that does is the policy's choice
(on_inconclusive: pass | warn | fail, per check or for the policy; decide_on: significant
counts it as a pass, conservative as a fail). Never a silent pass: the status says
inconclusive in every case, only its effect on the verdict changes.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import MetricKey, MetricValue, Settings, compute_values
from fairgate.core.gate import ON_BOUND, Status, Verdict, decide, detectable, judge_bound
from fairgate.core.stats import Interval
from fairgate.errors import PolicyError
from fairgate.policy import Policy, validate

G = Grouping(("g",))
KEY = MetricKey("demographic_parity_difference", G)
TODAY = dt.date(2025, 6, 1)

BASE: dict[str, Any] = {"version": 1, "audit": {"label": "y", "positive_label": 1,
                                                "sensitive": ["g"]}}


def _policy(check: dict[str, Any], statistics: dict[str, Any] | None = None,
            waivers: list[dict[str, Any]] | None = None) -> Policy:
    data = {**BASE, "checks": [{"id": "c", "metric": KEY.metric, **check}],
            "statistics": statistics or {}, "waivers": waivers or []}
    return validate(data, {}, "p.yaml")


def _value(delta_interval: tuple[float, float], delta: float = 0.03) -> MetricValue:
    iv = Interval(*delta_interval, 1.0, 0.01)
    return MetricValue(KEY, 0.1, 0.1 + delta, delta, delta / 0.1,
                       teacher_interval=Interval(0.05, 0.15, 1.0, 0.02),
                       student_interval=Interval(0.05, 0.2, 1.0, 0.02),
                       delta_interval=iv, relative_interval=None)


STRADDLE, WITHIN, BEYOND = (0.01, 0.05), (0.0, 0.015), (0.03, 0.06)

# (check keys, statistics, interval of the change) -> (status, blocking, verdict)
CASES = [
    ({}, {}, STRADDLE, ("inconclusive", False, "warn")),                     # the default
    ({}, {}, WITHIN, ("pass", False, "pass")),
    ({}, {}, BEYOND, ("fail", True, "fail")),
    ({"on_inconclusive": "fail"}, {}, STRADDLE, ("inconclusive", True, "fail")),
    ({"on_inconclusive": "pass"}, {}, STRADDLE, ("inconclusive", False, "pass")),
    ({}, {"on_inconclusive": "fail"}, STRADDLE, ("inconclusive", True, "fail")),
    ({}, {"on_inconclusive": "pass"}, STRADDLE, ("inconclusive", False, "pass")),
    ({"on_inconclusive": "warn"}, {"on_inconclusive": "fail"}, STRADDLE,  # the check wins
     ("inconclusive", False, "warn")),
    ({"severity": "warn", "on_inconclusive": "fail"}, {}, STRADDLE, ("inconclusive", False, "warn")),
    ({"severity": "warn"}, {}, BEYOND, ("warn", False, "warn")),
    ({}, {"decide_on": "significant"}, STRADDLE, ("inconclusive", False, "pass")),
    ({}, {"decide_on": "conservative"}, STRADDLE, ("inconclusive", True, "fail")),
    ({}, {"decide_on": "significant"}, BEYOND, ("fail", True, "fail")),
    ({}, {"decide_on": "conservative"}, WITHIN, ("pass", False, "pass")),
    ({}, {"decide_on": "estimate"}, STRADDLE, ("fail", True, "fail")),     # +0.03 > 0.02
]


@pytest.mark.parametrize("check, statistics, interval, expected", CASES)
def test_decision_table(check: dict[str, Any], statistics: dict[str, Any],
                        interval: tuple[float, float], expected: tuple[str, bool, str]) -> None:
    policy = _policy({"max_increase": 0.02, **check}, statistics)
    d = decide(policy, {KEY: _value(interval)}, [G], TODAY)
    [r] = d.results
    assert (r.status.value, r.blocking, d.verdict.value) == expected, r.reason
    if r.status is Status.INCONCLUSIVE:
        assert r.on_inconclusive in ("pass", "warn", "fail")
        assert "inconclusive" in r.reason and "straddles max_increase 0.02" in r.reason


def test_fail_beats_undefined_beats_inconclusive_beats_pass() -> None:
    value = _value(STRADDLE)
    both = {"max_increase": 0.02, "max": 0.04}  # change inconclusive, student value fails
    [r] = decide(_policy(both), {KEY: value}, [G], TODAY).results
    assert r.status is Status.FAIL and [b.outcome for b in r.bounds] == ["fail", "inconclusive"]
    nan_student = MetricValue(KEY, 0.1, math.nan, math.nan, math.nan,
                              delta_interval=Interval(*STRADDLE, 1.0))
    [r] = decide(_policy({"max_increase": 0.02}), {KEY: nan_student}, [G], TODAY).results
    assert r.status is Status.UNDEFINED and r.blocking
    two = {"max_increase": 0.02, "max": 0.5}  # inconclusive and pass: inconclusive
    [r] = decide(_policy(two), {KEY: value}, [G], TODAY).results
    assert r.status is Status.INCONCLUSIVE


def test_a_waiver_covers_an_inconclusive_check_that_counts() -> None:
    waiver = [{"check": "c", "reason": "small audit, re-run next quarter", "owner": "me",
               "expires": dt.date(2030, 1, 1)}]
    d = decide(_policy({"max_increase": 0.02, "on_inconclusive": "fail"}, waivers=waiver),
               {KEY: _value(STRADDLE)}, [G], TODAY)
    assert d.results[0].status is Status.WAIVED and d.verdict is Verdict.WARN
    assert "was inconclusive" in d.results[0].reason
    # one counted as a pass needs no waiver: it stays visible as inconclusive
    d = decide(_policy({"max_increase": 0.02, "on_inconclusive": "pass"}, waivers=waiver),
               {KEY: _value(STRADDLE)}, [G], TODAY)
    assert d.results[0].status is Status.INCONCLUSIVE and d.verdict is Verdict.PASS


@pytest.mark.parametrize("statistics, where, message", [
    ({"decide_on": "estimate", "on_inconclusive": "fail"}, "statistics.on_inconclusive",
     "decide_on: estimate compares the point estimate, so no check is inconclusive; use "
     "decide_on: interval to choose"),
    ({"decide_on": "significant"}, "checks[0].on_inconclusive",
     "decide_on: significant counts an inconclusive check as a pass; use decide_on: interval "
     "to choose"),
    ({"resamples": 0}, "checks[0].on_inconclusive",
     "decide_on: estimate compares the point estimate, so no check is inconclusive; use "
     "decide_on: interval to choose"),
])
def test_on_inconclusive_only_where_intervals_decide(statistics: dict[str, Any], where: str,
                                                    message: str) -> None:
    check = {"max_increase": 0.02}
    if where.startswith("checks"):
        check["on_inconclusive"] = "warn"  # type: ignore[assignment]
    with pytest.raises(PolicyError) as e:
        _policy(check, statistics)
    assert str(e.value) == f"p.yaml:1: {where}: {message}"


def test_default_rule_is_interval_and_estimate_without_intervals() -> None:
    assert _policy({"max_increase": 0.02}).statistics.mode == "interval"
    assert _policy({"max_increase": 0.02}).statistics.on_inconclusive == "warn"
    assert _policy({"max_increase": 0.02}, {"resamples": 0}).statistics.mode == "estimate"


# ----------------------------------------------------------------------------- at the bound


def _accuracy_change_of_exactly(count: int, rows: int) -> MetricValue:
    """A table where the student is wrong on ``count`` rows the teacher gets right: the
    accuracy change is −count/rows exactly (−60/3000 computes as −0.020000000000000018)."""
    cells = np.zeros((2, 2, 2, 2), dtype=np.int64)
    cells[0, 1, 1, 1], cells[0, 0, 0, 0] = rows // 4, rows // 4
    cells[1, 1, 1, 1], cells[1, 0, 0, 0] = rows // 4 - count, rows // 4
    cells[1, 1, 1, 0] = count  # teacher right, student wrong
    key = MetricKey("accuracy", None)
    return compute_values([key], {G: GroupingCounts(G, (("a",), ("b",)), cells)},
                          Settings(1, {}, 0.95, 0, 0))[key]


@pytest.mark.parametrize("decide_on", ["estimate", "interval", "significant", "conservative"])
def test_a_change_of_exactly_the_bound_passes(decide_on: str) -> None:
    v = _accuracy_change_of_exactly(60, 3000)
    # 0.98 − 1.0: the artefact the issue found (−60/3000 as a float is exactly −0.02)
    assert v.delta == -0.020000000000000018 and v.delta < -0.02
    point = Interval(v.delta, v.delta, 1.0)
    r = judge_bound("max_decrease", 0.02, v.delta, point, decide_on, 0.99)  # type: ignore[arg-type]
    assert r.outcome == "pass", r.text
    # an interval whose near end is exactly on the bound is not beyond it: inconclusive
    r = judge_bound("max_decrease", 0.02, v.delta, Interval(-0.03, v.delta, 1.0),
                    "interval", 0.99)
    assert r.outcome == "inconclusive", r.text


def test_the_tolerance_is_rounding_not_a_margin() -> None:
    """A value beyond its bound by 1e-9 (far above rounding) fails."""
    assert ON_BOUND <= 1e-12
    r = judge_bound("max_increase", 0.02, 0.02 + 1e-9, None, "estimate", 0.99)
    assert r.outcome == "fail"
    r = judge_bound("max", 0.2, 0.2 * (1 + 1e-15), None, "estimate", 0.99)
    assert r.outcome == "pass"


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize("upper, rule, expected", [
    # the interval rule: the change at which the whole interval clears the edge 80% of the
    # time: edge + (estimate − lo) + z(0.8) · se; the estimate rule: edge + z(0.8) · se; a
    # rule that fails inconclusive results: edge − (hi − estimate) + z(0.8) · se
    (True, "interval", 0.02 + 0.03 + 0.8416212335729143 * 0.01),
    (True, "estimate", 0.02 + 0.8416212335729143 * 0.01),
    (True, "fail", 0.02 - 0.02 + 0.8416212335729143 * 0.01),
    (False, "interval", -0.02 - 0.02 - 0.8416212335729143 * 0.01),
])
def test_detectable_change_by_hand(upper: bool, rule: str, expected: float) -> None:
    iv = Interval(0.0, 0.05, 1.0, 0.01)  # estimate 0.03: 0.03 below, 0.02 above
    edge = 0.02 if upper else -0.02
    assert detectable(edge, upper, 0.03, iv, rule) == pytest.approx(expected)  # type: ignore[arg-type]


def test_every_bound_says_what_it_detects_and_whether_that_resolves_it() -> None:
    [r] = decide(_policy({"max_increase": 0.02}), {KEY: _value(STRADDLE)}, [G], TODAY).results
    [b] = r.bounds
    # the interval (+0.01, +0.05) around +0.03 with se 0.01: 0.02 + 0.02 + 0.84 · 0.01
    assert b.detectable == pytest.approx(0.02 + 0.02 + 0.8416212335729143 * 0.01)
    assert b.resolved is False  # more than 2 × 0.02: a change of twice the bound is missed
    [r] = decide(_policy({"max_increase": 0.05}), {KEY: _value(STRADDLE)}, [G], TODAY).results
    assert r.bounds[0].resolved is True
    no_se = MetricValue(KEY, 0.1, 0.13, 0.03, 0.3, delta_interval=Interval(0.01, 0.05, 1.0))
    [r] = decide(_policy({"max_increase": 0.02}), {KEY: no_se}, [G], TODAY).results
    assert math.isnan(r.bounds[0].detectable) and r.bounds[0].resolved is None
