"""Score metrics through the gate: sample, groups, gating and report, against sklearn.

The metric code itself is tested against MetricFrame and sklearn in tests/test_scores.py;
here the wiring is checked on onnxruntime's own scores for the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from tests.conftest import EXAMPLE
from tests.test_individual_gate import scores

POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [sex, race]
  min_group_size: 100
model: {positive_column: 1}   # the example models' unnamed [N, 2] output
checks:
  - {id: auc-gap, metric: roc_auc_difference, max_increase: 0.02}
  - {id: brier, metric: worst_group_brier_score, on: [race], max_increase: 0.02}
  - {id: ece, metric: expected_calibration_error, max_increase: 0.01}
scores: {sample_rows: 2000, bins: 10}
statistics: {resamples: 200}
"""


def test_score_metrics_match_sklearn_on_the_sample(tmp_path, write_policy, run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").sample(1500, random_state=2)
    df.to_parquet(tmp_path / "small.parquet")  # under sample_rows: every row is in the sample
    r = run_cli("check", "--policy", write_policy(POLICY), "--data", tmp_path / "small.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    report = r.report
    assert report["scores"]["rows_sampled"] == report["scores"]["rows_seen"] == 1500
    y = (df.income == ">50K").to_numpy()
    got = {(x["check"], tuple(x["grouping"])): x for x in report["results"]}
    for role, model in (("teacher", "teacher.onnx"), ("student", "student_distilled_T4.onnx")):
        p = scores(EXAMPLE / model, df)
        for attr in ("sex", "race"):
            sizes = df[attr].value_counts()
            gated = [g for g, n in sizes.items() if n >= 100]
            auc = [roc_auc_score(y[df[attr] == g], p[df[attr] == g]) for g in gated]
            assert got[("auc-gap", (attr,))][role] == pytest.approx(max(auc) - min(auc), abs=1e-12)
        gated = [g for g, n in df.race.value_counts().items() if n >= 100]
        brier = [brier_score_loss(y[df.race == g], p[df.race == g]) for g in gated]
        assert got[("brier", ("race",))][role] == pytest.approx(max(brier), abs=1e-12)
        bins = np.clip(np.searchsorted(np.linspace(0, 1, 11), p, side="right") - 1, 0, 9)
        ece = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * np.mean(bins == b)
                  for b in range(10) if np.any(bins == b))
        assert got[("ece", ())][role] == pytest.approx(ece, abs=1e-12)
    rows = {(g["grouping"], g["group"]): g for g in report["scores"]["groups"]}
    assert rows[("sex", "Female")]["n"] == int((df.sex == "Female").sum())


def test_a_group_without_negatives_fails_closed(tmp_path, write_policy, run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").sample(3000, random_state=4)
    df = df[~((df.race == "Black") & (df.income != ">50K"))]  # Black rows: positives only
    df.to_parquet(tmp_path / "skewed.parquet")
    policy = POLICY.replace("min_group_size: 100", "min_group_size: 20")
    r = run_cli("check", "--policy", write_policy(policy), "--data", tmp_path / "skewed.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student",
                EXAMPLE / "student_distilled_T4.onnx", "--no-mlflow")
    assert r.exit_code == 1
    auc = next(x for x in r.report["results"]
               if x["check"] == "auc-gap" and x["grouping"] == ["race"])
    assert auc["status"] == "undefined" and auc["student"] is None
    assert "Black" in auc["reason"] and "negative" in auc["reason"]


def test_score_metrics_are_refused_for_multiclass_policies(write_policy, run_cli) -> None:
    text = ("version: 1\naudit: {label: y, sensitive: [g]}\nmulticlass: {}\n"
            "checks:\n  - {id: auc, metric: roc_auc, min: 0.7}\n")
    r = run_cli("policy", "validate", write_policy(text))
    assert r.exit_code == 2
    assert r.stderr.strip().endswith("checks[0].metric: roc_auc needs a positive-class score; "
                                     "score metrics are not available for multi-class models")
