"""Numeric sensitive attributes grouped into right-open intervals (``audit.sensitive`` bins).

``{column: age, bins: [0, 25, 40, 65]}`` makes the groups ``[0, 25)``, ``[25, 40)`` and
``[40, 65)``: each row's value is replaced by the label of its interval before it is
counted, in the per-batch function every engine runs, so both engines count the same
groups. A value outside every interval, or a missing one, stops the gate with the column,
the value and the row: binning it into a neighbour, or dropping it, would change the groups
without anyone deciding so. ``-.inf`` / ``.inf`` as the first / last edge make open ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.core.counts import MISSING
from fairgate.errors import DataError


def edge_text(x: float) -> str:
    """An edge as labels show it: ``25``, ``2.5``, ``inf``, ``-inf``."""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Bins:
    """A column and the increasing edges of its intervals (validated by the policy)."""

    column: str
    edges: tuple[float, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The group label of each interval, ``[25, 40)``, in order."""
        return tuple(f"[{edge_text(a)}, {edge_text(b)})"
                     for a, b in zip(self.edges[:-1], self.edges[1:], strict=True))

    def assign(self, column: pa.Array | pa.ChunkedArray, path: object, offset: int) -> pa.Array:
        """The interval label of every row (a string array), or a DataError naming the first
        row that is missing, NaN or outside the edges (row = ``offset`` + its index)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        values = self._numbers(column, path)
        where = np.searchsorted(np.asarray(self.edges, dtype=np.float64), values, side="right") - 1
        bad = np.isnan(values) | (where < 0) | (where >= len(self.edges) - 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self._refuse(column, values[i], i, int(bad.sum()), path, offset)
        labels = pa.array(self.labels, pa.string())
        return pc.take(labels, pa.array(where, pa.int64()))

    def _numbers(self, column: pa.Array, path: object) -> np.ndarray:
        typ = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
        if not (numeric or pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise DataError(f"{path}: column {self.column!r} has type {typ}; bins need numbers")
        try:
            floats = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = next(v for v in column.to_pylist() if v is not None and not _is_number(v))
            raise DataError(f"{path}: column {self.column!r} holds {bad!r}, not a number; bins "
                            "need numbers") from None
        return np.asarray(floats.to_numpy(zero_copy_only=False), dtype=np.float64)

    def _refuse(self, column: pa.Array, value: float, i: int, count: int, path: object,
                offset: int) -> None:
        more = f" ({count:,} such rows in this batch)" if count > 1 else ""
        if column[i].as_py() is None or math.isnan(value):
            raise DataError(f"{path}: column {self.column!r} is missing or NaN at row "
                            f"{offset + i}{more}; a binned sensitive attribute needs a number in "
                            "every row")
        lo, hi = edge_text(self.edges[0]), edge_text(self.edges[-1])
        raise DataError(
            f"{path}: column {self.column!r} has value {column[i].as_py()!r} at row {offset + i}"
            f"{more}, outside its bins [{lo}, {hi}); add an edge, or make the ends open with "
            "-.inf as the first edge or .inf as the last")


def _is_number(text: object) -> bool:
    try:
        float(str(text))
        return True
    except ValueError:
        return False


#: A numeric attribute without bins draws a warning past this many groups (values).
MANY_GROUPS = 20


def suggest_bins(column: str, groups: Sequence[tuple[str, ...]], sizes: Sequence[int],
                 min_size: int) -> str | None:
    """A warning for a numeric attribute counted value by value into more than
    :data:`MANY_GROUPS` groups (each value a group, the small ones not gated), with bins at
    its quartiles; None otherwise."""
    values, weights = [], []
    for g, n in zip(groups, sizes, strict=True):
        if g[0] == MISSING:
            continue
        try:
            values.append(float(g[0]))
        except ValueError:
            return None  # not numeric
        weights.append(int(n))
    small = sum(1 for n in sizes if n < min_size)
    if len(values) <= MANY_GROUPS:
        return None
    order = np.argsort(values)
    v, cum = np.asarray(values)[order], np.cumsum(np.asarray(weights)[order])
    cuts = sorted({float(v[np.searchsorted(cum, q * cum[-1])]) for q in (0.25, 0.5, 0.75)})
    edges = ", ".join(["-.inf", *(edge_text(c) for c in cuts), ".inf"])
    return (f"sensitive attribute {column!r} is numeric with {len(values):,} values, so "
            f"{len(values):,} groups, {small:,} of them below min_group_size {min_size} (not "
            f"gated): group it into intervals, e.g. sensitive: [{{column: {column}, bins: "
            f"[{edges}]}}] (edges at the quartiles of its values)")
