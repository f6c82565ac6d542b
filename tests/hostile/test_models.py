"""Reading model outputs: never guess (issue 10, section 1).

Each case once gave a confident verdict on a misread output. Models are built at test time
with onnx.helper (tests/hostile/onnx_models.py); every expected number is a hand count over
onnxruntime's own outputs on the same rows.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import cmarkgfm
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLE, MODELS
from tests.hostile.onnx_models import FEATURES, classifier, network, run, save

N = 2000


@pytest.fixture
def rows() -> pd.DataFrame:
    rng = np.random.default_rng(10)
    df = pd.DataFrame({"x0": rng.normal(size=N), "x1": rng.normal(size=N),
                       "g": rng.choice(["a", "b"], N)})
    df["y01"] = (df.x0 + 0.8 * rng.normal(size=N) > 0).astype(np.int64)
    return df


def x_of(df: pd.DataFrame) -> np.ndarray:
    return df[FEATURES].to_numpy(np.float32)


def policy_text(label: str, positive: str, model: str = "", extra: str = "") -> str:
    return (f"version: 1\naudit: {{label: {label}, positive_label: {positive}, sensitive: [g]}}\n"
            f"model: {{features: [x0, x1]{', ' + model if model else ''}}}\n"
            "checks:\n  - {id: acc, metric: accuracy, max_decrease: 0.5}\n"
            "statistics: {resamples: 0}\n" + extra)


def gate(run_cli, write_policy, tmp_path: Path, df: pd.DataFrame, policy: str, teacher: Path,
         student: Path, *extra: str):
    data = tmp_path / "audit.parquet"
    df.to_parquet(data)
    return run_cli("check", "--policy", write_policy(policy), "--data", data, "--teacher",
                   teacher, "--student", student, "--no-mlflow", *extra)


def accuracy(report: dict, role: str) -> float:
    return next(k for k in report["kpis"] if k["metric"] == "accuracy")[role]


# ----------------------------------------------------------------------------- positive class


def test_classes_that_do_not_contain_the_positive_label_are_refused(rows, tmp_path, run_cli,
                                                                     write_policy) -> None:
    """A model trained on labels 1/2, gated with positive_label good, was read inverted."""
    df = rows.assign(credit=np.where(rows.y01 == 1, "good", "bad"))
    model = classifier(tmp_path / "m.onnx", [1, 2], [[1.5, 0.2]])
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("credit", "good"), model, model)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: teacher model m.onnx: its classes are 1, 2 (from the LinearClassifier "
        "node's class labels) and none is positive_label 'good'; set model.positive_class to the "
        "class that means 'good' (one of: 1, 2), for every model or under model.teacher / "
        "model.student")
    assert not (tmp_path / "out" / "report.json").exists()


def test_positive_class_maps_the_models_classes(rows, tmp_path, run_cli, write_policy) -> None:
    df = rows.assign(credit=np.where(rows.y01 == 1, "good", "bad"))
    teacher = classifier(tmp_path / "t.onnx", [1, 2], [[1.5, 0.2]])
    student = classifier(tmp_path / "s.onnx", [2, 1], [[-1.2, 0.4]])  # its own class order
    policy = policy_text("credit", "good", "teacher: {positive_class: 2}, "
                         "student: {positive_class: 2}")
    r = gate(run_cli, write_policy, tmp_path, df, policy, teacher, student)
    assert r.exit_code in (0, 1), r.stderr
    good = df.credit.to_numpy() == "good"
    t_pred = run(teacher, x_of(df), "probabilities")[:, 1] >= 0.5  # column 1 is class 2
    s_pred = run(student, x_of(df), "probabilities")[:, 0] >= 0.5  # column 0 is class 2
    assert accuracy(r.report, "teacher") == pytest.approx(np.mean(t_pred == good), abs=1e-12)
    assert accuracy(r.report, "student") == pytest.approx(np.mean(s_pred == good), abs=1e-12)
    assert accuracy(r.report, "teacher") > 0.7  # read the right way round
    out = r.report["inputs"]["student"]["output"]
    assert out["positive_class"] == "class '2' = positive_label 'good'"
    assert out["positive_from"].startswith("model.positive_class 2")


def test_string_labels_against_a_numeric_positive_label_are_refused(rows, tmp_path, run_cli,
                                                                    write_policy) -> None:
    """A label output of "no"/"yes" never equals positive_label 1: every decision negative."""
    named = classifier(tmp_path / "named.onnx", ["no", "yes"], [[1.5, 0.2]], label=True)
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1", "output: labels"),
             named, named)
    assert r.exit_code == 3
    assert "its classes are 'no', 'yes' (from the LinearClassifier node's class labels) and " \
           "none is positive_label 1" in r.stderr
    # the same label values from a node that does not list them: the types cannot match
    nodes = [helper.make_node("LinearClassifier", ["x"], ["raw", "p"], domain="ai.onnx.ml",
                              coefficients=[-1.5, -0.2, 1.5, 0.2], intercepts=[0.0, 0.0],
                              classlabels_strings=["no", "yes"], post_transform="LOGISTIC"),
             helper.make_node("Identity", ["raw"], ["r2"]),
             helper.make_node("Concat", ["r2", "r2"], ["both"], axis=0),
             helper.make_node("Slice", ["both", "zero", "n"], ["label"])]
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    n = helper.make_tensor("n", TensorProto.INT64, [1], [N])
    opaque = save(nodes, [helper.make_tensor_value_info("label", TensorProto.STRING, [None])],
                  tmp_path / "opaque.onnx", [zero, n])
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), opaque, opaque)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: teacher model opaque.onnx: label output 'label' holds text "
        "(tensor(string)) but positive_label is 1; set model.positive_class to the label value "
        "this model gives for the positive class")


def test_unnamed_columns_need_a_declared_positive_column(rows, tmp_path, run_cli,
                                                         write_policy) -> None:
    df = rows.assign(income=np.where(rows.y01 == 1, ">50K", "<=50K"))
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("income", '">50K"'), model, model)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: teacher model m.onnx: output 'out' [N, 2] does not name its classes, so "
        "which column is positive_label '>50K' is unknown; set model.positive_column (0 or 1), "
        "for every model or under model.teacher / model.student")
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("income", '">50K"',
                                                              "positive_column: 1"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    pred = run(model, x_of(df), "out")[:, 1] >= 0.5
    assert accuracy(r.report, "student") == pytest.approx(np.mean(pred == (df.income == ">50K")),
                                                          abs=1e-12)


def test_the_zero_one_convention_is_confirmed_by_the_labels(rows, tmp_path, run_cli,
                                                            write_policy) -> None:
    """positive_label 1 reads column 1 of unnamed outputs only if the labels are 0 and 1."""
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    assert r.report["inputs"]["teacher"]["output"]["positive_from"] == (
        "positive_label 1 as the column index (labels 0/1)")
    df = rows.assign(y12=rows.y01 + 1)  # labels 1 and 2: column 1 would be class 2
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("y12", "1"), model, model)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: teacher model: its output columns are unnamed and positive_label 1 was "
        "read as a column position, which holds only when the labels are 0 and 1, but label "
        "column 'y12' also holds 2; set model.positive_column (0 or 1)")


def test_a_third_label_value_from_a_binary_label_output_is_refused(rows, tmp_path, run_cli,
                                                                   write_policy) -> None:
    model = network(tmp_path / "m.onnx", [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], head=None,
                    extra=[helper.make_node("ArgMax", ["head_out"], ["out"], axis=1,
                                            keepdims=0)],
                    out_shape=[None], out_type=TensorProto.INT64)
    # an ArgMax over 3 columns gives positions 0, 1, 2: not a binary model
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, model)
    assert r.exit_code == 3
    assert "has column position 2; a binary model has columns 0 and 1" in r.stderr


# ----------------------------------------------------------------------------- class order


MC = ["bus", "car", "train"]


@pytest.fixture
def mc_rows(rows) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    score = np.stack([rows.x0, rows.x1, -rows.x0 - rows.x1], axis=1) + rng.normal(size=(N, 3))
    return rows.assign(mode=np.array(MC)[np.argmax(score, axis=1)])


def mc_policy(classes: str = "", model: str = "") -> str:
    mc = f"{{classes: [{classes}]}}" if classes else "{}"
    return ("version: 1\naudit: {label: mode, sensitive: [g]}\n"
            f"model: {{features: [x0, x1]{', ' + model if model else ''}}}\n"
            f"multiclass: {mc}\n"
            "checks:\n  - {id: acc, metric: accuracy, max_decrease: 0.5}\n"
            "statistics: {resamples: 0}\n")


W3 = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]  # bus, car, train by construction


def test_each_model_reads_its_own_class_order(mc_rows, tmp_path, run_cli, write_policy) -> None:
    """sklearn-onnx without ZipMap: columns follow the classifier's own order (here not the
    policy's); the teacher's was read in the policy's order, 0.64 accuracy reported as 0.19."""
    order = ["train", "bus", "car"]
    teacher = classifier(tmp_path / "t.onnx", order, [W3[2], W3[0], W3[1]])
    student = classifier(tmp_path / "s.onnx", MC, W3, zipmap=True)
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy(", ".join(MC)), teacher,
             student)
    assert r.exit_code in (0, 1), r.stderr
    y = mc_rows["mode"].to_numpy()
    t_top = np.array(order)[np.argmax(run(teacher, x_of(mc_rows), "probabilities"), axis=1)]
    assert np.array_equal(t_top, run(teacher, x_of(mc_rows), "label"))  # the oracle agrees
    assert accuracy(r.report, "teacher") == pytest.approx(np.mean(t_top == y), abs=1e-12)
    assert accuracy(r.report, "teacher") > 0.5
    assert r.report["inputs"]["teacher"]["output"]["classes"] == order
    assert r.report["inputs"]["teacher"]["output"]["checked_against"] == "label"


