"""The CLI end to end: every exit code, messages a person can act on, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fairgate.run
from tests.conftest import EXAMPLE, MODELS, SYNTHETIC_POLICY

ADULT_POLICY = EXAMPLE / "policy.yaml"
FEATURES_POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [sex]
model:
  features: [age, education_num, hours_per_week, capital_gain, capital_loss]
  positive_column: 1   # column 1 is ">50K" in every fixture (classes 0/1, or unnamed)
checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.05
statistics:
  resamples: 0
"""


def scores(run_cli, policy: Path, data: Path, *extra: str):
    return run_cli("check", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--student-scores", "s", "--no-mlflow", *extra)


def assert_clean_error(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("fairgate: error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not result.out.exists() or not any(result.out.iterdir())  # nothing half-written


def test_pass_exit_0(synthetic, write_policy, run_cli) -> None:
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
                          .replace("max_decrease: 0.05", "max_decrease: 0.5"))
    r = scores(run_cli, policy, synthetic)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.report["verdict"] == "pass"
    assert r.stdout.split("\n\n")[1].startswith("PASS")  # the verdict follows the header


def test_fail_exit_1(synthetic, write_policy, run_cli) -> None:
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02",
                                                              "max_increase: 0.0")), synthetic)
    assert r.exit_code == 1
    report = r.report
    assert report["verdict"] == "fail" and report["exit_code"] == 1
    failed = [x for x in report["results"] if x["status"] == "fail"]
    assert failed and all(x["delta"] > 0 for x in failed)
    # failures come first, in the report and on the terminal
    assert report["results"][0]["status"] == "fail"
    assert "Why:" in r.stdout


def test_warn_only_failure_exits_0_with_verdict_warn(synthetic, write_policy, run_cli) -> None:
    text = SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0\n    severity: warn") \
        .replace("max_decrease: 0.05", "max_decrease: 0.5")
    r = scores(run_cli, write_policy(text), synthetic)
    assert r.exit_code == 0
    assert r.report["verdict"] == "warn"
    # dp fails (a warning) where the whole interval exceeds 0, is inconclusive where it
    # reaches 0; nothing blocks
    statuses = {x["status"] for x in r.report["results"]}
    assert "warn" in statuses and statuses <= {"warn", "inconclusive", "pass"}
    assert not any(x["blocking"] for x in r.report["results"])


