"""report.json: the stable, versioned, machine-readable record of a gate run.

Numbers are plain JSON numbers; an undefined value is ``null`` and its reason is given
beside it. Volatile fields (times) live under ``run`` so golden tests can scrub them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import LISTED_UNGATED, GroupRow, MetricValue, Unlisted
from fairgate.core.gate import POWER, CheckResult, beyond
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval

SCHEMA_VERSION = 1


def num(x: float | None) -> float | None:
    """A JSON number with 12 significant digits, or None for undefined (NaN) values and for
    an unbounded end of an interval (±inf: JSON has no infinity).

    numpy's log and power differ in the last bit between SIMD code paths (AVX-512 vs
    AVX2), so full-precision floats would make report.json differ across machines.
    12 digits are far beyond any threshold's resolution and identical everywhere.
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(f"{float(x):.12g}")


def _interval(i: Interval | None) -> list[float] | None:
    return None if i is None else [num(i.lo), num(i.hi)]  # type: ignore[list-item]


def _intervals(v: MetricValue) -> dict[str, Any] | None:
    if v.delta_interval is None and v.teacher_interval is None and v.student_interval is None:
        return None
    shares = [i.defined for i in (v.teacher_interval, v.student_interval, v.delta_interval) if i]
    return {
        "teacher": _interval(v.teacher_interval),
        "student": _interval(v.student_interval),
        "delta": _interval(v.delta_interval),
        "relative": _interval(v.relative_interval),
        "defined_share": min(shares) if shares else 0.0,
    }


def _undefined(v: MetricValue) -> dict[str, str] | None:
    out = {k: r for k, r in (("teacher", v.teacher_reason), ("student", v.student_reason)) if r}
    return out or None


def value_dict(v: MetricValue) -> dict[str, Any]:
    d: dict[str, Any] = {
        "metric": v.key.metric,
        "grouping": list(v.key.grouping.attributes) if v.key.grouping else [],
        "teacher": num(v.teacher),
        "student": num(v.student),
        "delta": num(v.delta),
        "relative_delta": num(v.relative),
        "interval": _intervals(v),
    }
    if v.key.grouping is not None and v.key.grouping.positive is not None:
        d["positive_class"] = v.key.grouping.positive  # multi-class: one-vs-rest table
    if v.key.alpha is not None:
        d["alpha"] = v.key.alpha
    undefined = _undefined(v)
    if undefined:
        d["undefined"] = undefined
    return d


def result_dict(r: CheckResult) -> dict[str, Any]:
    v = value_dict(r.value)
    d: dict[str, Any] = {
        "check": r.check.id,
        "metric": v.pop("metric"),
        "grouping": v.pop("grouping"),
        "status": r.status.value,
        "blocking": r.blocking,
        "severity": r.check.severity,
        **v,
        "bounds": [
            {"bound": b.bound, "limit": b.limit, "on": b.quantity, "outcome": b.outcome,
             "text": b.text, "detectable": num(b.detectable), "resolved": b.resolved}
            for b in r.bounds
        ],
        "reason": r.reason,
    }
    if r.on_inconclusive is not None:
        d["on_inconclusive"] = r.on_inconclusive
    if r.value.per_group:
        d["per_group"] = per_group_dicts(r)
    if r.waiver is not None:
        w = r.waiver
        d["waiver"] = {"reason": w.reason, "owner": w.owner, "expires": w.expires.isoformat()}
    return d


def per_group_dicts(r: CheckResult) -> list[dict[str, Any]]:
    """A reference metric's value for every gated group, and whether the student's lies within
    the check's own bounds (min, max): Aequitas' per-group verdict for a tau band
    min: tau, max: 1/tau on a ``*_reference_ratio``; None where undefined or unbounded."""
    lo, hi = r.check.min, r.check.max
    out = []
    for label, t, s in r.value.per_group:
        within = None
        if not math.isnan(s) and (lo is not None or hi is not None):
            within = not ((lo is not None and beyond(s, lo, False))
                          or (hi is not None and beyond(s, hi, True)))
        out.append({"group": label, "teacher": num(t), "student": num(s), "within": within})
    return out


def _rates(counts: dict[str, int], rates: dict[str, float]) -> dict[str, Any]:
    return {**counts, **{k: num(v) for k, v in rates.items()}}


