"""Individual fairness through the gate: policy section, engine sample, report, checks.

The measures themselves are tested against O(n²) and scikit-learn oracles in
tests/test_individual.py; here the wiring is checked against a direct computation on
onnxruntime's own outputs for the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from fairgate.errors import PolicyError
from fairgate.policy import load_policy
from tests.conftest import EXAMPLE

NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL = ["workclass", "marital_status", "occupation", "relationship"]
POLICY = """\
version: 1
audit:
  label: income
  positive_label: ">50K"
  sensitive: [sex, race]
model: {positive_column: 1}   # the example models' unnamed [N, 2] output
checks:
  - {id: lip, metric: individual_lipschitz, max_increase: 0.05}
  - {id: knn, metric: knn_consistency, max_decrease: 0.05}
  - {id: cf, metric: counterfactual_flip_rate, max_increase: 0.0}
individual:
  sample_rows: 1000
  queries: 600
  counterfactual: {column: sex, values: [Male, Female]}
statistics: {resamples: 100}
"""


def probabilities(model: Path, df: pd.DataFrame) -> np.ndarray:
    """The `probabilities` output of a per-column-input model, by onnxruntime directly."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in session.get_inputs():
        col = df[inp.name].to_numpy()
        feeds[inp.name] = (col.astype(object) if inp.type == "tensor(string)"
                           else col.astype(np.float32)).reshape(-1, 1)
    return session.run(["probabilities"], feeds)[0]


def scores(model: Path, df: pd.DataFrame) -> np.ndarray:
    return probabilities(model, df)[:, 1].astype(np.float64)


def test_individual_metrics_match_a_direct_computation(tmp_path, write_policy, run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").sample(600, random_state=3)
    data = tmp_path / "small.parquet"
    df.to_parquet(data)
    r = run_cli("check", "--policy", write_policy(POLICY), "--data", data, "--teacher",
                EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_distilled_T4.onnx",
                "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    report = r.report
    got = {x["check"]: x for x in report["results"]}
    assert report["individual"]["rows_sampled"] == 600  # the sample holds every row
    assert report["individual"]["lipschitz"]["exact"] is True  # 179,700 pairs <= 200,000

    # I(f) over all pairs, standardized distance, one-hot categoricals at 1/sqrt(2)
    blocks = [((df[c] - df[c].mean()) / df[c].std(ddof=0)).to_numpy()[:, None] for c in NUMERIC]
    blocks += [pd.get_dummies(df[c]).to_numpy(float) * np.sqrt(0.5) for c in CATEGORICAL]
    z = np.hstack(blocks)
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    iu = np.triu_indices(len(df), 1)
    for role, model in (("teacher", "teacher.onnx"), ("student", "student_distilled_T4.onnx")):
        f = scores(EXAMPLE / model, df)
        used = d[iu] > 0  # pairs at distance 0 are excluded (and counted) by fairgate
        ratio = np.abs(f[:, None] - f[None, :])[iu][used] / d[iu][used]
        expected = ratio.mean()
        assert got["lip"][role] == pytest.approx(expected, rel=1e-9)

    # counterfactual flips: set sex to the other value and decide again
    flips = {}
    for role, model in (("teacher", "teacher.onnx"), ("student", "student_distilled_T4.onnx")):
        base = scores(EXAMPLE / model, df) >= 0.5
        other = df.assign(sex=df["sex"].map({"Male": "Female", "Female": "Male"}))
        flips[role] = float(np.mean(base != (scores(EXAMPLE / model, other) >= 0.5)))
        assert got["cf"][role] == pytest.approx(flips[role], abs=1e-12)
    assert got["cf"]["delta"] == pytest.approx(flips["student"] - flips["teacher"], abs=1e-12)
    assert got["cf"]["status"] == ("fail" if flips["student"] > flips["teacher"] else "pass")

    # kNN consistency is between 0 and 1, with an interval around the paired change
    knn = got["knn"]
    assert 0 <= knn["teacher"] <= 1 and 0 <= knn["student"] <= 1
    lo, hi = knn["interval"]["delta"]
    assert lo <= knn["delta"] <= hi
    assert {k["metric"] for k in report["kpis"]} >= {"individual_lipschitz", "knn_consistency",
                                                     "counterfactual_flip_rate"}


def test_scores_mode_needs_explicit_features(synthetic, write_policy, run_cli) -> None:
    text = """\
        version: 1
        audit: {label: y, positive_label: 1, sensitive: [sex]}
        checks: [{id: lip, metric: individual_lipschitz, max_increase: 0.1}]
        individual: {sample_rows: 100}
        statistics: {resamples: 0}
        """
    r = run_cli("check", "--policy", write_policy(text), "--data", synthetic, "--teacher-scores",
                "t", "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 2
    assert "individual fairness needs distance features: list them under individual.features" \
        in r.stderr


@pytest.mark.parametrize(("extra", "message"), [
    ("", "p.yaml:7: checks[0].metric: individual_lipschitz needs an `individual:` section "
         "(features, sample size)"),
    ("individual: {sample_rows: 12, k: 11}\n",
     "p.yaml:8: individual.sample_rows: sample_rows 12 must be at least k + 2 = 13"),
])
def test_individual_policy_errors(tmp_path, extra, message) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\naudit:\n  label: y\n  positive_label: 1\n  sensitive: [s]\n"
                    "checks:\n  - {id: lip, metric: individual_lipschitz, max: 1}\n" + extra)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert str(e.value).replace(str(path), "p.yaml") == message


def test_counterfactual_metric_needs_its_section(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\naudit:\n  label: y\n  positive_label: 1\n  sensitive: [s]\n"
                    "checks:\n  - {id: cf, metric: counterfactual_flip_rate, max: 0}\n"
                    "individual: {sample_rows: 100}\n")
    with pytest.raises(PolicyError, match=r"p\.yaml:7: checks\[0\]\.metric: counterfactual_flip_"
                                          r"rate needs individual\.counterfactual"):
        load_policy(path)


def test_declared_value_absent_from_the_sample_is_null_not_a_crash(tmp_path, write_policy,
                                                                    run_cli) -> None:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").head(300)
    data = tmp_path / "small.parquet"
    df.to_parquet(data)
    text = POLICY.replace("values: [Male, Female]", "values: [Male, Female, Unknown]")
    r = run_cli("check", "--policy", write_policy(text), "--data", data, "--teacher",
                EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_int8.onnx",
                "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    by_value = r.report["individual"]["counterfactual"]["by_value"]
    assert by_value["Unknown"] == {"teacher": None, "student": None}  # no row has it
    assert by_value["Male"]["teacher"] is not None
