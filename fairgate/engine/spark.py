"""The Spark engine: the per-batch function on the executors, partials merged on the driver.

Spark reads the audit set (files it lists and splits, or a catalog table) and hands each
task's rows to :class:`_CountTask` as Arrow batches (``mapInArrow``). The task rebuilds
the models once per Python worker (they travel inside the task, which Spark broadcasts),
cuts the rows into the same batches the local engine reads (each Parquet row group from
its first row, each CSV or ORC file from its first row, ``--batch-size`` rows at a time:
a dynamically quantized model decides a row by its batch), runs
:class:`~fairgate.engine.batch.BatchPass` on them and sends back one small
:class:`~fairgate.engine.batch.Partial`: count tables keyed by group values, bottom-S row
samples, the output plans its models settled on, or the error it met, with the file and
row. With many partitions the partials are first merged by a second stage on the
executors (:data:`FAN_IN` at a time), so the driver receives a bounded number of
bounded partials: nothing proportional to the rows.

Failures keep fairgate's exit codes and messages: an input error in a task is caught there
and raised again on the driver as the same class with the same message (naming the file
and row); a Spark failure (a task that keeps dying, a path Spark cannot read) becomes one
line naming what failed and where Spark's log is. When fairgate starts the JVM, the JVM's
own output (log4j, stage progress, Java stack traces, Python workers' stderr) goes to that
log file (``<out>/spark.log``), never to the terminal.

Over Spark Connect (``sc://`` masters, ``SPARK_REMOTE``, a notebook already in Connect
mode) fairgate is a client without a SparkContext or JVM, so the pass uses DataFrame APIs
only (``range``, ``mapInArrow``, ``_metadata``, ``spark_partition_id``, ``conf``): the
parallelism a split plan needs and the merge stage over partitions a client cannot count
are asked of Spark through small queries, and the executors still run the same tasks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.engine.batch import (
    BatchPass,
    CountResult,
    Partial,
    PassSpec,
    adopt_plans,
    failed,
    finish,
    merge,
)
from fairgate.errors import (
    DataError,
    FairgateError,
    InputError,
    InternalError,
    ModelError,
    UsageError,
)
from fairgate.inputs.audit import AuditSet, check_schema
from fairgate.inputs.data_source import (
    DataFile,
    DataSource,
    footer_rows,
    format_of_name,
    hidden,
    partition_of,
    refuse_compression,
)
from fairgate.inputs.model import Predictor

if TYPE_CHECKING:  # not on the executors: Spark's workers import this module
    from fairgate.engine.run import EngineOptions

FILE, ROW, BLOCK = "__fairgate_file", "__fairgate_row", "__fairgate_block"
FAN_IN = 32  # partials merged by one task of the executors' merge stage
INSTALL = "pip install 'fairgate[spark]'"
CONNECT_INSTALL = "pip install 'fairgate[spark-connect]'"
CONNECT_TIMEOUT = 10  # seconds to reach a Spark Connect server
# test hook: crash-once | crash-always (the worker of partition 0 dies) | bad-teacher (every
# executor is handed bytes that onnxruntime cannot load as the teacher)
FAULT_CONF = "spark.fairgate.test.fault"
READER_CONF = "spark.fairgate.reader"  # arrow (default for local paths) | spark
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
_CSV_NULLS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                        "1.#IND", "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"])
_CSV_TRUE = frozenset(["1", "True", "TRUE", "true"])
_CSV_FALSE = frozenset(["0", "False", "FALSE", "false"])
_GLOB_CHARS = re.compile(r"([\\{}\[\]*?])")

_started_log: Path | None = None  # the file the JVM fairgate started writes to


# ----------------------------------------------------------------------------- the session


class Session(NamedTuple):
    """A Spark session for one pass, and how to leave it as it was found."""

    spark: Any
    log: Path | None  # the file the JVM writes to (None if fairgate did not start it)
    restore: list[tuple[str, Any]]  # settings changed on a running session, to restore
    close: Callable[[], None] | None = None  # ends a session fairgate opened for this pass
    remote: str | None = None  # Spark Connect: the server, sc://host:port (no token)


def spark_session(options: EngineOptions) -> Session:
    """The session for a pass.

    ``SparkSession.builder.getOrCreate()``: under ``spark-submit``, in a Databricks job or a
    notebook the running session is used (a classic one, or a Spark Connect one as in
    serverless notebooks); otherwise fairgate starts one (``--spark-master``, default
    ``local[*]``). An ``sc://`` master or ``SPARK_REMOTE`` connects to that Spark Connect
    server with a session of fairgate's own, closed after the pass.
    """
    global _started_log
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError(f"--engine spark needs pyspark, which is not installed here: {INSTALL} "
                         "(it needs Java 17 too)") from None
    master = options.spark_master
    remote = _remote(master)
    if remote:
        return _connect(remote, options)
    if master is None and _connect_mode():  # a notebook's Spark Connect session
        spark = SparkSession.getActiveSession()
        if spark is not None:
            return Session(spark, None, _set_confs(spark, options.spark_conf), None,
                           _remote_of(spark))
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:  # a notebook, a job, an earlier run
        spark = SparkSession.builder.getOrCreate()
        running = spark.sparkContext.master
        if master is not None and master != running:
            raise UsageError(f"--spark-master {master}: a Spark session is already running "
                             f"with master {running}; leave --spark-master out to use it")
        return Session(spark, _started_log, _set_confs(spark, options.spark_conf))
    builder = SparkSession.builder.appName("fairgate").config("spark.ui.showConsoleProgress",
                                                               "false")
    if master is not None:
        builder = builder.master(master)
    for key, value in options.spark_conf:
        builder = builder.config(key, value)
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit owns the JVM and its log
    settings = dict(options.spark_conf)
    local = (master or settings.get("spark.master") or "local").startswith("local")
    if local and not submitted and "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run fairgate's interpreter
    if local and not submitted and "spark.driver.extraJavaOptions" not in settings:
        # a local JVM that fairgate starts mostly schedules (pyarrow reads, onnxruntime
        # infers): the quick JIT tier and one GC thread start it in about half the time
        builder = builder.config("spark.driver.extraJavaOptions", LOCAL_JVM_OPTIONS)
    if SparkContext._gateway is not None:  # a stopped session's JVM: its output stays put
        return Session(_get_or_create(builder, _started_log), _started_log, [])
    log = None if submitted else options.spark_log
    spark = _start(builder, log)
    if log is not None:
        _started_log = log
        spark.sparkContext.setLogLevel("WARN")
    return Session(spark, log, [])


def _remote(master: str | None) -> str | None:
    """The Spark Connect server asked for: an ``sc://`` ``--spark-master``, else
    ``SPARK_REMOTE`` (which pyspark itself would follow, whatever the master says)."""
    env = os.environ.get("SPARK_REMOTE") or None
    if master is not None and master.startswith("sc://"):
        return master
    if env is not None and not env.startswith("sc://"):
        raise UsageError(f"SPARK_REMOTE={env}: fairgate connects to a Spark Connect server by "
                         "its URL, sc://host:port; to start a local Spark, unset SPARK_REMOTE "
                         "and give --spark-master local[N]")
    if master is not None and env is not None:
        raise UsageError(f"--spark-master {master} and SPARK_REMOTE={public_url(env)}: pyspark "
                         "would connect to SPARK_REMOTE's Spark Connect server; unset "
                         "SPARK_REMOTE to use --spark-master")
    return env if master is None else None


def _connect_mode() -> bool:
    """Whether this process's pyspark is in Spark Connect mode (a Connect session is running,
    or the package is the Connect-only client)."""
    if os.environ.get("SPARK_CONNECT_MODE_ENABLED"):
        return True
    try:
        from pyspark.util import is_remote_only
    except ImportError:  # Spark 3.5
        return False
    return bool(is_remote_only())


def public_url(url: str) -> str:
    """A Spark Connect URL without its parameters (``/;token=...;user_id=...``): what
    reports and messages show."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.split(';')[0]}"


