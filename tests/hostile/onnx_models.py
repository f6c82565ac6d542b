"""Small ONNX models built at test time with onnx.helper, shaped like real exports.

``classifier`` is what sklearn-onnx writes for a linear model (a LinearClassifier node with
its class labels, a label output and a probability tensor, optionally behind ZipMap);
``network`` is what a torch export looks like (Gemm, then Softmax/Sigmoid or nothing).
Every expected value in the tests is computed from onnxruntime's own outputs on the same
rows, so these builders only need to produce valid graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FEATURES = ["x0", "x1"]


def save(nodes: list[Any], outputs: list[Any], path: Path, initializers: Sequence[Any] = (),
         n_features: int = 2, input_type: int = TensorProto.FLOAT) -> Path:
    """A model with one [N, n_features] input ``x`` and the given nodes and outputs."""
    x = helper.make_tensor_value_info("x", input_type, [None, n_features])
    graph = helper.make_graph(nodes, "g", [x], outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def classifier(path: Path, classes: Sequence[Any], weights: np.ndarray, *, zipmap: bool = False,
               label: bool = True) -> Path:
    """sklearn-onnx's linear classifier: ``weights`` is [classes, features] (binary: one row,
    written as (w, -w) as sklearn-onnx does, so the two probabilities sum to 1)."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(classes) == 2 and weights.shape[0] == 1:
        weights = np.vstack([-weights[0], weights[0]])
    key = "classlabels_strings" if isinstance(classes[0], str) else "classlabels_ints"
    nodes = [helper.make_node(
        "LinearClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml",
        coefficients=weights.reshape(-1).tolist(), intercepts=[0.0] * len(classes),
        post_transform="LOGISTIC" if len(classes) == 2 else "SOFTMAX", multi_class=0,
        **{key: list(classes)})]
    label_type = TensorProto.STRING if isinstance(classes[0], str) else TensorProto.INT64
    outputs = [helper.make_tensor_value_info("label", label_type, [None])] if label else []
    if zipmap:
        zkey = "classlabels_strings" if isinstance(classes[0], str) else "classlabels_int64s"
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                                      domain="ai.onnx.ml", **{zkey: list(classes)}))
        value = (helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(
            TensorProto.FLOAT, [])) if isinstance(classes[0], str) else
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
                TensorProto.FLOAT, [])))
        outputs.append(helper.make_value_info("output_probability",
                                              helper.make_sequence_type_proto(value)))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                     [None, len(classes)]))
    return save(nodes, outputs, path)


def network(path: Path, weights: np.ndarray, head: str | None = "Softmax",
            out_shape: list[Any] | None = None, extra: Sequence[Any] = (),
            output: str = "out", out_type: int = TensorProto.FLOAT) -> Path:
    """A torch-like export: Gemm(x, W^T), then ``head`` (Softmax, Sigmoid or None: logits).

    ``extra`` nodes may follow, reading ``head_out`` and writing ``output``.
    """
    weights = np.asarray(weights, dtype=np.float32)
    w = numpy_helper.from_array(weights.T.copy(), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["logits" if head else "head_out"])]
    if head == "Softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["head_out"], axis=-1))
    elif head == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["head_out"]))
    if extra:
        nodes += list(extra)
    else:
        nodes.append(helper.make_node("Identity", ["head_out"], [output]))
    shape = out_shape if out_shape is not None else [None, weights.shape[0]]
    info = helper.make_tensor_value_info(output, out_type, shape)
    return save(nodes, [info], path, [w], n_features=weights.shape[1])


def run(path: Path, x: np.ndarray, output: str) -> np.ndarray:
    """An output of a model, by onnxruntime directly (the oracle)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([output], {"x": x.astype(np.float32)})[0]
