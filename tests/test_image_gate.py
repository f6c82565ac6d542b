"""The gate on a real ONNX image model (needs fairgate/inputs/image.py from branch vision):
decisions equal the model run on images preprocessed with Pillow and numpy directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image


def image_model(path: Path) -> Path:
    w = np.array([[-2.0, 2.0], [0.5, -0.5], [1.0, -1.0]], dtype=np.float32)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "img", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, 6, 5])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, ["N", 2])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "img").mkdir(parents=True)
    rows = []
    for i in range(300):
        pixels = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        pixels[..., 0] = np.clip(pixels[..., 0].astype(int) + (60 if i % 2 else -60), 0, 255)
        Image.fromarray(pixels).save(tmp_path / "data" / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "y": int(pixels[..., 0].mean() > 127),
                     "sex": "F" if i % 3 else "M"})
    pd.DataFrame(rows).to_parquet(tmp_path / "data" / "audit.parquet")
    image_model(tmp_path / "m.onnx")
    (tmp_path / "policy.yaml").write_text("""\
version: 1
audit: {label: y, positive_label: 1, sensitive: [sex]}
model:
  positive_column: 1
  inputs:
    image: {column: path, size: [6, 5], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
checks:
  - {id: acc, metric: accuracy, max_decrease: 0.05}
statistics: {resamples: 20}
""")
    return tmp_path


def test_image_gate(run_cli, audit: Path) -> None:
    r = run_cli("check", "--policy", audit / "policy.yaml", "--data", audit / "data" / "audit.parquet",
                "--teacher", audit / "m.onnx", "--student", audit / "m.onnx", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    df = pd.read_parquet(audit / "data" / "audit.parquet")
    x = np.stack([((np.asarray(Image.open(audit / "data" / p).convert("RGB").resize(
        (5, 6), Image.BILINEAR)).astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
        for p in df.path])
    prob = ort.InferenceSession(str(audit / "m.onnx")).run(None, {"x": x})[0][:, 1]
    acc = float(((prob >= 0.5) == (df.y == 1)).mean())
    kpi = next(k for k in r.report["kpis"] if k["metric"] == "accuracy" and k["grouping"] == [])
    assert kpi["teacher"] == pytest.approx(acc, abs=1e-11)
    assert r.report["inputs"]["teacher"]["image"]["feeds"] == "x"
    assert "images 'path' as 'x'" in r.stdout


def test_image_path_outside_the_folder_exits_3(run_cli, audit: Path) -> None:
    df = pd.read_parquet(audit / "data" / "audit.parquet")
    df.loc[5, "path"] = "../m.onnx"
    df.to_parquet(audit / "data" / "audit.parquet")
    r = run_cli("check", "--policy", audit / "policy.yaml", "--data", audit / "data" / "audit.parquet",
                "--teacher", audit / "m.onnx", "--student", audit / "m.onnx", "--no-mlflow")
    assert r.exit_code == 3 and "row 5" in r.stderr, r.stderr


def test_image_shape_mismatch_names_the_input(run_cli, audit: Path) -> None:
    p = audit / "policy.yaml"
    p.write_text(p.read_text().replace("size: [6, 5]", "size: [6, 6]"))
    r = run_cli("check", "--policy", p, "--data", audit / "data" / "audit.parquet",
                "--teacher", audit / "m.onnx", "--student", audit / "m.onnx", "--no-mlflow")
    assert r.exit_code == 3 and "graph input 'x' has shape [N, 3, 6, 5]" in r.stderr, r.stderr


def test_image_bytes_in_memory(audit: Path) -> None:
    import fairgate

    df = pd.read_parquet(audit / "data" / "audit.parquet")
    df["path"] = [(audit / "data" / p).read_bytes() for p in df.path]
    report = fairgate.check(audit / "policy.yaml", df, teacher=audit / "m.onnx",
                            student=audit / "m.onnx")
    assert report.inputs["data"]["rows"] == 300