def _remote_of(spark: Any) -> str | None:
    """The server a running Spark Connect session talks to, ``sc://host:port``."""
    builder = getattr(getattr(spark, "client", None), "_builder", None)
    url = getattr(builder, "url", None)
    if url is None or url.hostname is None:
        return None
    return f"sc://{url.hostname}:{url.port or 15002}"


def _connect(remote: str, options: EngineOptions) -> Session:
    """A session of fairgate's own on the Spark Connect server ``remote``, closed after the
    pass (the server keeps running; pyspark's Connect mode is left as it was found)."""
    shown = public_url(remote)
    try:
        import pyspark.sql.connect.session  # noqa: F401 - the client: grpcio, protobuf, zstandard
    except ImportError as e:
        raise UsageError(f"Spark Connect ({shown}) needs pyspark's Connect client, which is "
                         f"not installed here: {CONNECT_INSTALL} ({_first(e)})") from None
    try:
        parts = urlsplit("http" + remote[2:])
        host, port = parts.hostname, parts.port or 15002
    except ValueError as e:
        raise UsageError(f"{shown}: not a Spark Connect URL, sc://host:port ({e})") from None
    if not host:
        raise UsageError(f"{shown}: not a Spark Connect URL, sc://host:port (no host)")
    try:  # a server that is not there: gRPC would retry for minutes
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise UsageError(f"Spark Connect ({shown}): cannot reach {host}:{port} "
                         f"({e.strerror or e}); is the Spark Connect server running?") from None
    from pyspark.sql import SparkSession

    mode = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    spark: Any = None

    def close() -> None:
        if spark is not None:
            with contextlib.suppress(Exception):
                spark.stop()
        if mode is None:  # set by pyspark for the session; a classic session may follow
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        else:
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = mode

    try:
        spark = SparkSession.builder.remote(remote).create()
        spark.version  # noqa: B018 - the first call: does the server answer (and accept us)?
    except Exception as e:
        close()
        raise UsageError(f"Spark Connect ({shown}): cannot connect ({_first(e)})") from None
    try:
        _set_confs(spark, options.spark_conf, where="on the Spark Connect server")
    except UsageError:
        close()
        raise
    return Session(spark, None, [], close, f"sc://{host}:{port}")


def _start(builder: Any, log: Path | None) -> Any:
    """``builder.getOrCreate()``; the JVM it launches inherits ``log`` as stdout and stderr."""
    if log is None:
        return _get_or_create(builder)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:
        raise UsageError(f"{log}: cannot write Spark's log there ({e.strerror or e})") from None
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        return _get_or_create(builder, log)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for x in (*saved, fd):
            os.close(x)


