"""report.md: the verdict and what to look at, for pull requests and GitHub step summaries.

GitHub refuses a step summary over 1 MiB, so the report is rendered to a byte budget: group
rows are cut first (keeping the groups whose accuracy changed most), then KPI and check
rows, and every cut is said in the report. Text that comes from the data (group labels,
reasons naming them) is escaped so it cannot inject Markdown or HTML into the summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import (
    INTERVAL_RATES,
    GroupRow,
    MetricKey,
    MetricValue,
    RateIntervals,
)
from fairgate.core.gate import ORDER, POWER, CheckResult, Status
from fairgate.core.metrics import CATALOGUE
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval
from fairgate.inputs.sources import model_label
from fairgate.report import safe
from fairgate.report.json import num
from fairgate.report.terminal import (
    PROBE_HEADER,
    ROLES,
    changed_classes,
    detect_text,
    fmt,
    model_readings,
    power_text,
    text_probes,
    unresolved,
)

GITHUB_SUMMARY_LIMIT = 1024 * 1024  # bytes GitHub accepts in one step's summary
MAX_BYTES = 900 * 1024  # our budget: leaves room for anything else the step appends
GROUP_ROWS = 50  # groups shown per grouping before truncation
LABEL_CHARS = 80
REASON_CHARS = 400
# the group rates reports show: those that carry intervals (evaluate.INTERVAL_RATES)
RATE_TITLES = {"selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR",
               "accuracy": "accuracy"}
RATES = tuple((r, RATE_TITLES[r]) for r in INTERVAL_RATES)

VERDICT = {"pass": "✅ PASS", "warn": "⚠️ PASS with warnings", "fail": "❌ FAIL"}
_MARK = {Status.FAIL: "❌ **fail**", Status.WARN: "⚠️ warn", Status.WAIVED: "🟡 **WAIVED**",
         Status.PASS: "✅ pass"}
_INCONCLUSIVE = {"fail": "inconclusive (blocks)", "warn": "inconclusive (warn only)",
                 "pass": "inconclusive (counted as pass)"}


# ----------------------------------------------------------------------------- shared helpers
# (the HTML, JUnit and GitHub outputs use these too, so all reports say the same thing)


def grouping_name(g: Grouping | None) -> str:
    return "overall" if g is None else g.name


def group_label(g: GroupRow) -> str:
    return "|".join(g.group)


def bound_text(r: CheckResult) -> str:
    return ", ".join(f"{b.bound} {b.limit:g}" for b in r.bounds)


def status_text(r: CheckResult) -> str:
    """The status as people should read it: undefined and inconclusive say what they do."""
    if r.status is Status.UNDEFINED:
        return "undefined" if r.blocking else "undefined (warn only)"
    if r.status is Status.INCONCLUSIVE:
        return _INCONCLUSIVE[r.on_inconclusive or "warn"]
    return r.status.value


def value_text(x: float, interval: Interval | None = None, signed: bool = False,
               count: bool = False) -> str:
    """A value with its interval when there is one: ``0.1991 [0.1876, 0.2104]``."""
    text = show(x, signed, count)
    return text + " " + show_interval(interval, signed, count) if interval is not None else text


def show(x: float | None, signed: bool = False, count: bool = False) -> str:
    """A number as report.json has it (12 significant digits), to 4 decimals; a count
    (:func:`count_metric`) as a whole number."""
    v = num(x)
    if count and v is not None and float(v).is_integer():
        return f"{int(v):+d}" if signed and v else f"{int(v):d}"
    return fmt(v, signed)


def show_interval(i: Interval | None, signed: bool = False, count: bool = False) -> str:
    return "" if i is None else f"[{show(i.lo, signed, count)}, {show(i.hi, signed, count)}]"


def count_metric(metric: str) -> bool:
    """A metric whose value is a number of groups or classes (McNemar counts), not a rate:
    shown as a whole number and drawn on an axis of its own."""
    m = CATALOGUE.get(metric)
    return m is not None and m.paired


def rate_change_text(iv: RateIntervals | None) -> str:
    """The interval of a group rate's change, ``Δ [-0.0298, +0.0035]``; empty without one."""
    return "" if iv is None or iv.delta is None else f"Δ {show_interval(iv.delta, True)}"


