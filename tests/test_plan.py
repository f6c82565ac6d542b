"""`fairgate plan`: rows needed per bound, from teacher predictions or from a report.

Oracles: the paired (Agresti-Min) standard error of an accuracy change computed by hand
from the joint counts; normal quantiles from scipy; the size factor (k · se / bound)².
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from fairgate.core.intervals import SMOOTHING
from fairgate.plan import assumed_student
from tests.conftest import SYNTHETIC_POLICY

Z_POWER = float(norm.ppf(0.8))
Z_GAMMA = float(norm.ppf(1 - (0.05 - 0.005) / 2))  # one side of the uniform intervals


ON_SEX = SYNTHETIC_POLICY.replace("    max_increase: 0.02", "    on: [sex]\n    max_increase: 0.02")


def _plan(run_cli, *args: str | Path):
    return run_cli("plan", *args)


def test_plan_from_a_report_uses_the_students_own_disagreement(synthetic, write_policy,
                                                               run_cli) -> None:
    policy = write_policy(ON_SEX)
    check = run_cli("check", "--policy", policy, "--data", synthetic, "--teacher-scores", "t",
                    "--student-scores", "s", "--no-mlflow")
    report = check.out / "report.json"
    r = _plan(run_cli, "--policy", policy, "--report", report, "--json")
    assert r.exit_code in (0, 1), r.stderr
    plan = json.loads(r.stdout)
    assert plan["rows"] == 5000 and plan["rule"] == "interval"
    [acc] = [b for b in plan["bounds"] if b["check"] == "acc"]
    # the accuracy change's se by hand: discordant rows summed over the groups of a grouping
    # (overall: every group), every joint cell counting SMOOTHING rows more
    groups = [g for g in json.loads(report.read_text())["groups"] if g["grouping"] == ["sex"]]
    cells = np.array([g["joint"] for g in groups]).sum(axis=0).reshape(2, 2, 2) + SMOOTHING
    n = cells.sum()
    worse = cells[0, 0, 1] + cells[1, 1, 0]  # teacher right, student wrong
    better = cells[0, 1, 0] + cells[1, 0, 1]
    d = (better - worse) / n
    se = math.sqrt(((worse + better) / n - d**2) / n)
    assert acc["se"] == pytest.approx(se, rel=1e-9)
    # accuracy is smooth: the simulated audits' reach is close to the normal theory one
    assert acc["detectable"] == pytest.approx(-0.05 - (Z_GAMMA + Z_POWER) * se, rel=0.1)
    factor = ((Z_GAMMA + Z_POWER) * se / 0.05) ** 2
    assert acc["rows_needed"] == pytest.approx(5000 * factor, rel=0.5)
    assert acc["resolved"] is (acc["rows_needed"] <= 5000)
    # the terminal says the same
    text = _plan(run_cli, "--policy", policy, "--report", report).stdout
    assert text.startswith("fairgate plan · 5,000 rows · rule: interval")
    assert f"{acc['rows_needed']:,}" in text
    assert r.exit_code == (1 if any(b["resolved"] is False for b in plan["bounds"]) else 0)


def test_plan_from_the_teacher_alone(synthetic, write_policy, run_cli) -> None:
    """A bound of 0.5 is resolved by 5,000 rows; one of 0.005 is not (exit 1), and the rows
    it needs grow about as 1/bound²."""
    easy = write_policy(ON_SEX.replace("max_increase: 0.02", "max_increase: 0.5")
                        .replace("max_decrease: 0.05", "max_decrease: 0.5"), "easy.yaml")
    r = _plan(run_cli, "--policy", easy, "--data", synthetic, "--teacher-scores", "t", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert "disagrees with the teacher on 5% of the rows" in plan["student"]
    assert all(b["resolved"] for b in plan["bounds"])
    hard = write_policy(ON_SEX.replace("max_increase: 0.02", "max_increase: 0.005")
                        .replace("max_decrease: 0.05", "max_decrease: 0.5"), "hard.yaml")
    r2 = _plan(run_cli, "--policy", hard, "--data", synthetic, "--teacher-scores", "t", "--json")
    assert r2.exit_code == 1
    medium = write_policy(ON_SEX.replace("max_increase: 0.02", "max_increase: 0.01")
                          .replace("max_decrease: 0.05", "max_decrease: 0.5"), "medium.yaml")
    r3 = _plan(run_cli, "--policy", medium, "--data", synthetic, "--teacher-scores", "t",
               "--json")
    for a, b in zip(json.loads(r3.stdout)["bounds"], json.loads(r2.stdout)["bounds"],
                    strict=True):
        if a["check"] == "dp":
            assert b["se"] == pytest.approx(a["se"])
            # rows grow about as 1/bound² (a little more: a larger change disagrees more)
            assert 2 <= b["rows_needed"] / a["rows_needed"] <= 8
    more = _plan(run_cli, "--policy", hard, "--data", synthetic, "--teacher-scores", "t",
                 "--disagreement", "0.2", "--json")
    ses = {(b["check"], tuple(b["grouping"])): b["se"] for b in json.loads(r2.stdout)["bounds"]}
    for b in json.loads(more.stdout)["bounds"]:
        if b["check"] == "dp":  # a student that disagrees more moves its gaps more
            assert b["se"] > ses[(b["check"], tuple(b["grouping"]))]


def test_estimate_rule_sizes_by_formula(synthetic, write_policy, run_cli) -> None:
    """decide_on: estimate: an unchanged student fails at most 5% when z(0.95) se <= bound."""
    policy = write_policy(SYNTHETIC_POLICY + "  decide_on: estimate\n")
    plan = json.loads(_plan(run_cli, "--policy", policy, "--data", synthetic, "--teacher-scores",
                            "t", "--json").stdout)
    assert plan["rule"] == "estimate"
    for b in plan["bounds"]:
        factor = (float(norm.ppf(0.95)) * b["se"] / b["limit"]) ** 2
        assert b["rows_needed"] == math.ceil(5000 * factor)


def test_assumed_student_keeps_every_rate_and_disagrees_as_asked() -> None:
    rng = np.random.default_rng(4)
    cells = np.zeros((3, 2, 2, 2))
    for g in range(3):
        for y in (0, 1):
            cells[g, y, 1, 1], cells[g, y, 0, 0] = rng.integers(20, 400, 2)
    out = assumed_student(cells, 0.1)
    teacher, student = out.sum(axis=3), out.sum(axis=2)
    assert np.allclose(teacher, cells.sum(axis=3))
    assert np.allclose(student, teacher)  # every rate of the student is the teacher's
    disagree = out[:, :, 0, 1] + out[:, :, 1, 0]
    assert np.allclose(disagree / out.sum(axis=(2, 3)), 0.1)


@pytest.mark.parametrize("args, message", [
    ((), "give one of --teacher T.onnx, --teacher-scores COL or --report report.json"),
    (("--teacher-scores", "t", "--report", "r.json"), "give one of"),
    (("--teacher-scores", "t"), "give the audit set (--data)"),
    (("--data", "DATA", "--teacher-scores", "t", "--disagreement", "0"),
     "--disagreement must be in (0, 1], got 0"),
])
def test_plan_usage_errors(synthetic, write_policy, run_cli, args, message) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    argv = [str(synthetic) if a == "DATA" else a for a in args]
    r = _plan(run_cli, "--policy", policy, *argv)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_plan_refuses_what_is_not_a_report(write_policy, run_cli, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 7}')
    r = _plan(run_cli, "--policy", write_policy(SYNTHETIC_POLICY), "--report", bad)
    assert r.exit_code == 3 and "not a fairgate report.json (schema_version 1)" in r.stderr
