"""Joint confusion counts: group × y × ŷ_teacher × ŷ_student, built in one streaming pass.

Every metric of both models, their paired change and the bootstrap come from these tables,
so memory does not grow with the audit set and counts of batches (or partitions) just add.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.errors import DataError

MISSING = "(missing)"
_BIN_LABEL = re.compile(r"\[([^,\[\]]+), [^,\[\]]+\)")


def group_order(group: tuple[str, ...]) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a group: bin labels (``[25, 40)``, core/bins.py) by their left edge, so
    ``[100, 200)`` follows ``[25, 100)``; every other value by its text."""
    return tuple(_value_order(v) for v in group)


def _value_order(value: str) -> tuple[int, float, str]:
    m = _BIN_LABEL.fullmatch(value)
    if m:
        try:
            return (0, float(m.group(1)), value)
        except ValueError:
            pass
    return (1, 0.0, value)
# 8 cells a group: index = ((g * 2 + y) * 2 + y_teacher) * 2 + y_student
CELLS = 8
#: Default cap on distinct groups per grouping (policy: ``audit.max_groups``). Gating needs
#: min_group_size rows a group, so past this a column is an identifier rather than a
#: sensitive attribute; counting costs ~0.55 KiB a group, so the cap also bounds memory
#: (figures and the choice: benchmarks/README.md, bench_groups.py).
MAX_GROUPS = 100_000


@dataclass(frozen=True)
class Grouping:
    """The attributes whose values define groups, e.g. (race,) or (race, sex).

    Multi-class models are gated through binary tables: ``positive`` names the class of a
    one-vs-rest table (y = that class, ŷ = predicted as it); without it a multi-class table
    is top-1 correctness (y = 1, ŷ = correct). A ``derived`` grouping's attribute is not an
    audit column but computed per row by fairgate: the true class, or bias alignment.
    """

    attributes: tuple[str, ...]
    positive: str | None = None
    derived: bool = False

    @property
    def name(self) -> str:
        base = "*".join(self.attributes)
        return base if self.positive is None else f"{base} ({self.positive} vs rest)"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class GroupingCounts:
    """Joint counts of one grouping; ``cells[g, y, y_teacher, y_student]`` as int64."""

    grouping: Grouping
    groups: tuple[tuple[str, ...], ...]  # the key of a group is its tuple of values
    cells: np.ndarray

    @cached_property
    def labels(self) -> list[str]:
        """Readable group labels, ``White`` or ``White|Female``: for display only, since
        ``("a|b", "c")`` and ``("a", "b|c")`` read alike. Look groups up in :attr:`index`."""
        return ["|".join(g) for g in self.groups]

    @cached_property
    def index(self) -> dict[tuple[str, ...], int]:
        """Position of each group, keyed by its value tuple."""
        return {g: i for i, g in enumerate(self.groups)}

    @cached_property
    def sizes(self) -> np.ndarray:
        """Rows per group; cached, as per-group code reading it in a loop made gates O(G²)."""
        return self.cells.sum(axis=(1, 2, 3))

    @staticmethod
    def teacher(cells: np.ndarray) -> np.ndarray:
        """Teacher confusion ``[..., G, y, ŷ]`` of joint ``cells[..., G, y, ŷt, ŷs]``."""
        return cells[..., 0] + cells[..., 1]  # faster than .sum(axis=-1) on [B, G, 2, 2, 2]

    @staticmethod
    def student(cells: np.ndarray) -> np.ndarray:
        """Student confusion ``[..., G, y, ŷ]`` of joint ``cells[..., G, y, ŷt, ŷs]``."""
        return cells[..., 0, :] + cells[..., 1, :]


