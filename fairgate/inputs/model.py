"""Turn a batch of audit rows into a model's decisions.

Two predictors share one small protocol: :class:`OnnxPredictor` runs an ONNX model with
onnxruntime as users export it (one matrix input or per-column inputs), reading its output
as :mod:`fairgate.inputs.outputs` plans it; :class:`ColumnPredictor` reads precomputed
scores, 0/1 decisions or predicted classes from an audit-set column.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from fairgate.errors import DataError, ModelError
from fairgate.inputs.audit import require_values
from fairgate.inputs.files import require_regular_file
from fairgate.inputs.graph import OutputFacts, output_facts
from fairgate.inputs.outputs import (
    Output,
    Plan,
    ReadSettings,
    binary_scores,
    check_labels_agree,
    class_top1,
    describe,
    plan_output,
    planned,
    rows_of,
    shape_text,
)

Missing = Literal["refuse", "pass"]

_NUMPY_OF_ONNX = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_CAN_BE_NAN = ("tensor(float)", "tensor(double)", "tensor(float16)")


class Predictor(Protocol):
    """Decides each row of a batch: binary decisions, or a K-class top-1."""

    role: str
    columns: tuple[str, ...]  # audit-set columns it reads

    def column_types(self) -> dict[str, pa.DataType]: ...

    def predict(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Positive-class scores (0/1 for label outputs) and boolean decisions."""
        ...

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray: ...

    def predict_classes(self, batch: pa.RecordBatch, offset: int) -> Any:
        """Multi-class top-1: positions into ``class_columns`` when it is set, else labels."""
        ...

    @property
    def class_columns(self) -> tuple[str, ...] | None:
        """The class of each position ``predict_classes`` gives; None when it gives labels."""
        ...

    @property
    def zero_one(self) -> bool:
        """Whether its positive column rests on the 0/1 convention (labels 0 and 1 are column
        positions), which the engine confirms against the audit set's labels."""
        ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class OnnxPredictor:
    """One onnxruntime session for one model; reads its output as planned at load."""

    role: str
    path: Path
    features: tuple[str, ...] | None
    read: ReadSettings = field(default_factory=ReadSettings)
    missing: Missing = "refuse"
    # text, image or tensor inputs (policy model.inputs) instead of scalar feature columns
    inputs: Any = None  # TextSettings | TensorSettings | ImageSettings | None
    columns: tuple[str, ...] = field(init=False)
    _session: Any = field(init=False, repr=False)
    _plan: Plan = field(init=False)
    _inputs: list[tuple[str, Any, list[Any]]] = field(init=False)
    _matrix: bool = field(init=False)
    # the bytes onnxruntime loaded (None: it read the file, whose tensors are external)
    _model_bytes: bytes | None = field(init=False, repr=False)
    batch_coupled: tuple[str, ...] = field(init=False)  # ops that mix rows of a batch
    ort_threads: int | None = field(default=None, init=False, repr=False)  # where it is rebuilt
    # the audit set's folder, where image paths start (set by the engine; None in memory)
    data_root: Path | None = field(default=None, init=False)
    _encoder: Any = field(default=None, init=False, repr=False)  # text: a TextEncoder
    _kind_feeds: list[tuple[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._session, facts, self._model_bytes, self.batch_coupled, proto = _load_session(
            self.role, self.path)
        self._inputs = [(i.name, i.type, list(i.shape)) for i in self._session.get_inputs()]
        if self.inputs is None:
            self._plan_inputs()
        else:
            self._plan_kind_inputs(proto)
        del proto
        outputs = [Output(o.name, o.type, _declared_shape(o.shape), facts.get(o.name, OutputFacts(o.name)))
                   for o in self._session.get_outputs()]
        self._plan = plan_output(outputs, self.read, self._where)

    @property
    def _where(self) -> str:
        return f"{self.role} model {self.path.name}"

    # ------------------------------------------------------------------ engines

    def __getstate__(self) -> dict[str, Any]:
        """The model travels as bytes (once per job: Spark broadcasts large closures); the
        session is made again where it lands, once per worker process."""
        state = dict(self.__dict__)
        state["_session"] = None
        state["_encoder"] = None  # made again from the tokenizer's text where it lands
        if state["_model_bytes"] is None:
            state["_model_bytes"] = _embedded_bytes(self.role, self.path)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = None  # made by load(), inside the task: its error is the task's

    def load(self) -> None:
        """Make the session of a model that travelled as bytes: once per worker process (a
        ModelError when onnxruntime there cannot load it)."""
        if self._session is None:
            assert self._model_bytes is not None
            self._session = _cached_session(self._where, self._model_bytes, self.ort_threads)

    @property
    def plan(self) -> Plan:
        """How the output is read (a task's plan, for the engine to reconcile)."""
        return self._plan

    def adopt_plan(self, plan: Plan) -> None:
        self._plan = plan

    # ------------------------------------------------------------------ inputs

    def _plan_inputs(self) -> None:
        where = self._where
        for name, typ, _ in self._inputs:
            if typ not in _NUMPY_OF_ONNX:
                raise ModelError(f"{where}: input {name!r} has unsupported type {typ}")
        if len(self._inputs) == 1 and len(self._inputs[0][2]) == 2 and self.features:
            name, typ, shape = self._inputs[0]
            width = shape[1]
            if isinstance(width, int) and width != len(self.features):
                raise ModelError(
                    f"{where}: input {name!r} has shape {shape_text(shape)}, but its features "
                    f"(model.features) give [N, {len(self.features)}] ({', '.join(self.features)})"
                )
            self._matrix = True
            self.columns = tuple(self.features)
            return
        if len(self._inputs) == 1 and len(self._inputs[0][2]) == 2 and not self.features:
            name, _, shape = self._inputs[0]
            if shape[1] == 1:
                self._matrix = False
                self.columns = (name,)
                return
            raise ModelError(
                f"{where}: input {name!r} is a matrix of shape {shape_text(shape)}; list its "
                "columns in order under model.features (or model.features_file) in the policy"
            )
        self._matrix = False
        names = tuple(name for name, _, _ in self._inputs)
        for name, _, shape in self._inputs:
            if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)
                                  and isinstance(shape[1], int)):
                raise ModelError(
                    f"{where}: per-column input {name!r} has shape {shape_text(shape)}; expected "
                    "[N] or [N, 1] (or a single matrix input fed from model.features)"
                )
        if self.features and set(self.features) != set(names):
            raise ModelError(
                f"{where}: inputs are ({', '.join(names)}) but its features (model.features) list "
                f"({', '.join(self.features)}); per-column inputs are fed from the columns of "
                "the same names"
            )
        self.columns = names

    def _plan_kind_inputs(self, proto: Any) -> None:
        """Text, tensor or image inputs: which graph input each feeds, every input checked."""
        from fairgate.inputs.text import (
            TensorSettings,
            TextSettings,
            plan_text_inputs,
            tensor_type,
        )

        where, s = self._where, self.inputs
        self._matrix = False
        self.columns = (s.column,)
        if isinstance(s, TextSettings):
            self._encoder = _text_encoder(s, where)
            self._kind_feeds = plan_text_inputs(self._inputs, self._encoder, proto, where)
            return
        names = [n for n, _, _ in self._inputs]
        key = "tensor" if isinstance(s, TensorSettings) else "image"
        if s.input is not None and s.input not in names:
            raise ModelError(f"{where}: model.inputs.{key}.input {s.input!r} is not a graph "
                             f"input ({', '.join(names)})")
        if s.input is None and len(names) != 1:
            raise ModelError(f"{where}: the graph has {len(names)} inputs ({', '.join(names)}); "
                             f"name the one column {s.column!r} feeds in model.inputs.{key}.input")
        name = s.input or names[0]
        for other in names:
            if other != name:
                raise ModelError(f"{where}: graph input {other!r} is fed by nothing: "
                                 f"model.inputs.{key} feeds {name!r} only")
        _, typ, shape = next(i for i in self._inputs if i[0] == name)
        if key == "tensor":
            self._kind_feeds = [(name, tensor_type(name, typ, shape, where))]
        else:
            self._kind_feeds = [(name, _image_type(name, typ, shape, s, where))]

    def column_types(self) -> dict[str, pa.DataType]:
        if self.inputs is not None:
            return {}  # text, lists or images: checked per batch, never cast
        if self._matrix:
            return {c: pa.float64() for c in self.columns}
        out = {}
        for name, typ, _ in self._inputs:
            out[name] = pa.string() if typ == "tensor(string)" else pa.float64()
            if typ in ("tensor(int64)", "tensor(int32)"):
                out[name] = pa.int64()
        return out

    @property
    def matrix_signature(self) -> tuple[Any, ...] | None:
        """What the feature matrix depends on: two models with the same signature read the
        same matrix, which is then built once a batch. None for per-column inputs."""
        from fairgate.inputs.image import ImageSettings
        from fairgate.inputs.text import TextSettings

        if isinstance(self.inputs, TextSettings):  # one tokenizer, one encoding a batch
            s = self.inputs
            return ("text", s.column, s.sha256, s.max_length, s.padding)
        if isinstance(self.inputs, ImageSettings):  # one decode a batch, whatever the input name
            return ("image", replace(self.inputs, input=None), self.data_root)
        if not self._matrix:
            return None
        _, typ, _ = self._inputs[0]
        return (self.columns, typ, self.missing == "pass" and typ in _CAN_BE_NAN)

    def matrix(self, batch: pa.RecordBatch, offset: int) -> Any:
        """The [rows, features] input of a matrix model, in the input's element type (for a
        text model, the batch's encodings).

        Each column is written straight into one preallocated matrix (no float64 stack),
        and NaN is looked for once, over the whole matrix.
        """
        if self.inputs is not None:  # a text model's encodings, an image model's pixels
            from fairgate.inputs.image import ImageSettings, decode_images

            if isinstance(self.inputs, ImageSettings):
                return decode_images(batch.column(self.inputs.column), self.inputs,
                                     root=self.data_root, offset=offset)
            return self._encoded(batch, offset)
        _, typ, _ = self._inputs[0]
        nan_ok = self.missing == "pass" and typ in _CAN_BE_NAN
        cols = [_column(batch, c, self.role, offset, nan_ok, typ) for c in self.columns]
        out = np.empty((batch.num_rows, len(cols)), dtype=_NUMPY_OF_ONNX[typ])
        for j, col in enumerate(cols):
            out[:, j] = col.to_numpy(zero_copy_only=False)
        if not nan_ok and out.dtype.kind == "f" and np.isnan(out).any():
            for j, col in enumerate(cols):  # name the first column that holds one
                nan = np.isnan(out[:, j])
                if nan.any():
                    _missing(col, self.columns[j], offset, typ, nan)
        return out

    def _feeds(self, batch: pa.RecordBatch, offset: int,
               matrix: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if self._matrix:
            name = self._inputs[0][0]
            return {name: self.matrix(batch, offset) if matrix is None else matrix}
        if self.inputs is not None:
            return self._kind_inputs(batch, offset, matrix)
        feeds = {}
        for name, typ, shape in self._inputs:
            if typ == "tensor(string)":
                col = batch.column(name)
                if col.null_count:
                    _missing(col, name, offset, typ)
                arr = np.asarray(col.to_pylist(), dtype=object)
            else:
                nan_ok = self.missing == "pass" and typ in _CAN_BE_NAN
                arr = _numeric(batch, name, self.role, offset, nan_ok, typ).astype(
                    _NUMPY_OF_ONNX[typ])
            feeds[name] = arr.reshape(-1, 1) if len(shape) == 2 else arr
        return feeds

    def _encoded(self, batch: pa.RecordBatch, offset: int) -> Any:
        if self._encoder is None:
            self._encoder = _text_encoder(self.inputs, self._where)
        return self._encoder.encode(batch.column(self.inputs.column), offset)

    def _kind_inputs(self, batch: pa.RecordBatch, offset: int,
                     shared: Any = None) -> dict[str, np.ndarray]:
        """Text, tensor or image feeds; ``shared``: the batch's encodings or decoded images
        when another model with the same tokenizer or image settings made them."""
        from fairgate.inputs.text import TensorSettings, TextSettings, tensor_matrix

        s = self.inputs
        if isinstance(s, TextSettings):
            encoded = shared if shared is not None else self._encoded(batch, offset)
            return {name: encoded[name].astype(dtype, copy=False)
                    for name, dtype in self._kind_feeds}
        name, dtype = self._kind_feeds[0]
        if isinstance(s, TensorSettings):
            width = next(shape[1] for n, _, shape in self._inputs if n == name)
            return {name: tensor_matrix(batch.column(s.column), s.column, offset, width, dtype)}
        pixels = shared if shared is not None else self.matrix(batch, offset)
        return {name: pixels.astype(dtype, copy=False)}

    # ------------------------------------------------------------------ outputs

    def _run(self, batch: pa.RecordBatch, offset: int,
             matrix: np.ndarray | None = None) -> list[Any]:
        feeds = self._feeds(batch, offset, matrix)
        if self._session is None:
            self.load()
        try:
            return list(self._session.run(self._plan.outputs, feeds))
        except Exception as e:  # onnxruntime raises its own untyped errors
            fed = ", ".join(f"{k} {shape_text(list(v.shape))} {v.dtype}" for k, v in feeds.items())
            want = ", ".join(f"{n} {shape_text(s)} {t}" for n, t, s in self._inputs)
            raise ModelError(
                f"{self._where}: inference failed on rows from {offset}: fed {fed}; model "
                f"expects {want}: {_line(e)}"
            ) from None

    def _output_where(self) -> str:
        return f"{self._where}, output {self._plan.output!r}"

    def predict(self, batch: pa.RecordBatch, offset: int,
                matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        raws = self._run(batch, offset, matrix)
        self._plan = planned(self._plan, raws[0], batch.num_rows, offset)
        plan, rows, where = self._plan, batch.num_rows, self._output_where()
        if plan.check_label is not None:
            check_labels_agree(plan, rows_of(raws[0], rows, where, offset).astype(np.float64),
                               raws[1], where, offset)
        scores = binary_scores(plan, raws[0], rows, where, offset)
        if plan.kind == "labels":
            return scores, scores > 0.5
        return scores, scores >= self.read.threshold

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        return self.predict(batch, offset)[1]

    def predict_classes(self, batch: pa.RecordBatch, offset: int,
                        matrix: np.ndarray | None = None) -> np.ndarray:
        """Top-1 per row: a position into ``class_columns``, or the model's label values."""
        raws = self._run(batch, offset, matrix)
        plan, rows, where = self._plan, batch.num_rows, self._output_where()
        if plan.kind == "classes":
            top = class_top1(plan, raws[0], rows, where, offset)
            if plan.check_label is not None:
                check_labels_agree(plan, np.asarray(raws[0]), raws[1], where, offset)
            return top
        table = rows_of(raws[0], rows, where, offset).reshape(rows, -1)
        if table.shape[1] != 1:
            raise ModelError(f"{where}: gave shape {shape_text(list(table.shape))}; a label "
                             "output has one label per row")
        labels = table.reshape(-1)
        if plan.positions:
            assert plan.columns is not None
            bad = (labels < 0) | (labels >= len(plan.columns))
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise ModelError(f"{where}: row {offset + first} has column position "
                                 f"{labels[first].item()!r}, outside 0 .. {len(plan.columns) - 1} (the "
                                 f"{len(plan.columns)} classes of {plan.columns_from})")
        return labels

    @property
    def class_columns(self) -> tuple[str, ...] | None:
        plan = self._plan
        return plan.columns if plan.kind == "classes" or plan.positions else None

    @property
    def zero_one(self) -> bool:
        return self._plan.zero_one

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "onnx",
            "path": str(self.path),
            "inputs": [{"name": n, "type": t, "shape": shape_text(s)} for n, t, s in self._inputs],
            "output": describe(self._plan, self.read),
        }
        if self._matrix:
            out["features"] = list(self.columns)
        if self.inputs is not None:
            out.update(self._describe_inputs())
        if not self.read.multiclass:
            out["threshold"] = self.read.threshold
        if self.missing == "pass":
            out["missing"] = "pass"
        if self.batch_coupled:
            out["batch_coupled"] = list(self.batch_coupled)
        return out

    def _describe_inputs(self) -> dict[str, Any]:
        """report.json ``inputs.<model>.text|tensor|image``: how rows became the graph's inputs."""
        from fairgate.inputs.text import TensorSettings, TextSettings

        s = self.inputs
        fed = [name for name, _ in self._kind_feeds]
        if isinstance(s, TextSettings):
            if self._encoder is None:
                self._encoder = _text_encoder(s, self._where)
            return {"text": {**self._encoder.describe(), "feeds": fed}}
        if isinstance(s, TensorSettings):
            return {"tensor": {"column": s.column, "feeds": fed[0]}}
        return {"image": {"column": s.column, "size": list(s.size), "mean": list(s.mean),
                          "std": list(s.std), "layout": s.layout, "channels": s.channels,
                          "scale": s.scale, "resample": s.resample, "feeds": fed[0]}}


#: Decoded input one model may hold for a batch: image and text models read fewer rows a
#: batch than --batch-size asks when their pixels or token ids would pass it (a 224x224 RGB
#: image is 588 KiB of float32, so 65,536 of them would be 37 GiB).
INPUT_BATCH_BYTES = 256 << 20


def batch_rows_for(models: Iterable[Predictor | None], requested: int) -> int:
    """The rows a batch holds: ``requested``, or fewer so that no model's decoded image or
    text input passes :data:`INPUT_BATCH_BYTES`. Reports do not depend on it (tested)."""
    from fairgate.inputs.image import ImageSettings
    from fairgate.inputs.text import TextSettings

    rows = requested
    for m in models:
        s = m.inputs if isinstance(m, OnnxPredictor) else None
        if isinstance(s, ImageSettings):
            per_row = 8 * math.prod(s.shape)  # float32 pixels and a cast copy
        elif isinstance(s, TextSettings):
            per_row = 3 * 8 * s.max_length  # input_ids, attention_mask, token_type_ids
        else:
            continue
        rows = min(rows, max(1, INPUT_BATCH_BYTES // per_row))
    return rows


#: Tokenizers made in this process, by content and settings (a worker's later tasks reuse them).
_ENCODERS: dict[tuple[str, int, str], Any] = {}


def _text_encoder(settings: Any, where: str) -> Any:
    from fairgate.inputs.text import TextEncoder

    key = (settings.sha256, settings.max_length, settings.padding)
    encoder = _ENCODERS.get(key)
    if encoder is None or encoder.settings != settings:
        encoder = _ENCODERS[key] = TextEncoder(settings, where)
    return encoder


_IMAGE_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(float16)": np.float16}


def _image_type(name: str, typ: str, shape: list[Any], s: Any, where: str) -> Any:
    """The numpy type of an image input, its declared channels and size checked."""
    if typ not in _IMAGE_TYPES:
        raise ModelError(f"{where}: graph input {name!r} is {typ}; images are fed as floats "
                         "(float, double or float16)")
    if len(shape) != 4:
        raise ModelError(f"{where}: graph input {name!r} has shape {shape_text(shape)}; images "
                         f"are fed as [N, C, H, W] or [N, H, W, C] ({s.layout})")
    want = list(s.shape)
    for axis, (got, exp) in enumerate(zip(shape[1:], want, strict=True), 1):
        if isinstance(got, int) and got != exp:
            raise ModelError(f"{where}: graph input {name!r} has shape {shape_text(shape)}, but "
                             f"model.inputs.image gives {s.layout} {shape_text(['N', *want])} "
                             f"(axis {axis}: {got} vs {exp})")
    return _IMAGE_TYPES[typ]


def _declared_shape(shape: Any) -> tuple[Any, ...] | None:
    """onnxruntime gives [] both for a scalar and for an output without shape information;
    neither is a per-row prediction, so both count as unknown and are checked per batch."""
    return tuple(shape) if shape else None


def _column(batch: pa.RecordBatch, name: str, role: str, offset: int, nan_ok: bool,
            typ: str) -> pa.Array:
    """A numeric feature column, its type and nulls checked (NaN is the caller's)."""
    col = batch.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
            or pa.types.is_boolean(col.type)):
        raise DataError(f"feature column {name!r} has type {col.type}; the {role} model needs numbers")
    if col.null_count and not nan_ok:
        _missing(col, name, offset, typ)
    return col


def _numeric(batch: pa.RecordBatch, name: str, role: str, offset: int, nan_ok: bool,
             typ: str = "tensor(float)") -> np.ndarray:
    col = _column(batch, name, role, offset, nan_ok, typ)
    arr = col.to_numpy(zero_copy_only=False)  # nulls become NaN
    if arr.dtype.kind == "f" and not nan_ok:
        nan = np.isnan(arr)
        if nan.any():
            _missing(col, name, offset, typ, nan)
    return arr


def _missing(col: pa.Array, name: str, offset: int, typ: str,
             missing: np.ndarray | None = None) -> None:
    if missing is None:
        missing = col.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
    hint = ("set model.missing: pass if the model imputes them" if typ in _CAN_BE_NAN else
            f"the model's input is {typ}, which cannot carry a missing value")
    raise DataError(
        f"feature column {name!r} has {int(missing.sum())} missing or NaN value(s) in rows from "
        f"{offset}, first at row {offset + int(np.flatnonzero(missing)[0])}; {hint}"
    )


# ----------------------------------------------------------------------------- loading


def _load_session(role: str, path: Path) -> tuple[Any, dict[str, OutputFacts], bytes | None,
                                                 tuple[str, ...], Any]:
    """An onnxruntime session for an untrusted model file, what its graph proves, the bytes
    the session was made from (None when it read the file: external tensors), the ops that
    make a row's output depend on the other rows of its batch, and the parsed proto (for the
    input checks of text models; dropped once they are made).

    The proto is parsed first so that a file that is not ONNX, or an external-data path that
    leaves the model's folder, is refused before onnxruntime opens anything. No custom-op
    libraries are registered. sklearn-onnx's ZipMap is bypassed: its input tensor is read
    directly, which gives the same probabilities without a Python dict per row.
    """
    from fairgate.inputs.onnx_proto import parse_model

    where = f"{role} model {path}"
    require_regular_file(path, ModelError, where=where, expected="an .onnx file")
    try:
        proto = parse_model(path.read_bytes())
    except Exception as e:
        raise ModelError(f"{where}: not an ONNX model ({type(e).__name__}: {_line(e)})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{where}: not an ONNX model (no graph)")
    has_external = _check_external_data(proto, path, where)
    facts = output_facts(proto)
    coupled = batch_coupled_ops(proto)
    model_bytes = None if has_external else _without_zipmap(proto, facts)
    session = _new_session(where, model_bytes if model_bytes is not None else str(path))
    return session, facts, model_bytes, coupled, proto


#: Ops whose output for a row depends on the other rows of its batch: dynamic quantization
#: takes one scale from the whole input tensor (onnxruntime.quantization.quantize_dynamic).
BATCH_COUPLED_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul",
                               "DynamicQuantizeLSTM"})


