"""`fairgate plan`: how many rows an audit needs for each check's bound to mean something.

A bound is resolved when the gate, at this audit size, detects a change of twice the bound
(for ``max_increase`` b: a change of 2b) with 80% power while an unchanged student fails
at most 5% of the time. Under the policy's rule that needs the standard error se of the
checked quantity to satisfy ``k · se <= |limit|``, with

- ``decide_on: interval`` (inconclusive passes or warns), and ``significant``:
  k = z(1 − γ) + z(0.8), γ = (α − β)/2 the one-sided level of the uniform intervals (an
  unchanged student then fails at most γ of the time at any size);
- inconclusive counted as a fail (``on_inconclusive: fail``, ``conservative``):
  k = z(1 − γ) + z(0.95), so an unchanged student's whole interval stays within the bound
  95% of the time (a change of twice the bound is then detected anyway);
- ``estimate``: k = z(0.95), for the same 5% (detection of 2b needs only z(0.8)).

se falls as 1/√rows, so the audit needs ``(k · se / |limit|)²`` times its rows, in the same
group mix. se comes from the counts by the delta method (fairgate.core.intervals) at the
pieces that attain each max now; at ties the gate's intervals are wider than that, so the
estimate is a floor there. The student's disagreement with the teacher drives the se of a
change: from a report, it is the student's own (its joint counts); from the teacher alone,
``--disagreement`` (default 5% of the rows of every group and label, split so that every
rate stays the teacher's).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import Settings, context_for
from fairgate.core.gate import _QUANTITY, check_keys
from fairgate.core.intervals import BETA_SHARE, SHAPES, WHOLE, Plan
from fairgate.core.metrics import CATALOGUE
from fairgate.errors import InputError, UsageError
from fairgate.policy import Policy

DEFAULT_DISAGREEMENT = 0.05
POWER = 0.8
FALSE_FAIL = 0.05


@dataclass(frozen=True)
class PlanRow:
    """One bound of one check on one grouping."""

    check: str
    metric: str
    grouping: Grouping | None
    bound: str
    limit: float
    se: float  # of the checked quantity at this audit's size; NaN: no estimate
    detectable: float  # the value detected with 80% power now (edge ± (z(1−γ) + z(0.8)) se)
    factor: float  # rows needed / rows now; NaN: no estimate
    rows: int
    smallest: int  # rows of the smallest gated group the metric reads
    note: str = ""

    @property
    def resolved(self) -> bool | None:
        return None if math.isnan(self.factor) else self.factor <= 1.0

    @property
    def rows_needed(self) -> int | None:
        return None if math.isnan(self.factor) else math.ceil(self.rows * max(self.factor, 0.0))


@dataclass(frozen=True)
class PlanResult:
    rows: list[PlanRow]
    audit_rows: int
    source: str  # what the student's disagreement came from
    rule: str  # the decision rule the sizes are for

    @property
    def exit_code(self) -> int:
        """0 when every bound with an estimate is resolved at this size, 1 otherwise."""
        return 1 if any(r.resolved is False for r in self.rows) else 0


def multiplier(policy: Policy, on_inconclusive: str) -> tuple[float, str]:
    """k of the module docstring for the policy's rule, and the rule's name."""
    st = policy.statistics
    alpha = 1.0 - st.confidence
    z_gamma = float(ndtri(1.0 - (alpha - BETA_SHARE * alpha) / 2))
    if st.mode == "estimate":
        return float(ndtri(1 - FALSE_FAIL)), "estimate"
    if on_inconclusive == "fail":
        return z_gamma + float(ndtri(1 - FALSE_FAIL)), "interval, inconclusive fails"
    return z_gamma + float(ndtri(POWER)), "interval"


def assumed_student(cells: np.ndarray, disagreement: float) -> np.ndarray:
    """Expected joint counts of a student that disagrees with the teacher on
    ``disagreement`` of the rows of every group and label and keeps every rate: it turns
    a share q/(2r) of the teacher's positives negative and q/(2(1 − r)) of its negatives
    positive, r the teacher's positive share there (capped so that no share exceeds 1)."""
    teacher = cells.sum(axis=3).astype(np.float64)  # [G, y, ŷt]
    out = np.zeros(cells.shape, dtype=np.float64)
    for yt in (0, 1):
        n = teacher[:, :, yt]
        total = teacher.sum(axis=2)
        share = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
        flip = np.minimum(1.0, np.divide(disagreement / 2, share, out=np.zeros_like(n),
                                         where=share > 0))
        out[:, :, yt, 1 - yt] = n * flip
        out[:, :, yt, yt] = n * (1 - flip)
    return out