def test_example_onnx_gate(run_cli) -> None:
    r = run_cli("check", "--policy", ADULT_POLICY, "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code == 1
    report = r.report
    assert report["inputs"]["data"]["rows"] == 15060
    assert report["inputs"]["student"]["output"]["interpretation"] == "probabilities"
    eo_sex = next(x for x in report["results"]
                  if x["check"] == "eo-no-amplification" and x["grouping"] == ["sex"])
    assert eo_sex["status"] == "fail"
    assert eo_sex["delta"] > 0.02
    lo, hi = eo_sex["interval"]["delta"]
    assert 0 < lo <= eo_sex["delta"] <= hi  # the widening is not noise


def test_undefined_group_rate_fails_the_gate(tmp_path, write_policy, run_cli) -> None:
    # group C has no positive labels: its TPR is undefined, so equal opportunity is too
    df = pd.DataFrame({"g": ["A"] * 50 + ["B"] * 50 + ["C"] * 50,
                       "y": [1, 0] * 25 + [1, 0] * 25 + [0] * 50,
                       "t": np.tile([0.9, 0.1], 75), "s": np.tile([0.8, 0.2], 75)})
    data = tmp_path / "a.csv"
    df.to_csv(data, index=False)
    policy = write_policy("""\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [g]}
        checks:
          - id: eop
            metric: equal_opportunity_difference
            max_increase: 0.5
        statistics: {resamples: 0}
        """)
    r = scores(run_cli, policy, data)
    assert r.exit_code == 1
    result = r.report["results"][0]
    assert result["status"] == "undefined"
    assert result["teacher"] is None and result["student"] is None and result["delta"] is None
    assert result["undefined"] == {"teacher": "tpr is undefined for C: no positive labels",
                                   "student": "tpr is undefined for C: no positive labels"}
    assert "tpr is undefined for C: no positive labels" in r.stdout


def test_undefined_can_be_downgraded_to_warn(tmp_path, write_policy, run_cli) -> None:
    df = pd.DataFrame({"g": ["A"] * 40 + ["B"] * 40, "y": [1, 0] * 20 + [0] * 40,
                       "t": 0.7, "s": 0.7})
    data = tmp_path / "a.parquet"
    df.to_parquet(data)
    policy = write_policy("""\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [g]}
        checks:
          - {id: eop, metric: equal_opportunity_difference, max_increase: 0.1, on_undefined: warn}
        statistics: {resamples: 0}
        """)
    r = scores(run_cli, policy, data)
    assert r.exit_code == 0
    assert r.report["verdict"] == "warn"
    assert r.report["results"][0]["status"] == "undefined"


USAGE = [
    ((), "give the teacher (--teacher T.onnx or --teacher-scores COL) and the student "
         "(--student S.onnx or --student-scores COL)"),
    (("--teacher-scores", "t"), "give the teacher (--teacher T.onnx or --teacher-scores COL) and "
     "the student (--student S.onnx or --student-scores COL)"),
    (("--teacher", "t.onnx", "--teacher-scores", "t", "--student-scores", "s"),
     "give --teacher or --teacher-scores for the teacher, not both"),
]


@pytest.mark.parametrize(("args", "message"), USAGE)
def test_usage_errors_exit_2(synthetic, write_policy, run_cli, args, message) -> None:
    r = run_cli("check", "--policy", write_policy(SYNTHETIC_POLICY), "--data", synthetic,
                "--no-mlflow", *args)
    assert_clean_error(r, 2, message)


def test_missing_option_is_a_usage_error(run_cli) -> None:
    r = run_cli("check", "--data", "x.parquet")
    assert r.exit_code == 2
    assert "Missing option '--policy'" in r.stderr


def test_policy_error_exit_2(synthetic, write_policy, run_cli) -> None:
    policy = write_policy(SYNTHETIC_POLICY.replace("demographic_parity_difference", "dpd"))
    assert_clean_error(scores(run_cli, policy, synthetic), 2,
                       f"{policy}:9: checks[0].metric: unknown metric 'dpd'")


def _data(tmp_path: Path, **cols) -> Path:
    base = {"sex": ["F", "M"] * 30, "race": ["A"] * 60, "y": [0, 1, 1, 0] * 15,
            "t": [0.2, 0.8, 0.6, 0.4] * 15, "s": [0.3, 0.7, 0.4, 0.6] * 15}
    base.update(cols)
    path = tmp_path / "d.parquet"
    pd.DataFrame({k: v for k, v in base.items() if v is not None}).to_parquet(path)
    return path


def test_missing_data_file_exit_3(write_policy, run_cli, tmp_path) -> None:
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), tmp_path / "nope.parquet")
    assert_clean_error(r, 3, f"{tmp_path / 'nope.parquet'}: audit set not found")


def test_missing_label_column_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, y=None)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, f"{data}: column 'y' not found (columns: sex, race, t, s)")


def test_missing_sensitive_column_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, race=None)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, f"{data}: column 'race' not found")


def test_missing_score_column_suggests(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path)
    r = run_cli("check", "--policy", write_policy(SYNTHETIC_POLICY), "--data", data,
                "--teacher-scores", "tt", "--student-scores", "s", "--no-mlflow")
    assert_clean_error(r, 3, "column 'tt' not found; did you mean 't'?")


def test_label_with_a_third_value_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, y=[0, 1, 2, 0] * 15)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, "label column 'y' must hold positive_label 1 and one other value, "
                             "found 2 others: 0, 2")


def test_positive_label_absent_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, y=[0] * 60)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, "no row of label column 'y' equals positive_label 1 (values "
                             "seen: 0)")


def test_missing_label_value_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, y=[0.0, 1.0, None, 0.0] * 15)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, "label column 'y' has 15 missing value(s), first at row 2")


def test_empty_audit_set_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("sex,race,y,t,s\n")
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, f"{data}: the audit set has no rows")


def test_bad_scores_exit_3(write_policy, run_cli, tmp_path) -> None:
    data = _data(tmp_path, s=[0.3, 1.7, 0.4, 0.6] * 15)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), data)
    assert_clean_error(r, 3, f"{data}: student scores column 's': row 1 has 1.7; scores must be "
                             "probabilities in [0, 1] or 0/1 decisions")