def provenance(report: GateReport) -> list[tuple[str, str, str, str, str]]:
    """(input, where it came from, its digest, the positive class, how it was read) for the
    policy, the data, each model and the engine: what report.json's ``inputs`` and
    ``run.engine`` hold, so a reviewer can tell which files made this verdict and how they
    were read. Raw text: each sink makes it safe."""
    inputs = report.inputs
    out = []
    pol = inputs.get("policy", {})
    out.append(("policy", str(pol.get("path", report.policy.path)),
                f"sha256 {pol['sha256']}" if pol.get("sha256") else "—", "—", "YAML policy"))
    data = inputs.get("data", {})
    if data:
        where = str(data.get("path") or data.get("table") or "—")
        digest = (f"fingerprint {data['fingerprint']} ({data.get('fingerprint_of', '')})"
                  if data.get("fingerprint") else
                  f"sha256 {data['sha256']}" if data.get("sha256") else "—")
        files = data.get("files")
        how = ", ".join(x for x in (
            str(data.get("format") or ""),
            f"{files:,} file{'s' if files != 1 else ''}" if isinstance(files, int) else "",
            f"{data['rows']:,} rows" if isinstance(data.get("rows"), int) else "") if x)
        out.append(("data", where, digest, "—", how or "—"))
    readings = dict(model_readings(report))
    for key, role in ROLES:
        info = inputs.get(key)
        if not isinstance(info, dict):
            continue
        src = info.get("source")
        where = (str(src.get("uri") or src.get("label")) if isinstance(src, dict)
                 and (src.get("uri") or src.get("label")) else
                 str(info["path"]) if info.get("path") else f"column {info.get('column')}")
        digest = f"sha256 {info['sha256']}" if info.get("sha256") else "— (a data column)"
        output = info.get("output")
        read: dict[str, Any] = output if isinstance(output, dict) else {}
        positive = (f"{read['positive_class']} (from {read.get('positive_from') or '?'})"
                    if read.get("positive_class") else
                    f"multi-class: {len(read['classes'])} classes (from "
                    f"{read.get('classes_from') or '?'})" if read.get("classes") else "—")
        out.append((role, where, digest, positive, readings.get(role, "—")))
    engine = report.engine or {}
    if engine:
        name = engine.get("name", "?")
        extra = ", ".join(f"{k} {v}" for k, v in engine.items() if k != "name")
        out.append(("engine", str(name), "—", "—", extra or "—"))
    return out


def models_text(report: GateReport) -> tuple[str, str]:
    """(teacher, student) as a person names them: file name, registry name and version, or
    score column."""
    return model_label(report.inputs.get("teacher", {})), model_label(report.inputs.get("student", {}))


def counts_text(report: GateReport) -> str:
    """'4 fail, 1 waived, 3 pass of 8 checks', in severity order."""
    res = report.decision.results
    order = tuple(sorted(ORDER, key=ORDER.__getitem__))
    parts = [f"{sum(r.status is s for r in res)} {s.value}" for s in order
             if any(r.status is s for r in res)]
    return f"{', '.join(parts)} of {len(res)} checks"


def alpha_of(report: GateReport) -> float:
    """Family-wise error rate for 'changed significantly': 1 − confidence."""
    return 1.0 - report.policy.policy.statistics.confidence


def significant(g: GroupRow, alpha: float) -> bool:
    """Holm-adjusted McNemar says the group's accuracy changed (gated groups only)."""
    p = g.mcnemar_p_holm
    return p is not None and not math.isnan(p) and p < alpha


def by_evidence(rows: Iterable[GroupRow]) -> list[GroupRow]:
    """Groups to show first when not all fit: the reference, then gated groups with the
    strongest evidence of an accuracy change (smallest McNemar p), then the largest."""
    def p_of(g: GroupRow) -> float:
        p = g.mcnemar_p_holm if g.mcnemar_p_holm is not None else g.mcnemar_p
        return 1.0 if p is None or math.isnan(p) else p

    return sorted(rows, key=lambda g: (not g.reference, not g.gated, p_of(g), -g.n))


def checks_by_key(report: GateReport) -> dict[MetricKey, list[CheckResult]]:
    out: dict[MetricKey, list[CheckResult]] = {}
    for r in report.decision.results:
        out.setdefault(r.key, []).append(r)
    return out


# ----------------------------------------------------------------------------- rendering


def _md(text: object) -> str:
    """A name or label from the data or the policy, as a Markdown table cell or phrase."""
    return safe.markdown(text, LABEL_CHARS)


