"""Text and tensor model inputs: a text column through a Hugging Face tokenizer, a list
column as one [N, D] tensor (policy ``model.inputs``; images are fairgate/inputs/image.py).

Text follows what exported graphs need (checked against torch exports, see README):

- the tokenizer is the ``tokenizer.json`` the policy names, hashed into report.json; its own
  truncation truncates each row to ``max_length`` (it keeps the closing special token, which
  slicing the ids afterwards would cut);
- padding uses the tokenizer's own pad token and id: its ``padding`` section when it has
  one, else its one added special token spelled ``[PAD]`` or ``<pad>`` (the two conventions,
  with ids 0 and 1). A tokenizer with neither, or with both, is refused when it is loaded:
  the pad id is never guessed, and the attention mask comes from the tokenizer, not from
  ``ids != 0``;
- ``input_ids``, ``attention_mask`` and ``token_type_ids`` are fed by name, only those the
  graph declares, cast to the integer type it declares; a graph input nothing produces, a
  float id input, or a vocabulary larger than the graph's embedding table is refused
  before any row is read, naming the input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from fairgate.errors import DataError, ModelError, UsageError
from fairgate.inputs.data_source import first_line
from fairgate.inputs.outputs import shape_text

TEXT_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Added special tokens taken as the pad token when the tokenizer declares no padding.
PAD_TOKENS = ("[PAD]", "<pad>")
_INTEGER_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_TENSOR_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32}
#: ops that pass token ids on unchanged, between a graph input and its embedding Gather
_ID_PASS = frozenset({"Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten"})


@dataclass(frozen=True)
class TextSettings:
    column: str
    tokenizer: str  # as the policy gives it (messages, report)
    tokenizer_json: str  # the file's text: it travels with the predictor to executors
    max_length: int
    padding: Literal["longest", "max_length"] = "longest"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.tokenizer_json.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TensorSettings:
    column: str
    input: str | None = None


def read_tokenizer(path: Path, where: str) -> str:
    """The text of a tokenizer.json (a regular UTF-8 file), InputError-class errors naming it."""
    from fairgate.inputs.files import read_regular_file

    raw = read_regular_file(path, TOKENIZER_BYTES, DataError, where=where, what="tokenizer",
                            expected="a Hugging Face tokenizer.json")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None


TOKENIZER_BYTES = 64 << 20  # large multilingual vocabularies are ~20 MB


# ----------------------------------------------------------------------------- text


class TextEncoder:
    """A loaded tokenizer set to truncate at ``max_length`` and pad with its own pad token."""

    def __init__(self, settings: TextSettings, where: str) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UsageError("text inputs (model.inputs.text) need the tokenizers package: "
                             "pip install 'fairgate[text]'") from None
        self.settings = settings
        self.where = f"{where}, tokenizer {settings.tokenizer}"
        try:
            tok = Tokenizer.from_str(settings.tokenizer_json)
        except Exception as e:  # tokenizers raises its own exception type
            raise DataError(f"{self.where}: not a Hugging Face tokenizer.json "
                            f"({first_line(e)})") from None
        own = tok.truncation or {}
        tok.enable_truncation(settings.max_length, stride=own.get("stride", 0),
                              strategy=own.get("strategy", "longest_first"),
                              direction=own.get("direction", "right"))
        self.pad_id, self.pad_token, pad = _pad_of(tok, settings.tokenizer_json, self.where)
        tok.enable_padding(
            direction=pad.get("direction", "right"), pad_id=self.pad_id,
            pad_type_id=pad.get("pad_type_id", 0), pad_token=self.pad_token,
            length=settings.max_length if settings.padding == "max_length" else None,
            pad_to_multiple_of=pad.get("pad_to_multiple_of"))
        self.tokenizer = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    def encode(self, col: pa.Array | pa.ChunkedArray, offset: int) -> Encoded:
        """The batch's encodings: ``input_ids``, ``attention_mask`` and ``token_type_ids``,
        each [N, S] int64 when first asked for."""
        column = self.settings.column
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise DataError(f"text column {column!r} has type {col.type}; text inputs need "
                            "strings")
        if col.null_count:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"text column {column!r} has {col.null_count} missing value(s), "
                            f"first at row {offset + first}")
        # encode_batch_fast: the same ids and masks without character offsets (~25% faster)
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return Encoded(encode(col.to_pylist(), add_special_tokens=True))

    def describe(self) -> dict[str, Any]:
        s = self.settings
        truncation, padding = self.tokenizer.truncation or {}, self.tokenizer.padding or {}
        return {"column": s.column, "tokenizer": s.tokenizer,
                "tokenizer_sha256": s.sha256, "vocab_size": self.vocab_size,
                "truncation": {"max_length": s.max_length,
                               "strategy": truncation.get("strategy"),
                               "direction": truncation.get("direction")},
                "padding": {"to": s.padding, "pad_id": self.pad_id, "pad_token": self.pad_token,
                            "direction": padding.get("direction")}}


_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask",
                    "token_type_ids": "type_ids"}


class Encoded:
    """A batch's encodings, made into [N, S] int64 arrays on first use: a graph without
    ``token_type_ids`` never pays for them, and a teacher and student with the same tokenizer
    share one encoding (two threads may both make an array; they make the same one)."""

    def __init__(self, encodings: list[Any]) -> None:
        self.encodings = encodings
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        out = self._arrays.get(name)
        if out is None:
            attr = _ENCODING_FIELDS[name]
            out = np.array([getattr(e, attr) for e in self.encodings], dtype=np.int64)
            if not self.encodings:
                out = out.reshape(0, 0)
            self._arrays[name] = out
        return out


def _pad_of(tok: Any, text: str, where: str) -> tuple[int, str, dict[str, Any]]:
    """The tokenizer's pad id and token (see the module doc), and its own padding settings;
    ``text``: its tokenizer.json, whose added tokens name the pad token when padding does not."""
    own = tok.padding
    if own is not None:
        return int(own["pad_id"]), str(own["pad_token"]), dict(own)
    special = json.loads(text).get("added_tokens") or []
    found = [(int(t["id"]), str(t["content"])) for t in special
             if t.get("special") and t.get("content") in PAD_TOKENS]
    if len(found) == 1:
        return found[0][0], found[0][1], {}
    why = ("has no padding section and no [PAD] or <pad> special token" if not found else
           f"has no padding section and several pad-like special tokens "
           f"({', '.join(t for _, t in found)})")
    raise DataError(f"{where}: {why}, so its pad id is unknown; give it one: "
                    "tokenizer.enable_padding(pad_id=..., pad_token=...); tokenizer.save(...)")


def plan_text_inputs(inputs: list[tuple[str, str, list[Any]]], encoder: TextEncoder,
                     proto: Any, where: str) -> list[tuple[str, Any]]:
    """(graph input, numpy type) of each input the text feeds, every input checked."""
    s = encoder.settings
    names = [n for n, _, _ in inputs]
    if "input_ids" not in names:
        raise ModelError(f"{where}: the graph has no input 'input_ids' (inputs: "
                         f"{', '.join(names)}); text inputs feed input_ids, attention_mask and "
                         "token_type_ids by name")
    out = []
    for name, typ, shape in inputs:
        if name not in TEXT_OUTPUTS:
            raise ModelError(f"{where}: graph input {name!r} is fed by nothing: text inputs "
                             f"(model.inputs.text, column {s.column!r}) produce "
                             f"{', '.join(TEXT_OUTPUTS)}")
        if typ not in _INTEGER_TYPES:
            raise ModelError(f"{where}: graph input {name!r} is {typ}, but text gives integer "
                             "token ids and masks (int64 or int32)")
        if len(shape) != 2:
            raise ModelError(f"{where}: graph input {name!r} has shape {shape_text(shape)}; text "
                             "gives [N, S] (rows, tokens)")
        width = shape[1]
        if isinstance(width, int) and (s.padding != "max_length" or width != s.max_length):
            raise ModelError(f"{where}: graph input {name!r} has a fixed sequence length "
                             f"{width}; set model.inputs.text.max_length: {width} and padding: "
                             "max_length")
        out.append((name, _INTEGER_TYPES[typ]))
    table = embedding_rows(proto, "input_ids")
    if table is not None and encoder.vocab_size > table:
        raise ModelError(f"{where}: the tokenizer {s.tokenizer} has {encoder.vocab_size:,} tokens "
                         f"but the embedding table that graph input 'input_ids' indexes has "
                         f"{table:,} rows; this tokenizer is not the model's")
    return out


def embedding_rows(proto: Any, name: str) -> int | None:
    """Rows of the initializer a Gather indexes with graph input ``name`` (through ops that
    pass ids on unchanged), when the graph proves it: one such table, else None."""
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    tables = {t.name: t for t in proto.graph.initializer}
    found: set[int] = set()
    frontier, seen = [name], {name}
    while frontier:
        value = frontier.pop()
        for node in consumers.get(value, []):
            if node.op_type in _ID_PASS and node.input[0] == value:
                for o in node.output:
                    if o not in seen:
                        seen.add(o)
                        frontier.append(o)
            elif (node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == value
                  and node.input[0] in tables and tables[node.input[0]].dims):
                found.add(int(tables[node.input[0]].dims[0]))
    return found.pop() if len(found) == 1 else None


# ----------------------------------------------------------------------------- tensor


def tensor_type(name: str, typ: str, shape: list[Any], where: str) -> Any:
    """The numpy type a [N, D] tensor input takes; ModelError naming the input otherwise."""
    if typ not in _TENSOR_TYPES:
        raise ModelError(f"{where}: graph input {name!r} is {typ}; a tensor column is fed as "
                         "numbers (float, double, float16, int64, int32)")
    if len(shape) != 2:
        raise ModelError(f"{where}: graph input {name!r} has shape {shape_text(shape)}; a tensor "
                         "column is fed as [N, D]")
    return _TENSOR_TYPES[typ]


def tensor_matrix(col: pa.Array | pa.ChunkedArray, column: str, offset: int, width: Any,
                  dtype: Any) -> np.ndarray:
    """A list column as [N, D]; a null row or value, a ragged row or NaN names the row."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    typ = col.type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)
            or pa.types.is_fixed_size_list(typ)):
        raise DataError(f"tensor column {column!r} has type {typ}; it needs a list of numbers "
                        "per row")
    value_type = typ.value_type
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        raise DataError(f"tensor column {column!r} holds {value_type}; it needs numbers")
    n = len(col)
    if col.null_count:
        first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"tensor column {column!r}: row {offset + first} is missing")
    if pa.types.is_fixed_size_list(typ):
        lengths = np.full(n, typ.list_size, dtype=np.int64)
    else:
        lengths = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    want = width if isinstance(width, int) else (int(lengths[0]) if n else 0)
    bad = np.flatnonzero(lengths != want)
    if bad.size:
        i = int(bad[0])
        what = "the graph's" if isinstance(width, int) else f"row {offset}'s"
        raise DataError(f"tensor column {column!r}: row {offset + i} has {int(lengths[i])} "
                        f"values, {what} width is {want}; every row needs the same length")
    values = col.flatten()
    if values.null_count:
        i = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"tensor column {column!r}: row {offset + i // max(want, 1)} has a "
                        "missing value")
    flat = values.to_numpy(zero_copy_only=False)
    if flat.dtype.kind == "f":
        nan = np.isnan(flat)
        if nan.any():
            i = int(np.flatnonzero(nan)[0])
            raise DataError(f"tensor column {column!r}: row {offset + i // max(want, 1)} has "
                            "a NaN value")
    return flat.astype(dtype, copy=False).reshape(n, want)