def _get_or_create(builder: Any, log: Path | None = None) -> Any:
    try:
        return builder.getOrCreate()
    except Exception as e:
        where = f"; Spark's log: {log}" if log is not None else ""
        raise UsageError(f"Spark did not start ({_first(e)}); Spark 3.5+ needs Java 17 or later "
                         f"(`java -version`, JAVA_HOME){where}") from None


def _set_confs(spark: Any, confs: Iterable[tuple[str, str]],
               where: str = "when the session starts") -> list[tuple[str, Any]]:
    """Set runtime settings on a running session; the previous values, to restore."""
    previous = []
    for key, value in confs:
        try:
            old = spark.conf.get(key, None)
            if old == value:  # already so (e.g. a static setting the session started with)
                continue
            spark.conf.set(key, value)
        except Exception as e:
            raise UsageError(f"--spark-conf {key}: cannot be changed in the running Spark "
                             f"session ({_first(e)}); set it {where}") from None
        previous.append((key, old))
    return previous


def _restore(spark: Any, previous: list[tuple[str, Any]]) -> None:
    for key, old in reversed(previous):
        with contextlib.suppress(Exception):
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def _is_connect(spark: Any) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FileInfo:
    """What a task needs to know about a file it reads rows of."""

    index: int  # in the sorted listing: errors met first in that order win
    path: str  # as messages show it
    partition: tuple[tuple[str, str | None], ...] = ()
    row_groups: tuple[int, ...] = ()  # Parquet row group starts (batches start there)


@dataclass(frozen=True)
class Reading:
    """How Spark reads the audit set, and what the driver knows about its files."""

    df: Any
    source: DataSource
    files: dict[tuple[str, str, str], FileInfo]
    format: str | None
    partition_columns: tuple[str, ...]
    csv_types: dict[str, pa.DataType] = field(default_factory=dict)
    rows_known: bool = True  # whether rows carry their row in the file (Parquet row_index)


def file_key(path: str) -> tuple[str, str, str]:
    """A file as Spark's ``_metadata.file_path`` (a URI) and the listing (a path) name it."""
    parts = urlsplit(path)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive)
        return ("file", "", os.path.abspath(path))
    return (parts.scheme.lower(), parts.netloc, unquote(parts.path))


def spark_path(path: str) -> str:
    """A path as Spark reads it: absolute, with Hadoop's glob characters escaped."""
    if urlsplit(path).scheme and len(urlsplit(path).scheme) > 1:
        return _GLOB_CHARS.sub(r"\\\1", path)
    return "file://" + _GLOB_CHARS.sub(r"\\\1", os.path.abspath(path))


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _reading(spark: Any, source: DataSource, spec: PassSpec, roles: Mapping[str, str],
             text_columns: tuple[str, ...], batch_rows: int) -> Reading:
    from pyspark.sql import functions as F

    if source.kind == "table":
        return _table_reading(spark, source, spec, roles)
    if source.uri is not None:
        source = _spark_listing(spark, source)
    audit = AuditSet(source, spec.columns, spec.column_types, batch_rows,
                     text_columns=text_columns, roles=dict(roles))
    schema = audit.check_columns()  # the local engine's checks and messages
    fmt = source.format
    paths = [spark_path(f.path) for f in source.files]
    reader = spark.read
    if fmt == "csv":
        from pyspark.sql.types import StringType, StructField, StructType

        header = [n for n in schema.names if n not in source.partition_columns]
        reader = reader.options(header="true", multiLine="true", escape='"', mode="FAILFAST",
                                enforceSchema="false").schema(
            StructType([StructField(n, StringType()) for n in header]))
    df = reader.format(fmt).load(paths)
    wanted = [c for c in spec.columns if c not in source.partition_columns]
    meta = [F.col("_metadata.file_path").alias(FILE)]
    meta.append(F.col("_metadata.row_index").alias(ROW) if fmt == "parquet"
                else F.col("_metadata.file_block_start").alias(BLOCK))
    df = df.select(*[F.col(_quote(c)) for c in wanted], *meta)
    files = {file_key(f.path): FileInfo(i, f.path, f.partition, _starts(f.row_groups))
             for i, f in enumerate(source.files)}
    csv_types = audit.csv_types(schema) or {}
    return Reading(df, source, files, fmt, source.partition_columns, csv_types)


def _starts(groups: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(x) for x in np.cumsum([0, *groups[:-1]])) if groups else ()


