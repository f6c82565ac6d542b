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
    count_metric,
    counts_text,
    disagreement_lines,
    group_label,
    grouping_name,
    models_text,
    provenance,
    rate_change_text,
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
# Every colour text is drawn in has a contrast of at least 4.5:1 (WCAG AA) on white and on
# the #f8f9fa of striped rows; white text on the verdict colours too (tests/test_browser.py).
COLOR = {Status.FAIL: "#c92a2a", Status.UNDEFINED: "#862e9c", Status.INCONCLUSIVE: "#1864ab",
         Status.WARN: "#a64b00",
         Status.WAIVED: "#0b7285", Status.PASS: "#237032"}
_VERDICT_TEXT = {"pass": "✓ PASS", "warn": "! PASS with warnings", "fail": "✗ FAIL"}
_VERDICT_COLOR = {"pass": "#237032", "warn": "#a64b00", "fail": "#c92a2a"}
MUTED = "#5c636a"  # secondary text: 5.8:1 on #f8f9fa

# Responsive: the page never scrolls sideways. Tables and the check chart sit in wrappers
# that scroll on their own; charts are SVGs with a viewBox drawn at 100% of their box; the
# group panels wrap, one per row on a phone. Long unbroken values (hashes, paths) wrap.
CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;
 background:#fff;margin:0 auto;max-width:1180px;padding:0 20px 40px;overflow-wrap:break-word}