def batch_coupled_ops(proto: Any) -> tuple[str, ...]:
    """The batch-coupling ops of a model's graph (and its functions), sorted."""
    found = {n.op_type for n in proto.graph.node if n.op_type in BATCH_COUPLED_OPS}
    for fn in proto.functions:
        found |= {n.op_type for n in fn.node if n.op_type in BATCH_COUPLED_OPS}
    return tuple(sorted(found))


def _new_session(where: str, model: bytes | str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # per-shape memory plans held ~135 MB more at 65,536-row batches, and idle intra-op
    # threads spinning steal the core the other model runs on (benchmarks/bench_gate.py)
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = threads or int(os.environ.get("FAIRGATE_ORT_THREADS") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"{where}: onnxruntime cannot load it: {_line(e)}") from None


#: Sessions of models that arrived as bytes (an executor's worker process), by content.
_SESSIONS: dict[tuple[str, int | None], Any] = {}


def _cached_session(where: str, model: bytes, threads: int | None = None) -> Any:
    """One session per model and worker process: later tasks reuse it."""
    import hashlib

    key = (hashlib.sha256(model).hexdigest(), threads)
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = _new_session(where, model, threads)
    return session


def _embedded_bytes(role: str, path: Path) -> bytes:
    """A model with external tensors as one serialized proto (their folder stays here)."""
    import onnx

    where = f"{role} model {path}"
    try:
        proto = onnx.load(str(path), load_external_data=True)
        facts = output_facts(proto)
        return _without_zipmap(proto, facts)
    except Exception as e:  # e.g. more than protobuf's 2 GB in one message
        raise ModelError(f"{where}: cannot ship it to the executors as one message "
                         f"({type(e).__name__}: {_line(e)})") from None


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_external_data(proto: Any, path: Path, where: str) -> bool:
    from fairgate.inputs.onnx_proto import all_tensors

    root = path.resolve().parent
    found = False
    for tensor in all_tensors(proto):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        found = True
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root):
            raise ModelError(
                f"{where}: tensor {tensor.name!r} points to external data {location!r} outside "
                "the model's folder; refusing to read it"
            )
        require_regular_file(target, ModelError, where=f"{where}: external data {location!r}")
    return found


