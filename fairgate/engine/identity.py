"""Row identity: a 64-bit value per row that does not depend on where or when the row is read.

The row samples (individual fairness, score metrics) keep the rows whose hash of
``(seed, identity)`` is smallest. A position in a file does not survive a reshuffle or a
rewrite into another number of files; the row's values do. So a row's identity is a hash of
its values in the columns the gate reads (label, sensitive attributes, model inputs, score
columns, partition columns), or of ``audit.row_id`` alone when the policy names a unique id
column. Rows with equal values have equal identities: such rows are interchangeable for
every measure, so which copy a sample keeps does not change a number.

Values are hashed as the per-batch function sees them (after the engine's casts, see
:func:`fairgate.inputs.audit.cast_columns`): integers as int64, floats as float64 with
``-0.0`` as ``0.0`` and one NaN, text and bytes by their UTF-8 bytes, dates and times by
their count of days or microseconds, a missing value as its own constant. Each column's
hash is mixed into the row's in the order of ``columns`` (sorted by the caller), so the
same row gives the same identity in every engine, batch and partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.errors import DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_START = np.uint64(0x6A09E667F3BCC909)  # any odd constant: the hash of a row with no columns
_NULL = np.uint64(0x243F6A8885A308D3)
_TAGS = {"bool": 1, "int": 2, "float": 3, "bytes": 4, "time": 5}


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def row_identity(batch: pa.RecordBatch, columns: Sequence[str], where: str = "") -> np.ndarray:
    """The identity of every row of ``batch`` over ``columns`` (uint64)."""
    h = np.full(batch.num_rows, _START, dtype=np.uint64)
    for name in columns:
        h *= _GOLDEN
        h += column_hash(batch.column(name), name, where)
        h = mix(h)
    return h


def column_hash(col: pa.Array | pa.ChunkedArray, name: str = "", where: str = "") -> np.ndarray:
    """A uint64 per value of ``col``; equal values (as defined above) hash alike."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.dictionary_decode()
        typ = col.type
    if pa.types.is_boolean(typ):
        out = _tagged(col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64), "bool")
    elif pa.types.is_integer(typ):
        out = _tagged(_int64(col), "int")
    elif pa.types.is_floating(typ):
        x = col.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0  # -0.0 -> 0.0
        x = np.where(np.isnan(x), np.nan, x)  # one NaN
        out = _tagged(x.view(np.uint64), "float")
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ) \
            or pa.types.is_large_binary(typ) or pa.types.is_string_view(typ) \
            or pa.types.is_binary_view(typ):
        out = _tagged(_text_hash(col), "bytes")
    elif pa.types.is_date(typ):
        out = _tagged(_int64(col.cast(pa.date32()).cast(pa.int32())), "time")
    elif pa.types.is_timestamp(typ):
        us = pc.cast(col, pa.timestamp("us", typ.tz), safe=False)
        out = _tagged(_int64(us.cast(pa.int64())), "time")
    elif pa.types.is_decimal(typ):
        out = _tagged(_text_hash(col.cast(pa.string())), "bytes")
    else:
        raise DataError(f"{where + ': ' if where else ''}column {name!r} has type {typ}, which "
                        "cannot be part of a row's identity; set audit.row_id to an id column")
    if col.null_count:
        out = np.where(col.is_null().to_numpy(zero_copy_only=False), _NULL, out)
    return out


def _int64(col: pa.Array) -> np.ndarray:
    if col.type != pa.int64():
        col = col.cast(pa.int64(), safe=False)  # uint64 above 2**63 wraps: still one value each
    return col.fill_null(0).to_numpy(zero_copy_only=False).view(np.uint64)


def _tagged(x: np.ndarray, tag: str) -> np.ndarray:
    return mix(x.astype(np.uint64, copy=False) ^ np.uint64(_TAGS[tag] << 56))


def _text_hash(col: pa.Array) -> np.ndarray:
    """FNV-1a over each value's bytes, then mixed with its length; each distinct value once."""
    encoded = pc.dictionary_encode(col.cast(pa.large_binary()) if not (
        pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)) else col)
    values = encoded.dictionary
    hashes = _bytes_hash(values)
    idx = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
    if len(hashes) == 0:
        return np.zeros(len(col), dtype=np.uint64)
    return hashes[idx]


def _bytes_hash(values: pa.Array) -> np.ndarray:
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if pa.types.is_binary(values.type):
        values = values.cast(pa.large_binary())
    _, offsets_buf, data_buf = values.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=values.offset * 8)
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None
            else np.zeros(0, dtype=np.uint8))
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    longest = int(lengths.max(initial=0))
    if longest:
        order = np.argsort(-lengths, kind="stable")  # rows still going are a prefix
        sorted_len = lengths[order]
        for j in range(longest):
            k = int(np.searchsorted(-sorted_len, -j, side="left"))  # rows with length > j
            rows = order[:k]
            h[rows] = (h[rows] ^ data[starts[rows] + j].astype(np.uint64)) * _FNV_PRIME
    return mix(h ^ lengths.astype(np.uint64))
