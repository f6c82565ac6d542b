"""report.html: one self-contained page to look at, that opens offline.

No CDN, no script, no external reference: CSS and SVG are inline, so the file can be
archived by CI and opened years later. It shows the verdict, each check's change with its
interval against its bound, the KPIs, the groups whose accuracy changed significantly, and
per grouping a teacher-vs-student chart of the group rates. Numbers carry their exact value
in ``data-value`` so tests (and scrapers) can read them back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import GroupRow
from fairgate.core.gate import BoundResult, CheckResult, Status
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval
from fairgate.report import safe
from fairgate.report.json import num
from fairgate.report.markdown import (
    RATES,
    alpha_of,
    bound_text,
    by_evidence,
    checks_by_key,
    counts_text,
    disagreement_lines,
    group_label,
    grouping_name,
    models_text,
    show,
    show_interval,
    significant,
    status_text,
)
from fairgate.report.terminal import (
    PROBE_HEADER,
    changed_classes,
    detect_text,
    model_readings,
    power_text,
    text_probes,
    unresolved,
)

CHART_GROUPS = 30  # groups drawn per grouping (the rest are in the table and report.json)
TABLE_GROUPS = 1000  # groups listed per grouping
TEACHER, STUDENT = "#0072B2", "#E69F00"  # Okabe-Ito blue and orange: colour-blind safe
COLOR = {Status.FAIL: "#c92a2a", Status.UNDEFINED: "#862e9c", Status.INCONCLUSIVE: "#1864ab",
         Status.WARN: "#e67700",
         Status.WAIVED: "#0b7285", Status.PASS: "#2b8a3e"}
_VERDICT_TEXT = {"pass": "✓ PASS", "warn": "! PASS with warnings", "fail": "✗ FAIL"}
_VERDICT_COLOR = {"pass": "#2b8a3e", "warn": "#e67700", "fail": "#c92a2a"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;
 margin:0 auto;max-width:1180px;padding:0 20px 40px}
h1{margin:0;font-size:28px}h2{margin:32px 0 8px;font-size:20px;border-bottom:1px solid #dee2e6}
h3{margin:20px 0 6px;font-size:16px}
header{padding:18px 22px;border-radius:8px;color:#fff;margin-top:20px}
header p{margin:4px 0 0}.meta{opacity:.9;font-size:13px}
.banner{border-left:6px solid #0b7285;background:#e3fafc;padding:10px 14px;margin:14px 0;
 border-radius:4px}.banner.expired{border-color:#e67700;background:#fff4e6}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}
th{background:#f8f9fa;font-weight:600}td.num{text-align:right;white-space:nowrap}
.ci{color:#868e96;font-size:12px}.reason{color:#495057;font-size:12px;max-width:260px}
.status{font-weight:700;text-transform:uppercase;font-size:12px;white-space:nowrap}
.note{color:#868e96;font-size:12px}svg{display:block;margin:6px 0;overflow:visible}
svg text{font:11px system-ui,sans-serif;fill:#495057}
.legend span{display:inline-block;margin-right:16px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;
 vertical-align:-1px}
details{margin:6px 0}summary{cursor:pointer;color:#1c7ed6}
"""


_e = safe.html  # every text and attribute value on the page: escaped, clipped


def _dv(x: float | None) -> str:
    """The value as report.json has it, for ``data-value``; empty when undefined."""
    v = num(x)
    return "" if v is None else repr(v)


def _num_td(field: str, x: float, interval: Interval | None = None, signed: bool = False) -> str:
    ci = f' <span class="ci">{_e(show_interval(interval, signed))}</span>' if interval else ""
    lo_hi = (f' data-lo="{_dv(interval.lo)}" data-hi="{_dv(interval.hi)}"' if interval else "")
    return (f'<td class="num" data-field="{field}" data-value="{_dv(x)}"{lo_hi}>'
            f"{_e(show(x, signed))}{ci}</td>")