def plan_counts(policy: Policy, counts: dict[Grouping, GroupingCounts], rows: int,
                source: str) -> PlanResult:
    """Plan rows for every bound of every check, from joint counts (student included)."""
    st = policy.statistics
    settings = Settings(policy.audit.min_group_size, dict(policy.audit.reference_groups),
                        st.confidence, 0, st.seed)
    groupings = list(counts)
    out: list[PlanRow] = []
    rule = ""
    for check, key in check_keys(policy, groupings):
        k, rule = multiplier(policy, st.inconclusive_for(check))
        metric = CATALOGUE[check.metric]
        gc = counts[key.grouping] if key.grouping is not None else next(iter(counts.values()))
        ses, smallest, note = _standard_errors(metric.name, gc, settings, key.grouping is None)
        for bound, limit in check.bounds().items():
            quantity, upper, sign = _QUANTITY[bound]
            edge = sign * limit
            se = {"student": ses[1], "delta": ses[2]}.get(quantity, math.nan)
            why = note
            if quantity == "relative":
                teacher = ses[3]
                se = ses[2] / abs(teacher) if teacher else math.nan
                why = why or ("the teacher's value is 0: a relative change is undefined"
                              if not teacher else "")
            step = (float(ndtri(1 - (1 - st.confidence) * (1 - BETA_SHARE) / 2))
                    + float(ndtri(POWER))) * se
            found = edge + step if upper else edge - step
            factor = (k * se / abs(limit)) ** 2 if limit else (math.inf if se > 0 else math.nan)
            out.append(PlanRow(check.id, metric.name, key.grouping, bound, limit, se, found,
                               factor if math.isfinite(se) else math.nan, rows, smallest,
                               why if not math.isfinite(se) else ""))
    return PlanResult(out, rows, source, rule)


def _standard_errors(name: str, gc: GroupingCounts, settings: Settings, overall: bool
                     ) -> tuple[tuple[float, float, float, float], int, str]:
    """(teacher se, student se, change se, teacher value), the smallest gated group, and a
    note when there is no estimate."""
    nan4 = (math.nan, math.nan, math.nan, math.nan)
    ctx = context_for(gc, settings)
    smallest = int(gc.sizes[ctx.gated].min()) if ctx.gated.any() else 0
    metric = CATALOGUE[name]
    if overall:
        shape = WHOLE.get(name)
        ctx = type(ctx)(np.ones(len(gc.sizes), bool), ctx.reference, ctx.alpha, ctx.level)
        smallest = int(gc.sizes.sum())
    else:
        shape = SHAPES.get(name)
    if shape is None or metric.paired or metric.derived is not None:
        return nan4, smallest, ("no size estimate for this metric (it is not a rate, a gap or "
                                "a worst group)")
    teacher = float(metric.compute(GroupingCounts.teacher(gc.cells), ctx))
    if math.isnan(teacher):
        return nan4, smallest, "undefined on this audit set"
    plan = Plan(shape, gc.cells, ctx, settings.confidence, metric.lo, metric.hi)
    if not plan.ok:
        return nan4, smallest, "too many indistinguishable groups for an estimate"
    t, s, d = plan.standard_errors()
    return (t, s, d, teacher), smallest, ""


def counts_from_report(report: dict[str, Any], policy: Policy) -> tuple[dict[Grouping, GroupingCounts], int]:
    """The joint counts of each grouping's listed groups (report.json ``groups[].joint``)."""
    tables: dict[Grouping, tuple[list[tuple[str, ...]], list[list[int]]]] = {}
    for g in report.get("groups", []):
        if g.get("positive_class") is not None or g.get("derived") or g.get("table"):
            continue
        joint = g.get("joint")
        if not isinstance(joint, list) or len(joint) != 8:
            raise InputError("the report has no joint counts per group (groups[].joint): it "
                             "was written by a fairgate before 0.2; run fairgate check again")
        grouping = Grouping(tuple(g["grouping"]))
        labels, cells = tables.setdefault(grouping, ([], []))
        labels.append(tuple(str(g["group"][a]) for a in grouping.attributes))
        cells.append([int(x) for x in joint])
    if not tables:
        raise InputError("the report lists no groups")
    counts = {gr: GroupingCounts(gr, tuple(labels), np.array(cells, np.int64).reshape(-1, 2, 2, 2))
              for gr, (labels, cells) in tables.items()}
    rows = int(report.get("inputs", {}).get("data", {}).get("rows") or 0)
    return counts, rows


def read_report(path: Path) -> dict[str, Any]:
    from fairgate.inputs.files import read_regular_file

    raw = read_regular_file(path, 512 << 20, InputError, where=str(path), what="report",
                            expected="a report.json written by fairgate check")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a fairgate report.json ({e})") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise InputError(f"{path}: not a fairgate report.json (schema_version 1)")
    return data


def check_plannable(policy: Policy) -> None:
    if policy.multiclass is not None:
        raise UsageError("fairgate plan sizes binary policies; for a multi-class policy, plan "
                         "its one-vs-rest checks with a binary policy on the positive class")
