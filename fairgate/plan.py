"""`fairgate plan`: how many rows an audit needs for each check's bound to mean something.

A bound is resolved when the gate, at this audit size, detects a change of twice the bound
(for ``max_increase`` b: a change of 2b) with 80% power while an unchanged student fails at
most 5% of the time:

- ``decide_on: interval`` (inconclusive passes or warns) and ``significant``: an unchanged
  student fails at most γ = (α − β)/2 of the time at any size (the uniform intervals' one
  side), so the size is set by detection: the interval's near end must clear the bound;
- inconclusive counted as a fail (``on_inconclusive: fail``, ``conservative``): detection
  comes free, so the size is set by false fails: an unchanged student's whole interval
  must stay within the bound 95% of the time;
- ``estimate``: z(0.95) · se <= |bound| (an unchanged student's estimate beyond the bound at
  most 5% of the time; a change of 2b is then detected too).

Where one piece clearly attains each max (groups well apart) the intervals are smooth and
normal theory sizes them: k · se <= |bound| with k = z(1 − γ) + z(0.8) (interval rule) or
z(1 − γ) + z(0.95), se from the counts by the delta method (fairgate.core.intervals) and
falling as 1/√rows. At ties the intervals are wider than that and their ends vary more, so
60 audits are simulated from the joint counts at the normal-theory size (multinomial rows,
the same groups gated) and the size is corrected by their reach. A student whose change
reaches twice the bound decides differently on at least that many more rows: for change
bounds the plan adds that much disagreement. The student's disagreement with the teacher
comes from a report (its joint counts), or from ``--disagreement`` (default 5% of every
group's rows, every rate kept) when planning from the teacher alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.evaluate import Settings, context_for
from fairgate.core.gate import _QUANTITY, POWER, check_keys
from fairgate.core.intervals import BETA_SHARE, SHAPES, WHOLE, Plan
from fairgate.core.metrics import CATALOGUE
from fairgate.errors import InputError, UsageError
from fairgate.policy import Policy

DEFAULT_DISAGREEMENT = 0.05
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
    detectable: float  # the value detected with 80% power now; NaN when inconclusive fails
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


def more_disagreement(cells: np.ndarray, extra: float) -> np.ndarray:
    """Joint counts with ``extra`` more of every group's and label's rows decided
    differently by the student, half each way (so that every rate stays)."""
    out = np.asarray(cells, np.float64).copy()
    rows = out.sum(axis=(2, 3))  # [G, y]
    for yt in (0, 1):
        move = np.minimum(out[:, :, yt, yt], extra / 2 * rows)
        out[:, :, yt, yt] -= move
        out[:, :, yt, 1 - yt] += move
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
        on_inconclusive = st.inconclusive_for(check)
        k, rule = multiplier(policy, on_inconclusive)
        metric = CATALOGUE[check.metric]
        gc = counts[key.grouping] if key.grouping is not None else next(iter(counts.values()))
        ses, smallest, note, smooth = _standard_errors(metric.name, gc, settings,
                                                       key.grouping is None)
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
            if not math.isfinite(se):
                out.append(PlanRow(check.id, metric.name, key.grouping, bound, limit, se,
                                   math.nan, math.nan, rows, smallest, why))
                continue
            if st.mode == "estimate" or smooth:
                # one piece attains each max, clearly: the interval is the smooth one, and
                # normal theory gives the sizes (k of the module docstring)
                fails = st.mode != "estimate" and on_inconclusive == "fail"
                reach = math.nan if fails else (
                    float(ndtri(POWER)) if st.mode == "estimate" else k) * se
                factor = (k * se / abs(limit)) ** 2 if limit else math.inf
            else:
                fails = on_inconclusive == "fail"
                # a student whose change reaches twice the bound decides differently on at
                # least that many more rows: plan with that much more disagreement
                table = gc if quantity == "student" or fails else GroupingCounts(
                    gc.grouping, gc.groups, more_disagreement(gc.cells, 2 * abs(limit)))
                need = _Needs(key, table, settings, quantity, upper, se, fails)
                factor = need.smallest_factor(abs(limit), (k * se / abs(limit)) ** 2
                                              if limit else math.inf)
                # what the audit detects now, from the same simulated audits' reach scaled
                # back (for a rule that fails inconclusive results the question is false
                # fails: no detectable value is quoted)
                reach = math.nan if fails else abs(limit) * math.sqrt(factor / 1.05)
            found = edge + reach if upper else edge - reach
            out.append(PlanRow(check.id, metric.name, key.grouping, bound, limit, se, found,
                               factor, rows, smallest))
    return PlanResult(out, rows, source, rule)


#: Audits simulated, and copies drawn for each, at every audit size tried while planning.
PLAN_AUDITS = 60
PLAN_RESAMPLES = 200


class _Needs:
    """How far beyond a bound the gate's rule needs the truth to be, at a scaled audit.

    At ``f`` times the rows (the same group mix, the same groups gated) PLAN_AUDITS audits
    are drawn from the joint counts (multinomial rows) and each gets its uniform interval.
    The interval rule detects a truth beyond the edge when the interval's near end clears
    it: with the truth shifted by the audits' own error, the reach is the POWER quantile of
    (near half-width − estimate error). A rule that fails inconclusive results fails an
    unchanged student when the far end crosses the edge: its reach is the 1 − FALSE_FAIL
    quantile of (far half-width + estimate error). A bound is resolved when its own size
    covers the reach. Simulating the audits counts what a formula misses: at near ties the
    interval is wider, and its near end varies more, than the estimate's standard error.
    """

    def __init__(self, key: Any, gc: GroupingCounts, settings: Settings, quantity: str,
                 upper: bool, se: float, fails: bool) -> None:
        self.key, self.gc, self.settings = key, gc, settings
        self.quantity, self.upper, self.se, self.fails = quantity, upper, se, fails

    def reach(self, f: float) -> float:
        from fairgate.core.evaluate import compute_values

        cells = np.asarray(self.gc.cells, np.float64) * f
        total = round(cells.sum())
        settings = Settings(max(1, round(self.settings.min_group_size * f)),
                            self.settings.reference_groups, self.settings.confidence,
                            PLAN_RESAMPLES, self.settings.seed)
        truth = getattr(compute_values([self.key], {self.gc.grouping: self.gc},
                                       Settings(self.settings.min_group_size,
                                                self.settings.reference_groups,
                                                self.settings.confidence, 0, 0))[self.key],
                        self.quantity)
        rng = np.random.default_rng([self.settings.seed, 17])
        draws = rng.multinomial(total, (cells / cells.sum()).reshape(-1), size=PLAN_AUDITS)
        out = []
        for i, draw in enumerate(draws):
            scaled = GroupingCounts(self.gc.grouping, self.gc.groups,
                                    draw.reshape(self.gc.cells.shape))
            value = compute_values([self.key], {self.gc.grouping: scaled},
                                   replace(settings, seed=self.settings.seed * 1009 + i)
                                   )[self.key]
            iv, est = getattr(value, f"{self.quantity}_interval"), getattr(value, self.quantity)
            if iv is None or not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
                out.append(math.inf)
                continue
            error = (est - truth) if self.upper else (truth - est)
            near = (est - iv.lo) if self.upper else (iv.hi - est)
            far = (iv.hi - est) if self.upper else (est - iv.lo)
            out.append(far + error if self.fails else near - error)
        level = 1 - FALSE_FAIL if self.fails else POWER
        return float(np.quantile(np.array(out), level, method="higher"))

    def smallest_factor(self, size: float, guess: float) -> float:
        """f with reach(f) ≈ size: the reach falls about as 1/√f, so the simulated audits
        at the normal-theory guess correct it (then 5% more rows, for the noise of 60
        simulated audits); inf past 10,000 times the rows."""
        if not size or not math.isfinite(guess) or guess <= 0:
            return math.inf if not size else guess
        r = self.reach(guess)
        f = guess * (r / size) ** 2 if math.isfinite(r) else math.inf
        return f * 1.05 if f <= 1e4 else math.inf


def _standard_errors(name: str, gc: GroupingCounts, settings: Settings, overall: bool
                     ) -> tuple[tuple[float, float, float, float], int, str, bool]:
    """(teacher se, student se, change se, teacher value), the smallest gated group, a note
    when there is no estimate, and whether one piece clearly attains each model's max (then
    the intervals are the smooth ones and sizes need no simulated audits)."""
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
                                "a worst group)"), False
    teacher = float(metric.compute(GroupingCounts.teacher(gc.cells), ctx))
    if math.isnan(teacher):
        return nan4, smallest, "undefined on this audit set", False
    plan = Plan(shape, gc.cells, ctx, settings.confidence, metric.lo, metric.hi)
    if not plan.ok:
        return nan4, smallest, "too many indistinguishable groups for an estimate", False
    t, s, d = plan.standard_errors()
    smooth = overall or all(len(k) == 1 for k, _ in plan.screened)
    return (t, s, d, teacher), smallest, "", smooth


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