def _table(header: Sequence[str], rows: Sequence[str], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ----------------------------------------------------------------------------- scales


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    x0: float
    width: float

    def __call__(self, v: float) -> float:
        return self.x0 + (v - self.lo) / (self.hi - self.lo) * self.width


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (first <= lo, last >= hi)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - 0.05, hi + 0.05
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    start = math.floor(lo / step + 1e-9) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-12:
        ticks.append(start + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _axis(scale: _Scale, ticks: list[float], top: float, bottom: float, signed: bool) -> str:
    out = []
    for t in ticks:
        x = scale(t)
        label = f"{t:+g}" if signed and t else f"{t:g}"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
                   f'stroke="#e9ecef"/><text x="{x:.1f}" y="{bottom + 13:.1f}" '
                   f'text-anchor="middle">{_e(label)}</text>')
    return "".join(out)


# ----------------------------------------------------------------------------- checks


def delta_edge(b: BoundResult, teacher: float) -> float | None:
    """A bound as a limit on the change student − teacher (None if it cannot be)."""
    if b.bound == "max_increase":
        return b.limit
    if b.bound == "max_decrease":
        return -b.limit
    if math.isnan(teacher):
        return None
    if b.bound == "max":
        return b.limit - teacher
    if b.bound == "min":
        return b.limit - teacher
    if teacher == 0:
        return None
    sign = 1 if b.bound == "max_relative_increase" else -1
    return sign * b.limit * abs(teacher)


def _forest(results: Sequence[CheckResult]) -> str:
    """Each check's change with its interval, against its bounds on the same axis."""
    label_w, plot_w, value_w, row_h, top = 300, 480, 150, 26, 8
    points: list[float] = [0.0]
    for r in results:
        v = r.value
        points += [x for x in (v.delta,) if not math.isnan(x)]
        if v.delta_interval:
            points += [x for x in (v.delta_interval.lo, v.delta_interval.hi) if math.isfinite(x)]
        points += [e for b in r.bounds if (e := delta_edge(b, v.teacher)) is not None]
    ticks = nice_ticks(min(points), max(points), 6)
    scale = _Scale(ticks[0], ticks[-1], label_w, plot_w)
    height = top + row_h * len(results)
    parts = [f'<svg class="forest" width="{label_w + plot_w + value_w}" height="{height + 34}" '
             f'role="img" aria-label="change of each check with its interval and bound">',
             _axis(scale, ticks, top, height, signed=True),
             f'<line x1="{scale(0):.1f}" x2="{scale(0):.1f}" y1="{top}" y2="{height}" '
             'stroke="#868e96"/>',
             f'<text x="{label_w + plot_w / 2:.0f}" y="{height + 28}" text-anchor="middle">'
             "change (student − teacher): dot = estimate, bar = interval, red tick = bound"
             "</text>"]
    for i, r in enumerate(results):
        y = top + row_h * i + row_h / 2
        v, color = r.value, COLOR[r.status]
        tip = "\n".join(_e(line) for line in (
            f"{r.check.id} [{grouping_name(r.key.grouping)}]: {status_text(r)}",
            f"change {show(v.delta, True)} {show_interval(v.delta_interval, True)}", r.reason))
        row = [f'<g class="check-row" data-check="{_e(r.check.id)}" '
               f'data-grouping="{_e(grouping_name(r.key.grouping))}"><title>{tip}</title>',
               f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">'
               f"{_e(r.check.id, 28, short=True)} [{_e(grouping_name(r.key.grouping), 18, short=True)}]"
               "</text>"]
        if i % 2 == 0:
            row.insert(1, f'<rect x="0" y="{y - row_h / 2:.1f}" width="{label_w + plot_w}" '
                          f'height="{row_h}" fill="#f8f9fa"/>')
        for b in r.bounds:
            edge = delta_edge(b, v.teacher)
            if edge is not None:
                x = scale(edge)
                row.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 9:.1f}" y2="{y + 9:.1f}" '
                           f'stroke="#e03131" stroke-width="2" stroke-dasharray="3 2">'
                           f"<title>{_e(b.text)}</title></line>")
        if v.delta_interval and math.isfinite(v.delta_interval.lo):
            lo, hi = scale(v.delta_interval.lo), scale(v.delta_interval.hi)
            row.append(f'<line class="ci" x1="{lo:.1f}" x2="{hi:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{color}" stroke-width="3" stroke-linecap="round" opacity=".55"/>')
        if math.isnan(v.delta):
            row.append(f'<text x="{label_w + 6}" y="{y + 4:.1f}" fill="{color}">undefined'
                       "</text>")
        else:
            row.append(f'<circle cx="{scale(v.delta):.2f}" cy="{y:.1f}" r="5" fill="{color}" '
                       f'data-value="{_dv(v.delta)}"/>')
        row.append(f'<text x="{label_w + plot_w + 10}" y="{y + 4:.1f}" fill="{color}">'
                   f"{_e(status_text(r))} {_e(show(v.delta, True))}</text></g>")
        parts.append("".join(row))
    parts.append("</svg>")
    return "".join(parts)