def grouping_dict(g: Grouping) -> dict[str, Any]:
    """Extra keys of multi-class and derived tables (none for a plain grouping)."""
    out: dict[str, Any] = {}
    if g.positive is not None:
        out["positive_class"] = g.positive
    if g.derived:
        out["derived"] = True
    return out


def group_dict(g: GroupRow) -> dict[str, Any]:
    return {
        "grouping": list(g.grouping.attributes),
        **grouping_dict(g.grouping),
        **({"table": "top-1"} if g.top1 else {}),
        "group": dict(zip(g.grouping.attributes, g.group, strict=True)),
        "label": "|".join(g.group),
        "n": g.n,
        "gated": g.gated,
        "reference": g.reference,
        "teacher": _rates(g.teacher, g.teacher_rates),
        "student": _rates(g.student, g.student_rates),
        "joint": list(g.joint),
        "intervals": group_intervals_dict(g),
        "mcnemar": {
            "teacher_only_correct": g.teacher_only_correct,
            "student_only_correct": g.student_only_correct,
            "p_value": num(g.mcnemar_p),
            "p_holm": num(g.mcnemar_p_holm),
        },
    }


def group_intervals_dict(g: GroupRow) -> dict[str, Any] | None:
    """Per rate: the teacher's, the student's and the change's percentile interval, and the
    share of copies in which the rate was defined; None for a group without intervals (no
    resamples, below min_group_size, or beyond evaluate.INTERVAL_GROUPS)."""
    if not g.intervals:
        return None
    out: dict[str, Any] = {}
    for name, iv in g.intervals.items():
        shares = [i.defined for i in (iv.teacher, iv.student, iv.delta) if i is not None]
        out[name] = {"teacher": _interval(iv.teacher), "student": _interval(iv.student),
                     "delta": _interval(iv.delta), "defined_share": min(shares, default=0.0)}
    return out


def unlisted_dict(u: Unlisted) -> dict[str, Any]:
    """Groups that ``groups`` leaves out of one grouping (see evaluate.LISTED_UNGATED)."""
    return {"grouping": list(u.grouping.attributes), **grouping_dict(u.grouping),
            "groups": u.groups, "rows": u.rows, "largest": u.largest,
            "reason": f"below min_group_size, so not gated: every gated group, the reference "
                      f"and the {LISTED_UNGATED:,} largest other groups are listed"}


def to_dict(report: GateReport) -> dict[str, Any]:
    decision = report.decision
    counts: dict[str, int] = {}
    for r in decision.results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    st = report.policy.policy.statistics
    return {
        "schema_version": SCHEMA_VERSION,
        "fairgate_version": report.version,
        "verdict": report.verdict,
        "exit_code": decision.exit_code,
        "summary": {"checks": len(decision.results), **counts},
        "results": [result_dict(r) for r in decision.results],
        "kpis": [value_dict(v) for v in report.kpis],
        "groups": [group_dict(g) for g in report.groups],
        "groups_unlisted": [unlisted_dict(u) for u in report.unlisted],
        "groupings": [list(g.attributes) for g in report.groupings
                      if g.positive is None and not g.derived],
        "tables": [{"name": g.name, "grouping": list(g.attributes), **grouping_dict(g)}
                   for g in report.groupings],
        "statistics": {"confidence": st.confidence, "resamples": st.resamples, "seed": st.seed,
                       "decide_on": st.mode, "on_inconclusive": st.on_inconclusive,
                       "interval": st.interval, "min_defined": st.min_defined,
                       "power": POWER},
        "expired_waivers": [
            {"check": w.check, "owner": w.owner, "expires": w.expires.isoformat(),
             "reason": w.reason}
            for w in decision.expired_waivers
        ],
        "individual": report.individual,
        "classwise": report.classwise,
        "scores": report.scores,
        "inputs": report.inputs,
        "notes": list(report.notes),
        "warnings": list(report.warnings),
        "run": {"started_at": report.started_at, "timings": report.timings,
                "engine": report.engine},
    }


class JsonReporter:
    name = "json"
    filename = "report.json"

    def render(self, report: GateReport) -> str:
        return json.dumps(to_dict(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
