"""GitHub Actions integration: escaping, annotation limits, outputs, the step summary.

The parsers below restate what the Actions runner does with workflow commands and with
$GITHUB_OUTPUT (actions/runner: ActionCommand.TryParseV2 and the file-command heredoc
reader), so fairgate's output is checked the way GitHub will read it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fairgate.integrations.github import (
    MAX_ANNOTATIONS,
    Annotation,
    build_annotations,
    format_outputs,
    publish,
)
from fairgate.report.markdown import render_markdown
from fairgate.report.safe import visible
from fairgate.report.safe import workflow_data as escape_data
from fairgate.report.safe import workflow_property as escape_property
from fairgate.run import GateRequest, run_gate

NASTY = ["plain", "50% off", "a:b,c", "line1\nline2", "cr\r\nlf", "%0A literal", "::error::x",
         "k=v<<EOF", "", "ünïcödé − ✓", "trailing%", "%25"]


def unescape_data(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def unescape_property(s: str) -> str:
    return (s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
            .replace("%2C", ",").replace("%25", "%"))


def parse_command(line: str) -> tuple[str, dict[str, str], str]:
    """A workflow command as the runner reads it: ``::name k=v,k=v::data``."""
    assert line.startswith("::") and "\n" not in line and "\r" not in line
    end = line.index("::", 2)
    info, data = line[2:end], line[end + 2:]
    name, _, props = info.partition(" ")
    parsed = {}
    for prop in filter(None, props.split(",")):
        key, _, value = prop.partition("=")
        parsed[key] = unescape_property(value)
    return name, parsed, unescape_data(data)


def parse_file_command(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: NAME=VALUE lines or NAME<<DELIM heredocs."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        eq, here = line.find("="), line.find("<<")
        if eq >= 0 and (here < 0 or eq < here):
            out[line[:eq]] = line[eq + 1:]
            continue
        assert here > 0, f"invalid line {line!r}"
        name, delim = line[:here], line[here + 2:]
        value = []
        while True:
            assert i < len(lines), f"no closing delimiter for {name}"
            if lines[i] == delim:
                i += 1
                break
            value.append(lines[i])
            i += 1
        out[name] = "\n".join(value)
    return out


@pytest.mark.parametrize("text", NASTY)
def test_escaping_round_trips_through_the_runner(text: str) -> None:
    note = Annotation("error", title=f"t {text}", message=f"m {text}", file=f"d/{text}.yaml",
                      line=7)
    name, props, data = parse_command(note.command())
    assert name == "error"
    shown = visible(text)  # title and message are one line: control characters shown escaped
    assert props == {"file": f"d/{text}.yaml", "line": "7", "title": f"t {shown}"}
    assert data == f"m {shown}"


def test_escape_rules_exactly() -> None:
    assert escape_data("100%\r\n:,") == "100%25%0D%0A:,"
    assert escape_property("100%\r\n:,") == "100%25%0D%0A%3A%2C"
    assert escape_data("%0A") == "%250A"  # % first, so a literal %0A stays literal
    assert (Annotation("warning", "a,b", "x:y", "p.yaml", 3).command()
            == "::warning file=p.yaml,line=3,title=a%2Cb::x:y")


def test_outputs_survive_any_value() -> None:
    values = {f"k{i}": v for i, v in enumerate(NASTY)}
    values["tricky"] = "ghadelimiter_abc\nEOF\n\n"
    assert parse_file_command(format_outputs(values)) == values


def _many_checks_policy(write_policy: Any, n_fail: int, n_warn: int) -> Path:
    checks = [f"  - {{id: f{i}, metric: demographic_parity_difference, on: [sex], "
              "max_increase: 0.0}" for i in range(n_fail)]
    checks += [f"  - {{id: w{i}, metric: demographic_parity_difference, on: [sex], "
               "max_increase: 0.0, severity: warn}" for i in range(n_warn)]
    text = ("version: 1\naudit: {label: y, positive_label: 1, sensitive: [sex, race]}\n"
            "checks:\n" + "\n".join(checks) + "\nstatistics: {resamples: 0}\n")
    return write_policy(text)


def _line_of(policy: Path, check_id: str) -> int:
    """Hand count: the 1-based line where the check's list item starts."""
    for n, line in enumerate(policy.read_text().splitlines(), 1):
        if re.match(rf"\s*- \{{?id: {re.escape(check_id)}\b", line):
            return n
    raise AssertionError(check_id)


