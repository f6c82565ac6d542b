"""Read the audit set in batches: Parquet row groups, ORC stripes or CSV blocks, only the
needed columns, file after file in the order of the listing (:mod:`fairgate.inputs.data_source`).

Memory stays flat in the number of rows: nothing here holds more than one batch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fairgate.errors import DataError
from fairgate.inputs.data_source import DataFile, DataSource, first_line

DEFAULT_BATCH_ROWS = 65_536
_READ_BUFFER = 1 << 16  # bytes per Parquet read; see AuditSet.batches
CSV_BLOCK = 1 << 24  # bytes per CSV block; types are inferred on the first block of the first file


@dataclass(frozen=True)
class AuditSet:
    """An audit set's files and the columns a gate needs from them."""

    source: DataSource
    columns: tuple[str, ...]
    column_types: dict[str, pa.DataType]
    batch_rows: int = DEFAULT_BATCH_ROWS
    # read as text from CSV, whatever the first block looks like (sensitive attributes:
    # a column of zip codes must not turn from numbers into an error at row 2,000,000)
    text_columns: tuple[str, ...] = ()
    # columns whose values name groups or classes, with what each is (for messages): a
    # list or struct there has no single value per row, so it is refused before any batch
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The audit set as messages name it (the --data argument)."""
        return self.source.given

    def schema(self) -> pa.Schema:
        """Columns and types of the first file (Parquet or ORC footer, CSV first block), then
        the partition columns (text)."""
        first = self.source.files[0]
        try:
            if self.source.format == "parquet":
                schema = pq.read_schema(first.path)
            elif self.source.format == "orc":
                import pyarrow.orc as orc

                schema = orc.ORCFile(first.path).schema
            else:
                schema = self.csv_schema()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{first.path}: cannot read the audit set: {first_line(e)}") from None
        for key in self.source.partition_columns:
            if key in schema.names:
                raise DataError(f"{first.path}: column {key!r} is both a column of the file and "
                                f"a partition folder ({key}=...); rename one of them")
            schema = schema.append(pa.field(key, pa.string()))
        return schema

    def csv_schema(self) -> pa.Schema:
        """Types of every CSV column, inferred once from the first block of the first file, with
        the text columns as text and the declared types applied: every file (and both
        engines) then read each column the same way."""
        first = self.source.files[0]
        # compression from the name, as pacsv.open_csv does for the batches (.csv.gz)
        with pa.input_stream(first.path, compression="detect") as f:
            reader = pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
                                    convert_options=pacsv.ConvertOptions(
                                        column_types={c: pa.string() for c in self.text_columns}))
            schema = reader.schema
        return schema

    def schema_names(self) -> list[str]:
        return list(self.schema().names)

    def check_columns(self) -> pa.Schema:
        """Fail before any work if a needed column is absent (naming it and close names), or
        if a label or grouping column is nested; the schema otherwise."""
        schema = self.schema()
        check_schema(self.path, list(schema.names),
                     {f.name: str(f.type) for f in schema if _is_nested(f.type)},
                     self.columns, self.roles)
        return schema

    def batches(self) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """``(file, row of the batch's first row in that file, batch)``: record batches holding
        just ``columns`` (partition columns included), cast to ``column_types``."""
        csv_types = self.csv_types(self.check_columns())
        for f in self.source.files:
            yield from self.file_batches(f, csv_types)

    def csv_types(self, schema: pa.Schema) -> dict[str, pa.DataType] | None:
        """The type every file's CSV columns are read as (None for other formats)."""
        if self.source.format != "csv":
            return None
        types = {n: schema.field(n).type for n in self.columns
                 if n not in self.source.partition_columns}
        types.update({c: t for c, t in self.column_types.items() if c in types})
        return types

    def file_batches(self, f: DataFile, csv_types: dict[str, pa.DataType] | None,
                     groups: Sequence[int] | None = None, location: str | None = None,
                     ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """The batches of one file (of some of its Parquet row groups): what one Spark task
        reads of a split, or the local engine of a file. ``location``: where to open it (an
        executor's absolute path), when not ``f.path`` (which messages show)."""
        offset = sum(f.row_groups[: groups[0]]) if groups else 0
        for batch in self._file_batches(f, csv_types, groups, location or f.path):
            if batch.num_rows == 0:
                continue
            yield f.path, offset, self._cast(with_partitions(batch, f, self.columns), f.path)
            offset += batch.num_rows

    def _file_batches(self, f: DataFile, csv_types: dict[str, pa.DataType] | None,
                      groups: Sequence[int] | None = None, location: str | None = None,
                      ) -> Iterator[pa.RecordBatch]:
        location = location or f.path
        wanted = [c for c in self.columns if c not in self.source.partition_columns]
        try:
            if self.source.format == "parquet":
                # pre_buffer (pyarrow's default) keeps every column chunk read until the
                # file is closed: peak memory grew with the file (2.2 GB at 10M rows of 20
                # features). Without it, and with buffered reads instead of whole column
                # chunks, memory is flat and ~50 MB lower at 1M rows; no slower locally.
                # Batches start at each row group's first row (a row group is never split
                # between Spark tasks, so both engines give the models the same batches:
                # dynamically quantized models decide a row by its batch, see README).
                pf = pq.ParquetFile(location, pre_buffer=False, buffer_size=_READ_BUFFER)
                _require_columns(f.path, pf.schema_arrow.names, wanted)
                for group in (range(pf.num_row_groups) if groups is None else groups):
                    yield from pf.iter_batches(batch_size=self.batch_rows, row_groups=[group],
                                               columns=wanted)
            elif self.source.format == "orc":
                yield from self._orc_batches(location, wanted, f.path)
            else:
                assert csv_types is not None
                yield from self._csv_batches(location, wanted, csv_types, f.path)
        except pa.ArrowException as e:
            raise DataError(f"{f.path}: cannot read the audit set: {first_line(e)}") from None
        except OSError as e:
            raise DataError(f"{f.path}: cannot read the audit set: {e.strerror or e}") from None

    def _orc_batches(self, location: str, wanted: list[str], path: str
                     ) -> Iterator[pa.RecordBatch]:
        import pyarrow.orc as orc

        of = orc.ORCFile(location)
        _require_columns(path, of.schema.names, wanted)
        yield from rechunk((of.read_stripe(i, columns=wanted) for i in range(of.nstripes)),
                           self.batch_rows)

    def _csv_batches(self, location: str, wanted: list[str], types: dict[str, pa.DataType],
                     path: str) -> Iterator[pa.RecordBatch]:
        reader = pacsv.open_csv(
            location,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=types),
        )
        _require_columns(path, reader.schema.names, wanted)
        yield from rechunk(reader, self.batch_rows)

    def _cast(self, batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
        return cast_columns(batch, self.columns, self.column_types, path)


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` rows (the last one shorter), from the first row on,
    whatever the sizes of the batches read: CSV blocks and ORC stripes end anywhere."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if not pending and batch.num_rows >= rows:  # the common case: no copy
            whole = batch.num_rows // rows * rows
            for start in range(0, whole, rows):
                yield batch.slice(start, rows)
            batch = batch.slice(whole)
            if batch.num_rows == 0:
                continue
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending = [b for b in rest.to_batches() if b.num_rows]
            held -= rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def check_schema(where: str, names: Sequence[str], nested: Mapping[str, str],
                 columns: Sequence[str], roles: Mapping[str, str]) -> None:
    """A needed column that is absent (with close names), or a nested label or grouping
    column, is a DataError naming ``where``: the same check for every engine."""
    for col in columns:
        if col not in names:
            close = difflib.get_close_matches(col, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"{where}: column {col!r} not found{hint} "
                f"(columns: {', '.join(names[:30])}{' …' if len(names) > 30 else ''})"
            )
    for name in names:
        if name in roles and name in nested:
            raise DataError(f"{where}: column {name!r} ({roles[name]}) has type {nested[name]}; "
                            "it must hold one value per row, not a list, struct, map or union")


def _require_columns(path: str, names: Sequence[str], wanted: Sequence[str]) -> None:
    """A later file of a directory lacks a column the first one has."""
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} not found in this file (columns: "
                        f"{', '.join(list(names)[:30])}{' …' if len(names) > 30 else ''})")


def with_partitions(batch: pa.RecordBatch, f: DataFile, columns: Sequence[str]) -> pa.RecordBatch:
    """The batch with its file's partition values as text columns, in ``columns`` order."""
    if not f.partition:
        return batch
    n = batch.num_rows
    values = dict(f.partition)
    arrays = []
    for name in columns:
        if name in values:
            v = values[name]
            arrays.append(pa.nulls(n, pa.string()) if v is None
                          else pa.repeat(pa.scalar(v, pa.string()), n))
        else:
            arrays.append(batch.column(name))
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def canonical_type(typ: pa.DataType) -> pa.DataType | None:
    """The type both engines hand to the per-batch function for a column read as ``typ``
    (None: keep it): integers as int64, text as string, dictionaries decoded. Spark reads an
    unsigned byte as a short and may send large strings; a pyarrow reader does neither."""
    if pa.types.is_dictionary(typ):
        return canonical_type(typ.value_type) or typ.value_type
    if pa.types.is_integer(typ) and typ != pa.int64() and typ != pa.uint64():
        return pa.int64()  # uint64 may not fit: kept
    if pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return pa.string()
    if pa.types.is_large_binary(typ) or pa.types.is_binary_view(typ):
        return pa.binary()
    return None


def cast_columns(batch: pa.RecordBatch, columns: Sequence[str],
                 column_types: Mapping[str, pa.DataType], path: str) -> pa.RecordBatch:
    """Just ``columns``, each cast to its declared type or to its canonical one."""
    arrays = []
    changed = list(batch.schema.names) != list(columns)
    for name in columns:
        col = batch.column(name)
        want = column_types.get(name) or canonical_type(col.type)
        if want is not None and col.type != want:
            try:
                col = pc.cast(col, want)
            except pa.ArrowException as e:
                raise DataError(
                    f"{path}: column {name!r} of type {col.type} cannot be read as "
                    f"{want}: {first_line(e)}"
                ) from None
            changed = True
        arrays.append(col)
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def require_values(col: pa.Array | pa.ChunkedArray, what: str, offset: int) -> None:
    """DataError naming ``what`` and the first row if ``col`` has a null or NaN value."""
    missing = col.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
    if missing.any():
        raise DataError(f"{what} has {int(missing.sum())} missing or NaN value(s), first at row "
                        f"{offset + int(np.flatnonzero(missing)[0])}")


def column_roles(label: str, sensitive: Sequence[str], spurious: str | None = None) -> dict[str, str]:
    """The columns whose values name groups or classes, and what each is (AuditSet.roles)."""
    roles = {a: "a sensitive attribute" for a in sensitive}
    if spurious is not None:
        roles.setdefault(spurious, "the spurious attribute")
    return {**roles, label: "the label"}


def _is_nested(typ: pa.DataType) -> bool:
    if isinstance(typ, pa.ExtensionType):
        typ = typ.storage_type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return bool(pa.types.is_nested(typ))


@dataclass(frozen=True)
class LabelSpec:
    """Which value of the label column is the positive class."""

    column: str
    positive: object

    def positives(self, col: pa.Array, path: str, offset: int, others: set[str]) -> np.ndarray:
        """Boolean positives of one batch; collects the other values seen into ``others``.

        The label must hold the positive value and at most one other: a third value means
        the audit set is not binary (or the positive label is misspelt), and a missing
        label means the row's correctness is unknown. Both stop the gate.
        """
        if col.null_count:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{path}: label column {self.column!r} has {col.null_count} missing value(s), "
                f"first at row {offset + first}"
            )
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
            raise DataError(f"{path}: label column {self.column!r} has NaN values")
        # the distinct values (a hash, not a sort of the batch) tell which others there are
        distinct = pc.unique(col).to_pylist()  # a few values (to_numpy would import pandas)
        hit = self._match(np.asarray(distinct), col.type, path)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            pos = pc.equal(col, pa.scalar(str(self.positive), col.type)).to_numpy(
                zero_copy_only=False)
        else:
            pos = self._match(col.to_numpy(zero_copy_only=False), col.type, path)
        others |= {_text(v) for v, h in zip(distinct, hit.tolist(), strict=True) if not h}
        if len(others) > 1:
            shown = ", ".join(sorted(others)[:5])
            raise DataError(
                f"{path}: label column {self.column!r} must hold positive_label "
                f"{self.positive!r} and one other value, found {len(others)} others: {shown}"
            )
        return pos

    def _match(self, values: np.ndarray, typ: pa.DataType, path: str) -> np.ndarray:
        """Rows equal to the positive label, compared exactly in the column's own type.

        A boolean column needs a boolean positive_label and a numeric column a number (never
        a boolean: ``True == 1`` in Python); a text column takes text, or an integer written
        without quotes. Anything else would silently match nothing, or the wrong class.
        """
        p = self.positive
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if pa.types.is_boolean(typ):
            if not isinstance(p, bool):
                raise DataError(f"{path}: label column {self.column!r} is boolean, but "
                                f"positive_label is {p!r}; write positive_label: true (or false)")
            return values == p
        if pa.types.is_integer(typ) or pa.types.is_floating(typ):
            if isinstance(p, bool) or not isinstance(p, int | float):
                raise DataError(f"{path}: label column {self.column!r} holds numbers ({typ}), but "
                                f"positive_label is {p!r}; write the positive label as a number "
                                "without quotes")
            return np.asarray(values == p)
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            if isinstance(p, bool | float):
                raise DataError(f"{path}: label column {self.column!r} holds text, but "
                                f"positive_label is {p!r}; quote the label exactly as it is "
                                "written in the column")
            return np.asarray(values == str(p), dtype=bool)
        raise DataError(f"{path}: label column {self.column!r} has type {typ}; a label must be "
                        "boolean, a number or text")


def _text(v: object) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)
