"""Turn a batch of audit rows into a model's positive-class decisions.

Two predictors share one small protocol: :class:`OnnxPredictor` runs an ONNX model with
onnxruntime as users export it (one matrix input or per-column inputs; probabilities,
scores, logits, labels or sklearn-onnx's ZipMap), and :class:`ColumnPredictor` reads
precomputed scores or 0/1 decisions from an audit-set column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from fairgate.errors import DataError, ModelError
from fairgate.inputs.audit import require_values
from fairgate.inputs.files import require_regular_file

OutputMode = Literal["auto", "probabilities", "logits", "labels"]

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
_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")
_PROB_TOL = 1e-4


class Predictor(Protocol):
    """Decides the positive class for each row of a batch."""

    role: str
    columns: tuple[str, ...]

    def column_types(self) -> dict[str, pa.DataType]: ...

    def predict(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Positive-class scores (0/1 for label outputs) and boolean decisions."""
        ...

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray: ...

    def predict_classes(self, batch: pa.RecordBatch, offset: int) -> Any:
        """Multi-class top-1: output column indices when ``class_width`` is set, else labels."""
        ...

    @property
    def class_width(self) -> int | None:
        """K for [N, K] outputs; None for labels (a label output or a predictions column)."""
        ...

    @property
    def class_keys(self) -> list[str] | None:
        """The class label of each output column, when the model names them (ZipMap)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def _shape(shape: list[Any]) -> str:
    return "[" + ", ".join("N" if not isinstance(d, int) else str(d) for d in shape) + "]"


@dataclass
class _OutputPlan:
    """Which output to read and how to turn it into a positive-class score."""

    name: str
    kind: Literal["proba2", "score", "zipmap", "labels", "classes"]
    mode: OutputMode  # probabilities | logits | labels once resolved; auto until first batch
    positive: Any = None  # class key (zipmap) or label value
    column: int = 1  # probability column for proba2
    width: int | None = None  # classes: K columns (None while dynamic)
    keys: list[str] | None = None  # classes: class label of each column, when the model says


@dataclass
class OnnxPredictor:
    """One onnxruntime session; scores batches and thresholds them."""

    role: str
    path: Path
    features: tuple[str, ...] | None
    threshold: float
    output: OutputMode
    output_name: str | None
    positive_label: object
    multiclass: bool = False  # K classes: predict_classes gives top-1, no threshold
    columns: tuple[str, ...] = field(init=False)
    _session: Any = field(init=False, repr=False)
    _plan: _OutputPlan = field(init=False)
    _inputs: list[tuple[str, Any, list[Any]]] = field(init=False)
    _matrix: bool = field(init=False)

    def __post_init__(self) -> None:
        self._session = _load_session(self.role, self.path)
        self._inputs = [(i.name, i.type, list(i.shape)) for i in self._session.get_inputs()]
        self._plan_inputs()
        self._plan = self._plan_output()

    # ------------------------------------------------------------------ inputs

    def _plan_inputs(self) -> None:
        where = f"{self.role} model {self.path.name}"
        for name, typ, _ in self._inputs:
            if typ not in _NUMPY_OF_ONNX:
                raise ModelError(f"{where}: input {name!r} has unsupported type {typ}")
        if len(self._inputs) == 1 and len(self._inputs[0][2]) == 2 and self.features:
            name, typ, shape = self._inputs[0]
            width = shape[1]
            if isinstance(width, int) and width != len(self.features):
                raise ModelError(
                    f"{where}: input {name!r} has shape {_shape(shape)}, but model.features "
                    f"gives [N, {len(self.features)}] ({', '.join(self.features)})"
                )
            self._matrix = True
            self.columns = tuple(self.features)
            return
        if len(self._inputs) == 1 and len(self._inputs[0][2]) == 2 and not self.features:
            name, _, shape = self._inputs[0]
            if name not in ("",) and shape[1] == 1:
                self._matrix = False
                self.columns = (name,)
                return
            raise ModelError(
                f"{where}: input {name!r} is a matrix of shape {_shape(shape)}; list its "
                "columns in order under model.features in the policy"
            )
        self._matrix = False
        names = tuple(name for name, _, _ in self._inputs)
        for name, _, shape in self._inputs:
            if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)
                                  and isinstance(shape[1], int)):
                raise ModelError(
                    f"{where}: per-column input {name!r} has shape {_shape(shape)}; expected "
                    "[N] or [N, 1] (or a single matrix input fed from model.features)"
                )
        if self.features and set(self.features) != set(names):
            raise ModelError(
                f"{where}: inputs are ({', '.join(names)}) but model.features lists "
                f"({', '.join(self.features)}); per-column inputs are fed from the columns of "
                "the same names"
            )
        self.columns = names

    def column_types(self) -> dict[str, pa.DataType]:
        if self._matrix:
            return {c: pa.float64() for c in self.columns}
        out = {}
        for name, typ, _ in self._inputs:
            out[name] = pa.string() if typ == "tensor(string)" else pa.float64()
            if typ in ("tensor(int64)", "tensor(int32)"):
                out[name] = pa.int64()
        return out

    def _feeds(self, batch: pa.RecordBatch, offset: int) -> dict[str, np.ndarray]:
        if self._matrix:
            name, typ, _ = self._inputs[0]
            cols = [_numeric(batch, c, self.role, offset) for c in self.columns]
            return {name: np.stack(cols, axis=1).astype(_NUMPY_OF_ONNX[typ], copy=False)}
        feeds = {}
        for name, typ, shape in self._inputs:
            if typ == "tensor(string)":
                col = batch.column(name)
                if col.null_count:
                    _missing(col, name, offset)
                arr = np.asarray(col.to_pylist(), dtype=object)
            else:
                arr = _numeric(batch, name, self.role, offset).astype(_NUMPY_OF_ONNX[typ])
            feeds[name] = arr.reshape(-1, 1) if len(shape) == 2 else arr
        return feeds

    # ------------------------------------------------------------------ outputs

    def _plan_output(self) -> _OutputPlan:
        where = f"{self.role} model {self.path.name}"
        outs = [(o.name, o.type, list(o.shape)) for o in self._session.get_outputs()]
        if self.output_name is not None:
            chosen = [o for o in outs if o[0] == self.output_name]
            if not chosen:
                raise ModelError(
                    f"{where}: no output named {self.output_name!r} "
                    f"(outputs: {', '.join(o[0] for o in outs)})"
                )
            outs = chosen
        zipmaps = [o for o in outs if o[1].startswith("seq(map(")]
        floats = [o for o in outs if o[1] in _FLOAT_TYPES]
        labels = [o for o in outs if o[1] not in _FLOAT_TYPES and not o[1].startswith("seq(")]
        options = ", ".join(f"{n} {t} {_shape(s)}" for n, t, s in outs)
        want = self.output
        if self.multiclass:
            return self._class_plan(zipmaps, floats, labels, options, where)
        if want == "labels":
            if not labels:
                raise ModelError(f"{where}: output: labels, but no label output ({options})")
            if len(labels) > 1:
                raise ModelError(
                    f"{where}: several label outputs ({options}); set model.output_name"
                )
            return self._label_plan(labels[0])
        if zipmaps and not floats:
            if len(zipmaps) > 1:
                raise ModelError(f"{where}: several ZipMap outputs ({options}); set model.output_name")
            if want == "logits":
                raise ModelError(f"{where}: output: logits, but its scores are ZipMap probabilities")
            return _OutputPlan(zipmaps[0][0], "zipmap", "probabilities")
        if len(floats) > 1:
            named = [o for o in floats if "prob" in o[0].lower()]
            if len(named) != 1:
                raise ModelError(
                    f"{where}: cannot tell which output holds the scores ({options}); set "
                    "model.output_name to one of them and model.output to probabilities, "
                    "logits or labels"
                )
            floats = named
        if floats:
            name, _, shape = floats[0]
            width = shape[-1] if len(shape) == 2 else 1
            if len(shape) > 2 or (isinstance(width, int) and width > 2):
                raise ModelError(
                    f"{where}: output {name!r} has shape {_shape(shape)}: {width} classes; "
                    "fairgate gates binary decisions ([N, 2], [N, 1] or [N] scores)"
                )
            kind: Literal["proba2", "score"] = "proba2" if width == 2 else "score"
            meta = self._session.get_modelmeta().custom_metadata_map
            classes = meta.get(f"fairgate.zipmap:{name}")
            if classes is not None:  # sklearn-onnx ZipMap, bypassed at load
                keys = classes.split("\x1f")
                key = _positive_key(keys, self.positive_label, where)
                return _OutputPlan(name, "proba2", "probabilities", positive=key,
                                   column=keys.index(key))  # ZipMap read as a tensor
            return _OutputPlan(name, kind, want)
        if labels and want == "auto":
            if len(labels) > 1:
                raise ModelError(f"{where}: several label outputs ({options}); set model.output_name")
            return self._label_plan(labels[0])
        raise ModelError(f"{where}: no output gives {want} ({options})")

    def _class_plan(self, zipmaps: list[Any], floats: list[Any], labels: list[Any], options: str,
                    where: str) -> _OutputPlan:
        """Top-1 of a K-class model: argmax of probabilities or logits, or its label output.

        Probabilities are preferred when a model has both (sklearn-onnx), as for binary
        models; argmax is the same for probabilities and logits, so no softmax is needed.
        """
        if self.output != "labels":
            if len(floats) > 1:
                named = [o for o in floats if "prob" in o[0].lower()]
                if len(named) != 1:
                    raise ModelError(f"{where}: cannot tell which output holds the class scores "
                                     f"({options}); set model.output_name")
                floats = named
            if floats:
                name, _, shape = floats[0]
                width = shape[-1] if len(shape) == 2 else None
                if len(shape) != 2 or (isinstance(width, int) and width < 2):
                    raise ModelError(
                        f"{where}: output {name!r} has shape {_shape(shape)}; a multi-class model "
                        "gives [N, K] probabilities or logits, or a label per row")
                meta = self._session.get_modelmeta().custom_metadata_map
                zipped = meta.get(f"fairgate.zipmap:{name}")
                keys = zipped.split("\x1f") if zipped is not None else None
                return _OutputPlan(name, "classes", "probabilities" if keys else self.output,
                                   width=width if isinstance(width, int) else None, keys=keys)
            if zipmaps:
                raise ModelError(f"{where}: ZipMap output that cannot be read as a tensor "
                                 f"({options}); export with zipmap=False")
        if not labels:
            raise ModelError(f"{where}: no class scores or labels among the outputs ({options})")
        if len(labels) > 1:
            raise ModelError(f"{where}: several label outputs ({options}); set model.output_name")
        return _OutputPlan(labels[0][0], "labels", "labels")

    def predict_classes(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        """Top-1 per row: a column index for [N, K] outputs, else the model's label values."""
        raw = self._run(batch, offset)
        where = f"{self.role} model {self.path.name}, output {self._plan.name!r}"
        arr = np.asarray(raw)
        if self._plan.kind == "labels":
            return arr.reshape(-1)
        if arr.ndim != 2 or (self._plan.width is not None and arr.shape[1] != self._plan.width):
            raise ModelError(f"{where}: gave shape {_shape(list(arr.shape))}, expected [N, "
                             f"{self._plan.width or 'K'}]")
        self._plan.width = arr.shape[1]
        top = np.argmax(arr, axis=1)  # points at a row's first NaN, if it has one: check only
        if np.isnan(np.take_along_axis(arr, top[:, None], axis=1)).any():  # those, not [N, K]
            raise ModelError(f"{where}: produced NaN scores in rows from {offset}")
        return top

    @property
    def class_keys(self) -> list[str] | None:
        """The class label of each output column, when the model carries them (ZipMap)."""
        return self._plan.keys

    @property
    def class_width(self) -> int | None:
        """K for [N, K] outputs (None for label outputs or a dynamic width)."""
        return self._plan.width if self._plan.kind == "classes" else None

    def _label_plan(self, out: tuple[str, str, list[Any]]) -> _OutputPlan:
        name, typ, _ = out
        positive: Any = self.positive_label
        if typ != "tensor(string)":
            if isinstance(positive, bool) or not isinstance(positive, int | float):
                positive = 1
        else:
            positive = str(positive)
        return _OutputPlan(name, "labels", "labels", positive=positive)

    def _resolve_auto(self, raw: np.ndarray) -> None:
        """Decide probabilities vs logits from the first batch, and say so."""
        plan = self._plan
        if plan.kind == "proba2":
            in_unit = bool(np.all((raw >= -1e-6) & (raw <= 1 + 1e-6)))
            sums = bool(np.all(np.abs(raw.sum(axis=1) - 1.0) < _PROB_TOL))
            plan.mode = "probabilities" if in_unit and sums else "logits"
        else:
            plan.mode = "probabilities" if bool(np.all((raw >= 0) & (raw <= 1))) else "logits"

    def _scores(self, raw: Any, offset: int) -> np.ndarray:
        plan = self._plan
        where = f"{self.role} model {self.path.name}, output {plan.name!r}"
        if plan.kind == "zipmap":
            if plan.positive is None:
                plan.positive = _positive_key(list(raw[0].keys()) if raw else [],
                                              self.positive_label, where)
            return np.fromiter((row[plan.positive] for row in raw), dtype=np.float64,
                               count=len(raw))
        arr = np.asarray(raw)
        if plan.kind == "labels":
            return (arr.reshape(-1) == plan.positive).astype(np.float64)
        arr = arr.astype(np.float64)
        if plan.kind == "score":
            arr = arr.reshape(-1)
        if np.isnan(arr).any():
            raise ModelError(f"{where}: produced NaN scores in rows from {offset}")
        if plan.mode == "auto":
            self._resolve_auto(arr)
        if plan.kind == "proba2":
            if plan.mode == "logits":
                return 1.0 / (1.0 + np.exp(arr[:, 0] - arr[:, 1]))
            _check_unit(arr, where, offset, rows_sum=True)
            return arr[:, plan.column]
        if plan.mode == "logits":
            return 1.0 / (1.0 + np.exp(-arr))
        _check_unit(arr, where, offset, rows_sum=False)
        return arr

    def _run(self, batch: pa.RecordBatch, offset: int) -> Any:
        feeds = self._feeds(batch, offset)
        try:
            return self._session.run([self._plan.name], feeds)[0]
        except Exception as e:  # onnxruntime raises its own untyped errors
            fed = ", ".join(f"{k} {_shape(list(v.shape))} {v.dtype}" for k, v in feeds.items())
            want = ", ".join(f"{n} {_shape(s)} {t}" for n, t, s in self._inputs)
            raise ModelError(
                f"{self.role} model {self.path.name}: inference failed on rows from {offset}: "
                f"fed {fed}; model expects {want}: {str(e).strip().splitlines()[0]}"
            ) from None

    def predict(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        raw = self._run(batch, offset)
        scores = self._scores(raw, offset)
        if self._plan.kind == "labels":
            return scores, scores > 0.5
        return scores, scores >= self.threshold

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        return self.predict(batch, offset)[1]

    def describe(self) -> dict[str, Any]:
        plan = self._plan
        how = {
            "proba2": f"probabilities [N, 2], column {plan.column}"
            + (f" (class {plan.positive!r})" if plan.positive is not None else ""),
            "score": "one score per row",
            "zipmap": f"ZipMap probabilities, class {plan.positive!r}",
            "labels": f"labels, positive = {plan.positive!r}",
            "classes": f"top-1 (argmax) of [N, {plan.width or 'K'}] class scores",
        }[plan.kind]
        if self.multiclass and plan.kind == "labels":
            how = "top-1 from the model's label output"
        mode: str = plan.mode if plan.kind in ("proba2", "score") else plan.kind
        if plan.kind == "classes":
            mode = "top-1 class"
        if plan.kind in ("proba2", "score") and plan.mode == "logits":
            how += " (logits: softmax applied)" if plan.kind == "proba2" else " (logit: sigmoid applied)"
        return {
            "kind": "onnx",
            "path": str(self.path),
            "inputs": [{"name": n, "type": t, "shape": _shape(s)} for n, t, s in self._inputs],
            "output": {"name": plan.name, "interpretation": mode, "how": how,
                       "chosen": "auto" if self.output == "auto" else "policy"},
            **({} if self.multiclass else {"threshold": self.threshold}),
        }


def _check_unit(arr: np.ndarray, where: str, offset: int, rows_sum: bool) -> None:
    bad = (arr < -1e-6) | (arr > 1 + 1e-6)
    if rows_sum:
        bad = bad.any(axis=1) | (np.abs(arr.sum(axis=1) - 1.0) >= _PROB_TOL)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))[0])
        raise ModelError(
            f"{where}: read as probabilities, but row {offset + first} is not a probability "
            f"{'vector' if rows_sum else 'in [0, 1]'}; set model.output: logits"
        )