def _spark_listing(spark: Any, source: DataSource) -> DataSource:
    """The files of a URI, listed by Spark (no scan): path, size, modification time; the
    same listing as :func:`fairgate.inputs.data_source.discover` makes of local files."""
    from pyspark.sql import functions as F

    uri = str(source.uri)
    rows = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(uri)
            .select("path", "length", F.unix_millis("modificationTime").alias("mtime"))
            .collect())
    root = _uri_root(uri, [r["path"] for r in rows])
    entries = []
    for r in rows:
        path = _decoded(r["path"])
        rel = _relative(path, root)
        if any(hidden(part) for part in PurePosixPath(rel).parts):
            continue
        entries.append(DataFile(path, rel, int(r["length"]), int(r["mtime"]), None,
                                partition_of(rel)))
    if not entries:
        raise DataError(f"{source.given}: no data files there")
    entries.sort(key=lambda e: e.rel)
    for e in entries:
        refuse_compression(e.rel.rsplit("/", 1)[-1], e.path)
    formats = {format_of_name(e.rel.rsplit("/", 1)[-1]) for e in entries}
    if None in formats or len(formats) > 1:
        raise DataError(f"{source.given}: the files must all be .parquet, .orc or .csv "
                        f"(found {', '.join(sorted(str(f) for f in formats))})")
    fmt = formats.pop()
    keys = {tuple(k for k, _ in e.partition) for e in entries}
    if len(keys) > 1:
        raise DataError(f"{source.given}: partition folders differ between files; every file "
                        "needs the same key=value folders")
    if fmt in ("parquet", "orc"):
        entries = _footers(spark, entries, fmt)
    return DataSource(source.given, format=fmt, root=root, files=tuple(entries),
                      partition_columns=keys.pop())


def _footers(spark: Any, entries: list[DataFile], fmt: str) -> list[DataFile]:
    """Footer row counts: read here for local files, counted by Spark (from the footers,
    no column is read) for other file systems."""
    from dataclasses import replace

    if all(file_key(e.path)[0] == "file" for e in entries):
        out = []
        for e in entries:
            rows, groups, sizes = footer_rows(file_key(e.path)[2], fmt)
            out.append(replace(e, rows=rows, row_groups=groups, group_bytes=sizes))
        return out
    from pyspark.sql import functions as F

    counted = (spark.read.format(fmt).load([spark_path(e.path) for e in entries])
               .groupBy(F.col("_metadata.file_path").alias("p")).count().collect())
    by = {file_key(r["p"]): int(r["count"]) for r in counted}
    return [replace(e, rows=by.get(file_key(e.path), 0)) for e in entries]


def _decoded(uri: str) -> str:
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.scheme == "file":
        return path
    return f"{parts.scheme}://{parts.netloc}{path}"


def _uri_root(uri: str, listed: Sequence[str]) -> str:
    """The folder relative paths start from: where a glob starts, the folder given, or a
    single file's folder."""
    base = _decoded(uri if "://" in uri else "file://" + uri)
    parts = base.split("/")
    for i, part in enumerate(parts):
        if re.search(r"[*?\[{]", part):
            return "/".join(parts[:i])
    decoded = [_decoded(p) for p in listed]
    if decoded == [base.rstrip("/")]:
        return base.rsplit("/", 1)[0]
    return base.rstrip("/")


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]


def _table_reading(spark: Any, source: DataSource, spec: PassSpec,
                   roles: Mapping[str, str]) -> Reading:
    from pyspark.sql import functions as F

    name = str(source.table)
    df = spark.table(name)
    names = list(df.columns)
    nested = {f.name: f.dataType.simpleString() for f in df.schema.fields
              if f.dataType.typeName() in ("array", "struct", "map")}
    check_schema(source.given, names, nested, spec.columns, roles)
    info, listing = _table_info(spark, name)
    cols = [F.col(_quote(c)) for c in spec.columns]
    files: dict[tuple[str, str, str], FileInfo] = {}
    rows_known = True
    try:
        df = df.select(*cols, F.col("_metadata.file_path").alias(FILE),
                       F.col("_metadata.row_index").alias(ROW))
        df.schema  # noqa: B018 - resolves the plan: a table without row_index fails here
    except Exception:
        rows_known = False
        try:
            df = spark.table(name).select(*cols, F.col("_metadata.file_path").alias(FILE),
                                          F.col("_metadata.file_block_start").alias(BLOCK))
            df.schema  # noqa: B018
        except Exception:
            df = spark.table(name).select(*cols)
    if listing is not None:
        files = {file_key(f.path): FileInfo(i, f.path, (), _starts(f.row_groups))
                 for i, f in enumerate(listing.files)}
    src = DataSource(source.given, kind="table", format=listing.format if listing else None,
                     files=listing.files if listing else (), table=name, table_info=info)
    return Reading(df, src, files, src.format, (), rows_known=rows_known)


def _table_info(spark: Any, name: str) -> tuple[dict[str, Any], DataSource | None]:
    """Provider, location and, when the catalog keeps one, the version or snapshot; the
    listing of a table whose files are local (its fingerprint, as for a folder)."""
    info: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        for r in spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect():
            key = str(r[0]).strip()
            if key in ("Provider", "Location", "Type"):
                info[key.lower()] = str(r[1]).strip()
    info["version"] = None
    with contextlib.suppress(Exception):  # Delta Lake
        row = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").collect()[0]
        info["version"], info["version_from"] = int(row["version"]), "DESCRIBE HISTORY (Delta)"
    if info["version"] is None:
        with contextlib.suppress(Exception):  # Apache Iceberg
            row = spark.sql(f"SELECT snapshot_id FROM {name}.snapshots ORDER BY committed_at "
                            "DESC LIMIT 1").collect()[0]
            info["version"], info["version_from"] = int(row[0]), "snapshots (Iceberg)"
    if info["version"] is None:
        info["version_from"] = "the catalog keeps no version of this table"
    listing = None
    location = info.get("location", "")
    if location.startswith("file:") and info.get("provider") in ("parquet", "orc", "csv", "hive"):
        from fairgate.inputs.data_source import discover

        with contextlib.suppress(FairgateError):
            listing = discover(_decoded(location))
    return info, listing