def _checks(report: GateReport) -> str:
    results = report.decision.results
    rows = []
    for r in results:
        v = r.value
        why = "" if r.status is Status.PASS else r.reason
        rows.append(
            f'<tr class="check" data-check="{_e(r.check.id)}" '
            f'data-grouping="{_e(grouping_name(r.key.grouping))}" data-status="{r.status.value}">'
            f'<td class="status" style="color:{COLOR[r.status]}">{_e(status_text(r))}</td>'
            f"<td><b>{_e(r.check.id)}</b><br><span class=note>{_e(r.key.metric)}</span></td>"
            f"<td>{_e(grouping_name(r.key.grouping))}</td>"
            + _num_td("teacher", v.teacher, v.teacher_interval)
            + _num_td("student", v.student, v.student_interval)
            + _num_td("delta", v.delta, v.delta_interval, signed=True)
            + f"<td>{_e(bound_text(r))}</td><td class=num>{_e(detect_text(r))}</td>"
            + f"<td class=reason>{_e(why, 600)}</td></tr>"
        )
    table = _table(["status", "check", "grouping", "teacher", "student",
                    "change (student − teacher)", "bound", "detects (80% power)", "why"], rows,
                   "checks")
    weak = "".join(f"<li>{_e(power_text(r, b), 600)}</li>" for r, b in unresolved(report))
    if weak:
        weak = f"<p><b>Audit too small for these bounds:</b></p><ul class=power>{weak}</ul>"
    return f"<section id=checks><h2>Checks</h2>{_forest(results)}{table}{weak}</section>"


def _kpis(report: GateReport) -> str:
    gated = checks_by_key(report)
    rows = []
    for v in report.kpis:
        bound = "; ".join(f"{bound_text(r)} ({r.check.id})" for r in gated.get(v.key, []))
        rows.append(f'<tr class="kpi" data-metric="{_e(v.key.metric)}" '
                    f'data-grouping="{_e(grouping_name(v.key.grouping))}">'
                    f"<td>{_e(v.key.metric)}</td><td>{_e(grouping_name(v.key.grouping))}</td>"
                    + _num_td("teacher", v.teacher, v.teacher_interval)
                    + _num_td("student", v.student, v.student_interval)
                    + _num_td("delta", v.delta, v.delta_interval, signed=True)
                    + f"<td>{_e(bound or '—')}</td></tr>")
    st = report.policy.policy.statistics
    note = (f"<p class=note>Intervals: {st.confidence:.0%} paired bootstrap, {st.resamples} "
            f"resamples (seed {st.seed}).</p>" if st.resamples else "")
    return ("<section id=kpis><h2>KPIs</h2>" + note
            + _table(["metric", "grouping", "teacher", "student", "change", "bound"], rows, "kpis")
            + "</section>")


# ----------------------------------------------------------------------------- groups


def _significant(report: GateReport) -> str:
    alpha = alpha_of(report)
    sig = [g for g in report.groups if significant(g, alpha)]
    head = (f"<section id=significant><h2>Groups whose accuracy changed significantly</h2>"
            f"<p class=note>Exact McNemar test of teacher vs student correctness on the same rows "
            f"of each gated group, Holm-adjusted within its grouping; shown when p &lt; "
            f"{alpha:.2g} (1 − confidence).</p>")
    if not sig:
        return head + "<p>No group's accuracy changed significantly.</p></section>"
    rows = []
    for g in sig:
        t, s = g.teacher_rates["accuracy"], g.student_rates["accuracy"]
        rows.append(f'<tr class="sig" data-grouping="{_e(g.grouping.name)}" '
                    f'data-group="{_e(group_label(g))}"><td>{_e(g.grouping.name)}</td>'
                    f"<td>{_e(group_label(g))}</td><td class=num>{g.n:,}</td>"
                    + _num_td("teacher", t) + _num_td("student", s)
                    + _num_td("delta", s - t, signed=True)
                    + f"<td class=num>{g.teacher_only_correct:,}</td>"
                    f"<td class=num>{g.student_only_correct:,}</td>"
                    f'<td class=num data-field="p_holm" data-value="{_dv(g.mcnemar_p_holm)}">'
                    f"{g.mcnemar_p_holm:.3g}</td></tr>")
    return head + _table(["grouping", "group", "n", "teacher accuracy", "student accuracy",
                          "change", "only teacher right", "only student right", "p (Holm)"],
                         rows, "significant") + "</section>"


