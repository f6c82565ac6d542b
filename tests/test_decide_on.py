"""decide_on × bound kind × where the interval lies: the truth table of gate.judge_bound,
and undefined resamples that make a check undefined instead of narrowing its interval.

Expected outcomes are written from DESIGN.md's definitions, not from the code:
``estimate`` compares the point estimate; the interval modes pass when the whole interval
lies within the bound, fail when the whole interval lies beyond it, and are inconclusive
when it straddles the bound (DESIGN.md, "Outcomes"); what inconclusive does is the check's
business (``significant``: a pass, ``conservative``: a fail, ``interval``: on_inconclusive),
tested in tests/test_inconclusive.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import MetricKey, MetricValue
from fairgate.core.gate import Status, evaluate_check, judge_bound
from fairgate.core.stats import Interval
from fairgate.policy import BOUNDS, Bound, Check

# For each bound: the quantity it reads, its edge for a limit L, and whether "beyond" is
# above the edge (ceilings) or below it (floors).
LIMIT = 0.1
EDGE: dict[Bound, tuple[str, float, bool]] = {
    "max": ("student", LIMIT, True),                     # student <= L
    "min": ("student", LIMIT, False),                    # student >= L
    "max_increase": ("delta", LIMIT, True),              # student − teacher <= L
    "max_decrease": ("delta", -LIMIT, False),            # student − teacher >= −L
    "max_relative_increase": ("relative", LIMIT, True),  # (s − t)/|t| <= L
    "max_relative_decrease": ("relative", -LIMIT, False),
}

# Positions in "badness" units u: the value is edge + u for ceilings, edge − u for floors,
# so u > 0 is beyond the bound. (estimate u, interval lo u, interval hi u)
POSITIONS = {
    "inside, estimate inside": (-0.05, -0.08, -0.02),
    "inside, estimate outside": (0.01, -0.08, -0.02),      # a skewed interval
    "straddling, estimate inside": (-0.01, -0.04, 0.03),
    "straddling, estimate outside": (0.01, -0.04, 0.03),
    "beyond, estimate outside": (0.05, 0.02, 0.08),
    "beyond, estimate inside": (-0.01, 0.02, 0.08),        # a skewed interval
}

# (position, decide_on) -> outcome, from the definitions
INTERVAL_MODES = ("interval", "significant", "conservative")
EXPECTED = {
    ("inside, estimate inside", "estimate"): "pass",
    ("inside, estimate inside", "significant"): "pass",
    ("inside, estimate inside", "conservative"): "pass",
    ("inside, estimate inside", "interval"): "pass",
    ("inside, estimate outside", "estimate"): "fail",
    ("inside, estimate outside", "significant"): "pass",
    ("inside, estimate outside", "conservative"): "pass",
    ("inside, estimate outside", "interval"): "pass",
    ("straddling, estimate inside", "estimate"): "pass",
    ("straddling, estimate inside", "significant"): "inconclusive",
    ("straddling, estimate inside", "conservative"): "inconclusive",
    ("straddling, estimate inside", "interval"): "inconclusive",
    ("straddling, estimate outside", "estimate"): "fail",
    ("straddling, estimate outside", "significant"): "inconclusive",
    ("straddling, estimate outside", "conservative"): "inconclusive",
    ("straddling, estimate outside", "interval"): "inconclusive",
    ("beyond, estimate outside", "estimate"): "fail",
    ("beyond, estimate outside", "significant"): "fail",
    ("beyond, estimate outside", "conservative"): "fail",
    ("beyond, estimate outside", "interval"): "fail",
    ("beyond, estimate inside", "estimate"): "pass",
    ("beyond, estimate inside", "significant"): "fail",
    ("beyond, estimate inside", "conservative"): "fail",
    ("beyond, estimate inside", "interval"): "fail",
}


def _place(bound: Bound, u: float) -> float:
    _, edge, ceiling = EDGE[bound]
    return edge + u if ceiling else edge - u


def _interval(bound: Bound, lo_u: float, hi_u: float, defined: float = 1.0) -> Interval:
    a, b = _place(bound, lo_u), _place(bound, hi_u)
    return Interval(min(a, b), max(a, b), defined)


@pytest.mark.parametrize("decide_on", ["estimate", *INTERVAL_MODES])
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("position", list(POSITIONS))
def test_truth_table(bound: Bound, decide_on: str, position: str) -> None:
    est_u, lo_u, hi_u = POSITIONS[position]
    r = judge_bound(bound, LIMIT, _place(bound, est_u), _interval(bound, lo_u, hi_u),
                    decide_on, min_defined=0.99, teacher=0.4)  # type: ignore[arg-type]
    assert r.outcome == EXPECTED[(position, decide_on)], r.text
    assert r.quantity == EDGE[bound][0]


def test_the_table_is_complete() -> None:
    assert set(EXPECTED) == {(p, d) for p in POSITIONS for d in ("estimate", *INTERVAL_MODES)}


@pytest.mark.parametrize("decide_on", ["estimate", *INTERVAL_MODES])
@pytest.mark.parametrize("bound", BOUNDS)
def test_exactly_at_the_bound_passes(bound: Bound, decide_on: str) -> None:
    """A bound is inclusive: max_increase 0.1 allows +0.1."""
    edge = _place(bound, 0.0)
    r = judge_bound(bound, LIMIT, edge, Interval(edge, edge, 1.0), decide_on,  # type: ignore[arg-type]
                    min_defined=0.99, teacher=0.4)
    assert r.outcome == "pass", r.text


@pytest.mark.parametrize("decide_on", ["estimate", *INTERVAL_MODES])
@pytest.mark.parametrize("bound", BOUNDS)
def test_nan_estimate_is_undefined(bound: Bound, decide_on: str) -> None:
    r = judge_bound(bound, LIMIT, math.nan, Interval(-1.0, 1.0, 1.0), decide_on,  # type: ignore[arg-type]
                    min_defined=0.99, teacher=0.4)
    assert r.outcome == "undefined"


@pytest.mark.parametrize("decide_on", INTERVAL_MODES)
@pytest.mark.parametrize("bound", BOUNDS)
def test_too_few_defined_resamples_is_undefined(bound: Bound, decide_on: str) -> None:
    # an interval that would pass, and one that would fail: neither may be used
    for lo_u, hi_u in ((-0.08, -0.02), (0.02, 0.08)):
        r = judge_bound(bound, LIMIT, _place(bound, -0.05),
                        _interval(bound, lo_u, hi_u, defined=0.98), decide_on,  # type: ignore[arg-type]
                        min_defined=0.99, teacher=0.4)
        assert r.outcome == "undefined"
        assert "98.0% defined resamples" in r.text
    r = judge_bound(bound, LIMIT, _place(bound, -0.05), None, decide_on,  # type: ignore[arg-type]
                    min_defined=0.99, teacher=0.4)
    assert r.outcome == "undefined"
    # the share exactly at min_defined is enough
    r = judge_bound(bound, LIMIT, _place(bound, -0.05),
                    _interval(bound, -0.08, -0.02, defined=0.99), decide_on,  # type: ignore[arg-type]
                    min_defined=0.99, teacher=0.4)
    assert r.outcome == "pass"


@pytest.mark.parametrize("bound", BOUNDS)
def test_estimate_does_not_need_the_interval(bound: Bound) -> None:
    r = judge_bound(bound, LIMIT, _place(bound, 0.05), None, "estimate", 0.99, teacher=0.4)
    assert r.outcome == "fail"


@pytest.mark.parametrize("decide_on", ["estimate", *INTERVAL_MODES])
@pytest.mark.parametrize("bound", ["max_relative_increase", "max_relative_decrease"])
def test_teacher_zero_skips_relative_bounds(bound: Bound, decide_on: str) -> None:
    r = judge_bound(bound, LIMIT, math.nan, None, decide_on, 0.99, teacher=0.0)  # type: ignore[arg-type]
    assert r.outcome == "skipped"
    assert "teacher's value is 0" in r.text


def _value(teacher: float, student: float, interval: Interval | None = None) -> MetricValue:
    delta = student - teacher
    relative = delta / abs(teacher) if teacher else math.nan
    return MetricValue(
        key=MetricKey("demographic_parity_difference", Grouping(("g",))), teacher=teacher,
        student=student, delta=delta, relative=relative, delta_interval=interval,
        student_interval=interval, teacher_interval=interval, relative_interval=None,
    )


def _check(**bounds: float) -> Check:
    return Check.model_validate({"id": "c", "metric": "demographic_parity_difference", **bounds})


def test_only_a_relative_bound_on_a_zero_teacher_is_undefined() -> None:
    r = evaluate_check(_check(max_relative_increase=0.2), _value(0.0, 0.05), "estimate", 0.99)
    assert r.status is Status.UNDEFINED and r.blocking
    assert [b.outcome for b in r.bounds] == ["skipped"]
    assert "teacher's value is 0" in r.reason


def test_a_zero_teacher_falls_back_to_the_absolute_bounds() -> None:
    check = _check(max_increase=0.01, max_relative_increase=0.2)
    r = evaluate_check(check, _value(0.0, 0.05), "estimate", 0.99)
    assert r.status is Status.FAIL
    assert [b.outcome for b in r.bounds] == ["fail", "skipped"]
    r = evaluate_check(check, _value(0.0, 0.005), "estimate", 0.99)
    assert r.status is Status.PASS


def test_an_undefined_interval_blocks_the_check() -> None:
    check = _check(max_increase=0.05)
    r = evaluate_check(check, _value(0.1, 0.11, Interval(0.0, 0.02, 0.9)), "significant", 0.99)
    assert r.status is Status.UNDEFINED and r.blocking
    warn = Check.model_validate({"id": "c", "metric": "demographic_parity_difference",
                                 "max_increase": 0.05, "on_undefined": "warn"})
    r = evaluate_check(warn, _value(0.1, 0.11, Interval(0.0, 0.02, 0.9)), "significant", 0.99)
    assert r.status is Status.UNDEFINED and not r.blocking


# ----------------------------------------------------------------------------- through the CLI


@pytest.fixture
def rare_positives(tmp_path: Path) -> Path:
    """Groups A and B of 1,000 rows; group C of 200 rows with only 2 positive labels."""
    rng = np.random.default_rng(8)
    sizes = {"A": 1000, "B": 1000, "C": 200}
    frames = []
    for name, n in sizes.items():
        y = (rng.random(n) < 0.4).astype(int) if name != "C" else np.r_[1, 1, np.zeros(n - 2, int)]
        t = np.where(rng.random(n) < 0.85, y, 1 - y)
        s = np.where(rng.random(n) < 0.95, t, 1 - t)
        if name == "C":
            t[:2], s[:2] = 1, 1  # both positives found by both models
        frames.append(pd.DataFrame({"grp": name, "y": y, "t": t.astype(float),
                                    "s": s.astype(float)}))
    path = tmp_path / "rare.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path)
    return path


def _rare_policy(decide_on: str, min_defined: float = 0.99) -> str:
    return f"""\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [grp]
  min_group_size: 30
