"""Untrusted text end to end: hostile group values, column names, waivers and paths through
``fairgate check``, ``fairgate compare`` and ``fairgate policy validate``, with and without
GitHub Actions; every sink is read the way its consumer reads it (issue 10, section 2).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fairgate.integrations.mlflow import collect, kpi_table, valid_key
from fairgate.run import GateRequest, run_gate
from tests.conftest import CliResult
from tests.hostile.runner import commands, own_annotations
from tests.hostile.test_text_sinks import (
    BIG,
    CANDIDATE_REPORT,
    COLUMN_A,
    COLUMN_B,
    OWNER,
    PAGE_TAGS,
    PAYLOADS,
    REASON,
    STUDENT,
    TEACHER,
    assert_csv_inert,
    assert_html_inert,
    assert_markdown_inert,
    assert_no_runner_command,
    assert_terminal_safe,
    assert_xml_parses,
    hostile_audit,
    hostile_policy,
    parse_html,
    shown,
    yaml_str,
)
from tests.test_github import parse_file_command

ROOT = Path(__file__).resolve().parents[2]
PRINTABLE = [p for p in PAYLOADS if p.isprintable()]  # shown exactly as they are


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    return hostile_policy(tmp_path), hostile_audit(tmp_path)


def _check(run_cli: Callable[..., CliResult], policy: Path, data: Path, *extra: str) -> CliResult:
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", TEACHER,
                   "--student-scores", STUDENT, "--no-mlflow", *extra)


def _assert_reports_inert(out: Path) -> None:
    md = (out / "report.md").read_text(encoding="utf-8")
    assert_markdown_inert(md, literal=[*PRINTABLE, "sex*age_group", shown(PAYLOADS[0]),
                                       shown("\x1b[2J"), shown("\x00")])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_html_inert(page, literal=[*PRINTABLE, shown("\x1b[2J"), shown(OWNER)[:40]])
    root = assert_xml_parses((out / "junit.xml").read_text(encoding="utf-8"))
    assert int(root.get("failures", "0")) >= 1


@pytest.mark.parametrize("actions", [False, True], ids=["terminal", "github-actions"])
def test_check_with_hostile_text(hostile: tuple[Path, Path], run_cli: Callable[..., CliResult],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 actions: bool) -> None:
    policy, data = hostile
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    if actions:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    else:
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    r = _check(run_cli, policy, data)
    assert r.exit_code == 1, r.stderr
    assert r.report["verdict"] == "fail"
    assert_terminal_safe(r.stdout, styled=actions)  # the Actions log renders fairgate's colours
    assert_terminal_safe(r.stderr)
    assert len(r.stdout) < 100_000  # the 1 MB group value is clipped
    assert shown(PAYLOADS[0]) in r.stdout and "#\\x23[error]x" in r.stdout
    _assert_reports_inert(r.out)
    notes = own_annotations(r.stdout)
    if not actions:
        assert not commands(r.stdout) and not commands(r.stderr)
        return
    assert {n.name for n in notes} == {"error", "warning"}
    for n in notes:  # data and properties came back as sent: no field broke out
        assert "\n" not in n.properties.get("title", "") and n.properties["file"].endswith(
            "policy.yaml")
    waived = shown(REASON).replace("##[", "#\\x23[")
    assert any(waived in n.data for n in notes), [n.data for n in notes]
    assert_markdown_inert(summary.read_text(encoding="utf-8"), literal=PRINTABLE)
    out = parse_file_command(outputs.read_text(encoding="utf-8"))
    assert out["verdict"] == "fail"
    assert all("\r" not in line for line in out["failed-checks"].split("\n"))


def test_check_with_colours_keeps_only_its_own(hostile: tuple[Path, Path],
                                              run_cli: Callable[..., CliResult]) -> None:
    policy, data = hostile
    r = _check(run_cli, policy, data, "--color")
    assert r.exit_code == 1, r.stderr
    assert "\x1b[" in r.stdout  # fairgate's colours
    assert "\x1b[2J" not in r.stdout
    assert_terminal_safe(r.stdout, styled=True)


@pytest.mark.parametrize("actions", [False, True], ids=["terminal", "github-actions"])
def test_compare_with_hostile_text(hostile: tuple[Path, Path], run_cli: Callable[..., CliResult],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   actions: bool) -> None:
    policy, data = hostile
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    if actions:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    else:
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    out = tmp_path / "cmp"
    r = run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", TEACHER,
                "--candidate-scores", STUDENT, "--candidate-scores", TEACHER, "--no-mlflow",
                "--out", out)
    assert r.exit_code == 1, r.stderr
    assert_terminal_safe(r.stdout, styled=actions)
    assert_terminal_safe(r.stderr)
    assert "#\\x23[error]" in r.stdout
    assert_markdown_inert((out / "compare.md").read_text(encoding="utf-8"),
                          literal=["sex*age_group"], links=CANDIDATE_REPORT)
    # compare.html: report.html's elements plus links, which only reach the candidates'
    # own reports; the hostile column names are shown as text
    page = parse_html((out / "compare.html").read_text(encoding="utf-8"))
    for tag, attrs in page.tags:
        assert tag in PAGE_TAGS | {"a"}, tag
        assert not any(k.lower().startswith("on") for k, _ in attrs), attrs
        if tag == "a":
            href = dict(attrs)["href"]
            assert re.fullmatch(r"[A-Za-z0-9._-]+/report\.(html|md|json)", href), href
            assert (out / href).is_file()
    text = "".join(page.text)
    assert shown(STUDENT) in text and shown(TEACHER) in text
    for folder in (p for p in out.iterdir() if p.is_dir()):
        assert_html_inert((folder / "report.html").read_text(encoding="utf-8"))
        assert_markdown_inert((folder / "report.md").read_text(encoding="utf-8"))
    if not actions:
        assert not commands(r.stdout) and not commands(r.stderr)
        return
    notes = own_annotations(r.stdout)
    assert {n.name for n in notes} >= {"error"}
    for n in notes:  # data and properties came back as sent: no field broke out
        assert "\n" not in n.properties.get("title", "")
        assert n.properties["file"].endswith("policy.yaml")
    assert summary.read_text(encoding="utf-8") == (out / "compare.md").read_text(encoding="utf-8")
    values = parse_file_command(outputs.read_text(encoding="utf-8"))
    assert values["verdict"] == "fail" and values["best-candidates"] == ""
    for name in ("failed-checks", "failing-candidates", "best-per-objective"):
        assert all("\r" not in line and line.isprintable() for line in values[name].split("\n"))


def test_kpis_csv_and_mlflow_keys(hostile: tuple[Path, Path]) -> None:
    policy, data = hostile
    report = run_gate(GateRequest(policy=policy, data=data, teacher_scores=TEACHER,
                                  student_scores=STUDENT))
    rows = assert_csv_inert(kpi_table(report), ["check", "metric", "grouping", "undefined"])
    assert any(r["grouping"] == "'" + shown(COLUMN_B) for r in rows)  # '  =cmd...' guarded
    record = collect(report, env={})
    for key in (*record.metrics, *record.params, *record.tags):
        assert valid_key(key), key
    for key, value in (*record.params.items(), *record.tags.items()):
        if key != "mlflow.note.content":
            assert value.isprintable() or value == "", (key, value)
    assert_markdown_inert(record.tags["mlflow.note.content"], literal=["sex*age_group"])


def test_hostile_values_in_error_messages(tmp_path: Path,
                                          run_cli: Callable[..., CliResult]) -> None:
    data = hostile_audit(tmp_path, big=False)
    policy = hostile_policy(tmp_path)
    missing = "nope\n::set-output name=verdict::pass\r##[error]x \x1b[2J"
    r = run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", missing,
                "--student-scores", STUDENT, "--no-mlflow")
    assert r.exit_code == 3, r.stderr
    assert_terminal_safe(r.stderr)
    assert r.stderr.startswith("fairgate: error: ")
    bad_id = tmp_path / "bad.yaml"
    bad_id.write_text("version: 1\naudit: {label: y, positive_label: 1, sensitive: [sex]}\n"
                      f"checks:\n  - {{id: {yaml_str(missing)}, metric: accuracy, max: 1}}\n")
    r = run_cli("policy", "validate", bad_id)
    assert r.exit_code == 2
    assert_terminal_safe(r.stderr)
    r = run_cli("policy", "validate", tmp_path / "##[error]x\n::add-mask::y.yaml")
    assert r.exit_code == 2
    assert_terminal_safe(r.stderr)
    r = run_cli("check", "--policy", policy, "--data", data, "--format", "##[error]x\r::warning::y")
    assert r.exit_code == 2  # click's own usage error quotes the value
    assert_terminal_safe(r.stderr)


def test_policy_validate_names_hostile_columns(tmp_path: Path,
                                               run_cli: Callable[..., CliResult]) -> None:
    r = run_cli("policy", "validate", hostile_policy(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert_terminal_safe(r.stdout)
    assert shown(COLUMN_A).replace("##[", "#\\x23[") in r.stdout


def test_the_process_output_itself(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    """As the runner sees it: a real process, stdout and stderr as bytes, CR not translated."""
    policy, data = hostile
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"), "GITHUB_OUTPUT": str(tmp_path / "o")}
    p = subprocess.run([sys.executable, "-m", "fairgate", "check", "--policy", str(policy),
                        "--data", str(data), "--teacher-scores", TEACHER, "--student-scores",
                        STUDENT, "--no-mlflow", "--out", str(tmp_path / "out")],
                       capture_output=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 1, p.stderr
    stdout, stderr = p.stdout.decode(), p.stderr.decode()
    assert_no_runner_command(stdout, stderr, stdout + stderr)
    # the Actions log renders colours: the only ESC left are fairgate's own (click.style)
    assert "\x00" not in stdout and "\x1b" not in re.sub(r"\x1b\[(?:3[1-7]|1|22|0)m", "", stdout)
    assert "\x1b[31m" in stdout  # FAIL in red
    assert len(own_annotations(stdout)) >= 2
    assert BIG[:100] not in stdout


def test_a_reader_that_goes_away_does_not_change_the_verdict(hostile: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """`fairgate check | head -1`: the pipe closes before the report is printed. The gate
    still writes its reports and exits with its verdict (1 here), not an internal error."""
    policy, data = hostile
    read, write = os.pipe()
    os.close(read)  # every write to stdout now fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "fairgate", "check", "--policy", str(policy),
                            "--data", str(data), "--teacher-scores", TEACHER, "--student-scores",
                            STUDENT, "--no-mlflow", "--out", str(tmp_path / "out")],
                           stdout=write, stderr=subprocess.PIPE, cwd=tmp_path, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write)
    assert p.returncode == 1, p.stderr
    assert b"internal error" not in p.stderr and b"Traceback" not in p.stderr
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == [
        "junit.xml", "report.html", "report.json", "report.md"]