def test_unnamed_class_columns_without_a_declared_order_are_refused(mc_rows, tmp_path, run_cli,
                                                                     write_policy) -> None:
    """Without multiclass.classes, one model's ZipMap order was applied to another's columns."""
    teacher = network(tmp_path / "t.onnx", W3)
    student = classifier(tmp_path / "s.onnx", MC, W3, zipmap=True)
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy(), teacher, student)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: teacher model t.onnx: output 'out' has 3 class columns that its graph "
        "does not name, and nothing declares their order; list the classes in column order "
        "under multiclass.classes (every model) or model.teacher.classes / "
        "model.student.classes (this model)")
    r = gate(run_cli, write_policy, tmp_path, mc_rows,
             mc_policy(model="teacher: {classes: [bus, car, train]}"), teacher, student)
    assert r.exit_code in (0, 1), r.stderr
    top = np.array(MC)[np.argmax(run(teacher, x_of(mc_rows), "out"), axis=1)]
    assert accuracy(r.report, "teacher") == pytest.approx(np.mean(top == mc_rows["mode"]),
                                                          abs=1e-12)


def test_a_declared_order_that_the_label_output_contradicts_is_refused(mc_rows, tmp_path, run_cli,
                                                                        write_policy) -> None:
    """Probabilities the graph does not name, next to a label output that names classes."""
    nodes = [helper.make_node("LinearClassifier", ["x"], ["label", "z"], domain="ai.onnx.ml",
                              coefficients=np.array(W3).reshape(-1).tolist(),
                              intercepts=[0.0] * 3, classlabels_strings=MC,
                              post_transform="NONE"),
             helper.make_node("Mul", ["z", "one"], ["probabilities"])]
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    model = save(nodes, [helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
                         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                       [None, 3])], tmp_path / "m.onnx", [one])
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy("train, car, bus"), model, model)
    assert r.exit_code == 3
    assert "its label output 'label' says" in r.stderr
    assert "the class order is wrong; fix the declared classes, or gate the label output " \
           "(model.output_name: label)" in r.stderr
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy("bus, car, train"), model, model)
    assert r.exit_code in (0, 1), r.stderr