@dataclass(frozen=True)
class _Limits:
    groups: int | None  # rows per grouping; None: all
    checks: int | None
    kpis: int | None


def _table(header: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> list[str]:
    """A GFM table; the ``right`` columns (numbers) right-aligned, so digits line up."""
    right = set(right)
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def _mark(r: CheckResult) -> str:
    if r.status is Status.UNDEFINED:
        return "❓ **undefined**" if r.blocking else "❓ undefined (warn only)"
    if r.status is Status.INCONCLUSIVE:
        text = status_text(r)
        return f"🔷 **{text}**" if r.blocking else f"🔷 {text}"
    return _MARK[r.status]


def _waivers(report: GateReport) -> list[str]:
    d = report.decision
    waived = [r for r in d.results if r.status is Status.WAIVED]
    if not waived and not d.expired_waivers:
        return []
    lines = []
    if waived:
        lines.append(f"> 🟡 **{len(waived)} check{'s' if len(waived) != 1 else ''} WAIVED**: "
                     "they did not pass, and a waiver lets the release through until it expires.")
        for r in waived:
            w = r.waiver
            assert w is not None
            lines.append(f"> - **{_md(r.check.id)}** [{_md(grouping_name(r.key.grouping))}]: "
                         f"waived until **{w.expires}** by {_md(w.owner)}: "
                         f"“{safe.markdown(w.reason, REASON_CHARS)}”")
    for w in d.expired_waivers:
        lines += ["", f"> ⏰ **Expired waiver** for **{_md(w.check)}** (owner {_md(w.owner)}, "
                      f"expired **{w.expires}**): no longer applied. "
                      f"“{safe.markdown(w.reason, REASON_CHARS)}”"]
    return [*lines, ""]


def _checks(report: GateReport, limit: int | None) -> list[str]:
    results = list(report.decision.results)
    shown = results if limit is None else results[:limit]
    rows = [[_mark(r), f"**{_md(r.check.id)}**<br>{_md(r.key.metric)}",
             _md(grouping_name(r.key.grouping)),
             value_text(r.value.teacher, count=count_metric(r.key.metric)),
             value_text(r.value.student, count=count_metric(r.key.metric)),
             value_text(r.value.delta, r.value.delta_interval, signed=True,
                        count=count_metric(r.key.metric)), bound_text(r),
             detect_text(r)]
            for r in shown]
    lines = ["### Checks", ""]
    lines += _table(["status", "check", "grouping", "teacher", "student",
                     "change (student − teacher)", "bound", f"detects ({POWER:.0%} power)"], rows,
                    right=(3, 4, 5, 7))
    if len(shown) < len(results):
        lines.append(f"\n*{len(results) - len(shown)} more checks not shown (summary size "
                     "limit): see report.json.*")
    problems = [r for r in shown if r.status is not Status.PASS]
    weak = [(r, b) for r, b in unresolved(report) if r in shown]
    if weak:
        lines += ["", "**Audit too small for these bounds:**", ""]
        lines += [f"- {safe.markdown(power_text(r, b), REASON_CHARS)}" for r, b in weak]
    if problems:
        lines += ["", "**Why:**", ""]
        lines += [f"- **{_md(r.check.id)}** [{_md(grouping_name(r.key.grouping))}] "
                  f"({status_text(r)}): "
                  f"{safe.markdown(r.reason, REASON_CHARS)}" for r in problems]
    return [*lines, ""]


def _kpis(report: GateReport, limit: int | None) -> list[str]:
    kpis: list[MetricValue] = list(report.kpis)
    if not kpis or limit == 0:
        return ([f"*KPI table left out ({len(kpis)} rows; summary size limit): see report.json."
                 "*", ""] if kpis else [])
    gated = checks_by_key(report)
    shown = kpis if limit is None else kpis[:limit]
    rows = []
    for v in shown:
        bound = "; ".join(f"{bound_text(r)} ({_md(r.check.id)})" for r in gated.get(v.key, []))
        count = count_metric(v.key.metric)
        rows.append([_md(v.key.metric), _md(grouping_name(v.key.grouping)),
                     value_text(v.teacher, v.teacher_interval, count=count),
                     value_text(v.student, v.student_interval, count=count),
                     value_text(v.delta, v.delta_interval, signed=True, count=count),
                     bound or "—"])
    st = report.policy.policy.statistics
    lines = ["### KPIs", ""]
    if st.resamples:
        lines += [f"Intervals: {st.confidence:.0%} paired bootstrap ({st.interval}), "
                  f"{st.resamples} resamples (seed {st.seed}); decide_on: {st.mode}.", ""]
    lines += _table(["metric", "grouping", "teacher", "student", "change", "bound"], rows,
                    right=(2, 3, 4))
    if len(shown) < len(kpis):
        lines.append(f"\n*{len(kpis) - len(shown)} more KPIs not shown (summary size limit): see "
                     "report.json.*")
    return [*lines, ""]


def _groups(report: GateReport, limit: int | None) -> list[str]:
    if not report.groups:
        return []
    alpha = alpha_of(report)
    behind = {r.key.grouping for r in report.decision.results
              if r.status is not Status.PASS and r.key.grouping is not None}
    lines = ["### Groups (teacher → student)", ""]
    for grouping in report.groupings:
        rows = [g for g in report.groups if g.grouping == grouping]
        shown = rows if limit is None or len(rows) <= limit else by_evidence(rows)[:limit]
        gated = sum(g.gated for g in rows)
        total = len(rows) + report.unlisted_groups(grouping)
        note = " · behind a check that did not pass" if grouping in behind else ""
        lines += ["<details>", f"<summary><b>{safe.html(grouping.name, LABEL_CHARS)}</b>: {total} "
                  f"groups "
                  f"({gated} gated){note}</summary>", ""]
        if len(shown) < total:
            lines += [f"*Showing {len(shown)} of {total} groups (summary size limit): the "
                      "reference, then those whose accuracy changed most (smallest McNemar p), "
                      "then the largest. Every gated group is in report.json and report.html.*",
                      ""]
        if shown and rows[0].top1:
            lines += _top1_rows(shown, alpha)
        elif shown:
            body = []
            for g in shown:
                label, n, p_text = _group_cells(g, alpha)
                body.append([label, n, *(_rate_cell(g, k) for k, _ in RATES), p_text])
            lines += _table(["group", "n", *(t for _, t in RATES), "McNemar p (Holm)"], body,
                            right=range(1, len(RATES) + 3))
        lines += ["", "</details>", ""]
    st = report.policy.policy.statistics
    lines += [f"McNemar p (Holm): exact paired test of teacher vs student accuracy in each gated "
              f"group, Holm-adjusted within the grouping; **bold** when below {alpha:.2g}."
              + (f" Δ: {st.confidence:.0%} percentile interval of the rate's change (student − "
                 "teacher) from the same paired bootstrap copies, for the gated groups and the "
                 "reference." if st.resamples else ""), ""]
    return lines


def _rate_cell(g: GroupRow, rate: str) -> str:
    """``teacher → student`` of one rate, and the interval of its change when there is one."""
    text = f"{show(g.teacher_rates[rate])} → {show(g.student_rates[rate])}"
    change = rate_change_text(g.intervals.get(rate))
    return f"{text}<br>{change}" if change else text


def _group_cells(g: GroupRow, alpha: float) -> tuple[str, str, str]:
    """(group with its flags, n, McNemar p in bold when significant) of a group row."""
    flags = (" (reference)" if g.reference else "") + ("" if g.gated else " (not gated)")
    p = g.mcnemar_p_holm
    p_text = "—" if p is None else f"{p:.3g}"
    if significant(g, alpha):
        p_text = f"**{p_text}**"
    return _md(group_label(g)) + flags, f"{g.n:,}", p_text


def _top1_rows(rows: list[GroupRow], alpha: float) -> list[str]:
    """A multi-class top-1 table: accuracy is the only rate it has."""
    body = []
    for g in rows:
        label, n, p_text = _group_cells(g, alpha)
        body.append([label, n, _rate_cell(g, "accuracy"),
                     f"{g.teacher_only_correct:,} / {g.student_only_correct:,}", p_text])
    return _table(["group", "n", "top-1 accuracy", "only teacher / only student right",
                   "McNemar p (Holm)"], body, right=(1, 2, 3, 4))


def disagreement_lines(report: GateReport, top: int = 10
                       ) -> list[tuple[str, str, str, list[list[str]]]]:
    """(model a, model b, title, rows) per pair: where their top-1 classes differ most."""
    out = []
    for d in (report.classwise or {}).get("disagreement", []):
        rate = "—" if d["rate"] is None else f"{d['rate']:.2%}"
        title = (f"{d['a']} vs {d['b']}: {d['disagreeing_rows']:,} of {d['rows']:,} rows ({rate}) "
                 f"differ, over {d['pairs']:,} class pairs")
        rows = [[c["a"], c["b"], f"{c['rows']:,}"] for c in d["cells"][:top]]
        out.append((d["a"], d["b"], title, rows))
    return out


def _classwise(report: GateReport) -> list[str]:
    if not report.classwise:
        return []
    lines = ["### Classes whose accuracy changed significantly", ""]
    for title, rows in changed_classes(report.classwise):
        lines += [f"**{safe.markdown(title)}**", ""]
        if rows:
            lines += _table(["class", "n", "accuracy", "p (Holm)"],
                            [[_md(r[0]), *r[1:]] for r in rows], right=(1, 2, 3))
        lines.append("")
    lines += ["### Class-wise disagreement (top-1 class of one model → the other)", ""]
    for a, b, title, rows in disagreement_lines(report):
        lines += [f"**{safe.markdown(title)}**", ""]
        if rows:
            lines += _table([f"{_md(a)} says", f"{_md(b)} says", "rows"],
                            [[_md(x) for x in r[:2]] + [r[2]] for r in rows], right=(2,))
        lines.append("")
    return lines


def _render(report: GateReport, lim: _Limits) -> str:
    teacher, student = models_text(report)
    rows = report.inputs.get("data", {}).get("rows")
    lines = [f"## {VERDICT[report.verdict]} · fairgate", "",
             f"**{counts_text(report)}** · student {safe.markdown_code(student)} vs teacher "
             f"{safe.markdown_code(teacher)} · "
             + (f"{rows:,} rows · " if isinstance(rows, int) else "")
             + f"policy {safe.markdown_code(report.policy.path)}", ""]
    lines += [f"> ⚠️ **Warning**: {safe.markdown(w)}" for w in report.warnings]
    lines += [""] if report.warnings else []
    lines += [f"- {role} read as: {safe.markdown(text)}" for role, text in model_readings(report)]
    lines.append("")
    lines += _waivers(report)
    lines += _checks(report, lim.checks)
    lines += _kpis(report, lim.kpis)
    if lim.groups != 0:
        lines += _groups(report, lim.groups)
    elif report.groups:
        lines += [f"*Group tables left out ({len(report.groups):,} groups; summary size limit): "
                  "see report.json and report.html.*", ""]
    if lim.checks is None:
        lines += _classwise(report)
    title, probes = text_probes(report)
    if probes:
        lines += [safe.markdown(title), ""]
        lines += _table(PROBE_HEADER, [[safe.markdown(c) for c in row] for row in probes],
                        right=(1, 2, 3))
        lines.append("")
    lines += _provenance(report)
    lines.append(f"<sub>fairgate {report.version} · full numbers in report.json, charts in "
                 "report.html</sub>")
    return "\n".join(lines) + "\n"


def _provenance(report: GateReport) -> list[str]:
    """Which files made this verdict: digests of the inputs, how each model was read."""
    rows = [[_md(name), _md(where), safe.markdown(digest, 400), _md(positive),
             safe.markdown(how, REASON_CHARS)]
            for name, where, digest, positive, how in provenance(report)]
    return ["### Inputs", "", *_table(["input", "source", "digest", "positive class", "read as"],
                                      rows), ""]


def _cut(text: str, max_bytes: int) -> str:
    """Last resort: cut at a line boundary, close open <details>, and say so."""
    note = "\n\n*Report cut here (summary size limit): see report.json.*\n"
    raw = text.encode()[: max_bytes - len(note.encode()) - 32]
    head = raw.decode(errors="ignore").rsplit("\n", 1)[0]
    head += "\n</details>" * (head.count("<details>") - head.count("</details>"))
    return head + note


def render_markdown(report: GateReport, max_bytes: int = MAX_BYTES,
                    group_rows: int | None = GROUP_ROWS) -> str:
    """report.md within ``max_bytes`` (UTF-8), cutting the least useful rows first."""
    ladder = (_Limits(group_rows, None, None), _Limits(10, None, None), _Limits(0, None, None),
              _Limits(0, 200, 50), _Limits(0, 50, 0))
    text = ""
    for lim in ladder:
        text = _render(report, lim)
        if len(text.encode()) <= max_bytes:
            return text
    return _cut(text, max_bytes)


class MarkdownReporter:
    name = "md"
    filename = "report.md"

    def render(self, report: GateReport) -> str:
        return render_markdown(report)
