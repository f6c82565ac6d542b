"""Where the audit set is: one file, a directory or glob of files, or a catalog table.

``--data`` names one of:

- a Parquet, ORC or CSV file;
- a directory of them, read recursively (a Spark or Hive output folder: ``_SUCCESS``,
  ``.crc`` and other names starting with ``_`` or ``.`` are skipped, as Spark skips them),
  where ``key=value`` folders are partition columns usable like any other column (as
  strings; ``__HIVE_DEFAULT_PARTITION__`` is a missing value);
- a glob of files or directories (``data/2024-*/*.parquet``; ``**`` matches any depth),
  whose partition folders are read below the folder where the pattern starts;
- ``table:catalog.db.name``, a table of a Spark catalog (``--engine spark`` only);
- with ``--engine spark``, a URI of a file system Spark reads (``s3a://``, ``abfss://``,
  ``gs://``, ``hdfs://`` ...), listed by Spark.

Both engines list files the same way (:func:`discover`): sorted by their path relative to
the root, so the listing, the data's identity and the order of local reading do not depend
on the file system. The identity of a file set (:meth:`DataSource.fingerprint`) is a
sha256 over the sorted ``(relative path, size, modification time in ms, footer rows)``
listing: Parquet and ORC footers give a file's rows without reading it; hashing the bytes
of a lake is not an option.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fairgate.errors import DataError, UsageError
from fairgate.inputs.files import require_regular_file

Format = Literal["parquet", "orc", "csv"]
TABLE_PREFIX = "table:"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
EXPECTED = "a .parquet, .orc or .csv file, or a directory or glob of them"
_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
    ".orc": "orc",
    ".csv": "csv", ".txt": "csv",
}
# Whole-file compression: gzip CSV is read (pyarrow and Spark both decompress it, as a stream);
# the others are refused by name rather than read as garbage or by one engine only.
_GZIP = ".gz"
_REFUSED_COMPRESSION = (".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".7z", ".br", ".snappy",
                        ".tgz", ".tar", ".z", ".lzma", ".lzo")
_GLOB = re.compile(r"[*?\[]")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_IDENTITY_VERSION = "fairgate data listing v1"


@dataclass(frozen=True)
class DataFile:
    """One file of the audit set, as listed."""

    path: str  # as messages show it: the --data file, or the root joined with ``rel``
    rel: str  # posix path relative to the root (the file name for a single file)
    size: int
    mtime_ms: int
    rows: int | None = None  # from the Parquet or ORC footer; None for CSV
    partition: tuple[tuple[str, str | None], ...] = ()  # key=value folders, in path order
    row_groups: tuple[int, ...] = ()  # Parquet: rows of each row group (where batches start)
    group_bytes: tuple[int, ...] = ()  # Parquet: compressed bytes of each row group


@dataclass(frozen=True)
class DataSource:
    """The audit set's files (sorted) or table, and what identifies them."""

    given: str  # the --data argument, as messages show it
    kind: Literal["files", "table"] = "files"
    format: Format | None = None
    root: str | None = None  # folder the relative paths and partition folders start from
    files: tuple[DataFile, ...] = ()
    partition_columns: tuple[str, ...] = ()
    table: str | None = None
    table_info: dict[str, Any] = field(default_factory=dict)  # provider, version, location
    uri: str | None = None  # a file system URI that Spark lists and reads (no local listing)

    @property
    def single(self) -> bool:
        """One file given by name: messages name it exactly as given."""
        return self.kind == "files" and len(self.files) == 1 and self.files[0].path == self.given

    def fingerprint(self) -> str | None:
        """sha256 of the sorted listing (see the module doc); None without a listing."""
        if not self.files:
            return None
        h = hashlib.sha256(f"{_IDENTITY_VERSION}\n".encode())
        for f in self.files:
            rows = "-" if f.rows is None else str(f.rows)
            h.update(f"{f.rel}\t{f.size}\t{f.mtime_ms}\t{rows}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """``inputs.data`` of report.json (``rows`` is added by the engine)."""
        out: dict[str, Any] = {"path": self.given}
        if self.kind == "table":
            out.update({"table": self.table, **self.table_info})
        else:
            out["format"] = self.format
        if self.files:
            out.update({
                "files": len(self.files), "bytes": sum(f.size for f in self.files),
                "fingerprint": self.fingerprint(),
                "fingerprint_of": "sha256 of the sorted (relative path, size, modification "
                                  "time in ms, Parquet/ORC footer rows) listing",
            })
        if self.partition_columns:
            out["partition_columns"] = list(self.partition_columns)
        return out


# ----------------------------------------------------------------------------- discovery


def is_table(data: str | os.PathLike[str]) -> bool:
    return str(data).startswith(TABLE_PREFIX)


def uri_scheme(data: str | os.PathLike[str]) -> str | None:
    m = _URI.match(str(data))
    return m.group(1).lower() if m else None


def discover(data: str | os.PathLike[str], *, remote_ok: bool = False) -> DataSource:
    """The sorted files (or the table) ``data`` names; DataError if there is nothing to read.

    ``remote_ok``: a URI is accepted as is (the Spark engine lists and reads it, file:// too);
    otherwise a file:// URI is read as its path, and another file system is a usage error
    (the local engine reads local files).
    """
    given = str(data)
    if is_table(given):
        name = given[len(TABLE_PREFIX):].strip()
        if not name:
            raise UsageError(f"--data {given}: name the table, e.g. table:catalog.db.name")
        return DataSource(given, kind="table", table=name)
    scheme = uri_scheme(given)
    if scheme == "file" and not remote_ok:
        return _relabel(discover(_file_uri_path(given)), given)
    if scheme is not None:
        if not remote_ok:
            raise UsageError(f"--data {given}: the local engine reads local files; read "
                             f"{scheme}:// with --engine spark")
        return DataSource(given, uri=given)
    path = Path(given)
    if _GLOB.search(given) and not os.path.lexists(given):
        return _discover_glob(given)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{given}: audit set not found") from None
    except OSError as e:
        raise DataError(f"{given}: cannot read the audit set: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        files = list(_walk(path))
        if not files:
            raise DataError(f"{given}: no data files in this directory (expected {EXPECTED})")
        return _source(given, path, files)
    require_regular_file(path, DataError, what="audit set", expected=EXPECTED)
    fmt = _format_of(path, single=True)
    return _with_footers(DataSource(given, format=fmt, root=str(path.parent), files=(
        _entry(path, given, path.name, ()),)))


def _relabel(src: DataSource, given: str) -> DataSource:
    """A file:// URI read as the local path it names; messages keep the local paths."""
    return replace(src, given=given)


def _file_uri_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise UsageError(f"--data {uri}: a file:// URI of another host; give a local path")
    return unquote(parsed.path)


def _discover_glob(pattern: str) -> DataSource:
    matches = sorted(glob.glob(pattern, recursive=True))
    root = _glob_root(pattern)
    files: list[Path] = []
    for m in matches:
        p = Path(m)
        if _hidden_anywhere(p, root):
            continue
        if p.is_dir():
            files += _walk(p)
        else:
            files.append(p)
    if not files:
        raise DataError(f"{pattern}: no data files match this pattern (expected {EXPECTED})")
    return _source(pattern, root, sorted(set(files)))


def _glob_root(pattern: str) -> Path:
    """The folder before the first component with a wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def hidden(name: str) -> bool:
    """Spark's rule: ``_x`` and ``.x`` are not data (``_col=1`` is a partition folder)."""
    return ((name.startswith("_") and "=" not in name) or name.startswith(".")
            or name.endswith("._COPYING_"))


def _hidden_anywhere(path: Path, root: Path) -> bool:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return any(hidden(part) for part in rel.parts)


def _walk(folder: Path) -> list[Path]:
    out = []
    for base, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not hidden(d))
        out += [Path(base) / n for n in sorted(names) if not hidden(n)]
    return out


def _source(given: str, root: Path, paths: Sequence[Path]) -> DataSource:
    entries = []
    keys: tuple[str, ...] | None = None
    first: DataFile | None = None
    rels = {p: PurePosixPath(*p.relative_to(root).parts).as_posix() if _under(p, root)
            else p.name for p in paths}
    for p in sorted(paths, key=lambda p: rels[p]):
        rel = rels[p]
        part = partition_of(rel)
        entry = _entry(p, str(p), rel, part)
        these = tuple(k for k, _ in part)
        if keys is None:
            keys, first = these, entry
        elif these != keys:
            assert first is not None
            raise DataError(
                f"{given}: partition folders differ: {first.path} has "
                f"{_keys_text(keys)}, {entry.path} has {_keys_text(these)}; every file needs "
                "the same key=value folders")
        entries.append(entry)
    entries.sort(key=lambda e: e.rel)
    formats = {_format_of(Path(e.path)) for e in entries}
    if len(formats) > 1:
        by = {f: next(e.path for e in entries if _format_of(Path(e.path)) == f)
              for f in sorted(formats)}
        raise DataError(f"{given}: mixes formats ({', '.join(f'{f}: {p}' for f, p in by.items())}); "
                        "give files of one format")
    src = DataSource(given, format=formats.pop(), root=str(root), files=tuple(entries),
                     partition_columns=keys or ())
    return _with_footers(src)


def _keys_text(keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}=" for k in keys) if keys else "none"


def _under(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def partition_of(rel: str) -> tuple[tuple[str, str | None], ...]:
    """The ``key=value`` folders of a relative path, unescaped as Hive and Spark write them."""
    out = []
    for part in PurePosixPath(rel).parts[:-1]:
        if "=" not in part:
            continue
        key, _, value = part.partition("=")
        if not key:
            continue
        key = unescape(key)
        out.append((key, None if value == HIVE_NULL else unescape(value)))
    return tuple(out)


def unescape(text: str) -> str:
    """Hive's path escaping undone: ``%3D`` is ``=``, ``%2F`` is ``/``."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _entry(path: Path, shown: str, rel: str, partition: tuple[tuple[str, str | None], ...]) -> DataFile:
    require_regular_file(path, DataError, what="audit set", expected=EXPECTED)
    st = path.stat()
    return DataFile(shown, rel, st.st_size, st.st_mtime_ns // 1_000_000, None, partition)


def format_of_name(name: str) -> Format | None:
    """The format a file name says (``.csv.gz`` is CSV); None when it says none."""
    lower = name.lower()
    if lower.endswith(_GZIP):
        lower = lower[: -len(_GZIP)]
    return _SUFFIXES.get(PurePosixPath(lower).suffix)


def refuse_compression(name: str, shown: str) -> None:
    """DataError for a compressed file fairgate does not read: anything but gzip, and gzip of
    anything but CSV (Parquet and ORC compress inside the file)."""
    lower = name.lower()
    ext = next((e for e in _REFUSED_COMPRESSION if lower.endswith(e)), None)
    if ext is None and lower.endswith(_GZIP) and format_of_name(lower) != "csv":
        ext = _GZIP
    if ext is not None:
        what = "gzip of a file that is not .csv" if ext == _GZIP else f"{ext} compression"
        raise DataError(f"{shown}: {what} is not read; fairgate reads .csv.gz (gzip CSV) and "
                        "Parquet or ORC (compressed inside the file): decompress it, or write "
                        "it as Parquet")


def _format_of(path: Path, single: bool = False) -> Format:
    """From the name, else from the magic bytes; a single unknown file is read as CSV."""
    refuse_compression(path.name, str(path))
    known = format_of_name(path.name)
    if known is not None:
        return known
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataError(f"{path}: cannot read the audit set: {e.strerror or e}") from None
    if head == b"PAR1":
        return "parquet"
    if head[:3] == b"ORC":
        return "orc"
    if single:
        return "csv"
    raise DataError(f"{path}: cannot tell its format (not .parquet, .orc or .csv, and no "
                    "Parquet or ORC magic bytes); give the files with a glob that leaves it out")


def _with_footers(src: DataSource) -> DataSource:
    """Parquet and ORC footers' row counts (a corrupt file fails here, naming it)."""
    if src.format not in ("parquet", "orc"):
        return src
    files = []
    for f in src.files:
        rows, groups, sizes = footer_rows(f.path, src.format)
        files.append(replace(f, rows=rows, row_groups=groups, group_bytes=sizes))
    return replace(src, files=tuple(files))


def footer_rows(path: str, fmt: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Rows of a Parquet or ORC file from its footer; rows and compressed bytes of each
    Parquet row group."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            return int(meta.num_rows), tuple(g.num_rows for g in groups), tuple(
                sum(g.column(j).total_compressed_size for j in range(g.num_columns))
                for g in groups)
        import pyarrow.orc as orc

        return int(orc.ORCFile(path).nrows), (), ()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read the audit set: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