def test_logits_only_multiclass_model_with_output_logits(mc_rows, tmp_path, run_cli,
                                                          write_policy) -> None:
    model = network(tmp_path / "m.onnx", W3, head=None)
    r = gate(run_cli, write_policy, tmp_path, mc_rows,
             mc_policy("bus, car, train", "output: logits"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    top = np.array(MC)[np.argmax(run(model, x_of(mc_rows), "out"), axis=1)]
    assert accuracy(r.report, "student") == pytest.approx(np.mean(top == mc_rows["mode"]),
                                                          abs=1e-12)


def test_argmax_labels_are_positions_into_the_declared_order(mc_rows, tmp_path, run_cli,
                                                              write_policy) -> None:
    model = network(tmp_path / "m.onnx", W3, head=None, out_shape=[None], out_type=TensorProto.INT64,
                    extra=[helper.make_node("ArgMax", ["head_out"], ["out"], axis=1, keepdims=0)])
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy(), model, model)
    assert r.exit_code == 3
    assert "label output 'out' (an argmax) has K class columns that its graph does not name" \
        in r.stderr
    r = gate(run_cli, write_policy, tmp_path, mc_rows, mc_policy("bus, car, train"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    top = np.array(MC)[run(model, x_of(mc_rows), "out")]
    assert accuracy(r.report, "student") == pytest.approx(np.mean(top == mc_rows["mode"]),
                                                          abs=1e-12)


# ----------------------------------------------------------------------------- shape and range


def test_an_output_reduced_over_the_batch_is_refused(rows, tmp_path, run_cli, write_policy) -> None:
    """ReduceMean over the rows gives one number, which broadcasting spread over every row."""
    reduce = [helper.make_node("ReduceMean", ["head_out"], ["out"], axes=[0], keepdims=1)]
    model = network(tmp_path / "m.onnx", [[1.0, 0.2]], head="Sigmoid", extra=reduce,
                    out_shape=[1, 1])
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, model)
    assert r.exit_code == 3  # (teacher and student both fail; whichever reports first)
    assert r.stderr.strip().endswith(
        "model m.onnx, output 'out': gave shape [1, 1] for a batch of "
        f"{N} rows (from row 0); expected one prediction per row")


def test_an_output_shape_known_only_at_run_time(rows, tmp_path, run_cli, write_policy) -> None:
    """No declared shape at all: planned on the first batch, not a crash."""
    identity = [helper.make_node("Identity", ["head_out"], ["out"])]
    model = network(tmp_path / "m.onnx", [[1.0, 0.2]], head="Sigmoid", extra=identity,
                    out_shape=None)
    proto = onnx.load(model)  # no shape at all: unknown rank
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(proto, model)
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    pred = run(model, x_of(rows), "out").reshape(-1) >= 0.5
    assert accuracy(r.report, "student") == pytest.approx(np.mean(pred == rows.y01), abs=1e-12)
    assert r.report["inputs"]["student"]["output"]["interpretation"] == "probabilities"


@pytest.mark.parametrize(("shift", "message"), [
    (0.003, "cannot tell probabilities from logits: its graph does not say, and the first batch "
            "(rows from 0) has values just outside [0, 1]"),
])
def test_values_just_outside_the_unit_interval_are_ambiguous(rows, tmp_path, run_cli,
                                                             write_policy, shift, message) -> None:
    """Scores a hair outside [0, 1] (int8 dequantization) must not be read as logits."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p"]),
             helper.make_node("Mul", ["p", "scale"], ["q"]),
             helper.make_node("Sub", ["q", "shift"], ["out"])]
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 1], [2.0, 0.3])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1 + 2 * shift])
    sub = helper.make_tensor("shift", TensorProto.FLOAT, [], [shift])
    model = save(nodes, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])],
                 tmp_path / "m.onnx", [w, scale, sub])
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, model)
    assert r.exit_code == 3
    assert message in r.stderr
    assert "set model.output to probabilities or logits" in r.stderr
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1", "output: logits"),
             model, model)
    assert r.exit_code in (0, 1), r.stderr


def test_infinite_logits_decide_without_nan(rows, tmp_path, run_cli, write_policy) -> None:
    """x / 0 gives ±inf logits: sigmoid(+inf) = 1 is positive, sigmoid(−inf) = 0 negative."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z"]),
             helper.make_node("Div", ["z", "zero"], ["out"])]
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 1], [1.0, 0.0])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    model = save(nodes, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 1])],
                 tmp_path / "m.onnx", [w, zero])
    df = rows[rows.x0 != 0]
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("y01", "1"), model, model)
    assert r.exit_code in (0, 1), r.stderr
    logits = run(model, x_of(df), "out").reshape(-1)
    assert np.isinf(logits).all()
    pred = logits > 0
    assert accuracy(r.report, "student") == pytest.approx(np.mean(pred == df.y01), abs=1e-12)
    assert r.report["inputs"]["student"]["output"]["interpretation"] == "logits"
    # two logits both +inf give no decision: refused, not a silent negative
    both = [helper.make_node("Gemm", ["x", "W"], ["z"]),
            helper.make_node("Div", ["z", "zero"], ["inf"]),
            helper.make_node("Abs", ["inf"], ["pos"]),
            helper.make_node("Concat", ["pos", "pos"], ["out"], axis=1)]
    model2 = save(both, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])],
                  tmp_path / "m2.onnx", [w, zero])
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("y01", "1", "output: logits"),
             model2, model2)
    assert r.exit_code == 3
    assert "row 0 has logits [inf, inf], which give no decision" in r.stderr