def _positive_key(keys: list[Any], positive_label: object, where: str) -> Any:
    for k in keys:
        if str(k) == str(positive_label):
            return k
    if len(keys) == 2:
        return sorted(keys)[1]
    raise ModelError(
        f"{where}: {len(keys)} classes ({', '.join(map(str, keys))}); fairgate gates binary "
        "decisions"
    )


def _numeric(batch: pa.RecordBatch, name: str, role: str, offset: int) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        _missing(col, name, offset)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
            or pa.types.is_boolean(col.type)):
        raise DataError(f"feature column {name!r} has type {col.type}; the {role} model needs numbers")
    arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            raise DataError(
                f"feature column {name!r} has {int(nan.sum())} missing or NaN value(s) in rows from "
                f"{offset}, first at row {offset + int(np.flatnonzero(nan)[0])}"
            )
    return arr


def _missing(col: pa.Array, name: str, offset: int) -> None:
    first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
    raise DataError(
        f"feature column {name!r} has {col.null_count} missing or NaN value(s) in rows from {offset}, "
        f"first at row {offset + first}"
    )


# ----------------------------------------------------------------------------- loading


def _load_session(role: str, path: Path) -> Any:
    """An onnxruntime session for an untrusted model file.

    The proto is parsed first so that a file that is not ONNX, or an external-data path that
    leaves the model's folder, is refused before onnxruntime opens anything. No custom-op
    libraries are registered. sklearn-onnx's ZipMap is bypassed: its input tensor is read
    directly, which gives the same probabilities without a Python dict per row.
    """
    import onnx
    import onnxruntime as ort

    where = f"{role} model {path}"
    require_regular_file(path, ModelError, where=where, expected="an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{where}: not an ONNX model ({type(e).__name__}: {_line(e)})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{where}: not an ONNX model (no graph)")
    has_external = _check_external_data(proto, path, where)
    model_bytes = None if has_external else _without_zipmap(proto)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # per-shape memory plans held ~135 MB more at 65,536-row batches, and idle intra-op
    # threads spinning steal the core the other model runs on (benchmarks/bench_gate.py)
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = os.environ.get("FAIRGATE_ORT_THREADS")
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(
            model_bytes if model_bytes is not None else str(path), opts,
            providers=["CPUExecutionProvider"],
        )
    except Exception as e:
        raise ModelError(f"{where}: onnxruntime cannot load it: {_line(e)}") from None


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_external_data(proto: Any, path: Path, where: str) -> bool:
    from onnx.external_data_helper import _get_all_tensors

    root = path.resolve().parent
    found = False
    for tensor in _get_all_tensors(proto):
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


