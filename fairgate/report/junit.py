"""junit.xml: one testcase per check and grouping, for Jenkins' junit step and GitLab.

``<failure>`` is a blocking check that failed (or is inconclusive under ``on_inconclusive:
fail``), ``<error>`` a blocking check that is undefined (the gate could not tell),
``<skipped>`` one that did not pass but does not block (severity warn, ``on_undefined: warn``,
inconclusive with ``on_inconclusive`` warn or pass, or waived) with the reason. So failures + errors > 0
exactly when fairgate exits 1, and a CI test view shows the same verdict as the exit code.
Each expired waiver is a skipped testcase of its own, so it shows up there too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fairgate.core.gate import CheckResult, Status
from fairgate.core.outcome import GateReport
from fairgate.report import safe
from fairgate.report.markdown import (
    VERDICT,
    bound_text,
    counts_text,
    grouping_name,
    models_text,
    status_text,
    value_text,
)
from fairgate.report.terminal import detect_text, model_readings

MESSAGE_CHARS = 1000
_x = safe.xml  # every attribute and text: what XML 1.0 cannot carry shown escaped, clipped


def _kind(r: CheckResult) -> tuple[str, str, str] | None:
    """(element, type, message prefix) for a check that did not pass; None if it passed."""
    if r.status is Status.PASS:
        return None
    if r.status is Status.FAIL:
        return "failure", "fail", ""
    if r.status is Status.UNDEFINED and r.blocking:
        return "error", "undefined", "undefined: "
    if r.status is Status.UNDEFINED:
        return "skipped", "undefined-warn", "undefined (warn only, not blocking): "
    if r.status is Status.INCONCLUSIVE and r.blocking:
        return "failure", "inconclusive", "inconclusive (on_inconclusive: fail): "
    if r.status is Status.INCONCLUSIVE:
        return "skipped", f"inconclusive-{r.on_inconclusive or 'warn'}", f"{status_text(r)}: "
    if r.status is Status.WAIVED:
        return "skipped", "waived", "WAIVED: "
    return "skipped", "warn", "warning (severity warn, not blocking): "


def _details(r: CheckResult) -> str:
    """One line per fact; data inside a line cannot break it (control characters escaped)."""
    v = r.value
    return "\n".join(safe.visible(line) for line in [
        f"check: {r.check.id} ({r.key.metric} on {grouping_name(r.key.grouping)})",
        f"status: {r.status.value}{' (blocking)' if r.blocking else ''}",
        f"teacher: {value_text(v.teacher, v.teacher_interval)}",
        f"student: {value_text(v.student, v.student_interval)}",
        f"change (student − teacher): {value_text(v.delta, v.delta_interval, signed=True)}",
        f"bound: {bound_text(r)}",
        f"detectable with 80% power: {detect_text(r)}",
        f"reason: {safe.clip(r.reason)}",
    ])


def _testcase(suite: ET.Element, r: CheckResult) -> str | None:
    case = ET.SubElement(suite, "testcase", {
        "classname": _x(f"fairgate.{r.check.id}"),
        "name": _x(f"{r.key.metric} [{grouping_name(r.key.grouping)}]"),
        "time": "0",
    })
    kind = _kind(r)
    if kind is None:
        return None
    tag, typ, prefix = kind
    el = ET.SubElement(case, tag, {"type": typ,
                                   "message": _x(prefix + r.reason, MESSAGE_CHARS)})
    el.text = _x(_details(r))
    return tag


def render_junit(report: GateReport) -> str:
    d = report.decision
    seconds = f"{sum(report.timings.values()):.3f}"
    suite = ET.Element("testsuite", {"name": _x(f"fairgate: {report.policy.path}")})
    props = ET.SubElement(suite, "properties")
    teacher, student = models_text(report)
    for name, value in (("fairgate.verdict", report.verdict),
                        ("fairgate.version", report.version),
                        ("fairgate.exit_code", str(d.exit_code)),
                        ("policy", str(report.policy.path)),
                        ("data", str(report.inputs.get("data", {}).get("path", ""))),
                        ("teacher", teacher), ("student", student),
                        *((f"{role}.read_as", text) for role, text in model_readings(report)),
                        *((f"fairgate.warning.{i}", w) for i, w in enumerate(report.warnings, 1))):
        ET.SubElement(props, "property", {"name": name, "value": _x(value)})
    tally = {"failure": 0, "error": 0, "skipped": 0}
    for r in d.results:
        tag = _testcase(suite, r)
        if tag:
            tally[tag] += 1
    for w in d.expired_waivers:
        case = ET.SubElement(suite, "testcase", {
            "classname": _x(f"fairgate.{w.check}"),
            "name": _x(f"waiver expired on {w.expires}"), "time": "0"})
        ET.SubElement(case, "skipped", {
            "type": "expired-waiver",
            "message": _x(f"EXPIRED WAIVER for {w.check} (owner {w.owner}, expired "
                          f"{w.expires}): no longer applied; was: {w.reason}", MESSAGE_CHARS)})
        tally["skipped"] += 1
    out = ET.SubElement(suite, "system-out")
    out.text = _x("\n".join([f"{VERDICT[report.verdict]}: {counts_text(report)}; student {student} "
                             f"vs teacher {teacher}",
                             *(f"{role} read as: {text}" for role, text in model_readings(report)),
                             *(f"WARNING: {w}" for w in report.warnings)]))
    tests = len(d.results) + len(d.expired_waivers)
    counts = {"tests": str(tests), "failures": str(tally["failure"]),
              "errors": str(tally["error"]), "skipped": str(tally["skipped"]), "time": seconds}
    suite.attrib.update({**counts, "timestamp": _timestamp(report.started_at)})
    root = ET.Element("testsuites", {"name": "fairgate", **counts})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _timestamp(started_at: str) -> str:
    """ISO 8601 without the offset, as Ant writes it (times are UTC)."""
    return started_at.split("+")[0].removesuffix("Z")


class JunitReporter:
    name = "junit"
    filename = "junit.xml"

    def render(self, report: GateReport) -> str:
        return render_junit(report)
