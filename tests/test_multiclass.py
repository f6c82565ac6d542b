"""Multi-class students: top-1, per-class (#TC, #SC), one-vs-rest and disagreement.

Every number is checked against an independent computation on the same predictions:
onnxruntime run directly (argmax by hand), fairlearn's MetricFrame and metrics, scipy's
binomtest for McNemar, a hand Holm step-down, and pandas crosstabs for the disagreement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score

from fairgate.integrations.mlflow import collect
from fairgate.policy import parse_yaml
from fairgate.report.html import render_html
from fairgate.report.json import to_dict
from fairgate.report.markdown import render_markdown
from fairgate.run import GateRequest, run_gate
from tests.conftest import EXAMPLE, MODELS, ROOT
from tests.test_individual_gate import probabilities

MC = ROOT / "examples" / "adult_multiclass"
CLASSES = MC.joinpath("classes.txt").read_text().split()
LEVEL = 0.05
MIN_SIZE = 100
POSITIVES = ["Exec-managerial", "Prof-specialty"]


def top1(model: Path, df: pd.DataFrame) -> np.ndarray:
    """Class names of the argmax, straight from onnxruntime (per-column inputs)."""
    return np.asarray(CLASSES, dtype=object)[probabilities(model, df).argmax(axis=1)]


def holm(p: list[float]) -> list[float]:
    """Holm step-down, written out from its definition for the oracle."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    out = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return list(out)


def class_tests(y: np.ndarray, a: np.ndarray, b: np.ndarray, min_size: int = MIN_SIZE
                ) -> pd.DataFrame:
    """Per true class: n, recall of a and b, McNemar (scipy) and Holm over n >= min_size."""
    rows = []
    for c in sorted(set(y)):
        m = y == c
        a_only = int(np.sum(m & (a == c) & (b != c)))
        b_only = int(np.sum(m & (a != c) & (b == c)))
        p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
        rows.append({"class": c, "n": int(m.sum()), "a": float(np.mean(a[m] == c)),
                     "b": float(np.mean(b[m] == c)), "a_only": a_only, "b_only": b_only, "p": p})
    out = pd.DataFrame(rows).set_index("class")
    gated = out[out.n >= min_size]
    out.loc[gated.index, "p_holm"] = holm(list(gated.p))
    return out


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = pd.read_parquet(MC / "audit.parquet")
    df["t"] = top1(MC / "teacher.onnx", df)
    df["s"] = top1(MC / "student_distilled_T4.onnx", df)
    df["r"] = top1(MC / "student_nds.onnx", df)
    return df


def example_policy(**extra: Any) -> dict[str, Any]:
    policy, _ = parse_yaml((MC / "policy.yaml").read_text(), "policy.yaml")  # YAML 1.2: `on`
    policy["statistics"] = {"resamples": 200, "seed": 3}
    policy["checks"] += [
        {"id": "sc", "metric": "classes_changed_vs_reference", "max": 0},
        {"id": "lost", "metric": "classes_lost", "max": 0},
        {"id": "class-gap", "metric": "class_accuracy_difference", "max_increase": 0.02},
        {"id": "worst-group", "metric": "worst_group_accuracy", "max_decrease": 0.02},
        {"id": "race-dp", "metric": "demographic_parity_difference", "on": ["race"],
         "max_increase": 0.02},
    ]
    policy.update(extra)
    return policy


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("mc")
    (d / "policy.yaml").write_text(yaml.safe_dump(example_policy()))
    return run_gate(GateRequest(policy=d / "policy.yaml", data=MC / "audit.parquet",
                                teacher=MC / "teacher.onnx",
                                student=MC / "student_distilled_T4.onnx",
                                reference_student=MC / "student_nds.onnx", out=d / "out"))


def values(report: Any) -> dict[tuple[str, str], Any]:
    out = {(v.key.metric, v.key.grouping.name if v.key.grouping else ""): v for v in report.kpis}
    out.update({(r.key.metric, r.key.grouping.name if r.key.grouping else ""): r.value
                for r in report.decision.results})
    return out