def _dumbbells(rows: Sequence[GroupRow], alpha: float) -> str:
    """Per group and rate: teacher (hollow blue) to student (orange), one panel per rate."""
    label_w, panel_w, gap, row_h, top = 220, 190, 44, 22, 22
    rates = _rates_of(rows)
    height = top + row_h * len(rows)
    width = label_w + len(rates) * (panel_w + gap)
    parts = [f'<svg class="groups" width="{width}" height="{height + 24}" role="img" '
             'aria-label="group rates, teacher vs student">']
    for i, g in enumerate(rows):
        y = top + row_h * i + row_h / 2
        star = " ★" if significant(g, alpha) else ""
        ref = " (ref)" if g.reference else ""
        style = "" if g.gated else ' opacity=".55"'
        full = f"{group_label(g)}{ref}: n = {g.n:,}{'' if g.gated else ' (not gated)'}{star}"
        if i % 2 == 0:
            parts.append(f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width - gap}" '
                         f'height="{row_h}" fill="#f8f9fa"/>')
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end"{style}>'
                     f"<title>{_e(full)}</title>{_e(group_label(g), 24, short=True)}{ref} "
                     f"({g.n:,}){star}</text>")
    for k, (rate, title) in enumerate(rates):
        x0 = label_w + k * (panel_w + gap)
        values = [x for g in rows for x in (g.teacher_rates[rate], g.student_rates[rate])
                  if not math.isnan(x)]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        ticks = nice_ticks(max(lo - 0.01, 0.0), min(hi + 0.01, 1.0), 3)
        scale = _Scale(ticks[0], ticks[-1], x0, panel_w)
        parts.append(f'<g class="panel" data-rate="{rate}" data-lo="{scale.lo!r}" '
                     f'data-hi="{scale.hi!r}" data-x0="{x0}" data-width="{panel_w}">'
                     f'<text x="{x0 + panel_w / 2}" y="12" text-anchor="middle" '
                     f'font-weight="600">{_e(title)}</text>'
                     + _axis(scale, ticks, top, height, signed=False))
        for i, g in enumerate(rows):
            y = top + row_h * i + row_h / 2
            t, s = g.teacher_rates[rate], g.student_rates[rate]
            style = "" if g.gated else ' opacity=".55"'
            tip = f"{group_label(g)} {title}: teacher {show(t)} → student {show(s)}"
            cell = [f'<g data-group="{_e(group_label(g))}"{style}><title>{_e(tip)}</title>']
            if not (math.isnan(t) or math.isnan(s)):
                cell.append(f'<line x1="{scale(t):.2f}" x2="{scale(s):.2f}" y1="{y:.1f}" '
                            f'y2="{y:.1f}" stroke="#adb5bd" stroke-width="2"/>')
            missing = [role for role, x in (("teacher", t), ("student", s)) if math.isnan(x)]
            if missing:
                who = "both" if len(missing) == 2 else missing[0]
                cell.append(f'<text x="{x0 + 2}" y="{y + 4:.1f}" class="undefined">'
                            f"undefined ({who})</text>")
            for role, x, attrs in (("teacher", t, f'fill="#fff" stroke="{TEACHER}" '
                                                  'stroke-width="2"'),
                                   ("student", s, f'fill="{STUDENT}"')):
                if math.isnan(x):
                    continue
                cell.append(f'<circle cx="{scale(x):.3f}" cy="{y:.1f}" r="4.5" {attrs} '
                            f'data-role="{role}" data-value="{_dv(x)}"/>')
            parts.append("".join(cell) + "</g>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _rates_of(rows: Sequence[GroupRow]) -> Sequence[tuple[str, str]]:
    """Multi-class top-1 tables have one rate: accuracy."""
    return TOP1_RATES if rows and rows[0].top1 else RATES


TOP1_RATES = (("accuracy", "top-1 accuracy"),)


def _group_table(rows: Sequence[GroupRow], alpha: float) -> str:
    body = []
    rates = _rates_of(rows)
    for g in rows:
        cells = "".join(
            f'<td class=num data-field="{role}_{rate}" '
            f'data-value="{_dv(getattr(g, role + "_rates")[rate])}">'
            f'{_e(show(getattr(g, role + "_rates")[rate]))}</td>'
            for rate, _ in rates for role in ("teacher", "student"))
        p = g.mcnemar_p_holm
        p_text = "—" if p is None else f"{p:.3g}" + (" ★" if significant(g, alpha) else "")
        flags = (" (reference)" if g.reference else "") + ("" if g.gated else " (not gated)")
        body.append(f'<tr class="group" data-group="{_e(group_label(g))}">'
                    f"<td>{_e(group_label(g))}{flags}</td><td class=num>{g.n:,}</td>{cells}"
                    f"<td class=num>{_e(p_text)}</td></tr>")
    header = ["group", "n", *(f"{t} {role}" for _, t in rates for role in ("teacher", "student")),
              "McNemar p (Holm)"]
    return _table(header, body, "groups")


def _grouping(report: GateReport, grouping: Grouping) -> str:
    alpha = alpha_of(report)
    rows = [g for g in report.groups if g.grouping == grouping]
    drawn = rows if len(rows) <= CHART_GROUPS else by_evidence(rows)[:CHART_GROUPS]
    listed = rows if len(rows) <= TABLE_GROUPS else by_evidence(rows)[:TABLE_GROUPS]
    unlisted = report.unlisted_groups(grouping)
    out = [f'<div class="grouping" data-grouping="{_e(grouping.name)}">'
           f"<h3>{_e(grouping.name)} <span class=note>{len(rows) + unlisted:,} groups, "
           f"{sum(g.gated for g in rows):,} gated</span></h3>"]
    if unlisted:
        out.append(f"<p class=note>{unlisted:,} groups below min_group_size are not listed "
                   "(report.json counts them in groups_unlisted).</p>")
    if len(drawn) < len(rows):
        out.append(f"<p class=note>Chart shows {len(drawn)} of {len(rows):,} groups: the "
                   "reference, then those whose accuracy changed most (smallest McNemar p), "
                   "then the largest.</p>")
    out.append(_dumbbells(drawn, alpha))
    note = (f" (the {len(listed):,} shown first in the chart's order; all "
            f"{len(rows):,} are in report.json)" if len(listed) < len(rows) else "")
    out.append(f"<details><summary>Table of groups{_e(note)}</summary>"
               f"{_group_table(listed, alpha)}</details></div>")
    return "".join(out)


def _groups(report: GateReport) -> str:
    if not report.groups:
        return ""
    legend = (f'<p class="legend"><span><i class="dot" style="border:2px solid {TEACHER};'
              f'width:7px;height:7px"></i>teacher</span><span><i class="dot" '
              f'style="background:{STUDENT}"></i>student</span><span>★ accuracy changed '
              "significantly</span><span>faded: below min_group_size, reported but not gated"
              "</span></p><p class=note>Per-group intervals are not computed yet; the checks "
              "above carry the intervals of the change.</p>")
    body = "".join(_grouping(report, g) for g in report.groupings)
    return f"<section id=groups><h2>Groups: teacher vs student</h2>{legend}{body}</section>"


def _classwise(report: GateReport) -> str:
    """Multi-class: where two models' top-1 classes differ (the matrix's largest cells)."""
    if not report.classwise:
        return ""
    out = ["<section id=classwise><h2>Classes</h2><p class=note>Classes whose top-1 accuracy "
           "changed significantly (McNemar exact, Holm across classes), then the rows whose "
           "top-1 class differs between two models, by (class of one, class of the other): the "
           "largest off-diagonal cells of their confusion matrix (report.json has all of them, "
           "up to 10,000 a pair).</p>"]
    for title, changed in changed_classes(report.classwise):
        body = [f'<tr class="changed"><td>{_e(c)}</td><td class=num>{_e(n)}</td>'
                f"<td class=num>{_e(acc)}</td><td class=num>{_e(p)}</td></tr>"
                for c, n, acc, p in changed]
        out.append(f"<h3>{_e(title)}</h3>"
                   + (_table(["class", "n", "accuracy", "p (Holm)"], body) if body else ""))
    for a, b, title, rows in disagreement_lines(report):
        body = [f'<tr class="pair"><td>{_e(x)}</td><td>{_e(y)}</td><td class=num>{_e(n)}</td></tr>'
                for x, y, n in rows]
        out.append(f'<div class="disagreement" data-a="{_e(a)}" data-b="{_e(b)}"><h3>{_e(title)}'
                   f"</h3>{_table([f'{a} says', f'{b} says', 'rows'], body) if body else ''}</div>")
    return "".join(out) + "</section>"


# ----------------------------------------------------------------------------- page


def _waivers(report: GateReport) -> str:
    d = report.decision
    out = []
    waived = [r for r in d.results if r.status is Status.WAIVED]
    if waived:
        items = "".join(
            f"<li><b>{_e(r.check.id)}</b> [{_e(grouping_name(r.key.grouping))}]: waived until "
            f"<b>{r.waiver.expires}</b> by {_e(r.waiver.owner)}: “{_e(r.waiver.reason)}”</li>"
            for r in waived if r.waiver is not None)
        out.append(f'<div class="banner waived"><b>{len(waived)} check'
                   f'{"s" if len(waived) != 1 else ""} WAIVED</b>: they did not pass, and a '
                   f"waiver lets the release through until it expires.<ul>{items}</ul></div>")
    for w in d.expired_waivers:
        out.append(f'<div class="banner expired"><b>Expired waiver</b> for <b>{_e(w.check)}</b> '
                   f"(owner {_e(w.owner)}, expired <b>{w.expires}</b>): no longer applied. "
                   f"“{_e(w.reason)}”</div>")
    return "".join(out)


def _warnings(report: GateReport) -> str:
    return "".join(f'<div class="banner expired warning"><b>Warning</b>: {_e(w)}</div>'
                   for w in report.warnings)


def _reading(report: GateReport) -> str:
    """How each model's output was read (which class is positive, and what proved it)."""
    items = "".join(f'<li data-role="{_e(role)}"><b>{_e(role)}</b>: {_e(text)}</li>'
                    for role, text in model_readings(report))
    return f'<section id=reading><p class=note>How the models were read:</p><ul>{items}</ul></section>'


def _probes(report: GateReport) -> str:
    """The counterfactual text probes that flip decisions most (report.json has them all)."""
    title, probes = text_probes(report)
    if not probes:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in PROBE_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in probes)
    return (f'<section id=probes><p class=note>{_e(title)}</p><table><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></section>")


def render_html(report: GateReport) -> str:
    teacher, student = models_text(report)
    rows = report.inputs.get("data", {}).get("rows")
    rows_text = f"{rows:,} rows · " if isinstance(rows, int) else ""
    verdict = _VERDICT_TEXT[report.verdict]
    header = (f'<header style="background:{_VERDICT_COLOR[report.verdict]}" '
              f'data-verdict="{report.verdict}"><h1>{_e(verdict)}</h1>'
              f"<p><b>{_e(counts_text(report))}</b></p><p class=meta>student {_e(student)} vs "
              f"teacher {_e(teacher)} · {rows_text}policy {_e(report.policy.path)} · "
              f"fairgate {_e(report.version)} · {_e(report.started_at)}</p></header>")
    body = (header + _warnings(report) + _reading(report) + _waivers(report) + _checks(report)
            + _kpis(report) + _significant(report) + _classwise(report) + _probes(report)
            + _groups(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>fairgate {_e(report.verdict.upper())}: {_e(student)} vs {_e(teacher)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


class HtmlReporter:
    name = "html"
    filename = "report.html"

    def render(self, report: GateReport) -> str:
        return render_html(report)


__all__ = ["HtmlReporter", "delta_edge", "nice_ticks", "render_html"]
