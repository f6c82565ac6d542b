"""The terminal report: what a person needs to decide, at a glance.

Verdict first, then the checks (failures first) with teacher, student, change and bound,
then why each non-passing check did not pass, and the groups behind the failures. Every
name, label, path and reason goes through :func:`fairgate.report.safe.terminal` (``_t``):
this text is printed to CI logs, which the Actions runner parses for commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fairgate.core.evaluate import GroupRow
from fairgate.core.gate import CheckResult, Status
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval
from fairgate.inputs.sources import model_label
from fairgate.report import safe
from fairgate.report.json import num

_STYLE = {
    Status.FAIL: "red",
    Status.UNDEFINED: "magenta",
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


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return [line(header).rstrip(), line(["─" * w for w in widths]),
            *(line(r).rstrip() for r in rows)]


def _group_table(rows: list[GroupRow]) -> list[str]:
    if rows and rows[0].top1:  # multi-class top-1: accuracy is the only rate
        return _table([[f"{_t('|'.join(g.group))}{'' if g.gated else ' (not gated)'}", str(g.n),
                        f"{fmt(g.teacher_rates['accuracy'])} → {fmt(g.student_rates['accuracy'])}",
                        f"{g.teacher_only_correct} / {g.student_only_correct}"] for g in rows],
                      ["group", "n", "top-1 accuracy", "only teacher / only student right"])
    body = []
    for g in rows:
        flag = "" if g.gated else " (not gated)"
        flag += " (reference)" if g.reference else ""
        cells = [f"{_t('|'.join(g.group))}{flag}", str(g.n)]
        for r in ("selection_rate", "tpr", "fpr", "accuracy"):
            cells.append(f"{fmt(g.teacher_rates[r])} → {fmt(g.student_rates[r])}")
        body.append(cells)
    return _table(body, ["group", "n", "selection rate", "TPR", "FPR", "accuracy"])


def _model(info: dict[str, Any]) -> str:
    """A model as a person names it: its file name, registry name and version, or the score
    column."""
    return _t(model_label(info))


class TerminalReporter:
    name = "terminal"
    filename = ""

    def __init__(self, out_dir: Path | None = None, color: bool | None = None) -> None:
        self.out_dir = out_dir
        self.color = color

    def _s(self, text: str, color: str, bold: bool = False) -> str:
        if self.color is False:
            return text
        return click.style(text, fg=color, bold=bold)

    def render(self, report: GateReport) -> str:
        d = report.decision
        inp = report.inputs
        lines = []
        who = " vs ".join(_model(inp[m]) for m in ("student", "teacher"))
        lines.append(
            f"fairgate {report.version} · {_t(report.policy.path)} · {inp['data']['rows']:,} rows"
            f" · {who}"
        )
        if "reference_student" in inp:
            lines.append(f"  reference student: {_model(inp['reference_student'])}")
        for role, text in model_readings(report):
            lines.append(f"  {role}: {_t(text, 400)}")
        for warning in report.warnings:
            lines.append(self._s(f"  warning: {_t(warning, 400)}", "yellow"))
        st = report.policy.policy.statistics
        if st.resamples:
            lines.append(f"  intervals: {st.confidence:.0%} paired bootstrap, {st.resamples} "
                         f"resamples, seed {st.seed}; decide_on: {st.decide_on}")
        counts = {s: sum(r.status is s for r in d.results) for s in Status}
        label, color = _VERDICT[report.verdict]
        detail = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        lines += ["", self._s(f"{label}", color, bold=True) + f"  {len(d.results)} checks: {detail}",
                  ""]
        rows = []
        for r in d.results:
            v = r.value
            change = fmt(v.delta, True)
            if v.delta_interval:
                change += " " + fmt_interval(v.delta_interval, True)
            grouping = _t(r.key.grouping) if r.key.grouping else "overall"
            rows.append([r.status.value.upper(), _t(r.check.id), _t(r.key.metric), grouping,
                         fmt(v.teacher), fmt(v.student), change, _bound_text(r)])
        table = _table(rows, ["status", "check", "metric", "grouping", "teacher", "student",
                              "change (student − teacher)", "bound"])
        for i, row in enumerate(table):
            if i >= 2:
                status = d.results[i - 2].status
                row = self._s(row[: len(status.value)], _STYLE[status]) + row[len(status.value):]
            lines.append(row)
        problems = [r for r in d.results if r.status is not Status.PASS]
        if problems:
            lines += ["", "Why:"]
            for r in problems:
                where = f" [{_t(r.key.grouping)}]" if r.key.grouping else ""
                lines.append(f"  {_t(r.check.id)}{where} ({r.status.value}): "
                             f"{_t(r.reason, REASON_CHARS)}")
        for w in d.expired_waivers:
            lines.append(f"  expired waiver for {_t(w.check)} (owner {_t(w.owner)}, expired "
                         f"{w.expires}): no longer applied")
        failing = [r.key.grouping for r in problems if r.key.grouping]
        for shown in dict.fromkeys(failing):
            members = sorted((g for g in report.groups if g.grouping == shown),
                          key=lambda g: (not g.gated, -g.n))
            lines += ["", f"Groups of {_t(shown)} (teacher → student):"]
            lines += ["  " + x for x in _group_table(members[:MAX_GROUPS])]
            more = len(members) - MAX_GROUPS + report.unlisted_groups(shown)
            if more > 0:
                lines.append(f"  … and {more} smaller groups (report.json lists every gated "
                             "group)")
        if report.classwise and any(r.key.metric.startswith("classes_") for r in problems):
            lines += _changed_classes(report.classwise)
        if self.out_dir is not None:
            lines += ["", f"Reports: {_t(self.out_dir)}/"]
        return "\n".join(lines) + "\n"


ROLES = (("teacher", "teacher"), ("student", "student"), ("reference_student", "reference student"))


def model_reading(info: dict[str, Any]) -> str:
    """How fairgate read one model's output, and what proved it (report.json ``inputs``)."""
    out = info.get("output", {})
    if info.get("kind") == "column":
        return f"column {info.get('column')!r}: {out.get('how', '')}"
    text = f"output {out.get('name')!r}: {out.get('how', '')}"
    why = [f"positive class: {out['positive_from']}" if out.get("positive_from") else "",
           f"scale: {out['scale_from']}" if out.get("scale_from") else "",
           f"classes: {out['classes_from']}" if out.get("classes_from") else "",
           f"checked against its label output {out['checked_against']!r}"
           if out.get("checked_against") else ""]
    why = [w for w in why if w]
    return text + (f" ({'; '.join(why)})" if why else "")


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


def _changed_classes(classwise: dict[str, Any]) -> list[str]:
    """The classes behind a failed class-wise check, and where the top-1 moved to."""
    lines = []
    for title, rows in changed_classes(classwise):
        if rows:
            lines += ["", f"Classes whose accuracy changed significantly, {title}:"]
            cells = [[_t(c), *rest] for c, *rest in rows]
            lines += ["  " + x for x in _table(cells, ["class", "n", "accuracy", "p (Holm)"])]
    pairs = classwise.get("disagreement", [])
    if pairs and pairs[0]["cells"]:
        d = pairs[0]
        a, b = _t(d["a"]), _t(d["b"])
        lines += ["", f"Most frequent top-1 changes ({a} → {b}; {d['disagreeing_rows']} "
                  f"of {d['rows']} rows differ):"]
        cells = [[_t(c["a"]), _t(c["b"]), str(c["rows"])] for c in d["cells"][:5]]
        lines += ["  " + x for x in _table(cells, [a, b, "rows"])]
    return lines