# ----------------------------------------------------------------------------- pyarrow on the executors


@dataclass(frozen=True)
class Split:
    """Part of the audit set one task reads: a file, or some of a Parquet file's row groups."""

    file: int  # index in the sorted listing
    groups: tuple[int, ...] | None  # Parquet row groups; None: the whole file
    bytes: int


def plan_splits(spark: Any, source: DataSource) -> list[list[Split]]:
    """The files cut into splits and packed into partitions as Spark packs files: splits of at
    most ``min(maxPartitionBytes, max(openCostInBytes, bytes / minPartitionNum))`` (Parquet
    at row-group boundaries, CSV and ORC whole), biggest first into the current partition
    while it has room, each split costing its bytes plus ``openCostInBytes``. The same
    settings (``spark.sql.files.*``) tune both readers."""
    max_bytes = _bytes(spark.conf.get("spark.sql.files.maxPartitionBytes", "128m"))
    open_cost = _bytes(spark.conf.get("spark.sql.files.openCostInBytes", "4m"))
    minimum = spark.conf.get("spark.sql.files.minPartitionNum", None)
    parallelism = int(minimum) if minimum else _parallelism(spark)
    total = sum(f.size + open_cost for f in source.files)
    max_split = max(1, min(max_bytes, max(open_cost, total // max(parallelism, 1))))
    splits = []
    for i, f in enumerate(source.files):
        if source.format != "parquet":
            splits.append(Split(i, None, f.size))
            continue
        current: list[int] = []
        size = 0
        for g, b in enumerate(f.group_bytes):
            if current and size + b > max_split:
                splits.append(Split(i, tuple(current), size))
                current, size = [], 0
            current.append(g)
            size += b
        if current:
            splits.append(Split(i, tuple(current), size))
    partitions: list[list[Split]] = []
    current_part: list[Split] = []
    size = 0
    for split in sorted(splits, key=lambda x: -x.bytes):
        if current_part and size + split.bytes > max_split:
            partitions.append(current_part)
            current_part, size = [], 0
        current_part.append(split)
        size += split.bytes + open_cost
    if current_part:
        partitions.append(current_part)
    # within a task, read in the order of the listing: errors are met as locally
    return [sorted(part, key=lambda x: (x.file, x.groups or ())) for part in partitions]


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", str(text).lower())
    if not m:
        raise UsageError(f"Spark setting {text!r}: not a size in bytes")
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")


def _parallelism(spark: Any) -> int:
    if not _is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    # Spark Connect has no SparkContext: a range of unstated partitions is cut into the
    # parallelism file scans plan with (the leaf nodes' default parallelism)
    from pyspark.sql import functions as F

    ids = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("id"))
    return int(ids.agg(F.max("id")).collect()[0][0]) + 1


class _ReadTask:
    """``mapInArrow``'s function when the executors read the files with pyarrow: the ids of
    this task's partitions in, one pickled Partial out."""

    def __init__(self, spec: PassSpec, models: Sequence[Predictor | None], audit: AuditSet,
                 csv_types: dict[str, pa.DataType] | None, partitions: list[list[Split]],
                 fault: str | None) -> None:
        self.spec = spec
        self.models = [_for_task(m) for m in models]
        self.audit = audit
        self.csv_types = csv_types
        self.partitions = partitions
        self.fault = fault
        # where executors open the files (messages keep the paths as listed)
        self.locations = [os.path.abspath(f.path) for f in audit.source.files]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _fault(self.fault)
        teacher, student, reference = self.models
        assert teacher is not None and student is not None
        audit = self.audit
        at = (0, 0)
        try:
            _load(self.models, self.fault)
            p = BatchPass(self.spec, teacher, student, reference, audit.path, parallel=False)
            for batch in batches:
                for pid in batch.column(0).to_pylist():
                    for split in self.partitions[pid]:
                        f = audit.source.files[split.file]
                        for path, offset, rows in audit.file_batches(
                                f, self.csv_types, split.groups, self.locations[split.file]):
                            at = (split.file, offset)
                            p.add(rows, path, offset)
            partial = p.partial()
        except FairgateError as e:
            partial = failed(e, at)
        yield _row(partial)


def _load(models: Sequence[Predictor | None], fault: str | None) -> None:
    """Make the models' onnxruntime sessions on this executor (once per worker process): a
    model that cannot load here ends the gate with the driver's message for it, naming the
    Spark partition."""
    from pyspark import TaskContext

    for m in models:
        load = getattr(m, "load", None)
        if m is None or load is None:
            continue
        if fault == "bad-teacher" and m.role == "teacher":
            m._model_bytes = b"\x08\x07not an ONNX model"  # type: ignore[attr-defined]
        try:
            load()
        except ModelError as e:
            ctx = TaskContext.get()
            where = f"Spark partition {ctx.partitionId()}" if ctx is not None else "a Spark task"
            raise ModelError(f"{e} (on the executor of {where})") from None


def _fault(fault: str | None) -> None:
    """The test hook (see FAULT_CONF): the worker of partition 0 dies, once or always."""
    if fault not in ("crash-once", "crash-always"):
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None and ctx.partitionId() == 0 and (
            fault == "crash-always" or ctx.attemptNumber() == 0):
        os._exit(86)


# ----------------------------------------------------------------------------- the task


class _CountTask:
    """``mapInArrow``'s function: one Spark task's batches in, one pickled Partial out."""

    def __init__(self, spec: PassSpec, models: Sequence[Predictor | None], reading: Reading,
                 batch_rows: int, source: str, fault: str | None) -> None:
        self.spec = spec
        self.models = [_for_task(m) for m in models]
        self.files = reading.files
        self.format = reading.format
        self.partition_columns = reading.partition_columns
        self.csv_types = reading.csv_types
        self.rows_known = reading.rows_known
        self.batch_rows = batch_rows
        self.source = source
        self.fault = fault

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        _fault(self.fault)
        ctx = TaskContext.get()
        partition = ctx.partitionId() if ctx is not None else 0
        teacher, student, reference = self.models
        assert teacher is not None and student is not None
        at = (0, 0)
        try:
            _load(self.models, self.fault)
            p = BatchPass(self.spec, teacher, student, reference, self.source, parallel=False)
            for block, path, offset, where in _Blocks(self, partition).feed(batches):
                at = where  # where the error below, if any, was met
                p.add(block, path, offset)
            partial = p.partial()
        except FairgateError as e:
            partial = failed(e, at)
        yield _row(partial)


def _for_task(model: Predictor | None) -> Predictor | None:
    """A copy that runs with one onnxruntime thread: a Spark task has one core."""
    if model is None or not hasattr(model, "ort_threads"):
        return model
    out = copy.copy(model)
    out.ort_threads = 1
    return out


def _row(partial: Partial) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([pickle.dumps(partial, protocol=5)],
                                                pa.binary())], names=["partial"])


