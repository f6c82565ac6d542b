"""A real local Spark (pyspark from PyPI, Java 17) for the engine tests: one session per module.

Starting Spark takes 10-15 s on two cores, so each test module starts one session (its
module-level ``SPARK_MASTER``, default ``local[2]``) through fairgate's own
:func:`fairgate.engine.spark.spark_session`, and every ``fairgate check --engine spark``
of the module runs in it (``getOrCreate`` finds it); the module stops it at the end.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLE

SETTINGS = (
    ("spark.ui.enabled", "false"),
    ("spark.sql.shuffle.partitions", "4"),
    ("spark.sql.session.timeZone", "UTC"),
)


@pytest.fixture(scope="module")
def spark(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fairgate.engine.run import EngineOptions
    from fairgate.engine.spark import spark_session

    master = getattr(request.module, "SPARK_MASTER", "local[2]")
    folder = tmp_path_factory.mktemp("spark")
    settings = (*SETTINGS, ("spark.sql.warehouse.dir", str(folder / "warehouse")))
    session = spark_session(EngineOptions("spark", master, settings, folder / "spark.log")).spark
    assert session.sparkContext.master == master
    yield session
    session.stop()


def without_run(out: Path) -> bytes:
    """report.json up to its last key, ``run`` (times and the engine that counted)."""
    raw = (out / "report.json").read_bytes()
    cut = raw.rindex(b'\n  "run": {')
    assert list(json.loads(raw))[-1] == "run"
    return raw[:cut]


def without(out: Path, *paths: str) -> dict[str, Any]:
    """report.json without ``run`` and the dotted ``paths`` (e.g. ``inputs.data``)."""
    report = json.loads((out / "report.json").read_text())
    report.pop("run")
    for path in paths:
        *parents, last = path.split(".")
        node = report
        for p in parents:
            node = node[p]
        node.pop(last)
    return report


def engine_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())["run"]["engine"]


# ----------------------------------------------------------------------------- layouts


def adult() -> pa.Table:
    return pq.read_table(EXAMPLE / "audit.parquet")


def write_files(table: pa.Table, folder: Path, files: int, name: str = "part") -> Path:
    """``table`` split into ``files`` Parquet files of consecutive rows."""
    folder.mkdir(parents=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(a, b - a), folder / f"{name}-{i:05d}.parquet")
    return folder


def shuffled(table: pa.Table, seed: int = 7) -> pa.Table:
    order = np.random.default_rng(seed).permutation(table.num_rows)
    return table.take(pa.array(order))
