"""The decision: (policy, values) -> per-check results -> verdict. Pure, no I/O.

Undefined never passes: a NaN estimate or an interval that rests on too few defined
resamples gives status ``undefined``, which blocks the release unless the check says
``on_undefined: warn``. No NaN ever reaches a ``<`` or ``>``.
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

DecideOn = Literal["estimate", "significant", "conservative"]
Outcome = Literal["pass", "fail", "undefined", "skipped"]


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
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


def judge_bound(
    bound: Bound,
    limit: float,
    estimate: float,
    interval: Interval | None,
    decide_on: DecideOn,
    min_defined: float,
    teacher: float = math.nan,
) -> BoundResult:
    """Compare one quantity with one bound under ``decide_on``; NaN is never compared."""
    quantity, upper, sign = _QUANTITY[bound]
    edge = sign * limit
    name = _NAME[quantity]

    def result(outcome: Outcome, text: str) -> BoundResult:
        return BoundResult(bound, limit, quantity, estimate, interval, outcome, text)

    if quantity == "relative" and teacher == 0:
        return result("skipped", f"{bound} not applied: the teacher's value is 0, so the "
                                 "relative change is undefined (absolute bounds only)")
    if math.isnan(estimate):
        return result("undefined", f"{name} is undefined")
    shown = f"{name} = {_num(estimate)}"
    if decide_on == "estimate":
        beyond = estimate > edge if upper else estimate < edge
        how = ""
    else:
        if interval is None or interval.defined < min_defined:
            share = 0.0 if interval is None else interval.defined
            return result("undefined", f"{name} interval rests on {share:.1%} defined resamples "
                                       f"(needs {min_defined:.0%})")
        lo, hi = interval.lo, interval.hi
        shown += f" [{_num(lo)}, {_num(hi)}]"
        if decide_on == "significant":
            beyond = lo > edge if upper else hi < edge
            how = " with the whole interval" if beyond else ""
        else:
            beyond = hi > edge if upper else lo < edge
            how = " within its interval" if beyond else ""
    rule = f"{bound} {limit:g}" if sign > 0 else f"{_num(edge)} ({bound} {limit:g})"
    if beyond:
        return result("fail", f"{shown} {'exceeds' if upper else 'falls below'} {rule}{how}")
    return result("pass", f"{shown} within {rule}")


def evaluate_check(
    check: Check, value: MetricValue, decide_on: DecideOn, min_defined: float
) -> CheckResult:
    """The result of one check on one grouping."""
    outcomes = []
    for bound, limit in check.bounds().items():
        quantity = _QUANTITY[bound][0]
        estimate = getattr(value, quantity)
        interval = getattr(value, f"{quantity}_interval")
        outcomes.append(
            judge_bound(bound, limit, estimate, interval, decide_on, min_defined, value.teacher)
        )
    failed = [b for b in outcomes if b.outcome == "fail"]
    undefined = [b for b in outcomes if b.outcome == "undefined"]
    applied = [b for b in outcomes if b.outcome != "skipped"]
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
    else:
        status, blocking = Status.PASS, False
        reason = "; ".join(b.text for b in outcomes)
    return CheckResult(check, value.key, value, status, blocking, tuple(outcomes), reason)


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
            wanted = (w.grouping,) if isinstance(w.grouping, str) else tuple(w.grouping)
            if result.key.grouping is None or result.key.grouping.attributes != wanted:
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
        how = "estimate" if CATALOGUE[check.metric].paired else st.decide_on
        r = evaluate_check(check, values[key], how, st.min_defined)
        if r.status in (Status.FAIL, Status.UNDEFINED, Status.WARN):
            w = _waiver_for(r, active)
            if w is not None:
                r = CheckResult(r.check, r.key, r.value, Status.WAIVED, False, r.bounds,
                                f"waived until {w.expires} by {w.owner}: {w.reason} "
                                f"(was {r.status}: {r.reason})", w)
        results.append(r)
    order = {Status.FAIL: 0, Status.UNDEFINED: 1, Status.WARN: 2, Status.WAIVED: 3, Status.PASS: 4}
    results.sort(key=lambda r: (not r.blocking, order[r.status]))
    if any(r.blocking for r in results):
        verdict = Verdict.FAIL
    elif any(r.status is not Status.PASS for r in results) or expired:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.PASS
    return Decision(verdict, tuple(results), expired)


__all__ = ["BOUNDS", "BoundResult", "CheckResult", "Decision", "Status", "Verdict", "decide",
           "evaluate_check", "judge_bound"]
