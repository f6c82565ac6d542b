"""The terminal report: what a person needs to decide, at a glance.

Verdict first, then the checks (failures first) with teacher, student, change and bound,
then why each non-passing check did not pass, and the groups behind the failures. Every
name, label, path and reason goes through :func:`fairgate.report.safe.terminal` (``_t``):
this text is printed to CI logs, which the Actions runner parses for commands.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import click

from fairgate.core.evaluate import GroupRow
from fairgate.core.gate import POWER, BoundResult, CheckResult, Status
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval
from fairgate.inputs.sources import model_label
from fairgate.report import safe
from fairgate.report.json import num

_STYLE = {
    Status.FAIL: "red",
    Status.UNDEFINED: "magenta",
    Status.INCONCLUSIVE: "blue",
    Status.WARN: "yellow",
    Status.WAIVED: "cyan",
    Status.PASS: "green",
}
MAX_GROUPS = 20
_VERDICT = {"pass": ("PASS", "green"), "warn": ("PASS with warnings", "yellow"),
            "fail": ("FAIL", "red")}
REASON_CHARS = 500
_t = safe.terminal  # data and policy text, as the terminal and CI logs may show it


def fmt(x: float | None, signed: bool = False) -> str:
    """4 decimals of the number report.json holds (so every report shows the same digits)."""
    x = num(x)
    if x is None:
        return "undef"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def fmt_interval(i: Interval | None, signed: bool = False) -> str:
    return "" if i is None else f"[{fmt(i.lo, signed)}, {fmt(i.hi, signed)}]"


def _bound_text(r: CheckResult) -> str:
    return ", ".join(f"{b.bound} {b.limit:g}" for b in r.bounds)


def detect_text(r: CheckResult) -> str:
    """Per bound, what this audit detects with 80% power; "!" marks a bound the audit cannot
    resolve (it would miss a change of twice the bound more than 20% of the time)."""
    parts = [f"{fmt(b.detectable, b.quantity != 'student')}{'' if b.resolved else ' !'}"
             for b in r.bounds if not math.isnan(b.detectable)]
    return ", ".join(parts) or "—"


def unresolved(report: GateReport) -> list[tuple[CheckResult, BoundResult]]:
    """Bounds smaller than the audit can resolve, in check order."""
    return [(r, b) for r in report.decision.results for b in r.bounds if b.resolved is False]


def power_text(r: CheckResult, b: BoundResult) -> str:
    """One line on a bound the audit cannot resolve."""
    what = {"delta": "a change of", "relative": "a relative change of",
            "student": "a student value of"}[b.quantity]
    return (f"{r.check.id} [{r.key.grouping or 'overall'}] {b.bound} {b.limit:g}: this audit "
            f"detects {what} {fmt(b.detectable, b.quantity != 'student')} with "
            f"{POWER:.0%} power, more than the bound's own size beyond it; `fairgate plan` "
            "estimates the rows needed")


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return [line(header).rstrip(), line(["─" * w for w in widths]),
            *(line(r).rstrip() for r in rows)]


def wrap(text: str, width: int | None, indent: str = "", more: str = "  ") -> list[str]:
    """``text`` as lines of at most ``width`` columns (None: one line), broken at spaces;
    continuation lines are indented by ``more`` beyond the text's own indent. Nothing is
    cut: a word longer than the line is split across lines."""
    if width is None or len(indent) + len(text) <= width:
        return [indent + text]
    own = text[: len(text) - len(text.lstrip(" "))]
    return textwrap.wrap(text.lstrip(" "), width, initial_indent=indent + own,
                         subsequent_indent=indent + own + more, break_on_hyphens=False,
                         drop_whitespace=True) or [indent + text]


def fit_table(rows: list[list[str]], header: list[str], width: int | None, *,
              drop: tuple[str, ...] = (), title: int = 1, indent: str = ""
              ) -> tuple[list[tuple[int, str]], list[str]]:
    """A table that fits ``width`` columns: (row index or -1 for the header, line) and the
    headers of the columns left out.

    As a table when it fits; else without the ``drop`` columns, in that order, when that is
    enough; else stacked: per row, its first ``title`` cells on a line, then every other
    cell as ``header: value``, wrapped. No cell is ever cut.
    """
    room = None if width is None else width - len(indent)
    keep = list(range(len(header)))
    dropped: list[str] = []

    def render(cols: list[int]) -> list[str]:
        return _table([[r[i] for i in cols] for r in rows], [header[i] for i in cols])

    lines = render(keep)
    for name in (*drop, None):
        if room is None or max(len(x) for x in lines) <= room:
            return [(i - 2 if i >= 2 else -1, indent + x) for i, x in enumerate(lines)], dropped
        if name is None or name not in header:
            continue
        keep.remove(header.index(name))
        dropped.append(name)
        lines = render(keep)
    out: list[tuple[int, str]] = []
    for n, r in enumerate(rows):
        head = "  ".join(c for c in r[:title] if c)
        rest = " · ".join(f"{h}: {c}" for h, c in zip(header[title:], r[title:], strict=True) if c)
        out += [(n, x) for x in wrap(head, width, indent)]
        out += [(n, x) for x in wrap(rest, width, indent + "    ")]
    return out, []


def dropped_note(dropped: list[str], width: int | None, indent: str = "") -> list[str]:
    """Says which columns were left out to fit (never silently), and where they are."""
    if not dropped:
        return []
    return wrap(f"({', '.join(dropped)} left out to fit {width} columns: report.json and "
                "report.md have them; COLUMNS=200 widens)", width, indent)


def _fitted(rows: list[list[str]], header: list[str], width: int | None,
            indent: str = "  ") -> list[str]:
    return [x for _, x in fit_table(rows, header, width, indent=indent)[0]]


def _group_table(rows: list[GroupRow], width: int | None = None) -> list[str]:
    """The groups of a failed grouping, indented by two spaces, fitted to ``width``."""
    if rows and rows[0].top1:  # multi-class top-1: accuracy is the only rate
        return _fitted([[f"{_t('|'.join(g.group))}{'' if g.gated else ' (not gated)'}", str(g.n),
                        f"{fmt(g.teacher_rates['accuracy'])} → {fmt(g.student_rates['accuracy'])}",
                        f"{g.teacher_only_correct} / {g.student_only_correct}"] for g in rows],
                       ["group", "n", "top-1 accuracy", "only teacher / only student right"],
                       width)
    body = []
    for g in rows:
        flag = "" if g.gated else " (not gated)"
        flag += " (reference)" if g.reference else ""
        cells = [f"{_t('|'.join(g.group))}{flag}", str(g.n)]
        for r in ("selection_rate", "tpr", "fpr", "accuracy"):
            cells.append(f"{fmt(g.teacher_rates[r])} → {fmt(g.student_rates[r])}")
        body.append(cells)
    return _fitted(body, ["group", "n", "selection rate", "TPR", "FPR", "accuracy"], width)


def _model(info: dict[str, Any]) -> str:
    """A model as a person names it: its file name, registry name and version, or the score
    column."""
    return _t(model_label(info))


class TerminalReporter:
    name = "terminal"
    filename = ""

    def __init__(self, out_dir: Path | None = None, color: bool | None = None,
                 width: int | None = None) -> None:
        self.out_dir = out_dir
        self.color = color
        self.width = width  # columns the report fits in (fairgate.report.console); None: any

    def _s(self, text: str, color: str, bold: bool = False) -> str:
        if self.color is False:
            return text
        return click.style(text, fg=color, bold=bold)

    def render(self, report: GateReport) -> str:
        d = report.decision
        inp = report.inputs
        w = self.width
        lines: list[str] = []

        def add(text: str, color: str | None = None, indent: str = "") -> None:
            for x in wrap(text, w, indent):
                lines.append(x if color is None else self._s(x, color))

        who = " vs ".join(_model(inp[m]) for m in ("student", "teacher"))
        add(f"fairgate {report.version} · {_t(report.policy.path)} · {inp['data']['rows']:,} rows"
            f" · {who}")
        if "reference_student" in inp:
            add(f"  reference student: {_model(inp['reference_student'])}")
        for role, text in model_readings(report):
            add(f"  {role}: {_t(text, 400)}")
        for warning in report.warnings:
            add(f"  warning: {_t(warning, 400)}", "yellow")
        st = report.policy.policy.statistics
        if st.resamples:
            how = f"decide_on: {st.mode}"
            if st.mode == "interval":
                how += f", on_inconclusive: {st.on_inconclusive}"
            add(f"  intervals: {st.confidence:.0%} paired bootstrap ({st.interval}), "
                f"{st.resamples} resamples, seed {st.seed}; {how}")
        counts = {s: sum(r.status is s for r in d.results) for s in Status}
        label, color = _VERDICT[report.verdict]
        detail = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        verdict = wrap(f"{label}  {len(d.results)} checks: {detail}", w)
        lines += ["", self._s(label, color, bold=True) + verdict[0][len(label):], *verdict[1:],
                  ""]
        rows = []
        for r in d.results:
            v = r.value
            change = fmt(v.delta, True)
            if v.delta_interval:
                change += " " + fmt_interval(v.delta_interval, True)
            grouping = _t(r.key.grouping) if r.key.grouping else "overall"
            rows.append([r.status.value.upper(), _t(r.check.id), _t(r.key.metric), grouping,
                         fmt(v.teacher), fmt(v.student), change, _bound_text(r),
                         detect_text(r)])
        table, dropped = fit_table(
            rows, ["status", "check", "metric", "grouping", "teacher", "student",
                   "change (student − teacher)", "bound", "detects (80%)"], w,
            drop=("detects (80%)", "metric"), title=2)  # the check id names the metric
        seen = set()
        for i, row in table:
            if i >= 0 and i not in seen:
                seen.add(i)
                status = d.results[i].status
                row = self._s(row[: len(status.value)], _STYLE[status]) + row[len(status.value):]
            lines.append(row)
        lines += dropped_note(dropped, w)
        problems = [r for r in d.results if r.status is not Status.PASS]
        weak = unresolved(report)
        if weak:
            lines += ["", "Audit too small for these bounds:"]
            for r, b in weak:
                add(f"  {_t(power_text(r, b), REASON_CHARS)}", "yellow")
        if problems:
            lines += ["", "Why:"]
            for r in problems:
                where = f" [{_t(r.key.grouping)}]" if r.key.grouping else ""
                add(f"  {_t(r.check.id)}{where} ({r.status.value}): {_t(r.reason, REASON_CHARS)}")
        for wv in d.expired_waivers:
            add(f"  expired waiver for {_t(wv.check)} (owner {_t(wv.owner)}, expired "
                f"{wv.expires}): no longer applied")
        failing = [r.key.grouping for r in problems if r.key.grouping]
        for shown in dict.fromkeys(failing):
            members = sorted((g for g in report.groups if g.grouping == shown),
                          key=lambda g: (not g.gated, -g.n))
            lines.append("")
            add(f"Groups of {_t(shown)} (teacher → student):")
            lines += _group_table(members[:MAX_GROUPS], w)
            more = len(members) - MAX_GROUPS + report.unlisted_groups(shown)
            if more > 0:
                add(f"  … and {more} smaller groups (report.json lists every gated group)")
        if report.classwise and any(r.key.metric.startswith("classes_") for r in problems):
            lines += _changed_classes(report.classwise, w)
        title, probes = text_probes(report)
        if probes:
            lines.append("")
            add(_t(title, 400))
            lines += _fitted([[_t(c) for c in row] for row in probes], PROBE_HEADER, w)
        if self.out_dir is not None:
            lines.append("")
            add(f"Reports: {_t(self.out_dir)}/")
        return "\n".join(lines) + "\n"


ROLES = (("teacher", "teacher"), ("student", "student"), ("reference_student", "reference student"))


def model_reading(info: dict[str, Any]) -> str:
    """How fairgate read one model's output, and what proved it (report.json ``inputs``)."""
    out = info.get("output", {})
    if info.get("kind") == "column":
        return f"column {info.get('column')!r}: {out.get('how', '')}"
    text = input_reading(info) + f"output {out.get('name')!r}: {out.get('how', '')}"
    why = [f"positive class: {out['positive_from']}" if out.get("positive_from") else "",
           f"scale: {out['scale_from']}" if out.get("scale_from") else "",
           f"classes: {out['classes_from']}" if out.get("classes_from") else "",
           f"checked against its label output {out['checked_against']!r}"
           if out.get("checked_against") else ""]
    why = [w for w in why if w]
    return text + (f" ({'; '.join(why)})" if why else "")


