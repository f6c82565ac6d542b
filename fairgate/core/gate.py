"""The decision: (policy, values) -> per-check results -> verdict. Pure, no I/O.

Undefined never passes: a NaN estimate or an interval that rests on too few defined
resamples gives status ``undefined``, which blocks the release unless the check says
``on_undefined: warn``. No NaN ever reaches a ``<`` or ``>``.

Inconclusive is its own outcome: under ``decide_on: interval`` a bound passes when the
whole interval is within it, fails when the whole interval is beyond it, and is
inconclusive when the interval straddles it; ``on_inconclusive`` (per check, else the
policy's) says whether that passes, warns or fails the gate. Every status says what it is,
so an inconclusive check never passes silently unless the policy asks for exactly that.

A value on its bound passes (bounds are inclusive), and "on" allows for floating point:
within ON_BOUND of the limit, relative to max(1, |limit|). −60/3000 is computed as
−0.020000000000000018; rounding errors are ~1e-16, and two distinct values built from
counts differ by more than 1e-12 unless their denominators multiply past 10^12.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import MetricKey, MetricValue
from fairgate.core.metrics import CATALOGUE, TOP1_METRICS, Metric
from fairgate.core.stats import Interval
from fairgate.policy import BOUNDS, Bound, Check, Policy, Waiver
from fairgate.policy.spec import waived_groupings

DecideOn = Literal["estimate", "interval", "significant", "conservative"]
OnInconclusive = Literal["pass", "warn", "fail"]
Outcome = Literal["pass", "fail", "inconclusive", "undefined", "skipped"]

#: Tolerance of "on the bound", relative to max(1, |limit|): floating-point rounding of a
#: value built from counts, never a difference a bound is meant to draw.
ON_BOUND = 1e-12
#: Power the detectable change is quoted at, and its normal quantile.
POWER = 0.8
_Z_POWER = 0.8416212335729143  # scipy.special.ndtri(POWER), without importing scipy here


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    INCONCLUSIVE = "inconclusive"
    UNDEFINED = "undefined"
    WAIVED = "waived"

    def __str__(self) -> str:
        return self.value


class Verdict(str, Enum):
    PASS = "pass"  # every check passed
    WARN = "warn"  # passes, with warnings, waived or non-blocking undefined checks
    FAIL = "fail"  # a blocking check failed or is undefined

    def __str__(self) -> str:
        return self.value


_QUANTITY: dict[Bound, tuple[str, bool, int]] = {
    # bound: (quantity, is an upper bound, sign applied to the limit)
    "max": ("student", True, 1),
    "min": ("student", False, 1),
    "max_increase": ("delta", True, 1),
    "max_decrease": ("delta", False, -1),
    "max_relative_increase": ("relative", True, 1),
    "max_relative_decrease": ("relative", False, -1),
}
_NAME = {"student": "student", "delta": "student − teacher", "relative": "relative change"}


@dataclass(frozen=True)
class BoundResult:
    bound: Bound
    limit: float
    quantity: str  # student | delta | relative
    estimate: float
    interval: Interval | None
    outcome: Outcome
    text: str
    # the value of the quantity this audit detects with POWER probability under the
    # check's rule (NaN: no interval or no standard error), and whether that lies within
    # the bound's own size beyond it (a change of twice max_increase is detected)
    detectable: float = math.nan
    resolved: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    check: Check
    key: MetricKey
    value: MetricValue
    status: Status
    blocking: bool
    bounds: tuple[BoundResult, ...]
    reason: str
    waiver: Waiver | None = None
    on_inconclusive: OnInconclusive | None = None  # what inconclusive did (None: n/a)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    results: tuple[CheckResult, ...]
    expired_waivers: tuple[Waiver, ...]

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict is Verdict.FAIL else 0


def _num(x: float) -> str:
    return f"{x:+.4g}" if x != 0 else "0"


def beyond(value: float, edge: float, upper: bool) -> bool:
    """``value`` lies beyond ``edge`` (above a ceiling, below a floor) by more than
    rounding: a value on its bound is within it. Never called with NaN."""
    slack = ON_BOUND * max(1.0, abs(edge))
    return value > edge + slack if upper else value < edge - slack


def detectable(edge: float, upper: bool, estimate: float, interval: Interval | None,
               rule: Literal["estimate", "interval", "fail"]) -> float:
    """The value this audit detects beyond ``edge`` with POWER probability.

    Normal approximation around the estimate with the interval's standard error: the
    estimate rule detects when the estimate is beyond the edge; the interval rule when the
    whole interval is (so the interval's near half-width is added); a rule that fails
    inconclusive results too, when any of the interval is (its far half-width is taken
    off).
    """
    if interval is None or not math.isfinite(interval.se) or math.isnan(estimate):
        return math.nan
    step = _Z_POWER * interval.se
    if rule == "interval":
        step += (estimate - interval.lo) if upper else (interval.hi - estimate)
    elif rule == "fail":
        step -= (interval.hi - estimate) if upper else (estimate - interval.lo)
    return edge + step if upper else edge - step


def judge_bound(
    bound: Bound,
    limit: float,
    estimate: float,
    interval: Interval | None,
    decide_on: DecideOn,
    min_defined: float,
    teacher: float = math.nan,
    on_inconclusive: OnInconclusive = "warn",
) -> BoundResult:
    """Compare one quantity with one bound under ``decide_on``; NaN is never compared.

    Outcomes: pass, fail, inconclusive (an interval straddles the bound), undefined, or
    skipped (a relative bound on a teacher value of 0). ``decide_on`` significant and
    conservative fix ``on_inconclusive`` (pass and fail).
    """
    on_inconclusive = _FIXED.get(decide_on, on_inconclusive)
    quantity, upper, sign = _QUANTITY[bound]
    edge = sign * limit
    name = _NAME[quantity]

    def result(outcome: Outcome, text: str) -> BoundResult:
        rule: Literal["estimate", "interval", "fail"] = (
            "estimate" if decide_on == "estimate" else
            "fail" if on_inconclusive == "fail" else "interval")
        found = detectable(edge, upper, estimate, interval, rule)
        resolved = None
        if not math.isnan(found):
            resolved = abs(found - edge) <= abs(limit) + ON_BOUND * max(1.0, abs(limit))
        return BoundResult(bound, limit, quantity, estimate, interval, outcome, text, found,
                           resolved)

    if quantity == "relative" and teacher == 0:
        return result("skipped", f"{bound} not applied: the teacher's value is 0, so the "
                                 "relative change is undefined (absolute bounds only)")
    if math.isnan(estimate):
        return result("undefined", f"{name} is undefined")
    shown = f"{name} = {_num(estimate)}"
    rule = f"{bound} {limit:g}" if sign > 0 else f"{_num(edge)} ({bound} {limit:g})"
    if decide_on == "estimate":
        if beyond(estimate, edge, upper):
            return result("fail", f"{shown} {'exceeds' if upper else 'falls below'} {rule}")
        return result("pass", f"{shown} within {rule}")
    if interval is None or interval.defined < min_defined:
        share = 0.0 if interval is None else interval.defined
        return result("undefined", f"{name} interval rests on {share:.1%} defined resamples "
                                   f"(needs {min_defined:.0%})")
    lo, hi = interval.lo, interval.hi
    shown += f" [{_num(lo)}, {_num(hi)}]"
    near, far = (lo, hi) if upper else (hi, lo)
    if beyond(near, edge, upper):
        return result("fail", f"{shown} {'exceeds' if upper else 'falls below'} {rule} with "
                              "the whole interval")
    if beyond(far, edge, upper):
        counted = {"pass": "counted as a pass", "warn": "a warning",
                   "fail": "counted as a fail"}[on_inconclusive]
        return result("inconclusive", f"{shown} straddles {rule}: inconclusive ({counted}"
                                      f"{_RULE_NOTE.get(decide_on, '')})")
    return result("pass", f"{shown} within {rule}")


_FIXED: dict[str, OnInconclusive] = {"significant": "pass", "conservative": "fail"}
_RULE_NOTE = {"significant": ", decide_on: significant", "conservative": ", decide_on: conservative"}


def evaluate_check(
    check: Check, value: MetricValue, decide_on: DecideOn, min_defined: float,
    on_inconclusive: OnInconclusive = "warn",
) -> CheckResult:
    """The result of one check on one grouping.

    A failed bound fails the check; then an undefined one makes it undefined; then an
    inconclusive one makes it inconclusive, blocking when ``on_inconclusive`` is fail (and
    the check's severity is fail).
    """
    on_inconclusive = _FIXED.get(decide_on, on_inconclusive)
    outcomes = []
    for bound, limit in check.bounds().items():
        quantity = _QUANTITY[bound][0]
        estimate = getattr(value, quantity)
        interval = getattr(value, f"{quantity}_interval")
        outcomes.append(judge_bound(bound, limit, estimate, interval, decide_on, min_defined,
                                    value.teacher, on_inconclusive))
    failed = [b for b in outcomes if b.outcome == "fail"]
    undefined = [b for b in outcomes if b.outcome == "undefined"]
    unsure = [b for b in outcomes if b.outcome == "inconclusive"]
    applied = [b for b in outcomes if b.outcome != "skipped"]
    used: OnInconclusive | None = None
    if failed:
        status, blocking = Status.FAIL, check.severity == "fail"
        reason = "; ".join(b.text for b in failed)
        if not blocking:
            status = Status.WARN
    elif undefined or not applied:
        status = Status.UNDEFINED
        blocking = check.severity == "fail" and check.on_undefined == "fail"
        why = value.reason
        texts = [b.text for b in undefined] or [b.text for b in outcomes]
        reason = "; ".join(texts) + (f": {why}" if why else "")
    elif unsure:
        status, used = Status.INCONCLUSIVE, on_inconclusive
        blocking = on_inconclusive == "fail" and check.severity == "fail"
        reason = "; ".join(b.text for b in unsure)
    else:
        status, blocking = Status.PASS, False
        reason = "; ".join(b.text for b in outcomes)
    return CheckResult(check, value.key, value, status, blocking, tuple(outcomes), reason,
                       on_inconclusive=used)


def metric_groupings(policy: Policy, metric: Metric, groupings: Sequence[Grouping]) -> list[Grouping]:
    """The tables a grouping metric is computed on.

    Binary models: every policy grouping. Multi-class: accuracy metrics on the top-1
    tables, the others on the one-vs-rest tables of the positive classes. Tables fairgate
    derives (per class, bias alignment) are read by the metrics made for them only.
    """
    top1 = policy.multiclass is None or metric.name in TOP1_METRICS
    return [g for g in groupings if not g.derived and (g.positive is None) == top1]


def check_keys(policy: Policy, groupings: Sequence[Grouping]) -> list[tuple[Check, MetricKey]]:
    """Expand each check over the groupings it applies to."""
    out = []
    for check in policy.checks:
        metric = CATALOGUE[check.metric]
        if metric.scope == "overall":
            out.append((check, MetricKey(check.metric, None, check.alpha)))
            continue
        targets = metric_groupings(policy, metric, groupings)
        if check.on is not None:
            wanted = [(g,) if isinstance(g, str) else tuple(g) for g in check.on]
            targets = [g for w in wanted for g in targets if g.attributes == w]
        out.extend((check, MetricKey(check.metric, g, check.alpha)) for g in targets)
    return out


def _waiver_for(result: CheckResult, waivers: Sequence[Waiver]) -> Waiver | None:
    for w in waivers:
        if w.check != result.check.id:
            continue
        if w.grouping is not None:
            wanted = waived_groupings(w.grouping)
            if result.key.grouping is None or result.key.grouping.attributes not in wanted:
                continue
        return w
    return None


def decide(
    policy: Policy, values: dict[MetricKey, MetricValue], groupings: Sequence[Grouping],
    today: dt.date,
) -> Decision:
    """Evaluate every check on every grouping it names, apply waivers, reach a verdict."""
    st = policy.statistics
    active = [w for w in policy.waivers if w.expires >= today]
    expired = tuple(w for w in policy.waivers if w.expires < today)
    results = []
    for check, key in check_keys(policy, groupings):
        # a paired test is already a significance decision: compare its estimate
        how = "estimate" if CATALOGUE[check.metric].paired else st.mode
        r = evaluate_check(check, values[key], how, st.min_defined, st.inconclusive_for(check))
        if r.status in (Status.FAIL, Status.UNDEFINED, Status.WARN, Status.INCONCLUSIVE):
            w = _waiver_for(r, active)
            if w is not None and (r.status is not Status.INCONCLUSIVE or r.on_inconclusive != "pass"):
                r = CheckResult(r.check, r.key, r.value, Status.WAIVED, False, r.bounds,
                                f"waived until {w.expires} by {w.owner}: {w.reason} "
                                f"(was {r.status}: {r.reason})", w, r.on_inconclusive)
        results.append(r)
    results.sort(key=lambda r: (not r.blocking, ORDER[r.status]))
    if any(r.blocking for r in results):
        verdict = Verdict.FAIL
    elif any(not passes(r) for r in results) or expired:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.PASS
    return Decision(verdict, tuple(results), expired)


#: Reports list checks in this order (blocking ones first).
ORDER = {Status.FAIL: 0, Status.UNDEFINED: 1, Status.INCONCLUSIVE: 2, Status.WARN: 3,
         Status.WAIVED: 4, Status.PASS: 5}


def passes(r: CheckResult) -> bool:
    """The check counts as passed for the verdict: it passed, or it is inconclusive and the
    policy says inconclusive passes (on_inconclusive: pass, or decide_on: significant)."""
    return r.status is Status.PASS or (
        r.status is Status.INCONCLUSIVE and r.on_inconclusive == "pass")


__all__ = ["BOUNDS", "ORDER", "BoundResult", "CheckResult", "Decision", "Status", "Verdict",
           "beyond", "decide", "detectable", "evaluate_check", "judge_bound", "passes"]