checks:
  - id: eo
    metric: equal_opportunity_difference
    max_increase: 0.5
statistics:
  resamples: 2000
  seed: 3
  decide_on: {decide_on}
  min_defined: {min_defined}
"""


def test_resamples_without_positives_are_counted_and_block(rare_positives, write_policy,
                                                           run_cli) -> None:
    args = ("--data", rare_positives, "--teacher-scores", "t", "--student-scores", "s",
            "--no-mlflow")
    r = run_cli("check", "--policy", write_policy(_rare_policy("significant")), *args)
    assert r.exit_code == 1, r.stdout + r.stderr
    [res] = r.report["results"]
    assert res["status"] == "undefined" and res["blocking"]
    assert res["teacher"] is not None and res["delta"] is not None  # defined at the point
    share = res["interval"]["defined_share"]
    assert 0 < share < 1
    # P(no resampled row falls in C's 2 positive cells) = (1 − 2/N)^N, N = 2,200 rows
    n = 2200
    expected = 1 - (1 - 2 / n) ** n
    se = math.sqrt(expected * (1 - expected) / 2000)
    assert abs(share - expected) < 4.5 * se, (share, expected)
    assert "defined resamples" in res["reason"]

    # the same counts decided on the estimate: the interval and its share are still reported
    r = run_cli("check", "--policy", write_policy(_rare_policy("estimate"), "estimate.yaml"),
                *args, "--out", r.out.parent / "estimate")
    assert r.exit_code == 0, r.stdout + r.stderr
    [res] = r.report["results"]
    assert res["status"] == "pass"
    assert res["interval"]["defined_share"] == share

    # the share is what blocked: accepting 80% defined resamples lets the interval decide; it
    # straddles the bound, and decide_on: significant counts that as a pass
    r = run_cli("check", "--policy",
                write_policy(_rare_policy("significant", 0.8), "lenient.yaml"), *args,
                "--out", r.out.parent / "lenient")
    assert r.exit_code == 0, r.stdout + r.stderr
    [res] = r.report["results"]
    assert (res["status"], res["on_inconclusive"], r.report["verdict"]) == (
        "inconclusive", "pass", "pass")