def _without_zipmap(proto: Any, facts: dict[str, OutputFacts]) -> bytes:
    """Serialized model whose ZipMap outputs are replaced by their probability tensors; the
    facts of a ZipMap output (its keys) move to the tensor that replaces it."""
    from fairgate.inputs.onnx_proto import FLOAT, value_info

    for node in [n for n in proto.graph.node if n.op_type == "ZipMap"]:
        zipped = facts.get(node.output[0])
        if zipped is None or zipped.classes is None:
            continue
        for o in [o for o in proto.graph.output if o.name == node.output[0]]:
            proto.graph.output.remove(o)
        tensor = node.input[0]
        proto.graph.output.append(value_info(tensor, FLOAT, [None, len(zipped.classes)]))
        proto.graph.node.remove(node)
        del facts[node.output[0]]
        facts[tensor] = OutputFacts(tensor, zipped.classes, zipped.classes_from, "probabilities",
                                    "ZipMap")
    return proto.SerializeToString()


@dataclass
class ColumnPredictor:
    """Precomputed positive-class scores, 0/1 decisions or top-1 classes from a column."""

    role: str
    column: str
    threshold: float = 0.5
    multiclass: bool = False  # the column holds predicted class labels
    classes: tuple[str, ...] | None = None  # multi-class: the declared classes, in order
    classes_from: str = ""
    columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.columns = (self.column,)

    def column_types(self) -> dict[str, pa.DataType]:
        return {} if self.multiclass else {self.column: pa.float64()}

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        return self.predict(batch, offset)[1]

    def predict_classes(self, batch: pa.RecordBatch, offset: int) -> Any:
        """Precomputed top-1 classes, as they are in the column.

        Integers in a column whose declared classes have names no integer can equal are
        positions into that declared order (a torch argmax logged as the prediction); they are
        returned as those names.
        """
        col = batch.column(self.column)
        require_values(col, f"{self.role} predictions column {self.column!r}", offset)
        if self.positions(col.type):
            assert self.classes is not None
            arr = col.to_numpy(zero_copy_only=False)
            bad = (arr < 0) | (arr >= len(self.classes))
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise DataError(f"{self.role} predictions column {self.column!r}: row "
                                f"{offset + first} has class position {arr[first].item()!r}, outside "
                                f"0 .. {len(self.classes) - 1} (the classes of "
                                f"{self.classes_from})")
            return np.asarray(self.classes, dtype=object)[arr]
        return col

    def positions(self, typ: pa.DataType) -> bool:
        return (pa.types.is_integer(typ) and self.classes is not None
                and not any(c.lstrip("-").isdigit() for c in self.classes))

    @property
    def class_columns(self) -> tuple[str, ...] | None:
        return None  # decided per batch from the column's type: see ``positions``

    @property
    def zero_one(self) -> bool:
        return False

    def predict(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        col = batch.column(self.column)
        require_values(col, f"{self.role} scores column {self.column!r}", offset)
        arr = col.to_numpy(zero_copy_only=False)
        bad = ~((arr >= 0) & (arr <= 1))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{self.role} scores column {self.column!r}: row {offset + first} has "
                f"{float(arr[first])!r}; scores must be probabilities in [0, 1] or 0/1 decisions"
            )
        return arr, arr >= self.threshold

    def describe(self) -> dict[str, Any]:
        if self.multiclass:
            return {"kind": "column", "column": self.column,
                    "output": {"interpretation": "top-1 class", "how": "predicted classes"}}
        return {"kind": "column", "column": self.column, "threshold": self.threshold,
                "output": {"interpretation": "scores or 0/1 decisions",
                           "how": f"positive-class scores or 0/1 decisions, positive when >= "
                                  f"{self.threshold:g}"}}
