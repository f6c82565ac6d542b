"""ONNX's protobuf messages without importing the ``onnx`` package.

fairgate reads a model's graph (what it proves about its outputs, external-data paths,
ZipMap) before onnxruntime runs it. ``import onnx`` costs 0.7-0.9 s of CPU (most of it
``ml_dtypes``, which fairgate never uses): a third of the time of a 1M-row gate. The
message classes alone come from onnx's generated ``onnx_ml_pb2.py``, loaded here by path
(it needs only protobuf); they are the classes ``onnx`` itself uses, so a later
``import onnx`` works on the same messages. If that file cannot be loaded this way, the
``onnx`` package is imported instead.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

FLOAT = 1  # TensorProto.FLOAT


@cache
def pb2() -> Any:
    """The module of ONNX's message classes (ModelProto, ValueInfoProto, ...)."""
    if "onnx" in sys.modules:
        import onnx

        return onnx.onnx_ml_pb2
    try:
        spec = importlib.util.find_spec("onnx")
        assert spec is not None and spec.submodule_search_locations
        path = f"{next(iter(spec.submodule_search_locations))}/onnx_ml_pb2.py"
        module_spec = importlib.util.spec_from_file_location("fairgate._onnx_ml_pb2", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        module.ModelProto  # noqa: B018 - the file is what fairgate expects
        return module
    except Exception:
        import onnx

        return onnx.onnx_ml_pb2


def parse_model(data: bytes) -> Any:
    """A ModelProto from its bytes (protobuf's DecodeError if they are not one)."""
    proto = pb2().ModelProto()
    proto.ParseFromString(data)
    return proto


def value_info(name: str, elem_type: int, shape: list[int | None]) -> Any:
    """``onnx.helper.make_tensor_value_info``: a tensor output of a type and shape."""
    info = pb2().ValueInfoProto()
    info.name = name
    tensor = info.type.tensor_type
    tensor.elem_type = elem_type
    tensor.shape.SetInParent()
    for d in shape:
        dim = tensor.shape.dim.add()
        if d is not None:
            dim.dim_value = d
    return info


def attribute_value(a: Any) -> Any:
    """``onnx.helper.get_attribute_value`` for the attribute types a graph's facts use."""
    kinds = pb2().AttributeProto
    single = {kinds.FLOAT: "f", kinds.INT: "i", kinds.STRING: "s", kinds.TENSOR: "t",
              kinds.GRAPH: "g", kinds.SPARSE_TENSOR: "sparse_tensor", kinds.TYPE_PROTO: "tp"}
    many = {kinds.FLOATS: "floats", kinds.INTS: "ints", kinds.STRINGS: "strings",
            kinds.TENSORS: "tensors", kinds.GRAPHS: "graphs",
            kinds.SPARSE_TENSORS: "sparse_tensors", kinds.TYPE_PROTOS: "type_protos"}
    if a.type in single:
        return getattr(a, single[a.type])
    if a.type in many:
        return list(getattr(a, many[a.type]))
    return None


def all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor of a model: initializers and attribute tensors, in subgraphs and
    functions too (``onnx.external_data_helper._get_all_tensors``)."""
    yield from _initializers(model.graph)
    yield from _attribute_tensors(model.graph)
    for function in model.functions:
        yield from _attribute_tensors(function)


def _subgraphs(node: Any) -> Iterator[Any]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def _initializers(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for node in graph.node:
        for g in _subgraphs(node):
            yield from _initializers(g)


def _attribute_tensors(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
        for g in _subgraphs(node):
            yield from _attribute_tensors(g)