class _MergeTask:
    """The executors' merge stage: many partials in, one out."""

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        blobs = [b for batch in batches for b in batch.column(0).to_pylist()]
        if blobs:  # a shuffle's empty partition sends nothing
            yield _row(merge(pickle.loads(b) for b in blobs))


@dataclass
class _Pending:
    key: tuple[Any, ...]
    path: str
    offset: int
    at: tuple[int, int]
    next_row: int
    parts: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0


class _Blocks:
    """Cuts a task's rows into the local engine's batches: each Parquet row group, or each
    CSV or ORC file, ``batch_rows`` rows at a time from its first row."""

    def __init__(self, task: _CountTask, partition: int) -> None:
        self.task = task
        self.partition = partition
        self.pending: _Pending | None = None
        self.counters: dict[tuple[str, int], int] = {}  # rows seen per (file, split start)
        self.unknown: dict[str, FileInfo] = {}

    def feed(self, batches: Iterable[pa.RecordBatch]
             ) -> Iterator[tuple[pa.RecordBatch, str, int, tuple[int, int]]]:
        for batch in batches:
            if batch.num_rows:
                yield from self._batch(batch)
        if self.pending is not None:
            yield self._flush()

    def _info(self, path: str | None) -> FileInfo:
        if path is None:
            return FileInfo(1 << 30, f"{self.task.source} (Spark partition {self.partition})")
        found = self.task.files.get(file_key(path))
        if found is not None:
            return found
        if path not in self.unknown:
            self.unknown[path] = FileInfo(1 << 30, _decoded(path))
        return self.unknown[path]

    def _batch(self, batch: pa.RecordBatch
               ) -> Iterator[tuple[pa.RecordBatch, str, int, tuple[int, int]]]:
        names = batch.schema.names
        n = batch.num_rows
        if FILE in names:
            enc = pc.dictionary_encode(batch.column(FILE))
            codes = enc.indices.to_numpy(zero_copy_only=False)
            paths = enc.dictionary.to_pylist()
        else:
            codes, paths = np.zeros(n, dtype=np.int64), [None]
        payload = batch.select([c for c in names if c not in (FILE, ROW, BLOCK)])
        if ROW in names:
            rows = batch.column(ROW).to_numpy(zero_copy_only=False).astype(np.int64)
            splits = np.zeros(n, dtype=np.int64)
        else:
            splits = (batch.column(BLOCK).to_numpy(zero_copy_only=False).astype(np.int64)
                      if BLOCK in names else np.zeros(n, dtype=np.int64))
            rows = np.empty(n, dtype=np.int64)
        # runs of one file and split, in the order Spark read them
        change = np.flatnonzero((codes[1:] != codes[:-1]) | (splits[1:] != splits[:-1])) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [n]])
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            info = self._info(paths[codes[s]])
            split = int(splits[s])
            if ROW not in names:
                key = (info.path, split)
                first = self.counters.get(key, 0)
                rows[s:e] = np.arange(first, first + (e - s))
                self.counters[key] = first + (e - s)
            yield from self._run(payload.slice(s, e - s), info, split, rows[s:e])

    def _run(self, payload: pa.RecordBatch, info: FileInfo, split: int, rows: np.ndarray
             ) -> Iterator[tuple[pa.RecordBatch, str, int, tuple[int, int]]]:
        """One file's consecutive rows: cut where a batch of the local engine ends."""
        size = self.task.batch_rows
        if info.row_groups:
            group = np.searchsorted(np.asarray(info.row_groups), rows, side="right") - 1
            base = np.asarray(info.row_groups)[group]
        else:
            group = np.zeros(len(rows), dtype=np.int64)
            base = np.zeros(len(rows), dtype=np.int64)
        block = (rows - base) // size
        jump = np.flatnonzero((group[1:] != group[:-1]) | (block[1:] != block[:-1])
                              | (rows[1:] != rows[:-1] + 1)) + 1
        starts = np.concatenate([[0], jump]).tolist()
        ends = np.concatenate([jump, [len(rows)]]).tolist()
        for s, e in zip(starts, ends, strict=True):
            key = (info.path, split, int(group[s]), int(block[s]))
            first = int(rows[s])
            if self.pending is not None and (self.pending.key != key
                                             or self.pending.next_row != first):
                yield self._flush()
            if self.pending is None:
                path, offset = info.path, first
                if split and not self.task.rows_known:  # rows counted from a split's start
                    path = f"{info.path} (the part from byte {split})"
                self.pending = _Pending(key, path, offset, (info.index, first), first)
            piece = self._prepare(payload.slice(s, e - s), info)
            self.pending.parts.append(piece)
            self.pending.rows += e - s
            self.pending.next_row = int(rows[e - 1]) + 1

    def _flush(self) -> tuple[pa.RecordBatch, str, int, tuple[int, int]]:
        p = self.pending
        assert p is not None
        self.pending = None
        batch = (p.parts[0] if len(p.parts) == 1
                 else pa.Table.from_batches(p.parts).combine_chunks().to_batches()[0])
        return batch, p.path, p.offset, p.at

    def _prepare(self, payload: pa.RecordBatch, info: FileInfo) -> pa.RecordBatch:
        """CSV text read as the local engine reads it, then the partition columns."""
        task = self.task
        if task.csv_types:
            payload = _csv_values(payload, task.csv_types, info.path)
        if not task.partition_columns:
            return payload
        values = dict(info.partition)
        n = payload.num_rows
        arrays, names = [], []
        for name in task.spec.columns:
            if name in task.partition_columns:
                v = values.get(name)
                arrays.append(pa.nulls(n, pa.string()) if v is None
                              else pa.repeat(pa.scalar(v, pa.string()), n))
            else:
                arrays.append(payload.column(name))
            names.append(name)
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _csv_values(batch: pa.RecordBatch, types: Mapping[str, pa.DataType],
                path: str) -> pa.RecordBatch:
    """Spark's CSV text (every column read as a string) as pyarrow's CSV reader gives it:
    text columns never missing (an empty field is ""), other columns missing on pyarrow's
    null values, then parsed to the driver's types."""
    arrays = []
    for name in batch.schema.names:
        col = batch.column(name)
        want = types.get(name, pa.string())
        if pa.types.is_string(want) or pa.types.is_large_string(want):
            arrays.append(col.fill_null(""))
            continue
        is_null = pc.or_kleene(pc.is_null(col), pc.is_in(col, pa.array(sorted(_CSV_NULLS))))
        text = pc.if_else(is_null, pa.scalar(None, pa.string()), col)
        try:
            if pa.types.is_boolean(want):
                truth = pc.is_in(text, pa.array(sorted(_CSV_TRUE)))
                false = pc.is_in(text, pa.array(sorted(_CSV_FALSE)))
                bad = pc.and_(pc.invert(pc.or_(truth, false)), pc.invert(pc.is_null(text)))
                if pc.any(bad).as_py():
                    raise pa.ArrowInvalid("a value is not a CSV boolean")
                value = pc.if_else(pc.is_null(text), pa.scalar(None, pa.bool_()), truth)
            else:
                value = pc.cast(text, want)
        except pa.ArrowException as e:
            raise DataError(f"{path}: cannot read the audit set: CSV conversion error to {want}: "
                            f"{_first(e)}") from None
        arrays.append(value)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