def _without_zipmap(proto: Any) -> bytes | None:
    """Serialized model whose ZipMap outputs are replaced by their probability tensors."""
    import onnx

    zipmaps = [n for n in proto.graph.node if n.op_type == "ZipMap"]
    if not zipmaps:
        return proto.SerializeToString()
    for node in zipmaps:
        keys = [a for a in node.attribute if a.name in ("classlabels_int64s", "classlabels_strings")]
        if not keys:
            return proto.SerializeToString()
        outputs = [o for o in proto.graph.output if o.name == node.output[0]]
        for o in outputs:
            proto.graph.output.remove(o)
        labels = list(onnx.helper.get_attribute_value(keys[0]))
        labels = [x.decode() if isinstance(x, bytes) else x for x in labels]
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT,
                                               [None, len(labels)])
        )
        proto.graph.node.remove(node)
        proto.metadata_props.append(
            onnx.StringStringEntryProto(key=f"fairgate.zipmap:{node.input[0]}",
                                        value="\x1f".join(map(str, labels)))
        )
    return proto.SerializeToString()


@dataclass
class ColumnPredictor:
    """Precomputed positive-class scores or 0/1 decisions from an audit-set column."""

    role: str
    column: str
    threshold: float
    multiclass: bool = False  # the column holds predicted class labels
    columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.columns = (self.column,)

    def column_types(self) -> dict[str, pa.DataType]:
        return {} if self.multiclass else {self.column: pa.float64()}

    def decide(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        return self.predict(batch, offset)[1]

    def predict_classes(self, batch: pa.RecordBatch, offset: int) -> pa.Array:
        """Precomputed top-1 class labels, as they are in the column."""
        col = batch.column(self.column)
        require_values(col, f"{self.role} predictions column {self.column!r}", offset)
        return col

    @property
    def class_width(self) -> int | None:
        return None  # class labels, not output columns

    @property
    def class_keys(self) -> list[str] | None:
        return None

    def predict(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        col = batch.column(self.column)
        if col.null_count:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{self.role} scores column {self.column!r} has {col.null_count} missing "
                f"value(s), first at row {offset + first}"
            )
        arr = col.to_numpy(zero_copy_only=False)
        bad = np.isnan(arr) | (arr < 0) | (arr > 1)
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
                    "output": {"interpretation": "top-1 class", "how": "column values"}}
        return {"kind": "column", "column": self.column, "threshold": self.threshold,
                "output": {"interpretation": "scores or 0/1 decisions", "how": "column values"}}