def test_top1_accuracy_by_group_matches_fairlearn(frame: pd.DataFrame, report: Any) -> None:
    v = values(report)
    for role, col in (("teacher", "t"), ("student", "s")):
        assert getattr(v[("accuracy", "")], role) == pytest.approx(
            accuracy_score(frame.occupation, frame[col]), abs=1e-12)
        for attr in ("sex", "race"):
            mf = MetricFrame(metrics=accuracy_score, y_true=frame.occupation, y_pred=frame[col],
                             sensitive_features=frame[attr])
            rows = {r.group[0]: r for r in report.groups if r.grouping.name == attr}
            for group, acc in mf.by_group.items():
                assert getattr(rows[group], f"{role}_rates")["accuracy"] == pytest.approx(
                    acc, abs=1e-12)
                assert rows[group].top1
            gated = [g for g, n in frame[attr].value_counts().items() if n >= MIN_SIZE]
            accs = mf.by_group[gated]
            assert getattr(v[("worst_group_accuracy", attr)], role) == pytest.approx(
                accs.min(), abs=1e-12)
        assert getattr(v[("accuracy_equality", "sex")], role) == pytest.approx(
            MetricFrame(metrics=accuracy_score, y_true=frame.occupation, y_pred=frame[col],
                        sensitive_features=frame.sex).difference(), abs=1e-12)
    # the top-1 table has accuracy only: selection rate etc. would be meaningless there
    sex = next(r for r in report.groups if r.grouping.name == "sex")
    assert np.isnan(sex.teacher_rates["selection_rate"]) and set(sex.teacher) == {"correct", "wrong"}


def test_per_class_mcnemar_and_holm_match_scipy(frame: pd.DataFrame, report: Any) -> None:
    """#TC and #SC: the paper's counts of classes whose accuracy changed significantly."""
    v = values(report)
    for table, a, b, metric in (("teacher_vs_student", "t", "s", "classes_changed"),
                                ("reference_vs_student", "r", "s",
                                 "classes_changed_vs_reference")):
        want = class_tests(frame.occupation.to_numpy(), frame[a].to_numpy(), frame[b].to_numpy())
        got = {c["class"]: c for c in report.classwise[table]}
        assert sorted(got) == sorted(want.index)
        for cls, row in want.iterrows():
            g = got[cls]
            assert (g["n"], g["teacher_only_correct"], g["student_only_correct"]) == (
                row.n, row.a_only, row.b_only)
            assert g["teacher_accuracy"] == pytest.approx(row.a, abs=1e-12)
            assert g["student_accuracy"] == pytest.approx(row.b, abs=1e-12)
            assert g["p"] == pytest.approx(row.p, rel=1e-9)
            if row.n >= MIN_SIZE:
                assert g["p_holm"] == pytest.approx(row.p_holm, rel=1e-9)
            else:
                assert g["p_holm"] is None
        significant = int((want.p_holm < LEVEL).sum())
        assert v[(metric, "")].student == significant
        assert significant >= 3  # the distilled student moved several classes
    lost = class_tests(frame.occupation.to_numpy(), frame.t.to_numpy(), frame.s.to_numpy())
    assert v[("classes_lost", "")].student == int(((lost.p_holm < LEVEL) & (lost.b < lost.a)).sum())


def test_worst_class_and_class_gap_match_recall(frame: pd.DataFrame, report: Any) -> None:
    v = values(report)
    n = frame.occupation.value_counts()
    gated = sorted(n[n >= MIN_SIZE].index)
    for role, col in (("teacher", "t"), ("student", "s")):
        recall = frame.groupby("occupation").apply(
            lambda d, col=col: float(np.mean(d[col] == d.name)), include_groups=False)[gated]
        assert getattr(v[("worst_class_accuracy", "")], role) == pytest.approx(recall.min())
        assert getattr(v[("class_accuracy_difference", "")], role) == pytest.approx(
            recall.max() - recall.min())
    assert "Armed-Forces" in n.index and n["Armed-Forces"] < MIN_SIZE  # reported, not gated


def test_one_vs_rest_group_metrics_match_fairlearn(frame: pd.DataFrame, report: Any) -> None:
    v = values(report)
    for cls in POSITIVES:
        y = frame.occupation == cls
        for role, col in (("teacher", "t"), ("student", "s")):
            pred = frame[col] == cls
            for attr in ("sex", "race"):
                name = f"{attr} ({cls} vs rest)"
                gated = frame[attr].map(frame[attr].value_counts()) >= MIN_SIZE
                dp = demographic_parity_difference(y[gated], pred[gated],
                                                   sensitive_features=frame[attr][gated])
                assert getattr(v[("demographic_parity_difference", name)], role) == pytest.approx(
                    dp, abs=1e-12)
            eo = equalized_odds_difference(y, pred, sensitive_features=frame.sex)
            assert getattr(v[("equalized_odds_difference", f"sex ({cls} vs rest)")], role) == (
                pytest.approx(eo, abs=1e-12))