@pytest.mark.parametrize(("n_fail", "n_warn"), [(3, 2), (10, 10), (12, 25)])
def test_annotations_point_at_the_check_and_respect_the_limit(
    synthetic: Path, write_policy: Any, tmp_path: Path, n_fail: int, n_warn: int
) -> None:
    policy = _many_checks_policy(write_policy, n_fail, n_warn)
    report = run_gate(GateRequest(policy=policy, data=synthetic, teacher_scores="t",
                                  student_scores="s", today=dt.date(2025, 1, 1)))
    assert sum(r.blocking for r in report.decision.results) == n_fail
    notes = build_annotations(report, workspace=str(tmp_path))
    for level, n, prefix in (("error", n_fail, "f"), ("warning", n_warn, "w")):
        mine = [a for a in notes if a.level == level]
        assert len(mine) == min(n, MAX_ANNOTATIONS)
        single = mine if n <= MAX_ANNOTATIONS else mine[:-1]
        for a in single:
            check_id = a.title.split(": ")[1].split(" [")[0]
            assert check_id.startswith(prefix)
            assert (a.file, a.line) == ("policy.yaml", _line_of(policy, check_id))
        if n > MAX_ANNOTATIONS:
            rest = n - (MAX_ANNOTATIONS - 1)
            summary = mine[-1]
            assert summary.title.startswith(f"fairgate: {rest} more")
            named = set(re.findall(rf"\b{prefix}\d+\b", summary.message))
            shown = {a.title.split(": ")[1].split(" [")[0] for a in single}
            assert named | shown == {f"{prefix}{i}" for i in range(n)} and not named & shown


