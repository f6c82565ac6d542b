"""Multi-class models: top-1 classes to binary joint tables, and class-wise disagreement.

A K-class gate never builds the K³-cell table group × y × ŷt × ŷs. Everything it gates is
a binary joint table of the same shape as for binary models, so the whole catalogue, the
exact bootstrap and the McNemar tests apply unchanged:

- top-1 correctness per group: y = 1, ŷ = (top-1 == true class); its accuracy is top-1
  accuracy and its McNemar test is the paired test of top-1 correctness;
- the same per true class (a derived grouping whose groups are the classes): per-class
  accuracy (recall), and McNemar with Holm across classes gives the paper's #TC;
- one-vs-rest per positive class c: y = (y == c), ŷ = (top-1 == c), for group metrics.

That is O(K) memory. The one K × K object, the disagreement matrix of two models, is
counted sparsely: only the (class, class) pairs that occur are stored, so K = 1000 works.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.core.counts import _label

ALIGNED, CONFLICTING = "aligned", "conflicting"


class ClassIndex:
    """Class labels (as text) to dense indices; fixed when the models name their classes.

    A fixed index refuses a label or prediction outside it: a label spelt differently from
    the model's classes would otherwise count every row as wrong without a word.
    """

    def __init__(self, classes: Sequence[str] | None, source: str) -> None:
        self.fixed = classes is not None
        self.source = source  # where a fixed class list came from, for messages
        self.names: list[str] = list(classes or [])
        self._index = {c: i for i, c in enumerate(self.names)}
        if len(self._index) != len(self.names):
            dup = next(c for c in self.names if self.names.count(c) > 1)
            raise ValueError(f"class {dup!r} is listed twice")

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int | None:
        return self._index.get(name)

    def encode(self, values: pa.Array | pa.ChunkedArray | np.ndarray, what: str) -> np.ndarray:
        """Indices of a column or array of class labels; ``what`` names it in errors."""
        arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        encoded = pc.dictionary_encode(arr)
        lookup = np.empty(len(encoded.dictionary), dtype=np.int64)
        for j, v in enumerate(encoded.dictionary.to_pylist()):
            name = _label(v)
            i = self._index.get(name)
            if i is None:
                if self.fixed:
                    shown = ", ".join(self.names[:12]) + (" …" if len(self.names) > 12 else "")
                    raise ClassError(f"{what} has value {name!r}, which is not one of the "
                                     f"{len(self.names)} classes {self.source} ({shown})")
                i = self._index.setdefault(name, len(self.names))
                self.names.append(name)
            lookup[j] = i
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    def of_columns(self, width: int, keys: Sequence[str] | None, what: str) -> np.ndarray:
        """Class index of each output column of a [N, K] model."""
        if keys is not None:
            return self.encode(np.asarray(list(keys), dtype=object), f"{what} (class of a column)")
        if self.fixed and width != len(self.names):
            raise ClassError(f"{what} has {width} class columns but there are {len(self.names)} "
                             f"classes {self.source}")
        if not self.fixed:  # positions only: classes are "0" .. "K-1"
            return self.encode(np.arange(width).astype(str).astype(object), what)
        return np.arange(width, dtype=np.int64)


class ClassError(ValueError):
    """A label or a prediction outside the fixed classes (the caller names the file)."""


class PairCounter:
    """Sparse counts of (class of model a, class of model b) over rows where they differ."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self._stride = 1 << 31
        self.rows = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        self.rows += len(a)
        differ = a != b
        if not differ.any():
            return
        keys, counts = np.unique(a[differ] * self._stride + b[differ], return_counts=True)
        self._counts.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))

    def cells(self) -> list[tuple[int, int, int]]:
        """(class a, class b, rows), most rows first, then by class indices."""
        out = [(k // self._stride, k % self._stride, n) for k, n in self._counts.items()]
        return sorted(out, key=lambda c: (-c[2], c[0], c[1]))


@dataclass(frozen=True)
class Disagreement:
    """Where two models' top-1 classes differ: the off-diagonal of their K × K matrix."""

    a: str  # model roles, e.g. teacher, student
    b: str
    rows: int  # audit rows
    cells: tuple[tuple[str, str, int], ...]  # (class by a, class by b, rows), most rows first

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.cells)

    @property
    def rate(self) -> float:
        return self.total / self.rows if self.rows else float("nan")


def disagreement(a: str, b: str, counter: PairCounter, names: Sequence[str]) -> Disagreement:
    cells = tuple((names[i], names[j], n) for i, j, n in counter.cells())
    return Disagreement(a, b, counter.rows, cells)


def equals(column: pa.Array | pa.ChunkedArray, value: object) -> np.ndarray:
    """Rows whose value reads as ``value`` (``1.0`` reads as ``1``, as group labels do)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    want = _label(value)
    hit = np.array([v is not None and _label(v) == want for v in encoded.dictionary.to_pylist()]
                   + [False], dtype=bool)
    idx = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return hit[idx]


def alignment(has_value: np.ndarray, has_label: np.ndarray) -> pa.Array:
    """``aligned`` where the spurious attribute and the label agree, else ``conflicting``.

    A row is bias-aligned when it has both the attribute value and the label value that go
    together, or neither; bias-conflicting when it has one without the other (a
    water background behind a land bird).
    """
    return pa.array(np.where(has_value == has_label, ALIGNED, CONFLICTING))