# ----------------------------------------------------------------------------- the pass


def count_spark(source: DataSource, spec: PassSpec, models: Sequence[Predictor | None],
                batch_rows: int, roles: Mapping[str, str], text_columns: tuple[str, ...],
                options: EngineOptions) -> tuple[CountResult, dict[str, Any], dict[str, Any]]:
    """Count on Spark: the result, ``inputs.data`` (as the local engine gives it for the same
    files) and ``run.engine``."""
    started = time.perf_counter()
    spark, log, restore, close, remote = spark_session(options)
    ready = time.perf_counter()
    where = (f"; Spark's log: {log}" if log is not None
             else "; Spark's log is the Spark Connect server's" if remote else "")
    try:
        with _spark_errors(source.given, where):
            restore += _set_confs(spark, [("spark.sql.execution.arrow.maxRecordsPerBatch",
                                           str(batch_rows))])
            fault = spark.conf.get(FAULT_CONF, None)
            reader = spark.conf.get(READER_CONF, None) or "arrow"
            if reader not in ("arrow", "spark"):
                raise UsageError(f"--spark-conf {READER_CONF}={reader}: arrow or spark")
            partitions: int | None
            if source.kind == "files" and source.uri is None and reader == "arrow":
                audit = AuditSet(source, spec.columns, spec.column_types, batch_rows,
                                 text_columns=text_columns, roles=dict(roles))
                csv_types = audit.csv_types(audit.check_columns())
                plan = plan_splits(spark, source)
                partitions = len(plan)
                described = source.describe()
                task: Any = _ReadTask(spec, models, audit, csv_types, plan, fault)
                ids = spark.range(0, max(partitions, 1), 1, max(partitions, 1))
                partials = ids.mapInArrow(task, "partial binary")
            else:
                reader = "spark"
                reading = _reading(spark, source, spec, roles, text_columns, batch_rows)
                described = reading.source.describe()
                task = _CountTask(spec, models, reading, batch_rows, source.given, fault)
                partials = reading.df.mapInArrow(task, "partial binary")
                partitions = None if _is_connect(spark) else reading.df.rdd.getNumPartitions()
            if partitions is None:
                # Spark Connect cannot tell a DataFrame's partitions before it runs (there is
                # no RDD): partials are merged FAN_IN partitions at a time, by partition id
                from pyspark.sql import functions as F

                fold = F.floor(F.spark_partition_id() / FAN_IN).alias("fold")
                partials = (partials.select(fold, "partial").repartition("fold")
                            .select("partial").mapInArrow(_MergeTask(), "partial binary"))
            elif partitions > FAN_IN:
                partials = partials.repartition(math.ceil(partitions / FAN_IN)).mapInArrow(
                    _MergeTask(), "partial binary")
            collected = [bytes(r[0]) for r in partials.collect()]
            merged = merge(pickle.loads(b) for b in collected)
            engine = _engine_info(spark, merged.tasks if partitions is None else partitions, log,
                                  remote)
            engine.update(reader=reader, partials=len(collected),
                          partial_bytes=sum(len(b) for b in collected),
                          session_seconds=ready - started,
                          pass_seconds=time.perf_counter() - ready)
    finally:
        _restore(spark, restore)
        if close is not None:
            close()
    present = {role: m for role, m in zip(("teacher", "student", "reference student"), models,
                                          strict=True) if m is not None}
    if merged.error is None:
        adopt_plans(present, merged.plans)
    result = finish(merged, spec, list(present.values()), source.given)
    return result, described, engine