def input_reading(info: dict[str, Any]) -> str:
    """What a text, image or tensor model was fed (report.json ``inputs.<model>``), or ''."""
    if "text" in info:
        t = info["text"]
        pad = t["padding"]
        return (f"text {t['column']!r} through {t['tokenizer']} (sha256 "
                f"{str(t['tokenizer_sha256'])[:12]}…, max_length {t['truncation']['max_length']}, "
                f"padding {pad['to']} with {pad['pad_token']} = {pad['pad_id']}) as "
                f"{', '.join(t['feeds'])}; ")
    if "image" in info:
        i = info["image"]
        return (f"images {i['column']!r} as {i['feeds']!r} ({i['layout']} {i['channels']} "
                f"{'x'.join(str(d) for d in i['size'])}, {i['resample']}); ")
    if "tensor" in info:
        return f"lists {info['tensor']['column']!r} as {info['tensor']['feeds']!r}; "
    return ""


def text_probes(report: GateReport, top: int = 5) -> tuple[str, list[list[str]]]:
    """(title, rows) of the counterfactual text probes that flip decisions most: substitution,
    rows holding its term, teacher and student flip rates; ('', []) without text probes."""
    cf = (report.individual or {}).get("counterfactual") or {}
    subs = cf.get("substitutions")
    if not subs:
        return "", []
    title = (f"Counterfactual text probes on {cf['text']!r} ({cf['rows_with_terms']:,} of "
             f"{cf['rows']:,} sampled rows hold a term; most flipping first):")
    rows = [[f"{s['from']} → {s['to']}", f"{s['rows']:,}", fmt(s["teacher"]), fmt(s["student"])]
            for s in subs[:top]]
    if len(subs) > top:
        rows.append([f"… and {len(subs) - top} more (report.json)", "", "", ""])
    return title, rows


