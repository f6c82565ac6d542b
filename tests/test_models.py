"""ONNX outputs as users export them, on real exported models (tests/fixtures/models).

Each reference decision is computed here with onnxruntime directly, independently of
fairgate's output handling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fairgate.errors import ModelError
from fairgate.inputs.model import OnnxPredictor
from fairgate.inputs.outputs import ReadSettings
from tests.conftest import EXAMPLE, MODELS

FEATURES = ("age", "education_num", "hours_per_week", "capital_gain", "capital_loss")
COLUMNS = [*FEATURES, "sex", "race", "workclass", "income"]


@pytest.fixture(scope="module")
def batch() -> pa.RecordBatch:
    table = pq.read_table(EXAMPLE / "audit.parquet", columns=COLUMNS).slice(0, 3000)
    floats = [table.column(c).cast(pa.float64()) if c in FEATURES else table.column(c)
              for c in COLUMNS]
    return pa.Table.from_arrays(floats, names=COLUMNS).combine_chunks().to_batches()[0]


def raw(name: str, batch: pa.RecordBatch, output: str) -> object:
    session = ort.InferenceSession(str(MODELS / name), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.stack([batch.column(c).to_numpy() for c in FEATURES], axis=1)
    x = x.astype(np.float64 if inp.type == "tensor(double)" else np.float32)
    return session.run([output], {inp.name: x})[0]


def predictor(name: str, features: tuple[str, ...] | None = FEATURES, output: str = "auto",
              output_name: str | None = None, threshold: float = 0.5) -> OnnxPredictor:
    return OnnxPredictor("student", MODELS / name, features,
                         ReadSettings(output, output_name, threshold, positive_label=1))  # type: ignore[arg-type]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


@pytest.mark.parametrize(("name", "reference", "interpretation"), [
    ("lr_zipmap.onnx",
     lambda b: np.array([row[1] for row in raw("lr_zipmap.onnx", b, "output_probability")]),
     "probabilities"),
    ("lr_nozipmap.onnx", lambda b: raw("lr_nozipmap.onnx", b, "probabilities")[:, 1],
     "probabilities"),
    ("lr_double.onnx", lambda b: raw("lr_double.onnx", b, "probabilities")[:, 1], "probabilities"),
    ("torch_probs.onnx", lambda b: raw("torch_probs.onnx", b, "probs")[:, 1], "probabilities"),
    ("torch_logit.onnx", lambda b: sigmoid(raw("torch_logit.onnx", b, "logit")[:, 0]), "logits"),
    ("torch_logit_1d.onnx", lambda b: sigmoid(raw("torch_logit_1d.onnx", b, "logit")), "logits"),
])
def test_auto_detects_scores(batch, name, reference, interpretation) -> None:
    p = predictor(name)
    decided = p.decide(batch, 0)
    expected = reference(batch) >= 0.5
    assert decided.dtype == bool
    assert np.array_equal(decided, expected)
    assert 0 < decided.sum() < len(decided)  # both classes occur: the comparison has teeth
    out = p.describe()["output"]
    assert out["interpretation"] == interpretation
    assert out["chosen"] == "auto"


def test_threshold_moves_decisions(batch) -> None:
    probs = raw("lr_nozipmap.onnx", batch, "probabilities")[:, 1]
    for t in (0.2, 0.35, 0.8):
        assert np.array_equal(predictor("lr_nozipmap.onnx", threshold=t).decide(batch, 0),
                              probs >= t)


def test_labels_only_model(batch) -> None:
    labels = raw("labels_only.onnx", batch, "label")
    p = predictor("labels_only.onnx")
    assert np.array_equal(p.decide(batch, 0), labels == 1)
    assert p.describe()["output"]["interpretation"] == "labels"


def test_label_output_chosen_explicitly(batch) -> None:
    labels = raw("lr_nozipmap.onnx", batch, "label")
    p = predictor("lr_nozipmap.onnx", output="labels")
    assert np.array_equal(p.decide(batch, 0), labels == 1)


def test_per_column_pipeline(batch) -> None:
    session = ort.InferenceSession(str(MODELS / "pipeline_percolumn.onnx"),
                                   providers=["CPUExecutionProvider"])
    feeds = {
        "age": batch.column("age").to_numpy().astype(np.float32).reshape(-1, 1),
        "hours_per_week": batch.column("hours_per_week").to_numpy().astype(np.float32)
        .reshape(-1, 1),
        "sex": np.array(batch.column("sex").to_pylist(), dtype=object).reshape(-1, 1),
        "race": np.array(batch.column("race").to_pylist(), dtype=object).reshape(-1, 1),
    }
    expected = session.run(["probabilities"], feeds)[0][:, 1] >= 0.5
    p = predictor("pipeline_percolumn.onnx", features=None)
    assert set(p.columns) == {"age", "hours_per_week", "sex", "race"}
    assert np.array_equal(p.decide(batch, 0), expected)
    assert expected.sum() > 0


def test_ambiguous_outputs_name_the_options() -> None:
    with pytest.raises(ModelError) as e:
        predictor("two_float_outputs.onnx")
    assert str(e.value) == (
        "student model two_float_outputs.onnx: cannot tell which output holds the scores "
        "(out_a tensor(float) [N, 2], out_b tensor(float) [N, 2]); set model.output_name to "
        "one of them"
    )


def test_output_name_resolves_ambiguity(batch) -> None:
    expected = raw("two_float_outputs.onnx", batch, "out_b")[:, 1] >= 0.5
    p = predictor("two_float_outputs.onnx", output_name="out_b")
    assert np.array_equal(p.decide(batch, 0), expected)


def test_multiclass_is_refused() -> None:
    with pytest.raises(ModelError, match=r"output 'probs' has shape \[N, 3\]: 3 classes; "
                                         r"fairgate gates binary decisions"):
        predictor("multiclass_probs.onnx")


@pytest.mark.parametrize(("name", "declared", "message"), [
    ("torch_probs.onnx", "logits", "student model torch_probs.onnx: model.output is logits, but "
     "output 'probs' comes out of Softmax: it holds probabilities; remove model.output or set it "
     "to probabilities"),
    ("torch_logit.onnx", "probabilities", "student model torch_logit.onnx: model.output is "
     "probabilities, but output 'logit' comes out of Gemm: it holds logits; remove model.output "
     "or set it to logits"),
])
def test_declared_scale_that_the_graph_contradicts_is_refused(name, declared, message) -> None:
    # declaring logits on a Softmax output would apply a second softmax: a wrong verdict
    with pytest.raises(ModelError) as e:
        predictor(name, output=declared)
    assert str(e.value) == message


def test_input_width_mismatch_names_both_shapes() -> None:
    with pytest.raises(ModelError) as e:
        predictor("lr_nozipmap.onnx", features=(*FEATURES, "fnlwgt"))
    assert str(e.value) == (
        "student model lr_nozipmap.onnx: input 'float_input' has shape [N, 5], but its "
        "features (model.features) give [N, 6] (age, education_num, hours_per_week, capital_gain, "
        "capital_loss, fnlwgt)"
    )


def test_matrix_input_needs_features() -> None:
    with pytest.raises(ModelError, match=r"list its columns in order under model\.features"):
        predictor("lr_nozipmap.onnx", features=None)


def test_per_column_inputs_must_match_features() -> None:
    with pytest.raises(ModelError, match=r"inputs are \(age, hours_per_week, sex, race\) but "
                                         r"its features \(model.features\) list \(age, sex\)"):
        predictor("pipeline_percolumn.onnx", features=("age", "sex"))


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(ModelError, match=r"model\.onnx: not an ONNX model"):
        OnnxPredictor("teacher", bad, FEATURES, ReadSettings(positive_label=1))


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"teacher model .*nope\.onnx: file not found"):
        OnnxPredictor("teacher", tmp_path / "nope.onnx", FEATURES, ReadSettings(positive_label=1))


def _external_model(folder: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [5, 2], np.ones(10, np.float32))
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Softmax", ["y"], ["p"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 2])], [weight])
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder, location)
    with pytest.raises(ModelError) as e:
        OnnxPredictor("student", path, FEATURES, ReadSettings(positive_label=1))
    assert str(e.value) == (
        f"student model {path}: tensor 'w' points to external data {location!r} outside the "
        "model's folder; refusing to read it"
    )


def test_external_data_inside_the_folder_loads(tmp_path: Path, batch) -> None:
    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.ones(10, np.float32).tobytes())
    p = OnnxPredictor("student", path, FEATURES, ReadSettings(positive_label=1))
    assert p.decide(batch, 0).shape == (batch.num_rows,)
