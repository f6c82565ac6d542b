"""An audit set held in memory: a pandas DataFrame or a pyarrow Table, for the Python API.

The local engine reads it as it reads a Parquet file (column types as they are, batches of
``batch_rows`` rows from the first row), through the same column checks and casts; nothing is
written to disk. Spark reads files and tables only, so an in-memory audit set needs the local
engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from fairgate.errors import DataError, UsageError
from fairgate.inputs.audit import AuditSet, rechunk
from fairgate.inputs.data_source import DataSource, first_line


@dataclass(frozen=True, eq=False)
class InMemoryTable:
    """An audit set given as an object: the Arrow table, and what it was given as."""

    table: pa.Table
    given_as: str  # "pandas DataFrame" or "pyarrow Table"

    @property
    def label(self) -> str:
        """How messages and reports name it."""
        return f"in-memory {self.given_as}"

    def __str__(self) -> str:
        return self.label

    def describe(self) -> dict[str, Any]:
        """``inputs.data`` of report.json (``rows`` is added by the engine)."""
        return {"path": self.label, "format": "in-memory", "given_as": self.given_as,
                "columns": len(self.table.column_names), "bytes": self.table.nbytes}


def in_memory_table(data: object) -> InMemoryTable | None:
    """``data`` as an :class:`InMemoryTable` if it is a DataFrame or an Arrow table, else None
    (a path or a URI). pandas is imported only when ``data`` comes from it."""
    if isinstance(data, InMemoryTable):
        return data
    if isinstance(data, pa.Table):
        return InMemoryTable(data, "pyarrow Table")
    if isinstance(data, pa.RecordBatch):
        return InMemoryTable(pa.Table.from_batches([data]), "pyarrow RecordBatch")
    if type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame":
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise DataError(f"in-memory pandas DataFrame: cannot convert it to Arrow: "
                            f"{first_line(e)}") from None
        return InMemoryTable(table, "pandas DataFrame")
    return None


@dataclass(frozen=True)
class TableAuditSet(AuditSet):
    """An :class:`AuditSet` over an in-memory table instead of files."""

    memory: InMemoryTable | None = None

    @property
    def _table(self) -> pa.Table:
        assert self.memory is not None
        return self.memory.table

    def schema(self) -> pa.Schema:
        return self._table.schema

    def batches(self) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        self.check_columns()
        table = self._table.select(list(self.columns))
        offset = 0
        for batch in rechunk(table.to_batches(), self.batch_rows):
            if batch.num_rows == 0:
                continue
            yield self.path, offset, self._cast(batch, self.path)
            offset += batch.num_rows


def table_audit_set(memory: InMemoryTable, columns: tuple[str, ...],
                    column_types: dict[str, pa.DataType], batch_rows: int,
                    roles: dict[str, str]) -> TableAuditSet:
    return TableAuditSet(DataSource(memory.label), columns, column_types, batch_rows,
                         roles=roles, memory=memory)


def require_local(memory: InMemoryTable) -> None:
    raise UsageError(f"{memory.label}: Spark reads files and catalog tables, not objects in "
                     "this process; use the local engine, or write the audit set to Parquet")
