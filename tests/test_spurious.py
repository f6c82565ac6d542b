"""The spurious gap: accuracy on bias-aligned minus bias-conflicting rows.

Checked against a hand count on onnxruntime's own decisions for the same rows, for a
binary model and a multi-class one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import EXAMPLE, ROOT
from tests.test_individual_gate import scores
from tests.test_multiclass import top1

MC = ROOT / "examples" / "adult_multiclass"

POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [race]
  min_group_size: 100
  spurious: {attribute: sex, value: Male, label: ">50K"}
model: {positive_column: 1}   # the example models' unnamed [N, 2] output
checks:
  - {id: gap, metric: spurious_gap, max_increase: 0.01}
  - {id: conflicting, metric: bias_conflicting_accuracy, max_decrease: 0.01}
statistics: {resamples: 300}
"""


def hand_count(aligned: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(accuracy aligned − accuracy conflicting, accuracy conflicting)."""
    a, c = correct[aligned].mean(), correct[~aligned].mean()
    return float(a - c), float(c)


def test_spurious_gap_of_a_binary_model(write_policy, run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet")
    r = run_cli("check", "--policy", write_policy(POLICY), "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    y = (df.income == ">50K").to_numpy()
    aligned = (df.sex == "Male").to_numpy() == y  # men earning >50K, women earning <=50K
    got = {x["check"]: x for x in r.report["results"]}
    for role, model in (("teacher", "teacher.onnx"), ("student", "student_distilled_T4.onnx")):
        correct = (scores(EXAMPLE / model, df) >= 0.5) == y
        gap, conflicting = hand_count(aligned, correct)
        assert got["gap"][role] == pytest.approx(gap, abs=1e-12)
        assert got["conflicting"][role] == pytest.approx(conflicting, abs=1e-12)
    sides = {g["label"]: g for g in r.report["groups"] if g["grouping"] == ["bias alignment"]}
    assert sides["aligned"]["n"] == int(aligned.sum())
    assert sides["conflicting"]["n"] == int((~aligned).sum())
    interval = got["gap"]["interval"]["delta"]
    assert interval[0] <= got["gap"]["delta"] <= interval[1]


def test_spurious_gap_of_a_multiclass_model(write_policy, run_cli) -> None:
    """Women go with Adm-clerical in this data: how much does the student lean on it?"""
    df = pd.read_parquet(MC / "audit.parquet")
    policy = POLICY.replace("label: income\n  positive_label: \">50K\"", "label: occupation")
    policy = policy.replace("model: {positive_column: 1}", "")
    policy = policy.replace("{attribute: sex, value: Male, label: \">50K\"}",
                            "{attribute: sex, value: Female, label: Adm-clerical}")
    classes = ", ".join((MC / "classes.txt").read_text().split())
    policy += f"multiclass: {{classes: [{classes}]}}\n"
    r = run_cli("check", "--policy", write_policy(policy), "--data", MC / "audit.parquet",
                "--teacher", MC / "teacher.onnx", "--student", MC / "student_distilled_T4.onnx",
                "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    y = df.occupation.to_numpy()
    aligned = (df.sex == "Female").to_numpy() == (y == "Adm-clerical")
    got = {x["check"]: x for x in r.report["results"]}
    for role, model in (("teacher", "teacher.onnx"), ("student", "student_distilled_T4.onnx")):
        correct = top1(MC / model, df) == y  # top-1 correctness, not one-vs-rest
        gap, conflicting = hand_count(aligned, correct)
        assert got["gap"][role] == pytest.approx(gap, abs=1e-12)
        assert got["conflicting"][role] == pytest.approx(conflicting, abs=1e-12)


def test_a_side_too_small_is_undefined_not_zero(write_policy, run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet")
    aligned = int(((df.sex == "Male") == (df.income == ">50K")).sum())
    assert aligned < len(df) - aligned  # so this size leaves only the aligned side short
    policy = POLICY.replace("min_group_size: 100", f"min_group_size: {aligned + 1}")
    r = run_cli("check", "--policy", write_policy(policy), "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code == 1
    gap = next(x for x in r.report["results"] if x["check"] == "gap")
    assert gap["status"] == "undefined" and gap["student"] is None
    assert gap["reason"] == ("student − teacher is undefined: teacher and student: no or too few "
                             "bias-aligned rows (need min_group_size on each side)")


@pytest.mark.parametrize("spurious, message", [
    ('{attribute: sex, value: Male, label: ">60K"}',
     "audit.spurious.label '>60K' never occurs in column 'income'"),
    ("{attribute: sex, value: male, label: \">50K\"}",
     "audit.spurious.value 'male' never occurs in column 'sex'"),
])
def test_a_spurious_value_that_never_occurs_is_an_input_error(write_policy, run_cli,
                                                              spurious: str,
                                                              message: str) -> None:
    policy = POLICY.replace('{attribute: sex, value: Male, label: ">50K"}', spurious)
    r = run_cli("check", "--policy", write_policy(policy), "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == f"fairgate: error: {EXAMPLE / 'audit.parquet'}: {message}"