def test_nan_in_features_exit_3(write_policy, run_cli, tmp_path) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").head(500)
    df["age"] = df["age"].astype(float)
    df.loc[[7, 9], "age"] = np.nan
    data = tmp_path / "nan.parquet"
    df.to_parquet(data)
    r = run_cli("check", "--policy", write_policy(FEATURES_POLICY), "--data", data,
                "--teacher", MODELS / "lr_nozipmap.onnx", "--student", MODELS / "torch_probs.onnx",
                "--no-mlflow")
    assert_clean_error(r, 3, f"{data}: feature column 'age' has 2 missing or NaN value(s) in "
                             "rows from 0, first at row 7")


def test_missing_feature_column_exit_3(write_policy, run_cli, tmp_path) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").head(100).drop(columns=["capital_loss"])
    data = tmp_path / "d.parquet"
    df.to_parquet(data)
    r = run_cli("check", "--policy", write_policy(FEATURES_POLICY), "--data", data,
                "--teacher", MODELS / "lr_nozipmap.onnx", "--student", MODELS / "torch_probs.onnx",
                "--no-mlflow")
    assert_clean_error(r, 3, f"{data}: column 'capital_loss' not found; did you mean "
                             "'capital_gain'?")


def test_model_errors_exit_3(write_policy, run_cli, tmp_path) -> None:
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_text("hello")
    policy = write_policy(FEATURES_POLICY)
    data = EXAMPLE / "audit.parquet"
    for student, message in [
        (not_onnx, f"student model {not_onnx}: not an ONNX model"),
        (tmp_path / "nope.onnx", "student model"),
        (MODELS / "multiclass_probs.onnx", "3 classes; fairgate gates binary decisions"),
        (MODELS / "pipeline_percolumn.onnx", "inputs are (age, hours_per_week, sex, race) but "
                                             "its features (model.features) list"),
    ]:
        r = run_cli("check", "--policy", policy, "--data", data, "--teacher",
                    MODELS / "lr_nozipmap.onnx", "--student", student, "--no-mlflow")
        assert_clean_error(r, 3, message)


def test_unknown_reference_group_exit_3(synthetic, write_policy, run_cli) -> None:
    text = SYNTHETIC_POLICY.replace("  intersections: true\n",
                                    "  reference_groups: {sex: X}\n")
    r = scores(run_cli, write_policy(text), synthetic)
    assert_clean_error(r, 3, "reference group X for sex is not in the audit set (groups: F, M)")


def test_internal_error_exit_4(synthetic, write_policy, run_cli, monkeypatch) -> None:
    def boom(loaded, request):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(fairgate.run, "evaluate_policy", boom)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY), synthetic)
    assert r.exit_code == 4
    assert r.stderr == ("fairgate: error: internal error (RuntimeError: kaboom); this is a bug in "
                        "fairgate, please report it (set FAIRGATE_DEBUG=1 for the traceback)\n")


def test_csv_and_parquet_give_the_same_report(synthetic, write_policy, run_cli, tmp_path) -> None:
    csv = tmp_path / "a.csv"
    pd.read_parquet(synthetic).to_csv(csv, index=False)
    policy = write_policy(SYNTHETIC_POLICY)
    a = scores(run_cli, policy, synthetic, "--out", str(tmp_path / "a"))
    b = scores(run_cli, policy, csv, "--out", str(tmp_path / "b"), "--batch-size", "777")
    ra, rb = a.report, b.report
    for key in ("results", "kpis", "groups", "verdict"):
        assert ra[key] == rb[key]


def test_missing_sensitive_values_form_their_own_group(tmp_path, write_policy, run_cli) -> None:
    data = _data(tmp_path, sex=["F", None, "M"] * 20)
    r = scores(run_cli, write_policy(SYNTHETIC_POLICY.replace("  intersections: true\n", "")), data)
    assert r.exit_code in (0, 1)
    sex_groups = {g["label"]: g["n"] for g in r.report["groups"] if g["grouping"] == ["sex"]}
    assert sex_groups == {"(missing)": 20, "F": 20, "M": 20}
