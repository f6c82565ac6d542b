"""What a gate asks of an engine (:class:`PassSpec`), and which engine answers it.

``--engine local`` (the default) streams the files on this machine; ``--engine spark``
runs the same per-batch function on a Spark cluster's executors and merges their partials
(:mod:`fairgate.engine.spark`, imported only then). Both return the same
:class:`~fairgate.engine.batch.CountResult` for the same rows, so report.json is the same
byte for byte; what differs (the engine, Spark's version, master, partitions and
executors) goes to report.json's ``run.engine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from fairgate.core.counts import Grouping
from fairgate.engine.batch import CountResult, MulticlassPlan, PassSpec, SampleSpec, SpuriousCut
from fairgate.errors import UsageError
from fairgate.inputs.audit import AuditSet, LabelSpec, column_roles
from fairgate.inputs.memory import InMemoryTable
from fairgate.inputs.model import OnnxPredictor, Predictor
from fairgate.policy import Policy

Engine = Literal["local", "spark"]
ENGINES: tuple[Engine, ...] = ("local", "spark")
DEFAULT_SCORE_SAMPLE = 50_000


@dataclass(frozen=True)
class EngineOptions:
    """``--engine`` and the Spark options of the command line."""

    name: Engine = "local"
    spark_master: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()
    spark_log: Path | None = None  # where Spark's own log goes when fairgate starts Spark
    progress: bool = False  # the local pass shows its progress on stderr (the CLI's default)

    def __post_init__(self) -> None:
        if self.name == "local" and (self.spark_master or self.spark_conf):
            raise UsageError("--spark-master and --spark-conf need --engine spark")


def pass_spec(policy: Policy, groupings: Sequence[Grouping], models: Sequence[Predictor],
              spurious: SpuriousCut | None, features: Sequence[str],
              multiclass: MulticlassPlan | None) -> PassSpec:
    """The columns to read, their types, the tables to count and the samples to keep."""
    audit = policy.audit
    teacher, student = models[0], models[1]
    columns = [audit.label, *audit.attributes, *(c for p in models for c in p.columns)]
    if spurious is not None:
        columns.append(spurious.attribute)
    types: dict[str, pa.DataType] = {}
    for p in models:
        types.update(p.column_types())
    sample = None
    seed = policy.statistics.seed
    if policy.individual is not None:
        ind = policy.individual
        wanted = list(features)
        cf = ind.counterfactual
        if cf is not None:
            wanted = list(dict.fromkeys([*wanted, cf.text or cf.column or ""]))
        columns += wanted
        sample = SampleSpec(ind.sample_rows, seed, tuple(dict.fromkeys(
            [*wanted, *teacher.columns, *student.columns])))
    score_sample = None
    if wants_scores(policy):
        size = policy.scores.sample_rows if policy.scores is not None else DEFAULT_SCORE_SAMPLE
        score_sample = SampleSpec(size, seed, tuple(audit.attributes))
    row_id = audit.row_id
    if row_id is not None and (sample is not None or score_sample is not None):
        columns.append(row_id)
    columns = list(dict.fromkeys(columns))
    identity: tuple[str, ...] = ()
    if sample is not None or score_sample is not None:
        identity = (row_id,) if row_id is not None else tuple(sorted(columns))
    return PassSpec(
        columns=tuple(columns), column_types=types, sensitive=tuple(audit.attributes),
        bins=tuple(audit.binned.values()),
        groupings=tuple(groupings) if multiclass is None else (),
        label=LabelSpec(audit.label, audit.positive_label) if multiclass is None else None,
        multiclass=multiclass, spurious=spurious if multiclass is None else None,
        sample=sample, score_sample=score_sample, identity=identity,
        max_groups=audit.max_groups)


def _set_data_root(models: Sequence[Predictor | None], root: str | None) -> None:
    """Image paths in the audit set are relative to its folder: tell the models that read
    them (an in-memory audit set has none, so a path column there is refused)."""
    for m in models:
        if isinstance(m, OnnxPredictor):
            m.data_root = Path(root) if root is not None else None


def text_columns_of(policy: Policy) -> tuple[str, ...]:
    """Sensitive columns read as text from CSV (group names, whatever the first block looks
    like); binned ones are read as numbers."""
    binned = policy.audit.binned
    return tuple(a for a in policy.audit.attributes if a not in binned)


def wants_scores(policy: Policy) -> bool:
    from fairgate.core.metrics import CATALOGUE

    return policy.scores is not None or any(CATALOGUE[c.metric].scored for c in policy.checks)


def count_pass(spec: PassSpec, data: str | Path | InMemoryTable, models: Sequence[Predictor | None],
               policy: Policy, batch_rows: int, options: EngineOptions,
               ) -> tuple[CountResult, dict[str, Any], dict[str, Any]]:
    """Count with the chosen engine: the result, ``inputs.data`` and ``run.engine``."""
    from fairgate.inputs.data_source import discover

    roles = column_roles(policy.audit.label, policy.audit.attributes,
                         policy.audit.spurious.attribute if policy.audit.spurious else None)
    # text and image-path columns are read as text from CSV, whatever they look like
    text_columns = tuple(dict.fromkeys([*text_columns_of(policy), *(
        m.inputs.column for m in models if isinstance(m, OnnxPredictor) and m.inputs is not None)]))
    if isinstance(data, InMemoryTable):  # the Python API: a DataFrame or an Arrow table
        from fairgate.engine.local import count_local
        from fairgate.inputs.memory import require_local, table_audit_set

        if options.name == "spark":
            require_local(data)
        memory = table_audit_set(data, spec.columns, spec.column_types, batch_rows, roles)
        result, engine = count_local(memory, spec, models)
        return result, {**data.describe(), "rows": result.rows}, engine
    if options.name == "spark":
        from fairgate.engine.spark import count_spark

        source = discover(data, remote_ok=True)
        _set_data_root(models, source.root)
        result, info, engine = count_spark(source, spec, models, batch_rows, roles,
                                           text_columns, options)
        return result, {**info, "rows": result.rows}, engine
    from fairgate.engine.local import count_local

    source = discover(data)
    if source.kind == "table":
        raise UsageError(f"--data {source.given}: catalog tables are read by Spark; add "
                         "--engine spark")
    _set_data_root(models, source.root)
    audit = AuditSet(source, spec.columns, spec.column_types, batch_rows,
                     text_columns=text_columns, roles=roles)
    progress = None
    if options.progress:
        from fairgate.report.progress import Progress

        known = [f.rows for f in source.files]
        total = sum(r for r in known if r is not None) if None not in known else None
        progress = Progress(total, source.given)
    result, engine = count_local(audit, spec, models, progress)
    return result, {**source.describe(), "rows": result.rows}, engine