h1{margin:0;font-size:28px}h2{margin:32px 0 8px;font-size:20px;border-bottom:1px solid #dee2e6}
h3{margin:20px 0 6px;font-size:16px}
header{padding:18px 22px;border-radius:8px;color:#fff;margin-top:20px}
header p{margin:4px 0 0}.meta{font-size:13px}
.banner{border-left:6px solid #0b7285;background:#e3fafc;padding:10px 14px;margin:14px 0;
 border-radius:4px}.banner.expired{border-color:#a64b00;background:#fff4e6}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}
th{background:#f8f9fa;font-weight:600}td.num,th.num{text-align:right;white-space:nowrap}
.ci{color:#5c636a;font-size:12px}.reason{color:#495057;font-size:12px;min-width:200px;
 max-width:320px}
.status{font-weight:700;text-transform:uppercase;font-size:12px;white-space:nowrap}
.note{color:#5c636a;font-size:12px}code{font-size:12px;word-break:break-all}
svg{display:block;margin:6px 0;width:100%;height:auto}svg.forest{min-width:720px;max-width:1000px}
svg text{font:11px system-ui,sans-serif;fill:#495057}
.panels{display:flex;flex-wrap:wrap;gap:4px 28px}.panels>div{flex:0 1 520px;min-width:0}
.legend span{display:inline-block;margin-right:16px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;
 vertical-align:-1px}
details{margin:6px 0}summary{cursor:pointer;color:#1864ab}
@media (max-width:600px){body{padding:0 10px 30px}header{padding:12px 14px}h1{font-size:24px}}
"""


_e = safe.html  # every text and attribute value on the page: escaped, clipped


def _dv(x: float | None) -> str:
    """The value as report.json has it, for ``data-value``; empty when undefined."""
    v = num(x)
    return "" if v is None else repr(v)


def _num_td(field: str, x: float, interval: Interval | None = None, signed: bool = False,
            count: bool = False) -> str:
    ci = (f' <span class="ci">{_e(show_interval(interval, signed, count))}</span>'
          if interval else "")
    lo_hi = (f' data-lo="{_dv(interval.lo)}" data-hi="{_dv(interval.hi)}"' if interval else "")
    return (f'<td class="num" data-field="{field}" data-value="{_dv(x)}"{lo_hi}>'
            f"{_e(show(x, signed, count))}{ci}</td>")


def _table(header: Sequence[str], rows: Sequence[str], cls: str = "",
           right: Sequence[int] = ()) -> str:
    """A table in a wrapper that scrolls sideways on a narrow screen (the page does not);
    the ``right`` columns (numbers) have right-aligned headings like their cells."""
    head = "".join(f"<th class=num>{_e(h)}</th>" if i in right else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(header))
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


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


def _forest(results: Sequence[CheckResult], counts: bool = False) -> str:
    """Each check's change with its interval, against its bounds on the same axis.

    ``counts``: checks on counts of groups (:func:`count_metric`), drawn on an axis of their
    own: a change of 2 groups on the rates' axis would squash every rate change to a dot.
    """
    label_w, plot_w, value_w, row_h, top = 300, 480, 200, 26, 8
    points: list[float] = [0.0]
    for r in results:
        v = r.value
        points += [x for x in (v.delta,) if not math.isnan(x)]
        if v.delta_interval:
            points += [x for x in (v.delta_interval.lo, v.delta_interval.hi) if math.isfinite(x)]
        points += [e for b in r.bounds if (e := delta_edge(b, v.teacher)) is not None]
    ticks = (count_ticks(min(points), max(points)) if counts
             else nice_ticks(min(points), max(points), 6))
    scale = _Scale(ticks[0], ticks[-1], label_w, plot_w)
    height = top + row_h * len(results)
    width = label_w + plot_w + value_w
    what = "change in the number of groups" if counts else "change"
    parts = [f'<div class="scroll"><svg class="forest{" counts" if counts else ""}" '
             f'viewBox="0 0 {width} {height + 34}" width="{width}" height="{height + 34}" '
             f'role="img" aria-label="{what} of each check with its interval and bound">',
             _axis(scale, ticks, top, height, signed=True),
             f'<line x1="{scale(0):.1f}" x2="{scale(0):.1f}" y1="{top}" y2="{height}" '
             'stroke="#868e96"/>',
             f'<text x="{label_w + plot_w / 2:.0f}" y="{height + 28}" text-anchor="middle">'
             f"{what} (student − teacher): dot = estimate, bar = interval, red tick = bound"
             "</text>"]
    for i, r in enumerate(results):
        y = top + row_h * i + row_h / 2
        v, color = r.value, COLOR[r.status]
        tip = "\n".join(_e(line) for line in (
            f"{r.check.id} [{grouping_name(r.key.grouping)}]: {status_text(r)}",
            f"change {show(v.delta, True, counts)} {show_interval(v.delta_interval, True, counts)}",
            r.reason))
        row = [f'<g class="check-row" data-check="{_e(r.check.id)}" '
               f'data-grouping="{_e(grouping_name(r.key.grouping))}"><title>{tip}</title>',
               f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">'
               f"{_e(r.check.id, 28, short=True)} [{_e(grouping_name(r.key.grouping), 18, short=True)}]"
               "</text>"]
        if i % 2 == 0:
            row.insert(1, f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width}" '
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
                   f"{_e(status_text(r))} {_e(show(v.delta, True, counts))}</text></g>")
        parts.append("".join(row))
    parts.append("</svg></div>")
    return "".join(parts)


def count_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Whole-number ticks covering [lo, hi], about ``n`` of them, for counts of groups."""
    lo, hi = math.floor(lo), math.ceil(hi)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    step = max(1, math.ceil((hi - lo) / n))
    return [float(t) for t in range(lo, hi + step, step)]


def _checks(report: GateReport) -> str:
    results = report.decision.results
    rows = []
    for r in results:
        v, count = r.value, count_metric(r.key.metric)
        why = "" if r.status is Status.PASS else r.reason
        rows.append(
            f'<tr class="check" data-check="{_e(r.check.id)}" '
            f'data-grouping="{_e(grouping_name(r.key.grouping))}" data-status="{r.status.value}">'
            f'<td class="status" style="color:{COLOR[r.status]}">{_e(status_text(r))}</td>'
            f"<td><b>{_e(r.check.id)}</b><br><span class=note>{_e(r.key.metric)}</span></td>"
            f"<td>{_e(grouping_name(r.key.grouping))}</td>"
            + _num_td("teacher", v.teacher, v.teacher_interval, count=count)
            + _num_td("student", v.student, v.student_interval, count=count)
            + _num_td("delta", v.delta, v.delta_interval, signed=True, count=count)
            + f"<td>{_e(bound_text(r))}</td><td class=num>{_e(detect_text(r))}</td>"
            + f"<td class=reason>{_e(why, 600)}</td></tr>"
        )
    table = _table(["status", "check", "grouping", "teacher", "student",
                    "change (student − teacher)", "bound", "detects (80% power)", "why"], rows,
                   "checks", right=(3, 4, 5, 7))
    weak = "".join(f"<li>{_e(power_text(r, b), 600)}</li>" for r, b in unresolved(report))
    if weak:
        weak = f"<p><b>Audit too small for these bounds:</b></p><ul class=power>{weak}</ul>"
    rates = [r for r in results if not count_metric(r.key.metric)]
    counted = [r for r in results if count_metric(r.key.metric)]
    charts = (_forest(rates) if rates else "") + (
        "<p class=note>Checks on numbers of groups, on an axis of their own:</p>"
        + _forest(counted, counts=True) if counted else "")
    return f"<section id=checks><h2>Checks</h2>{charts}{table}{weak}</section>"


def _kpis(report: GateReport) -> str:
    gated = checks_by_key(report)
    rows = []
    for v in report.kpis:
        bound = "; ".join(f"{bound_text(r)} ({r.check.id})" for r in gated.get(v.key, []))
        count = count_metric(v.key.metric)
        rows.append(f'<tr class="kpi" data-metric="{_e(v.key.metric)}" '
                    f'data-grouping="{_e(grouping_name(v.key.grouping))}">'
                    f"<td>{_e(v.key.metric)}</td><td>{_e(grouping_name(v.key.grouping))}</td>"
                    + _num_td("teacher", v.teacher, v.teacher_interval, count=count)
                    + _num_td("student", v.student, v.student_interval, count=count)
                    + _num_td("delta", v.delta, v.delta_interval, signed=True, count=count)
                    + f"<td>{_e(bound or '—')}</td></tr>")
    st = report.policy.policy.statistics
    note = (f"<p class=note>Intervals: {st.confidence:.0%} paired bootstrap, {st.resamples} "
            f"resamples (seed {st.seed}).</p>" if st.resamples else "")
    return ("<section id=kpis><h2>KPIs</h2>" + note
            + _table(["metric", "grouping", "teacher", "student", "change", "bound"], rows, "kpis",
                     right=(2, 3, 4))
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
        iv = g.intervals.get("accuracy")
        rows.append(f'<tr class="sig" data-grouping="{_e(g.grouping.name)}" '
                    f'data-group="{_e(group_label(g))}"><td>{_e(g.grouping.name)}</td>'
                    f"<td>{_e(group_label(g))}</td><td class=num>{g.n:,}</td>"
                    + _num_td("teacher", t, iv.teacher if iv else None)
                    + _num_td("student", s, iv.student if iv else None)
                    + _num_td("delta", s - t, iv.delta if iv else None, signed=True)
                    + f"<td class=num>{g.teacher_only_correct:,}</td>"
                    f"<td class=num>{g.student_only_correct:,}</td>"
                    f'<td class=num data-field="p_holm" data-value="{_dv(g.mcnemar_p_holm)}">'
                    f"{g.mcnemar_p_holm:.3g}</td></tr>")
    return head + _table(["grouping", "group", "n", "teacher accuracy", "student accuracy",
                          "change", "only teacher right", "only student right", "p (Holm)"],
                         rows, "significant", right=(2, 3, 4, 5, 6, 7, 8)) + "</section>"


def _dumbbells(rows: Sequence[GroupRow], alpha: float) -> str:
    """Per group and rate: teacher (hollow blue, above) and student (orange, below), each
    with its interval; one panel per rate, every panel on the same axis, so a move of 0.01
    is as long in one panel as in the next. Panels wrap on narrow screens."""
    label_w, panel_w, pad, row_h, top = 150, 260, 18, 26, 22
    rates = _rates_of(rows)
    height = top + row_h * len(rows)
    width = label_w + panel_w + pad
    values = [x for g in rows for rate, _ in rates for x in _extent(g, rate)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    ticks = nice_ticks(max(lo - 0.01, 0.0), min(hi + 0.01, 1.0), 4)
    scale = _Scale(ticks[0], ticks[-1], label_w, panel_w)
    out = ['<div class="panels">']
    for rate, title in rates:
        parts = [f'<div><svg class="groups" viewBox="0 0 {width} {height + 24}" width="{width}" '
                 f'height="{height + 24}" role="img" aria-label="{_e(title)} by group, teacher '
                 f'vs student, with intervals">'
                 f'<g class="panel" data-rate="{rate}" data-lo="{scale.lo!r}" '
                 f'data-hi="{scale.hi!r}" data-x0="{label_w}" data-width="{panel_w}">'
                 f'<text x="{label_w + panel_w / 2}" y="12" text-anchor="middle" '
                 f'font-weight="600">{_e(title)}</text>']
        parts += [f'<rect x="0" y="{top + row_h * i:.1f}" width="{width}" height="{row_h}" '
                  'fill="#f8f9fa"/>' for i in range(0, len(rows), 2)]
        parts.append(_axis(scale, ticks, top, height, signed=False))
        for i, g in enumerate(rows):
            parts.append(_group_cell(g, rate, title, scale, top + row_h * i + row_h / 2, alpha))
        out.append("".join(parts) + "</g></svg></div>")
    return "".join(out) + "</div>"


def _extent(g: GroupRow, rate: str) -> list[float]:
    """The values a group's row of one rate draws: both rates and their intervals."""
    iv = g.intervals.get(rate)
    ends = [] if iv is None else [x for i in (iv.teacher, iv.student) if i is not None
                                  for x in (i.lo, i.hi)]
    return [x for x in (g.teacher_rates[rate], g.student_rates[rate], *ends) if math.isfinite(x)]


def _group_cell(g: GroupRow, rate: str, title: str, scale: _Scale, y: float,
                alpha: float) -> str:
    """One group's row of one panel: its label, and per model the rate and its interval."""
    t, s = g.teacher_rates[rate], g.student_rates[rate]
    iv = g.intervals.get(rate)
    star = " ★" if significant(g, alpha) else ""
    ref = " (ref)" if g.reference else ""
    full = f"{group_label(g)}{ref}: n = {g.n:,}{'' if g.gated else ' (not gated)'}{star}"
    tip = "\n".join([full, f"{title}: teacher {show(t)} "
                      f"{show_interval(iv.teacher if iv else None)} → student {show(s)} "
                      f"{show_interval(iv.student if iv else None)}",
                      rate_change_text(iv) or "no interval (not gated, or no resamples)"])
    label_attrs = "" if g.gated else f' fill="{MUTED}" font-style="italic"'
    cell = [f'<g data-group="{_e(group_label(g))}"><title>{_e(tip)}</title>'
            f'<text x="{scale.x0 - 8}" y="{y + 4:.1f}" text-anchor="end"{label_attrs}>'
            f"{_e(group_label(g), 16 - len(ref) - 2 * len(star), short=True)}{ref} "
            f"({g.n:,}){star}</text>"]
    missing = [role for role, x in (("teacher", t), ("student", s)) if math.isnan(x)]
    if missing:
        who = "both" if len(missing) == 2 else missing[0]
        cell.append(f'<text x="{scale.x0 + 2}" y="{y + 4:.1f}" class="undefined">'
                    f"undefined ({who})</text>")
    faded = "" if g.gated else ' opacity=".55"'
    for role, x, dy, color, attrs in (
            ("teacher", t, -5, TEACHER, f'fill="#fff" stroke="{TEACHER}" stroke-width="2"'),
            ("student", s, 5, STUDENT, f'fill="{STUDENT}" stroke="#8a5a00" stroke-width=".8"')):
        if math.isnan(x):
            continue
        i = getattr(iv, role) if iv is not None else None
        if i is not None and math.isfinite(i.lo) and math.isfinite(i.hi):
            cell.append(f'<line class="ci" data-role="{role}" data-lo="{_dv(i.lo)}" '
                        f'data-hi="{_dv(i.hi)}" x1="{scale(i.lo):.2f}" x2="{scale(i.hi):.2f}" '
                        f'y1="{y + dy:.1f}" y2="{y + dy:.1f}" stroke="{color}" '
                        f'stroke-width="2"{faded}/>')
        cell.append(f'<circle cx="{scale(x):.3f}" cy="{y + dy:.1f}" r="4" {attrs}{faded} '
                    f'data-role="{role}" data-value="{_dv(x)}"/>')
    return "".join(cell) + "</g>"


def _rates_of(rows: Sequence[GroupRow]) -> Sequence[tuple[str, str]]:
    """Multi-class top-1 tables have one rate: accuracy."""
    return TOP1_RATES if rows and rows[0].top1 else RATES


TOP1_RATES = (("accuracy", "top-1 accuracy"),)


def _group_table(rows: Sequence[GroupRow], alpha: float) -> str:
    body = []
    rates = _rates_of(rows)
    for g in rows:
        cells = ""
        for rate, _ in rates:
            iv = g.intervals.get(rate)
            t, s = g.teacher_rates[rate], g.student_rates[rate]
            cells += (_num_td(f"teacher_{rate}", t, iv.teacher if iv else None)
                      + _num_td(f"student_{rate}", s, iv.student if iv else None)
                      + _num_td(f"delta_{rate}", s - t, iv.delta if iv else None, signed=True))
        p = g.mcnemar_p_holm
        p_text = "—" if p is None else f"{p:.3g}" + (" ★" if significant(g, alpha) else "")
        flags = (" (reference)" if g.reference else "") + ("" if g.gated else " (not gated)")
        body.append(f'<tr class="group" data-group="{_e(group_label(g))}">'
                    f"<td>{_e(group_label(g))}{flags}</td><td class=num>{g.n:,}</td>{cells}"
                    f"<td class=num>{_e(p_text)}</td></tr>")
    header = ["group", "n", *(f"{t} {role}" for _, t in rates
                              for role in ("teacher", "student", "change")),
              "McNemar p (Holm)"]
    return _table(header, body, "groups", right=range(1, len(header)))


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
              "significantly</span><span>faded, in italics: below min_group_size, reported but "
              "not gated</span></p>" + _interval_note(report))
    body = "".join(_grouping(report, g) for g in report.groupings)
    return f"<section id=groups><h2>Groups: teacher vs student</h2>{legend}{body}</section>"


def _interval_note(report: GateReport) -> str:
    st = report.policy.policy.statistics
    if not st.resamples:
        return "<p class=note>No intervals: statistics.resamples is 0.</p>"
    return (f"<p class=note>Lines: {st.confidence:.0%} percentile intervals of each model's rate "
            f"from the same {st.resamples:,} paired bootstrap copies as the checks (seed "
            f"{st.seed}), for gated groups and the reference; the table gives the change's "
            "interval too. Every panel of a grouping has the same axis.</p>")


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
                   + (_table(["class", "n", "accuracy", "p (Holm)"], body, right=(1, 2, 3))
                      if body else ""))
    for a, b, title, rows in disagreement_lines(report):
        body = [f'<tr class="pair"><td>{_e(x)}</td><td>{_e(y)}</td><td class=num>{_e(n)}</td></tr>'
                for x, y, n in rows]
        out.append(f'<div class="disagreement" data-a="{_e(a)}" data-b="{_e(b)}"><h3>{_e(title)}'
                   f"</h3>{_table([f'{a} says', f'{b} says', 'rows'], body, right=(2,)) if body else ''}"
                   "</div>")
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
    body = ["<tr>" + "".join(f"<td class=num>{_e(c)}</td>" if i else f"<td>{_e(c)}</td>"
                             for i, c in enumerate(row)) + "</tr>" for row in probes]
    return (f"<section id=probes><p class=note>{_e(title)}</p>"
            + _table(PROBE_HEADER, body, "probes", right=(1, 2, 3)) + "</section>")


def _provenance(report: GateReport) -> str:
    """Which files made this verdict: their digests, how each model was read, the engine."""
    rows = [f'<tr class="input" data-input="{_e(name)}"><td><b>{_e(name)}</b></td>'
            f"<td>{_e(where)}</td><td><code>{_e(digest)}</code></td><td>{_e(positive)}</td>"
            f"<td>{_e(how)}</td></tr>"
            for name, where, digest, positive, how in provenance(report)]
    return ("<section id=inputs><h2>Inputs</h2><p class=note>sha256 of the policy and of "
            "each model file; the audit set by fingerprint (see report.json "
            "<code>inputs</code>).</p>"
            + _table(["input", "source", "digest", "positive class", "read as"], rows, "inputs")
            + "</section>")


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
            + _groups(report) + _provenance(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>fairgate {_e(report.verdict.upper())}: {_e(student)} vs {_e(teacher)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


class HtmlReporter:
    name = "html"
    filename = "report.html"

    def render(self, report: GateReport) -> str:
        return render_html(report)


__all__ = ["HtmlReporter", "count_ticks", "delta_edge", "nice_ticks", "render_html"]