def test_disagreement_matrix_matches_a_crosstab(frame: pd.DataFrame, report: Any) -> None:
    pairs = {(d["a"], d["b"]): d for d in report.classwise["disagreement"]}
    index = {c: i for i, c in enumerate(CLASSES)}
    for (a, b), (ca, cb) in {("teacher", "student"): ("t", "s"),
                             ("teacher", "reference student"): ("t", "r"),
                             ("reference student", "student"): ("r", "s")}.items():
        table = pd.crosstab(frame[ca], frame[cb])
        cells = [(x, y, int(table.loc[x, y])) for x in table.index for y in table.columns
                 if x != y and table.loc[x, y] > 0]
        cells.sort(key=lambda c: (-c[2], index[c[0]], index[c[1]]))
        got = pairs[(a, b)]
        assert got["rows"] == len(frame)
        assert got["disagreeing_rows"] == int((frame[ca] != frame[cb]).sum())
        assert got["pairs"] == len(cells)
        assert [(c["a"], c["b"], c["rows"]) for c in got["cells"]] == cells  # the whole matrix
        assert not got["truncated"]


def test_reports_carry_the_class_wise_findings(report: Any) -> None:
    data = to_dict(report)
    dp = [r for r in data["results"] if r["metric"] == "demographic_parity_difference"]
    assert {r["positive_class"] for r in dp} == set(POSITIVES)
    assert data["groupings"] == [["sex"], ["race"]]
    assert {"name": "occupation", "grouping": ["occupation"], "derived": True} in data["tables"]
    assert data["classwise"]["classes"] == CLASSES
    page = render_html(report)
    assert ('<div class="disagreement" data-a="teacher" data-b="student">' in page
            and "<td>Prof-specialty</td><td>Exec-managerial</td><td class=num>383</td>" in page)
    md = render_markdown(report)
    assert "### Class-wise disagreement" in md and "| Prof-specialty | Exec-managerial | 383 |" in md
    # MLflow keys of the two one-vs-rest tables stay apart
    keys = collect(report, env={}).metrics
    assert ("student/demographic_parity_difference/sex_Exec-managerial_vs_rest" in keys
            and "student/demographic_parity_difference/sex_Prof-specialty_vs_rest" in keys)


# ----------------------------------------------------------------------------- exported models


WC = {"Private": "Private", "Self-emp-not-inc": "Self-emp", "Self-emp-inc": "Self-emp"}
FEATURES = ["age", "education_num", "hours_per_week", "capital_gain", "capital_loss"]