# ----------------------------------------------------------------------------- labels and inputs


@pytest.mark.parametrize(("positive", "message"), [
    ("good", "label column 'ok' is boolean, but positive_label is 'good'; write positive_label: "
             "true (or false)"),
    ("1", "label column 'ok' is boolean, but positive_label is 1; write positive_label: true "
          "(or false)"),
])
def test_boolean_labels_need_a_boolean_positive_label(rows, tmp_path, run_cli, write_policy,
                                                      positive, message) -> None:
    """A boolean label with positive_label good silently chose False as positive."""
    df = rows.assign(ok=rows.y01 == 1, t=0.3, s=0.6)
    data = tmp_path / "b.parquet"
    df.to_parquet(data)
    text = policy_text("ok", positive).replace("model: {features: [x0, x1]}\n", "")
    r = run_cli("check", "--policy", write_policy(text), "--data", data, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == f"fairgate: error: {data}: {message}"
    text = policy_text("ok", "true").replace("model: {features: [x0, x1]}\n", "")
    r = run_cli("check", "--policy", write_policy(text), "--data", data, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    # everyone is predicted negative by t (0.3 < 0.5): accuracy is the share of False labels
    assert accuracy(r.report, "teacher") == pytest.approx(np.mean(~df.ok), abs=1e-12)


def test_numeric_label_with_a_text_positive_label_is_refused(rows, tmp_path, run_cli,
                                                             write_policy) -> None:
    df = rows.assign(t=0.3, s=0.6)
    data = tmp_path / "n.parquet"
    df.to_parquet(data)
    text = policy_text("y01", '"yes"').replace("model: {features: [x0, x1]}\n", "")
    r = run_cli("check", "--policy", write_policy(text), "--data", data, "--teacher-scores", "t",
                "--student-scores", "s", "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr.strip() == (f"fairgate: error: {data}: label column 'y01' holds numbers (int64), "
                                "but positive_label is 'yes'; write the positive label as a "
                                "number without quotes")


def test_the_same_model_twice_is_said_in_the_report(rows, tmp_path, run_cli, write_policy) -> None:
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    r = gate(run_cli, write_policy, tmp_path, rows, policy_text("y01", "1"), model, copy)
    assert r.exit_code == 0, r.stderr
    warnings = r.report["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("the student is the teacher (sha256 ")
    assert warnings[0].endswith("every change is 0 by construction, so this gate says nothing "
                                "about a compressed model")


def test_per_model_inputs_and_an_onnx_teacher_against_a_score_column(tmp_path, run_cli,
                                                                     write_policy) -> None:
    """A per-column sklearn pipeline teacher, a matrix student with its own feature list,
    and the same teacher against a column of logged student scores."""
    df = pd.read_parquet(EXAMPLE / "audit.parquet").head(3000)
    feats = ["age", "education_num", "hours_per_week", "capital_gain", "capital_loss"]
    x = df[feats].to_numpy(np.float32)

    sess = ort.InferenceSession(str(MODELS / "lr_nozipmap.onnx"), providers=["CPUExecutionProvider"])
    s_prob = sess.run(["probabilities"], {"float_input": x})[0][:, 1]
    teach = ort.InferenceSession(str(MODELS / "pipeline_percolumn.onnx"),
                                 providers=["CPUExecutionProvider"])
    feeds = {"age": df[["age"]].to_numpy(np.float32),
             "hours_per_week": df[["hours_per_week"]].to_numpy(np.float32),
             "sex": df[["sex"]].to_numpy(object), "race": df[["race"]].to_numpy(object)}
    t_prob = teach.run(["probabilities"], feeds)[0][:, 1]
    df = df.assign(logged=s_prob.astype(np.float64))
    data = tmp_path / "a.parquet"
    df.to_parquet(data)
    y = (df.income == ">50K").to_numpy()
    policy = write_policy(f"""\
        version: 1
        audit: {{label: income, positive_label: ">50K", sensitive: [sex]}}
        model:
          positive_class: 1          # both fixtures name their classes 0/1
          student: {{features: [{', '.join(feats)}]}}
        checks:
          - {{id: acc, metric: accuracy, max_decrease: 0.5}}
        statistics: {{resamples: 0}}
        """)
    for student in (("--student", str(MODELS / "lr_nozipmap.onnx")),
                    ("--student-scores", "logged")):
        r = run_cli("check", "--policy", policy, "--data", data, "--teacher",
                    MODELS / "pipeline_percolumn.onnx", *student, "--no-mlflow")
        assert r.exit_code in (0, 1), r.stderr
        assert accuracy(r.report, "teacher") == pytest.approx(np.mean((t_prob >= 0.5) == y),
                                                              abs=1e-12)
        assert accuracy(r.report, "student") == pytest.approx(np.mean((s_prob >= 0.5) == y),
                                                              abs=1e-12)


def test_features_file_lists_the_matrix_columns(rows, tmp_path, run_cli, write_policy) -> None:
    (tmp_path / "features.txt").write_text("# the student's matrix, in order\nx0\n\nx1\n")
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    text = policy_text("y01", "1").replace("model: {features: [x0, x1]}",
                                           "model: {features_file: features.txt}")
    r = gate(run_cli, write_policy, tmp_path, rows, text, model, model)
    assert r.exit_code == 0, r.stderr
    assert r.report["inputs"]["student"]["features"] == ["x0", "x1"]
    (tmp_path / "features.txt").write_text("x0\nx1\nx0\n")
    r = gate(run_cli, write_policy, tmp_path, rows, text, model, model)
    assert r.exit_code == 2
    assert r.stderr.strip().endswith(f"model.features_file: {tmp_path / 'features.txt'}:3: 'x0' "
                                     "is listed twice (first on line 1)")


def imputing_model(path: Path, input_type: int = TensorProto.FLOAT) -> Path:
    """An sklearn-style SimpleImputer (mean 0) in front of a linear layer and a softmax."""
    nodes = [helper.make_node("Imputer", ["x"], ["filled"], domain="ai.onnx.ml",
                              imputed_value_floats=[0.0, 0.0], replaced_value_float=float("nan")),
             helper.make_node("Gemm", ["filled", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["out"], axis=-1)]
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 2], [-1.0, 1.0, -0.1, 0.1])
    return save(nodes, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])], path,
                [w], input_type=input_type)