def _engine_info(spark: Any, partitions: int, log: Path | None,
                 remote: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "spark", "spark_version": spark.version}
    if _is_connect(spark):  # the server's master; its executors are not known to a client
        master = spark.conf.get("spark.master", None)
        out.update(master=master, connect=True, remote=remote,
                   executors=1 if master and master.startswith("local") else None)
    else:
        sc = spark.sparkContext
        out["master"] = sc.master
        executors = None
        with contextlib.suppress(Exception):
            executors = int(sc._jsc.sc().getExecutorIds().size())
        out["executors"] = 1 if sc.master.startswith("local") else executors
    out["partitions"] = partitions
    out["log"] = str(log) if log is not None else None
    return out


@contextlib.contextmanager
def _spark_errors(given: str, where: str) -> Iterator[None]:
    """Spark's exceptions as fairgate's: one line, the exit code, ``where`` the log is."""
    try:
        yield
    except FairgateError:
        raise
    except Exception as e:
        raise _translate(e, given, where) from None


def _translate(e: BaseException, given: str, where: str) -> FairgateError:
    text = str(e)
    name = type(e).__name__
    if "No module named 'fairgate'" in text:
        return UsageError("the Spark executors cannot import fairgate: install the same "
                          "fairgate on every node (or ship it with --py-files)" + where)
    if name == "AnalysisException" or "[PATH_NOT_FOUND]" in text or "TABLE_OR_VIEW_NOT_FOUND" in text:
        return DataError(f"{given}: Spark cannot read it: {_first(e)}")
    if name == "PythonException":
        return InternalError(f"a Spark task failed with a Python error ({_python_error(text)}); "
                             f"this is a bug in fairgate, please report it{where}")
    failure = re.search(r"Task \d+ in stage [\d.]+ failed (\d+) times?", text)
    if failure:
        reason = _task_reason(text)
        return InputError(f"the Spark job failed: a task failed {failure.group(1)} time(s), "
                          f"the last with: {reason}{where}")
    return InputError(f"Spark failed: {_first(e)}{where}")


def _first(e: BaseException) -> str:
    """The first line of an exception that says something, without Java's frames."""
    for line in str(e).strip().splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "JVM stacktrace", "Traceback")):
            line = re.sub(r"^An error occurred while calling [\w.]+\.\s*:?\s*", "", line)
            line = re.sub(r"\s*SQLSTATE: \w+\.?$", "", line)
            if line:
                return line[:500]
    return type(e).__name__


def _python_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"^\s*\w+(Error|Exception)\b", ln)]
    return lines[-1][:300] if lines else "see Spark's log"


def _task_reason(text: str) -> str:
    m = re.search(r"most recent failure: [^:]*\):\s*(.*)", text)
    reason = m.group(1) if m else _first(Exception(text))
    reason = reason.split("\n")[0].split(". Consider setting")[0]  # Spark's advice on tracebacks
    reason = re.sub(r"^[\w.$]+(Exception|Error):\s*", "", reason)
    return reason[:300] or "see Spark's log"