@pytest.fixture(scope="module")
def workclass(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    df = pd.read_parquet(EXAMPLE / "audit.parquet").sample(3000, random_state=5)
    df["wc"] = df.workclass.map(WC).fillna("Gov")
    path = tmp_path_factory.mktemp("wc") / "audit.parquet"
    df.reset_index(drop=True).to_parquet(path)
    return path, df.reset_index(drop=True)


def ort_classes(model: str, df: pd.DataFrame) -> np.ndarray:
    """The top-1 class name by onnxruntime directly, whatever the output kind."""
    session = ort.InferenceSession(str(MODELS / model), providers=["CPUExecutionProvider"])
    x = df[FEATURES].to_numpy(np.float32)
    out = session.run(None, {session.get_inputs()[0].name: x})
    if model.startswith("mc_lr"):
        return np.asarray(out[0], dtype=object)  # sklearn's own string label
    positions = out[0].argmax(axis=1) if out[0].ndim == 2 else out[0]
    return np.asarray(["Private", "Self-emp", "Gov"], dtype=object)[positions]


MC_POLICY = """\
version: 1
audit: {label: wc, sensitive: [sex], min_group_size: 30}
model: {features: [age, education_num, hours_per_week, capital_gain, capital_loss]}
multiclass: {CLASSES}
checks:
  - {id: tc, metric: classes_changed, max: 0}
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.05}
statistics: {resamples: 0}
"""


@pytest.mark.parametrize("teacher, student, extra", [
    # ZipMap keys name the classes; the tensor twin's columns follow the teacher's order
    ("mc_lr_zipmap.onnx", "mc_lr_nozipmap.onnx", ""),
    # torch logits and its argmax-as-label: positions into the policy's classes
    ("mc_torch_logits.onnx", "mc_labels_int.onnx", "classes: [Private, Self-emp, Gov], "),
    # mixed: ZipMap names map by name, torch positions by the policy's order
    ("mc_lr_zipmap.onnx", "mc_torch_logits.onnx", "classes: [Private, Self-emp, Gov], "),
    ("mc_labels_int.onnx", "mc_lr_zipmap.onnx", "classes: [Private, Self-emp, Gov], "),
    # label outputs only, no class list anywhere: the index grows as classes appear
    ("mc_lr_nozipmap.onnx", "mc_lr_zipmap.onnx", "labels"),
])
def test_exported_multiclass_models(workclass, write_policy, run_cli, teacher: str,
                                    student: str, extra: str) -> None:
    """skl2onnx ZipMap / tensor / string labels and torch logits / int labels, mixed."""
    path, df = workclass
    policy = MC_POLICY.replace("{CLASSES}", "{" + (extra if extra != "labels" else "")
                               + "positive_classes: [Self-emp]}")
    if extra == "labels":
        policy = policy.replace("capital_loss]}", "capital_loss], output: labels}")
    r = run_cli("check", "--policy", write_policy(policy), "--data", path,
                "--teacher", MODELS / teacher, "--student", MODELS / student, "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    t, s = ort_classes(teacher, df), ort_classes(student, df)
    y = df.wc.to_numpy()
    want = class_tests(y, t, s, min_size=30)
    got = {c["class"]: c for c in r.report["classwise"]["teacher_vs_student"]}
    assert sorted(got) == sorted(want.index)
    for cls, row in want.iterrows():
        assert (got[cls]["n"], got[cls]["teacher_only_correct"],
                got[cls]["student_only_correct"]) == (row.n, row.a_only, row.b_only)
    d = r.report["classwise"]["disagreement"][0]
    assert d["disagreeing_rows"] == int((t != s).sum())
    if teacher.startswith("mc_lr") and student.startswith("mc_lr"):
        assert d["disagreeing_rows"] == 0  # one fitted model, two exports
    dp = next(x for x in r.report["results"] if x["check"] == "dp")
    for role, pred in (("teacher", t), ("student", s)):
        assert dp[role] == pytest.approx(demographic_parity_difference(
            y == "Self-emp", pred == "Self-emp", sensitive_features=df.sex), abs=1e-12)


# ----------------------------------------------------------------------------- K = 1000


def test_thousand_classes_from_prediction_columns(tmp_path, write_policy, run_cli) -> None:
    """K = 1000 counted sparsely: per-class tables are O(K), disagreement O(pairs seen)."""
    rng = np.random.default_rng(11)
    n, k = 60_000, 1000
    y = np.minimum(rng.zipf(1.3, n), k) - 1  # many small classes, a few large ones
    t = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    s = np.where(rng.random(n) < 0.9, t, rng.integers(0, k, n))
    s[(y == 0) & (t == 0) & (rng.random(n) < 0.2)] = 1  # the student loses class 0
    df = pd.DataFrame({"y": y, "t": t, "s": s, "g": rng.choice(["a", "b"], n)})
    df.to_parquet(tmp_path / "k.parquet")
    policy = write_policy("""\
        version: 1
        audit: {label: y, sensitive: [g], min_group_size: 50}
        multiclass: {positive_classes: [0, 1]}
        checks:
          - {id: tc, metric: classes_changed, max: 0}
          - {id: dp, metric: demographic_parity_difference, max_increase: 0.5}
        statistics: {resamples: 50}
        """)
    r = run_cli("check", "--policy", policy, "--data", tmp_path / "k.parquet",
                "--teacher-scores", "t", "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 1, r.stderr
    assert "Classes whose accuracy changed significantly, teacher → student (#TC): " in r.stdout
    want = class_tests(y, t, s, min_size=50)
    cw = r.report["classwise"]
    got = {int(c["class"]): c for c in cw["teacher_vs_student"]}
    assert len(got) == len(set(y)) and len(cw["classes"]) == len(set(y) | set(t) | set(s))
    for cls, row in want.iterrows():
        assert (got[cls]["teacher_only_correct"], got[cls]["student_only_correct"]) == (
            row.a_only, row.b_only)
    tc = next(x for x in r.report["results"] if x["check"] == "tc")
    assert tc["student"] == int((want.p_holm < LEVEL).sum()) >= 1
    d = cw["disagreement"][0]
    assert d["pairs"] == len(np.unique(t[t != s] * k + s[t != s]))
    assert d["cells"][0] == {"a": "0", "b": "1", "rows": int(np.sum((t == 0) & (s == 1)))}
    assert len(d["cells"]) == min(d["pairs"], 10_000) and d["truncated"] == (d["pairs"] > 10_000)


# ----------------------------------------------------------------------------- errors


def test_a_label_outside_the_model_classes_is_an_input_error(workclass, write_policy,
                                                             run_cli) -> None:
    path, _ = workclass
    policy = write_policy(MC_POLICY.replace("{CLASSES}", "{classes: [Private, Self-emp, Gov]}")
                          .replace("  - {id: dp, metric: demographic_parity_difference, "
                                   "max_increase: 0.05}\n", ""))
    r = run_cli("check", "--policy", policy, "--data", path, "--teacher",
                MODELS / "mc_lr_zipmap.onnx", "--student", MODELS / "mc_torch_logits.onnx",
                "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    bad = pd.read_parquet(path)
    bad.loc[7, "wc"] = "Never-worked"
    bad.to_parquet(path.parent / "bad.parquet")
    r = run_cli("check", "--policy", policy, "--data", path.parent / "bad.parquet", "--teacher",
                MODELS / "mc_lr_zipmap.onnx", "--student", MODELS / "mc_torch_logits.onnx",
                "--no-mlflow", "--out", path.parent / "bad-out")
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        f"fairgate: error: {path.parent / 'bad.parquet'}: label column 'wc' has value "
        "'Never-worked', which is not one of the 3 classes in multiclass.classes of the policy "
        "(Private, Self-emp, Gov)")
    assert not (r.out / "report.json").exists()


def test_model_width_and_positive_class_must_match_the_classes(workclass, write_policy,
                                                                run_cli) -> None:
    path, _ = workclass
    four = MC_POLICY.replace("{CLASSES}", "{classes: [Private, Self-emp, Gov, Other], "
                             "positive_classes: [Self-emp]}")
    r = run_cli("check", "--policy", write_policy(four), "--data", path, "--teacher",
                MODELS / "mc_torch_logits.onnx", "--student", MODELS / "mc_torch_logits.onnx",
                "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == ("fairgate: error: teacher model mc_torch_logits.onnx: output "
                                "'logits' has 3 class columns but multiclass.classes lists 4 "
                                "classes")
    unknown = MC_POLICY.replace("{CLASSES}", "{positive_classes: [Freelance]}")
    r = run_cli("check", "--policy", write_policy(unknown), "--data", path, "--teacher",
                MODELS / "mc_lr_zipmap.onnx", "--student", MODELS / "mc_lr_zipmap.onnx",
                "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == ("fairgate: error: positive class 'Freelance' is not one of the 3 "
                                "classes of the teacher model's columns (Gov, Private, "
                                "Self-emp)")


@pytest.mark.parametrize("change, message", [
    ("checks:\n  - {id: sr, metric: selection_rate, max: 0.5}\n",
     "checks[0].metric: selection_rate is a binary metric over the whole audit set; for "
     "multi-class models gate accuracy, error_rate or the class-wise metrics"),
    ("checks:\n  - {id: dp, metric: demographic_parity_difference, max: 0.5}\n",
     "checks[0].metric: demographic_parity_difference needs multiclass.positive_classes: for K "
     "classes it is computed one-vs-rest for each positive class (accuracy metrics are top-1)"),
    ("model: {threshold: 0.3}\nchecks:\n  - {id: tc, metric: classes_changed, max: 0}\n",
     "model.threshold: a threshold does not apply to multi-class models: their decision is the "
     "top-1 class"),
    ("checks:\n  - {id: tc, metric: classes_changed, max: 0}\nindividual: {}\n",
     "individual: individual fairness measures need a positive-class score; they are not "
     "available for multi-class models"),
])
def test_multiclass_policy_errors(write_policy, run_cli, change: str, message: str) -> None:
    text = "version: 1\naudit: {label: y, sensitive: [g]}\nmulticlass: {}\n" + change
    r = run_cli("policy", "validate", write_policy(text))
    assert r.exit_code == 2
    assert r.stderr.strip().endswith(message), r.stderr


def test_binary_policies_refuse_class_wise_metrics_and_a_reference(synthetic, write_policy,
                                                                   run_cli) -> None:
    text = ("version: 1\naudit: {label: y, positive_label: 1, sensitive: [sex]}\n"
            "checks:\n  - {id: tc, metric: classes_changed, max: 0}\n")
    r = run_cli("policy", "validate", write_policy(text))
    assert r.exit_code == 2
    assert r.stderr.strip().endswith("checks[0].metric: classes_changed is class-wise: it needs "
                                     "a multi-class policy (a multiclass: section)")
    text = text.replace("classes_changed, max: 0", "accuracy, max_decrease: 0.1")
    r = run_cli("check", "--policy", write_policy(text), "--data", synthetic, "--teacher-scores",
                "t", "--student-scores", "s", "--reference-scores", "s", "--no-mlflow")
    assert r.exit_code == 2
    assert r.stderr.strip() == ("fairgate: error: a reference student is compared class by "
                                "class: it needs a multi-class policy (a multiclass: section)")
    r = run_cli("policy", "validate", write_policy(text.replace("positive_label: 1, ", "")))
    assert r.exit_code == 2
    assert "audit.positive_label: required key is missing" in r.stderr


def test_a_class_wise_check_without_its_reference_fails_closed(workclass, write_policy,
                                                               run_cli) -> None:
    path, _ = workclass
    policy = MC_POLICY.replace("{CLASSES}", "{positive_classes: [Self-emp]}").replace(
        "metric: classes_changed,", "metric: classes_changed_vs_reference,")
    r = run_cli("check", "--policy", write_policy(policy), "--data", path, "--teacher",
                MODELS / "mc_lr_zipmap.onnx", "--student", MODELS / "mc_lr_zipmap.onnx",
                "--no-mlflow")
    assert r.exit_code == 1
    tc = next(x for x in r.report["results"] if x["check"] == "tc")
    assert tc["status"] == "undefined" and tc["student"] is None
    assert "no reference student (--reference-student or --reference-scores)" in tc["reason"]


def test_nan_class_scores_are_a_model_error(tmp_path, write_policy, run_cli) -> None:
    """argmax lands on a row's first NaN, so checking the chosen scores finds every NaN row."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([
        helper.make_node("Div", ["x", "x"], ["one"]),  # 0/0 = NaN where x == 0
        helper.make_node("Neg", ["x"], ["neg"]),
        helper.make_node("Concat", ["neg", "one", "neg"], ["scores"], axis=1),
    ], "nan", [x], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "nan.onnx")
    pd.DataFrame({"x": [1.0, 2.0, 0.0, 3.0], "y": [1, 1, 0, 2], "g": list("abab")}).to_parquet(
        tmp_path / "a.parquet")
    policy = write_policy("""\
        version: 1
        audit: {label: y, sensitive: [g]}
        model: {features: [x]}
        multiclass: {classes: [0, 1, 2]}
        checks: [{id: acc, metric: accuracy, max_decrease: 0.1}]
        """)
    r = run_cli("check", "--policy", policy, "--data", tmp_path / "a.parquet", "--teacher",
                tmp_path / "nan.onnx", "--student", tmp_path / "nan.onnx", "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip().endswith("model nan.onnx, output 'scores': produced NaN scores in "
                                     "rows from 0")


@pytest.mark.parametrize("column, message", [
    ("y", "label column 'y' has 1 missing or NaN value(s), first at row 2"),
    ("s", "student predictions column 's' has 1 missing or NaN value(s), first at row 2"),
])
def test_missing_labels_and_predictions_are_input_errors(tmp_path, write_policy, run_cli,
                                                         column: str, message: str) -> None:
    df = pd.DataFrame({"y": [0.0, 1.0, 2.0, 1.0], "t": [0.0, 1.0, 2.0, 2.0],
                       "s": [0.0, 1.0, 2.0, 1.0], "g": list("abab")})
    df.loc[2, column] = np.nan
    df.to_parquet(tmp_path / "a.parquet")
    policy = write_policy("""\
        version: 1
        audit: {label: y, sensitive: [g]}
        multiclass: {}
        checks: [{id: acc, metric: accuracy, max_decrease: 0.1}]
        """)
    r = run_cli("check", "--policy", policy, "--data", tmp_path / "a.parquet", "--teacher-scores",
                "t", "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == f"fairgate: error: {tmp_path / 'a.parquet'}: {message}"
