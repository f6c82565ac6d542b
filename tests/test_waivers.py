"""Waivers: a waived failure passes loudly, an expired one stops applying and is reported,
and a waiver without reason or expiry, or naming no check, is a policy error.

The clock is fixed through GateRequest.today, so these tests do not age.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from fairgate.core.outcome import GateReport
from fairgate.errors import PolicyError
from fairgate.integrations.github import build_annotations
from fairgate.report.html import render_html
from fairgate.report.json import to_dict
from fairgate.report.junit import render_junit
from fairgate.report.markdown import render_markdown
from fairgate.run import GateRequest, run_gate

EXPIRES = dt.date(2025, 6, 30)

# dp fails on sex (the synthetic student moves group F up) and passes on race; acc passes.
BASE = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
checks:
  - id: dp
    metric: demographic_parity_difference
    on: [sex, race]
    max_increase: 0.03
  - id: acc
    metric: accuracy
    max_decrease: 0.5
statistics:
  resamples: 0
"""


def _waiver(check: str = "dp", grouping: str | None = "sex", expires: str = "2025-06-30",
            reason: str = "fix planned in ML-42", owner: str = "alice") -> str:
    lines = [f"  - check: {check}"]
    if grouping:
        lines.append(f"    grouping: {grouping}")
    lines += [f"    reason: {reason}", f"    owner: {owner}", f"    expires: {expires}"]
    return "\n".join(lines) + "\n"


def _run(write_policy: Any, synthetic: Path, text: str, today: dt.date) -> GateReport:
    return run_gate(GateRequest(policy=write_policy(text), data=synthetic, teacher_scores="t",
                                student_scores="s", today=today))


def _status(report: GateReport, check: str, grouping: str) -> str:
    return next(r.status.value for r in report.decision.results
                if r.check.id == check and r.key.grouping and r.key.grouping.name == grouping)


def test_without_waiver_the_check_fails(write_policy: Any, synthetic: Path) -> None:
    report = _run(write_policy, synthetic, BASE, EXPIRES)
    assert _status(report, "dp", "sex") == "fail"
    assert report.verdict == "fail" and report.decision.exit_code == 1


@pytest.mark.parametrize("today", [dt.date(2025, 1, 1), EXPIRES])  # the expiry day still counts
def test_waived_failure_passes_with_status_waived(write_policy: Any, synthetic: Path,
                                                  today: dt.date) -> None:
    report = _run(write_policy, synthetic, BASE + "waivers:\n" + _waiver(), today)
    r = next(r for r in report.decision.results if r.check.id == "dp" and r.key.grouping
             and r.key.grouping.name == "sex")
    assert r.status.value == "waived" and not r.blocking
    assert r.reason.startswith("waived until 2025-06-30 by alice: fix planned in ML-42 (was fail: ")
    assert report.verdict == "warn" and report.decision.exit_code == 0
    assert report.decision.expired_waivers == ()


def test_expired_waiver_stops_applying_and_is_reported(write_policy: Any,
                                                       synthetic: Path) -> None:
    report = _run(write_policy, synthetic, BASE + "waivers:\n" + _waiver(),
                  EXPIRES + dt.timedelta(days=1))
    assert _status(report, "dp", "sex") == "fail"
    assert report.verdict == "fail" and report.decision.exit_code == 1
    assert [(w.check, w.expires) for w in report.decision.expired_waivers] == [("dp", EXPIRES)]
    data = json.loads(json.dumps(to_dict(report)))
    assert data["expired_waivers"] == [{"check": "dp", "owner": "alice", "expires": "2025-06-30",
                                        "reason": "fix planned in ML-42"}]


def test_expired_waiver_on_a_passing_gate_warns(write_policy: Any, synthetic: Path) -> None:
    text = BASE.replace("max_increase: 0.03", "max_increase: 1.0")
    report = _run(write_policy, synthetic, text + "waivers:\n" + _waiver(), dt.date(2026, 1, 1))
    assert all(r.status.value == "pass" for r in report.decision.results)
    assert report.verdict == "warn" and report.decision.exit_code == 0


def test_waiver_for_one_grouping_leaves_the_others(write_policy: Any, synthetic: Path) -> None:
    text = BASE.replace("max_increase: 0.03", "max_increase: 0.0")
    plain = _run(write_policy, synthetic, text, EXPIRES)
    assert _status(plain, "dp", "race") == "fail"
    report = _run(write_policy, synthetic, text + "waivers:\n" + _waiver(grouping="sex"), EXPIRES)
    assert _status(report, "dp", "sex") == "waived"
    assert _status(report, "dp", "race") == "fail"
    assert report.verdict == "fail"


def test_waivers_are_loud_in_every_report(write_policy: Any, synthetic: Path) -> None:
    text = BASE + "waivers:\n" + _waiver() + _waiver(check="acc", grouping=None,
                                                     expires="2024-01-31", owner="bob")
    report = _run(write_policy, synthetic, text, dt.date(2025, 1, 1))
    assert _status(report, "dp", "sex") == "waived"
    md = render_markdown(report)
    assert "🟡 **1 check WAIVED**" in md
    assert "**dp** [sex]: waived until **2025-06-30** by alice: “fix planned in ML-42”" in md
    assert "**Expired waiver** for **acc** (owner bob, expired **2024-01-31**)" in md
    suite = ET.fromstring(render_junit(report)).find("testsuite")
    assert suite is not None
    skipped = {(c.get("classname"), c.get("name")): c.find("skipped") for c in suite}
    waived = skipped[("fairgate.dp", "demographic_parity_difference [sex]")]
    assert waived is not None and waived.get("type") == "waived"
    assert waived.get("message", "").startswith("WAIVED: waived until 2025-06-30 by alice")
    expired = skipped[("fairgate.acc", "waiver expired on 2024-01-31")]
    assert expired is not None and expired.get("type") == "expired-waiver"
    page = render_html(report)
    assert '<div class="banner waived"><b>1 check WAIVED</b>' in page
    assert "<b>Expired waiver</b> for <b>acc</b> (owner bob, expired <b>2024-01-31</b>)" in page
    notes = [a for a in build_annotations(report) if a.level == "warning"]
    titles = {a.title for a in notes}
    assert titles == {"fairgate waived: dp [sex]", "fairgate: expired waiver for acc"}
    policy_lines = report.policy.text.splitlines()
    for a in notes:  # both point at the waiver entry itself
        assert a.line is not None and policy_lines[a.line - 1].startswith("  - check: ")


# ----------------------------------------------------------------------------- policy errors


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("waiver", "key", "message"), [
    ("  - {check: dp, owner: a, expires: 2025-06-30}", "waivers[0].reason",
     "required key is missing"),
    ("  - {check: dp, reason: r, owner: a}", "waivers[0].expires", "required key is missing"),
    ("  - {check: nope, reason: r, owner: a, expires: 2025-06-30}", "waivers[0].check",
     "no check with id 'nope'"),
])
def test_incomplete_waiver_is_a_policy_error(write_policy: Any, synthetic: Path,
                                             run_cli: Any, waiver: str, key: str,
                                             message: str) -> None:
    text = BASE + "waivers:\n" + waiver + "\n"
    path = write_policy(text)
    r = run_cli("check", "--policy", path, "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 2
    line = _line(text, waiver.strip())
    assert r.stderr == f"fairgate: error: {path}:{line}: {key}: {message}\n"
    assert "Traceback" not in r.stdout + r.stderr
    with pytest.raises(PolicyError):
        run_gate(GateRequest(policy=path, data=synthetic, teacher_scores="t",
                             student_scores="s"))