PROBE_HEADER = ["substitution", "rows", "teacher flips", "student flips"]


def model_readings(report: GateReport) -> list[tuple[str, str]]:
    """(role, how its output was read) for each model of the report."""
    return [(name, model_reading(report.inputs[key])) for key, name in ROLES
            if key in report.inputs]


def changed_classes(classwise: dict[str, Any] | None) -> list[tuple[str, list[list[str]]]]:
    """(comparison, rows) of the classes whose accuracy changed significantly (#TC, #SC);
    rows are class, n, accuracy before → after, Holm-adjusted p."""
    out = []
    for name, title in (("teacher_vs_student", "teacher → student (#TC)"),
                        ("reference_vs_student", "reference student → student (#SC)")):
        if name not in (classwise or {}):
            continue
        assert classwise is not None
        rows = [[c["class"], f"{c['n']:,}",
                 f"{fmt(c['teacher_accuracy'])} → {fmt(c['student_accuracy'])}",
                 f"{c['p_holm']:.2g}"] for c in classwise[name] if c["significant"]]
        out.append((f"{title}: {len(rows)} class{'es' if len(rows) != 1 else ''}", rows))
    return out


def _changed_classes(classwise: dict[str, Any], width: int | None = None) -> list[str]:
    """The classes behind a failed class-wise check, and where the top-1 moved to."""
    lines = []
    for title, rows in changed_classes(classwise):
        if rows:
            lines += ["", *wrap(f"Classes whose accuracy changed significantly, {title}:", width)]
            cells = [[_t(c), *rest] for c, *rest in rows]
            lines += _fitted(cells, ["class", "n", "accuracy", "p (Holm)"], width)
    pairs = classwise.get("disagreement", [])
    if pairs and pairs[0]["cells"]:
        d = pairs[0]
        a, b = _t(d["a"]), _t(d["b"])
        lines += ["", *wrap(f"Most frequent top-1 changes ({a} → {b}; {d['disagreeing_rows']} "
                            f"of {d['rows']} rows differ):", width)]
        cells = [[_t(c["a"]), _t(c["b"]), str(c["rows"])] for c in d["cells"][:5]]
        lines += _fitted(cells, [a, b, "rows"], width)
    return lines