def test_missing_features_pass_to_a_model_that_imputes(rows, tmp_path, run_cli,
                                                       write_policy) -> None:
    df = rows.copy()
    df.loc[[3, 5, 8], "x0"] = np.nan
    model = imputing_model(tmp_path / "m.onnx")
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("y01", "1"), model, model)
    assert r.exit_code == 3
    assert "feature column 'x0' has 3 missing or NaN value(s) in rows from 0, first at row 3; " \
           "set model.missing: pass if the model imputes them" in r.stderr
    r = gate(run_cli, write_policy, tmp_path, df, policy_text("y01", "1", "missing: pass"), model,
             model)
    assert r.exit_code == 0, r.stderr
    pred = run(model, df[FEATURES].to_numpy(np.float32), "out")[:, 1] >= 0.5
    assert not np.isnan(run(model, df[FEATURES].to_numpy(np.float32), "out")).any()
    assert accuracy(r.report, "student") == pytest.approx(np.mean(pred == df.y01), abs=1e-12)
    assert r.report["inputs"]["student"]["missing"] == "pass"


def test_missing_values_cannot_pass_to_an_integer_input(rows, tmp_path, run_cli,
                                                        write_policy) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["xf", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["out"], axis=-1)]
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 2], [-1.0, 1.0])
    model = save(nodes, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])],
                 tmp_path / "m.onnx", [w], n_features=1, input_type=TensorProto.INT64)
    proto = onnx.load(model)  # a per-column input named like the audit column
    proto.graph.input[0].name = "k"
    proto.graph.node[0].input[0] = "k"
    onnx.save(proto, model)
    df = rows.assign(k=pd.array(np.where(rows.y01 == 1, 1, 0), dtype="Int64"))
    df.loc[4, "k"] = pd.NA
    text = policy_text("y01", "1", "missing: pass").replace("features: [x0, x1], ", "")
    r = gate(run_cli, write_policy, tmp_path, df, text, model, model)
    assert r.exit_code == 3
    assert "feature column 'k' has 1 missing or NaN value(s) in rows from 0, first at row 4; the " \
           "model's input is tensor(int64), which cannot carry a missing value" in r.stderr


