"""What `fairgate plan` prints: per check and bound, what this audit resolves and what it needs.

Names come from the policy (check ids, attribute names): through :func:`safe.terminal`.
"""

from __future__ import annotations

import math
from typing import Any

from fairgate.plan import POWER, PlanResult, PlanRow
from fairgate.report import safe
from fairgate.report.json import num


def _rows(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _where(r: PlanRow) -> str:
    return "overall" if r.grouping is None else r.grouping.name


def render_plan(result: PlanResult, width: int | None = None) -> str:
    """The plan for the terminal, fitted to ``width`` columns (None: any): stacked per
    bound when the table is wider."""
    from fairgate.report.terminal import fit_table, wrap

    head = [*wrap(f"fairgate plan · {result.audit_rows:,} rows · rule: {result.rule} · "
                  f"student: {safe.terminal(result.source, 300)}", width), ""]
    table = [["check", "grouping", "bound", "se now", f"detects ({POWER:.0%})", "rows needed",
              "smallest gated group: now → needed", "verdict"]]
    for r in result.rows:
        if math.isnan(r.factor):
            table.append([safe.terminal(r.check), safe.terminal(_where(r)),
                          f"{r.bound} {r.limit:g}", "—", "—", "—", "—", r.note])
            continue
        signed = r.bound != "max" and r.bound != "min"
        found = "—" if math.isnan(r.detectable) else (
            f"{r.detectable:+.4f}" if signed else f"{r.detectable:.4f}")
        needed = None if r.rows_needed is None else math.ceil(r.smallest * max(r.factor, 0.0))
        table.append([safe.terminal(r.check), safe.terminal(_where(r)), f"{r.bound} {r.limit:g}",
                      f"{r.se:.4f}", found, _rows(r.rows_needed),
                      f"{r.smallest:,} → {_rows(needed)}",
                      "ok" if r.resolved else "audit too small"])
    lines = [x for _, x in fit_table(table[1:], table[0], width, title=2)[0]]
    short = [r for r in result.rows if r.resolved is False]
    tail = ["", f"{len(short)} of {len(result.rows)} bounds need a larger audit set"
            if short else "This audit set resolves every bound."]
    return "\n".join(head + lines + tail) + "\n"


def plan_json(result: PlanResult) -> dict[str, Any]:
    return {
        "rows": result.audit_rows,
        "rule": result.rule,
        "student": result.source,
        "power": POWER,
        "bounds": [{
            "check": r.check, "metric": r.metric,
            "grouping": [] if r.grouping is None else list(r.grouping.attributes),
            "bound": r.bound, "limit": r.limit, "se": num(r.se), "detectable": num(r.detectable),
            "resolved": r.resolved, "rows_needed": r.rows_needed,
            "smallest_group": r.smallest,
            "smallest_group_needed": None if r.rows_needed is None
            else math.ceil(r.smallest * max(r.factor, 0.0)),
            **({"note": r.note} if r.note else {}),
        } for r in result.rows],
    }