class _Codes:
    """Stable integer codes for the values of one attribute, across batches."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.numeric = False  # numbers: too many groups means bins (messages say so)

    def encode(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        self.numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        encoded = pc.dictionary_encode(column)
        values = [value_label(v) for v in encoded.dictionary.to_pylist()]
        lookup = np.array([self.index.setdefault(v, len(self.index)) for v in values] or [0],
                          dtype=np.int64)
        idx = encoded.indices
        if idx.null_count:
            missing = self.index.setdefault(MISSING, len(self.index))
            raw = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False)
            return np.where(raw < 0, missing, lookup[np.maximum(raw, 0)])
        return lookup[idx.to_numpy(zero_copy_only=False)]


def value_label(value: object) -> str:
    """How a sensitive value reads in group labels (``1.0`` → ``1``, null → ``(missing)``)."""
    return MISSING if value is None else _label(value)


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float) and np.isnan(value):
        return MISSING
    return str(value)


class TooManyGroups(DataError):
    """A grouping has more distinct groups than ``audit.max_groups``."""


class CountAccumulator:
    """Adds batches of (label, teacher decision, student decision, sensitive values).

    ``max_groups`` caps the distinct groups of each grouping that is not derived (the
    policy's attributes and their intersections). It is checked batch by batch, so a
    column of unique ids ends the pass at the batch that takes it past the cap, with memory
    bounded by the cap; ``source`` (the audit file) starts the error message.
    """

    def __init__(self, groupings: list[Grouping], max_groups: int | None = None,
                 source: object = None) -> None:
        self.groupings = groupings
        self.max_groups = max_groups
        self.source = source
        attributes = sorted({a for g in groupings for a in g.attributes})
        self._codes = {a: _Codes() for a in attributes}
        self._combo: dict[Grouping, dict[tuple[int, ...], int]] = {g: {} for g in groupings}
        self._cells: dict[Grouping, np.ndarray] = {
            g: np.zeros(0, dtype=np.int64) for g in groupings
        }
        self.rows = 0

    def add(
        self,
        y: np.ndarray,
        teacher: np.ndarray,
        student: np.ndarray,
        sensitive: Mapping[str, pa.Array | pa.ChunkedArray],
    ) -> None:
        """Count one batch; ``y``, ``teacher`` and ``student`` are boolean arrays."""
        outcome = (y.astype(np.int64) << 2) | (teacher.astype(np.int64) << 1) | student.astype(
            np.int64
        )
        codes = {a: c.encode(sensitive[a]) for a, c in self._codes.items()}
        for grouping in self.groupings:
            group = self._group_codes(grouping, codes)
            self._check_cap(grouping, len(y))
            size = len(self._combo[grouping]) * CELLS
            counts = np.bincount(group * CELLS + outcome, minlength=size)
            acc = self._cells[grouping]
            if acc.size < size:
                acc = np.concatenate([acc, np.zeros(size - acc.size, dtype=np.int64)])
            acc += counts
            self._cells[grouping] = acc
        self.rows += len(y)

    def _check_cap(self, grouping: Grouping, batch_rows: int) -> None:
        seen = len(self._combo[grouping])
        if self.max_groups is None or grouping.derived or seen <= self.max_groups:
            return
        cap, rows = f"{self.max_groups:,}", f"{self.rows + batch_rows:,}"
        columns = ", ".join(repr(a) for a in grouping.attributes)
        where = f"{self.source}: " if self.source is not None else ""
        if len(grouping.attributes) == 1:
            what = f"column {columns} has more than {cap} distinct values"
            fix = "bin the column into fewer values"
            if self._codes[grouping.attributes[0]].numeric:
                fix += " (audit.sensitive: [{column: NAME, bins: [edges]}] groups a number by interval)"
        else:
            what = (f"intersection {'*'.join(grouping.attributes)} "
                    f"(columns {columns}) has more than {cap} distinct combinations")
            fix = ("bin the columns into fewer values, or leave this intersection out "
                   "(audit.intersections, the checks' on:)")
        raise TooManyGroups(
            f"{where}{what} ({seen:,} in the first {rows} rows); fairgate gates at most {cap} "
            f"groups per grouping (audit.max_groups). To gate on it, {fix}: values with fewer "
            "rows than audit.min_group_size are not gated anyway, so merging them into one "
            "value loses no gated group. Or raise audit.max_groups."
        )

    def _group_codes(self, grouping: Grouping, codes: dict[str, np.ndarray]) -> np.ndarray:
        if len(grouping.attributes) == 1:
            combo = self._combo[grouping]
            attr_codes = codes[grouping.attributes[0]]
            top = int(attr_codes.max(initial=-1)) + 1
            for c in range(len(combo), top):
                combo[(c,)] = c
            return attr_codes
        return self._cross_codes(grouping, codes)

    def _cross_codes(self, grouping: Grouping, codes: dict[str, np.ndarray]) -> np.ndarray:
        """Group codes of an intersection, one mixed-radix key a row.

        Attribute codes are dense in ``[0, values seen)``, so the codes of a row make one
        int64 key whose order is the lexicographic order of the code tuples: the same
        combinations are found in the same order as a row-wise ``np.unique(axis=0)``, at a
        fraction of the cost (that sorts void records and took ~70 ms a 65,536-row batch;
        this is a bincount, or a 1-D sort when the key space is large).
        """
        attrs = grouping.attributes
        combo = self._combo[grouping]
        radices = [max(len(self._codes[a].index), 1) for a in attrs]
        space = int(np.prod(radices, dtype=object))
        n = len(codes[attrs[0]])
        if space >= 1 << 62:  # keys would overflow int64: sort the code rows instead
            stacked = np.stack([codes[a] for a in attrs], axis=1)
            rows, inverse = np.unique(stacked, axis=0, return_inverse=True)
            local = np.array(
                [combo.setdefault(tuple(int(v) for v in r), len(combo)) for r in rows],
                dtype=np.int64,
            )
            return local[inverse.reshape(-1)]
        key = codes[attrs[0]].astype(np.int64, copy=True)
        for a, radix in zip(attrs[1:], radices[1:], strict=True):
            key *= radix
            key += codes[a]
        dense = space <= max(1 << 16, 4 * n)
        if dense:
            keys = np.flatnonzero(np.bincount(key, minlength=space))
        else:
            keys, inverse = np.unique(key, return_inverse=True)
        digits = np.empty((len(keys), len(attrs)), dtype=np.int64)
        rest = keys.copy()
        for j in range(len(attrs) - 1, -1, -1):
            rest, digits[:, j] = np.divmod(rest, radices[j])
        local = np.array(
            [combo.setdefault(tuple(r), len(combo)) for r in digits.tolist()], dtype=np.int64
        )
        if not dense:
            return local[inverse.reshape(-1)]
        lookup = np.zeros(space, dtype=np.int64)
        lookup[keys] = local
        return lookup[key]

    def result(self) -> dict[Grouping, GroupingCounts]:
        """Counts per grouping, groups sorted by label so row order never matters."""
        out = {}
        names = {a: {code: v for v, code in c.index.items()} for a, c in self._codes.items()}
        for grouping in self.groupings:
            combo = self._combo[grouping]
            labels = [
                tuple(names[a][code] for a, code in zip(grouping.attributes, key, strict=True))
                for key in combo
            ]
            cells = self._cells[grouping].reshape(len(combo), 2, 2, 2)
            order = sorted(range(len(labels)), key=lambda i: group_order(labels[i]))
            out[grouping] = GroupingCounts(
                grouping, tuple(labels[i] for i in order), cells[order]
            )
        return out