def test_counterfactual_on_a_column_no_model_reads_is_refused(rows, tmp_path, run_cli,
                                                              write_policy) -> None:
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    text = policy_text("y01", "1").replace(
        "checks:\n", "individual: {sample_rows: 500, counterfactual: {column: g, values: [a, b]}}\n"
        "checks:\n  - {id: cf, metric: counterfactual_flip_rate, max: 0.1}\n")
    r = gate(run_cli, write_policy, tmp_path, rows, text, model, model)
    assert r.exit_code == 3
    assert r.stderr.strip() == (
        "fairgate: error: individual.counterfactual.column 'g' is not an input of either model "
        "(teacher reads x0, x1; student reads x0, x1), so no decision can flip; name a column a "
        "model reads")


# ----------------------------------------------------------------------------- policy keys


MODEL_BASE = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [g]}
model:
  features: [x0, x1]
checks:
  - {id: acc, metric: accuracy, max_decrease: 0.1}
"""


@pytest.mark.parametrize(("model", "message"), [
    ("  positive_class: 1\n  positive_column: 1\n",
     "p.yaml:6: model.positive_column: give positive_class or positive_column, not both"),
    ("  features_file: f.txt\n", "p.yaml:5: model.features_file: give features or features_file, "
     "not both"),
    ("  student: {classes: [a, b]}\n", "p.yaml:5: model.student.classes: classes is for "
     "multi-class models (a multiclass: section)"),
    ("  teacher: {positive_column: 2}\n", "p.yaml:5: model.teacher.positive_column: input should "
     "be less than or equal to 1, got 2"),
    ("  students: {threshold: 0.4}\n", "p.yaml:5: model.students: unknown key 'students' "
     "(allowed: features, features_file, threshold, output, output_name, positive_class, "
     "positive_column, missing, inputs, teacher, student, reference_student)"),
    ("  missing: impute\n", "p.yaml:5: model.missing: must be 'refuse' or 'pass', got 'impute'"),
])
def test_model_settings_are_validated(tmp_path, model, message) -> None:
    from fairgate.errors import PolicyError
    from fairgate.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text(MODEL_BASE.replace("  features: [x0, x1]\n", "  features: [x0, x1]\n" + model))
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert str(e.value).replace(str(path), "p.yaml") == message


def test_per_model_settings_fall_back_to_the_shared_ones(tmp_path) -> None:
    from fairgate.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text(MODEL_BASE.replace("  features: [x0, x1]\n", "  features: [x0, x1]\n"
                                       "  threshold: 0.3\n  student: {threshold: 0.6, "
                                       "features: [x1]}\n"))
    model = load_policy(path).policy.model
    teacher, student = model.for_role("teacher"), model.for_role("student")
    assert (teacher.features, teacher.threshold, teacher.output) == (("x0", "x1"), 0.3, "auto")
    assert (student.features, student.threshold, student.missing) == (("x1",), 0.6, "refuse")
    zero = MODEL_BASE.replace("  features: [x0, x1]\n", "  teacher: {threshold: 0.0}\n")
    path.write_text(zero)
    assert load_policy(path).policy.model.for_role("teacher").threshold == 0.0  # not "unset"


def test_compare_mixes_onnx_candidates_and_score_columns(rows, tmp_path, run_cli,
                                                         write_policy) -> None:
    teacher = network(tmp_path / "t.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    student = network(tmp_path / "s.onnx", [[-0.8, 0.3], [0.8, -0.3]])
    logged = run(student, x_of(rows), "out")[:, 1].astype(np.float64)
    data = tmp_path / "audit.parquet"
    rows.assign(logged=logged).to_parquet(data)
    r = run_cli("compare", "--policy", write_policy(policy_text("y01", "1")), "--data", data,
                "--teacher", teacher, "--candidate", student, "--candidate-scores", "logged",
                "--out", tmp_path / "cmp", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    summary = {c["name"]: c for c in json.loads(
        (tmp_path / "cmp" / "compare.json").read_text())["candidates"]}
    reports = {n: json.loads((tmp_path / "cmp" / n / "report.json").read_text())
               for n in summary}
    # the same student, once run and once logged: the same decisions, the same accuracy
    assert accuracy(reports["s"], "student") == accuracy(reports["logged"], "student")
    pred = logged >= 0.5
    assert accuracy(reports["logged"], "student") == pytest.approx(np.mean(pred == rows.y01),
                                                                   abs=1e-12)


def test_what_was_read_and_the_warnings_are_in_every_report(rows, tmp_path, run_cli,
                                                            write_policy) -> None:
    """The positive class actually read, and why, in terminal, md, html, junit and MLflow."""
    from fairgate.integrations.mlflow import collect
    from fairgate.policy import load_policy
    from fairgate.run import GateRequest, evaluate_policy

    df = rows.assign(income=np.where(rows.y01 == 1, ">50K", "<=50K"))
    model = network(tmp_path / "m.onnx", [[-1.0, 0.1], [1.0, -0.1]])
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(model.read_bytes())
    text = policy_text("income", '">50K"', "positive_column: 1")
    r = gate(run_cli, write_policy, tmp_path, df, text, model, twin)
    assert r.exit_code == 0, r.stderr
    reading = ("output 'out': [N, 2] probabilities, column 1 = positive_label '>50K' (positive "
               "class: model.positive_column; scale: the graph (Softmax))")
    warning = "the student is the teacher (sha256 "
    assert f"  student: {reading}" in r.stdout
    assert f"  warning: {warning}" in r.stdout
    md = (r.out / "report.md").read_text()
    rendered = html.unescape(re.sub(r"<[^>]+>", "", cmarkgfm.github_flavored_markdown_to_html(md)))
    assert f"student read as: {reading}" in rendered  # literally, as GitHub shows it
    assert f"⚠️ Warning: {warning}" in rendered
    page = (r.out / "report.html").read_text()
    assert reading.replace("'", "&#x27;").replace(">", "&gt;") in page
    assert "<b>Warning</b>: " + warning in page
    junit = (r.out / "junit.xml").read_text()
    assert f'name="student.read_as" value="{reading.replace(">", "&gt;")}"' in junit
    assert 'name="fairgate.warning.1" value="' + warning in junit
    report = evaluate_policy(load_policy(tmp_path / "policy.yaml"),
                             GateRequest(policy=tmp_path / "policy.yaml",
                                         data=tmp_path / "audit.parquet", teacher=model,
                                         student=twin))
    tags = collect(report, {}).tags
    assert tags["fairgate.student.read_as"] == reading
    assert tags["fairgate.warnings"].startswith(warning)


@pytest.mark.parametrize(("target", "message"), [
    ("/dev/zero", "not a regular file (a character device), expected a text file of column names"),
    ("big.txt", "larger than 1,024 KiB, the limit for a features file"),
    ("missing.txt", "features file not found"),
])
def test_a_hostile_features_file_is_refused(tmp_path, run_cli, write_policy, target,
                                            message) -> None:
    (tmp_path / "big.txt").write_text("x0\n" * 400_000)
    text = policy_text("y01", "1").replace("model: {features: [x0, x1]}",
                                           f"model: {{features_file: {target}}}")
    r = run_cli("policy", "validate", write_policy(text))
    assert r.exit_code == 2
    where = Path(target) if target.startswith("/") else tmp_path / target
    assert r.stderr.strip() == (f"fairgate: error: {tmp_path / 'policy.yaml'}:3: "
                                f"model.features_file: {where}: {message}")