def test_cli_publishes_summary_outputs_and_annotations(
    synthetic: Path, write_policy: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = write_policy("""\
        version: 1
        audit:
          label: y
          positive_label: 1
          sensitive: [sex, race]
        checks:
          - id: acc
            metric: accuracy
            max_decrease: 0.5
          - id: dp
            metric: demographic_parity_difference
            max_increase: 0.0
          - id: dp-warn
            metric: demographic_parity_difference
            on: [sex]
            max_increase: 0.0
            severity: warn
        statistics: {resamples: 50}
        """)
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier step content\n")
    output.write_text("other=kept\n")
    for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                 "GITHUB_OUTPUT": str(output), "GITHUB_WORKSPACE": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    assert policy.parent == tmp_path  # run_cli runs in tmp_path, the workspace
    r = run_cli("check", "--policy", "policy.yaml", "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 1, r.stderr
    report = r.report
    failed = [f"{x['check']} [{'*'.join(x['grouping']) or 'overall'}]"
              for x in report["results"] if x["blocking"]]
    assert failed  # dp fails on at least one grouping
    unsure = [f"{x['check']} [{'*'.join(x['grouping']) or 'overall'}]"
              for x in report["results"] if x["status"] == "inconclusive"]
    outputs = parse_file_command(output.read_text())
    assert outputs == {"other": "kept", "verdict": "fail", "report-dir": str(r.out),
                       "failed-checks": "\n".join(failed), "inconclusive-checks": "\n".join(unsure)}
    md = (r.out / "report.md").read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "earlier step content\n" + md
    commands = [parse_command(line) for line in r.stdout.splitlines() if line.startswith("::")]
    errors = [c for c in commands if c[0] == "error"]
    warnings = [c for c in commands if c[0] == "warning"]
    assert len(errors) == len(failed)
    where = {(p["file"], p["line"]) for _, p, _ in errors}
    assert where == {("policy.yaml", str(_line_of(policy, "dp")))}
    # a bound of 0 is smaller than any audit resolves: each dp check says so, on its line
    small = [c for c in warnings if c[1]["title"].startswith("fairgate: audit too small: ")]
    assert {(c[1]["title"], c[1]["line"]) for c in small} == {
        ("fairgate: audit too small: dp [sex]", str(_line_of(policy, "dp"))),
        ("fairgate: audit too small: dp [race]", str(_line_of(policy, "dp"))),
        ("fairgate: audit too small: dp-warn [sex]", str(_line_of(policy, "dp-warn")))}
    assert all("fairgate plan" in c[2] for c in small)
    # the other warnings: every check that did not pass and does not block (dp-warn failed,
    # a warning; dp on race is inconclusive, its interval straddling 0)
    others = [c for c in warnings if c not in small]
    unsure = [x for x in report["results"] if x["status"] == "inconclusive"]
    assert [c[1]["title"] for c in others if "inconclusive" in c[1]["title"]] == [
        f"fairgate inconclusive (warn only): {x['check']} [{'*'.join(x['grouping'])}]"
        for x in unsure]
    (warn,) = [c for c in others if "inconclusive" not in c[1]["title"]]
    assert warn[1]["line"] == str(_line_of(policy, "dp-warn"))
    assert warn[1]["title"] == "fairgate warn: dp-warn [sex]"
    sex = next(x for x in report["results"] if x["check"] == "dp-warn")
    assert sex["reason"] in warn[2]


def test_nothing_github_without_github_actions(
    synthetic: Path, write_policy: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import SYNTHETIC_POLICY

    output = tmp_path / "output.txt"
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    policy = write_policy(SYNTHETIC_POLICY)
    r = run_cli("check", "--policy", policy, "--data", synthetic, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code in (0, 1) and not output.exists()
    assert not [line for line in r.stdout.splitlines() if line.startswith("::")]


def test_unwritable_runner_files_warn_and_keep_the_verdict(
    synthetic: Path, write_policy: Any, tmp_path: Path
) -> None:
    from tests.conftest import SYNTHETIC_POLICY

    policy = write_policy(SYNTHETIC_POLICY)
    report = run_gate(GateRequest(policy=policy, data=synthetic, teacher_scores="t",
                                  student_scores="s"))
    said: list[str] = []
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path), "GITHUB_OUTPUT": str(tmp_path / "no" / "x")}
    publish(report, tmp_path / "out", env=env, echo=said.append)
    problems = [parse_command(s) for s in said if "cannot write" in s]
    assert [p[2].split(" (")[0] for p in problems] == ["cannot write GITHUB_STEP_SUMMARY",
                                                      "cannot write GITHUB_OUTPUT"]
    assert all(p[0] == "warning" for p in problems)


def test_summary_is_the_markdown_report(synthetic: Path, write_policy: Any,
                                        tmp_path: Path) -> None:
    from tests.conftest import SYNTHETIC_POLICY

    report = run_gate(GateRequest(policy=write_policy(SYNTHETIC_POLICY), data=synthetic,
                                  teacher_scores="t", student_scores="s"))
    summary = tmp_path / "s.md"
    publish(report, tmp_path, env={"GITHUB_STEP_SUMMARY": str(summary),
                                   "GITHUB_OUTPUT": str(tmp_path / "o")}, echo=lambda s: None)
    assert summary.read_text(encoding="utf-8") == render_markdown(report)
    assert json.loads(json.dumps(parse_file_command((tmp_path / "o").read_text())))["verdict"] \
        == report.verdict


def test_compare_publishes_summary_outputs_and_annotations(
    synthetic: Path, write_policy: Any, run_cli: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pandas as pd

    from tests.conftest import SYNTHETIC_POLICY

    df = pd.read_parquet(synthetic)
    df["same"] = df["t"]  # the teacher itself: every change 0, passes on the estimate
    df.to_parquet(tmp_path / "audit2.parquet")
    # s raises DP beyond a bound of 0: it fails on every grouping where its gap grew
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0")
                          + "  decide_on: estimate\n")
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier\n")
    for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                 "GITHUB_OUTPUT": str(output), "GITHUB_WORKSPACE": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    r = run_cli("compare", "--policy", "policy.yaml", "--data", "audit2.parquet",
                "--teacher-scores", "t", "--candidate-scores", "s", "--candidate-scores", "same",
                "--out", "cmp", "--no-mlflow")
    assert r.exit_code == 0, r.stderr
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    reports = {c["name"]: json.loads((tmp_path / "cmp" / c["name"] / "report.json").read_text())
               for c in result["candidates"]}
    assert {n: rep["verdict"] for n, rep in reports.items()} == {"s": "fail", "same": "pass"}

    def label(x: dict) -> str:
        return f"{x['check']} [{'*'.join(x['grouping']) or 'overall'}]"

    failed = [f"{c['name']}: {label(x)}" for c in result["candidates"]
              for x in reports[c["name"]]["results"] if x["blocking"]]
    assert failed and all(f.startswith("s: dp [") for f in failed)
    objectives = ("accuracy", "worst_dp", "worst_eo")
    per_objective = [
        f"{o}: " + ", ".join([c["name"] for c in result["candidates"]
                              if c["objectives"][o]["standing"] == "best"]
                             + [c["name"] for c in result["candidates"]
                                if c["objectives"][o]["standing"] == "indistinguishable"])
        for o in objectives]
    assert parse_file_command(output.read_text()) == {
        "verdict": "pass", "report-dir": "cmp", "recommended": result["recommended"] or "",
        "best-candidates": "\n".join(result["best"]),
        "indistinguishable-candidates": "\n".join(result["indistinguishable"]),
        "passing-candidates": "same", "failing-candidates": "s",
        "best-per-objective": "\n".join(per_objective),
        "failed-checks": "\n".join(failed), "inconclusive-checks": ""}
    assert "same" in result["best"]
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "earlier\n" + md

    commands = [parse_command(line) for line in r.stdout.splitlines() if line.startswith("::")]
    errors = [c for c in commands if c[0] == "error"]
    # one error per blocking check of each candidate, on the check's line, named
    assert [(c[1]["title"], c[1]["file"], c[1]["line"]) for c in errors] == [
        (f"fairgate [s] fail: {label(x)}", "policy.yaml", str(_line_of(policy, "dp")))
        for x in reports["s"]["results"] if x["blocking"]]
    for (_, _, message), x in zip(errors, [x for x in reports["s"]["results"] if x["blocking"]],
                                  strict=True):
        assert x["reason"] in message
    (notice,) = [c for c in commands if c[0] == "notice"]
    assert notice[1]["title"] == "fairgate compare: pass" and "1 of 2 candidates pass" in notice[2]
    warnings = [c for c in commands if c[0] == "warning"]
    assert all(c[1]["title"].startswith(("fairgate [s]", "fairgate [same]", "fairgate:"))
               for c in warnings)


def test_compare_annotations_are_capped_and_say_when_none_passes(
    synthetic: Path, write_policy: Any, tmp_path: Path
) -> None:
    import pandas as pd

    from fairgate.comparison import CompareRequest, run_compare
    from fairgate.integrations.github import build_compare_annotations

    df = pd.read_parquet(synthetic)
    for i in range(3):
        df[f"s{i}"] = df["s"]
    data = tmp_path / "audit3.parquet"
    df.to_parquet(data)
    policy = _many_checks_policy(write_policy, 5, 0)  # every candidate fails 5 checks
    result = run_compare(CompareRequest(policy=policy, data=data, teacher_scores="t",
                                        candidate_scores=("s0", "s1", "s2"),
                                        out=tmp_path / "c"))
    assert result.exit_code == 1
    notes = build_compare_annotations(result, str(tmp_path))
    errors = [n for n in notes if n.level == "error"]
    assert len(errors) == MAX_ANNOTATIONS
    assert errors[0].title == "fairgate compare: fail"
    assert errors[0].message == "no candidate passes the gate (3 gated)"
    # 1 + 3 × 5 errors: the first 9 shown, the tenth names the other 7
    assert errors[-1].title == "fairgate: 7 more blocking checks"
    assert not [n for n in notes if n.level == "notice"]
