"""compare.html: the comparison as one self-contained page, in report.html's look.

Like report.html it has no script and no external reference, so CI can archive it. It is
responsive: nothing has a fixed width (the page is at most 75rem wide, tables scroll
sideways inside their own box on a narrow screen). Every text from the data, the policy or
a path goes through :func:`fairgate.report.safe.html`; numbers carry report.json's value in
``data-value`` and each candidate row its name, rank and standings in ``data-*``, so tests
and scrapers can read the page back. Each candidate links to its own report.html and
report.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairgate.report import safe

if TYPE_CHECKING:
    from fairgate.comparison import Comparison, ObjectiveValue, Standing

_VERDICT_TEXT = {"pass": "✓ a candidate passes", "warn": "! a candidate passes, with warnings",
                 "fail": "✗ no candidate passes"}
_VERDICT_COLOR = {"pass": "#2b8a3e", "warn": "#e67700", "fail": "#c92a2a"}  # as report.html
_STANDING_COLOR = {"best": "#2b8a3e", "indistinguishable": "#1864ab", "worse": "#868e96",
                   "not comparable": "#862e9c"}

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;
 margin:0 auto;max-width:75rem;padding:0 1rem 2.5rem}
h1{margin:0;font-size:1.75rem}h2{margin:2rem 0 .5rem;font-size:1.25rem;
 border-bottom:1px solid #dee2e6}
header{padding:1rem 1.4rem;border-radius:8px;color:#fff;margin-top:1.25rem}
header p{margin:.25rem 0 0}.meta{opacity:.9;font-size:13px;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}
th{background:#f8f9fa;font-weight:600}td.num{text-align:right;white-space:nowrap}
td.name{overflow-wrap:anywhere}
.mark{font-size:12px;font-weight:700;margin-left:.3em}
.status{font-weight:700;text-transform:uppercase;font-size:12px;white-space:nowrap}
.note{color:#868e96;font-size:12px}.ci{color:#868e96;font-size:12px}
.banner{border-left:6px solid #862e9c;background:#f8f0fc;padding:.6rem .9rem;margin:.9rem 0;
 border-radius:4px;overflow-wrap:anywhere}
details{margin:6px 0}summary{cursor:pointer;color:#1c7ed6}
p,li{overflow-wrap:anywhere}
"""

_e = safe.html


def _value_td(o: ObjectiveValue, standing: Standing, field: str) -> str:
    from fairgate.comparison import MARK, value_text

    value = "" if not o.defined else repr(o.value)
    return (f'<td class="num" data-field="{field}" data-value="{value}" '
            f'data-standing="{_e(standing)}">{_e(value_text(o))}'
            f'<span class="mark" style="color:{_STANDING_COLOR[standing]}">'
            f"{_e(MARK[standing])}</span></td>")


def _links(name: str) -> str:
    from fairgate.comparison import reports_of

    where = reports_of(name)
    return (f'<a href="{_e(where["html"])}">report</a> · <a href="{_e(where["md"])}">md</a>'
            f' · <a href="{_e(where["json"])}">json</a>')


def _ranking(c: Comparison) -> str:
    from fairgate.comparison import HEADER, OBJECTIVES, value_text

    head = "".join(f"<th>{_e(h)}</th>" for h in HEADER) + "<th>reports</th>"
    rows = []
    for r in c.ranking:
        cand = c.candidate(r.name)
        cells = "".join(_value_td(o, st, obj.name) for obj, o, st in
                        zip(OBJECTIVES, cand.objectives, r.standing, strict=True))
        verdict = cand.report.verdict
        rows.append(
            f'<tr data-candidate="{_e(r.name)}" data-rank="{r.rank}" '
            f'data-verdict="{_e(verdict)}" data-front="{str(r.on_front).lower()}">'
            f'<td class="num">{r.rank}</td><td class="name"><b>{_e(r.name)}</b>'
            f'<div class="note">{_e(cand.source)}</div></td>'
            f'<td class="status" style="color:{_VERDICT_COLOR[verdict]}">{_e(verdict)}</td>'
            f'<td class="name">{_e(", ".join(cand.failed_checks) or "-")}</td>{cells}'
            f'<td>{"yes" if r.on_front else "no"}</td><td>{_links(r.name)}</td></tr>')
    teacher = "".join(f'<td class="num">{_e(value_text(o))}</td>' for o in c.teacher_objectives)
    rows.append(f'<tr data-role="teacher"><td></td><td class="name">teacher (reference)'
                f'<div class="note">{_e(c.teacher)}</div></td><td></td><td></td>{teacher}'
                "<td></td><td></td></tr>")
    return (f'<div class="scroll"><table id="ranking"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _evidence(c: Comparison) -> str:
    """Per candidate and objective, the paired change intervals the standings rest on."""
    from fairgate.comparison import OBJECTIVES, RULE, change_text

    head = "<th>candidate</th>" + "".join(f"<th>{_e(o.title)}: change vs teacher</th>"
                                          for o in OBJECTIVES)
    rows = "".join(
        f'<tr data-candidate="{_e(r.name)}"><td class="name">{_e(r.name)}</td>'
        + "".join(f'<td class="name">{_e(change_text(o.changes))}</td>'
                  for o in c.candidate(r.name).objectives) + "</tr>"
        for r in c.ranking)
    return (f'<h2>How candidates are told apart</h2><p>{_e(RULE)}</p>'
            f'<div class="scroll"><table id="evidence"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def render_html(c: Comparison) -> str:
    from fairgate.comparison import leaders, notes, objective_text, verdict_line

    first = c.candidates[0].report
    verdict = c.verdict if c.exit_code == 0 else "fail"
    rows = first.inputs.get("data", {}).get("rows")
    rows_text = f"{rows:,} rows · " if isinstance(rows, int) else ""
    header = (f'<header style="background:{_VERDICT_COLOR[verdict]}" data-verdict="{verdict}" '
              f'data-best="{_e(" ".join(c.best))}"><h1>{_e(_VERDICT_TEXT[verdict])}</h1>'
              f"<p><b>{_e(verdict_line(c), 5000)}</b></p><p class=meta>{len(c.candidates)} candidates "
              f"vs teacher {_e(c.teacher)} · {rows_text}audit set {_e(c.request.data)} · policy "
              f"{_e(first.policy.path)} · fairgate {_e(first.version)} · "
              f"{_e(first.started_at)}</p></header>")
    banners = "".join(f'<div class="banner">{_e(n)}</div>' for n in notes(c))
    dominated = "".join(f"<li>{_e(r.name)} by {_e(', '.join(r.dominated_by))}</li>"
                        for r in c.ranking if r.dominated_by)
    best = "".join(f"<li>{_e(line, 5000)}</li>" for line in leaders(c))
    body = (header + banners + f"<p>Best estimate per objective:</p><ul id=leaders>{best}</ul>"
            + "<h2>Ranking</h2>"
            + f'<p class="note">{_e(objective_text(c))}.</p>' + _ranking(c)
            + (f"<p>Dominated beyond noise:</p><ul>{dominated}</ul>" if dominated else "")
            + _evidence(c))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>fairgate compare: {_e(verdict_line(c), 200, short=True)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


__all__ = ["render_html"]
