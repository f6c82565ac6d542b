"""The Python API: ``check``, ``compare`` and ``load_policy`` as functions.

Each builds the request the command line builds (:class:`fairgate.run.GateRequest`,
:class:`fairgate.comparison.CompareRequest`) and runs the same code, but returns the result
instead of printing it and exiting, and raises the :mod:`fairgate.errors` hierarchy
(``exc.exit_code`` is the code the CLI would exit with). Nothing is printed; reports are
written only when ``out`` is given, and MLflow is logged to only when ``mlflow=True``.

Inputs may also live in memory: the audit set as a pandas DataFrame or a pyarrow Table (read
by the local engine without a file), and ONNX models as the bytes of an ``.onnx`` file
(hashed into report.json as any model file is). An ``onnxruntime.InferenceSession`` is
refused: it does not expose the model it was made from, so what was gated could not be
hashed, its graph read, or the report reproduced.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fairgate.errors import TrackingError, UsageError

if TYPE_CHECKING:
    from fairgate.comparison import Comparison
    from fairgate.core.outcome import GateReport
    from fairgate.inputs.memory import InMemoryTable
    from fairgate.policy import LoadedPolicy
    from fairgate.run import ModelRef

#: An ONNX model: a path, an MLflow URI (``models:/…``, ``runs:/…``), or the file's bytes.
Model = str | os.PathLike[str] | bytes | bytearray | memoryview
#: An audit set: a file, folder, glob or URI, a pandas DataFrame or a pyarrow Table.
Data = str | os.PathLike[str] | Any
PolicyArg = str | os.PathLike[str] | Any  # a path or a LoadedPolicy from load_policy

__all__ = ["check", "compare", "load_policy"]


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Read and validate a policy file; raises :class:`fairgate.errors.PolicyError` with
    every problem listed, as ``fairgate policy validate`` reports them."""
    from fairgate.policy import load_policy as load

    return load(Path(path))


def _loaded(policy: PolicyArg) -> LoadedPolicy:
    from fairgate.policy import LoadedPolicy

    if isinstance(policy, LoadedPolicy):
        return policy
    if isinstance(policy, str | os.PathLike):
        return load_policy(policy)
    raise UsageError(f"policy: give a path to a policy file or what load_policy returned, not "
                     f"a {type(policy).__name__}")


def _data(data: Data) -> str | Path | InMemoryTable:
    from fairgate.inputs.memory import in_memory_table

    memory = in_memory_table(data)
    if memory is not None:
        return memory
    if isinstance(data, Path):
        return data
    if isinstance(data, str | os.PathLike):
        return os.fspath(data)
    raise UsageError(f"data: give a path (file, folder, glob or URI), a pandas DataFrame or a "
                     f"pyarrow Table, not a {type(data).__module__}.{type(data).__name__}")


def _model(model: Model | None, name: str) -> ModelRef | None:
    """A path stays a file, text may be an MLflow URI (as on the command line), bytes are the
    model itself; an onnxruntime session is refused (see the module doc)."""
    if model is None:
        return None
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    if isinstance(model, Path | str):
        return model
    if isinstance(model, os.PathLike):
        return Path(os.fspath(model))
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if type(model).__name__ == "InferenceSession":
        raise UsageError(f"{name}: an onnxruntime InferenceSession does not expose the model it "
                         "was made from, so fairgate cannot hash it or read its graph; give the "
                         "model's bytes (e.g. onnx_model.SerializeToString() or "
                         "Path('m.onnx').read_bytes()) or its path")
    raise UsageError(f"{name}: give a path, an MLflow URI or the bytes of an ONNX file, not a "
                     f"{kind}")


def _engine(engine: Literal["local", "spark"], spark_master: str | None,
            spark_conf: Sequence[tuple[str, str]] | dict[str, str], out: Path | None) -> Any:
    from fairgate.engine.run import EngineOptions

    conf = tuple(spark_conf.items()) if isinstance(spark_conf, dict) else tuple(spark_conf)
    # Spark's own log goes to <out>/spark.log as with the CLI; without out, nowhere on disk
    return EngineOptions(engine, spark_master, conf, None if out is None else out / "spark.log")


def check(policy: PolicyArg, data: Data, *, teacher: Model | None = None,
          student: Model | None = None, teacher_scores: str | None = None,
          student_scores: str | None = None, reference_student: Model | None = None,
          reference_scores: str | None = None, out: str | os.PathLike[str] | None = None,
          formats: Sequence[str] = (), mlflow: bool = False, parent_run: str | None = None,
          seed: int | None = None, batch_size: int = 65_536,
          engine: Literal["local", "spark"] = "local", spark_master: str | None = None,
          spark_conf: Sequence[tuple[str, str]] | dict[str, str] = (),
          today: dt.date | None = None) -> GateReport:
    """Gate a student model against its teacher, as ``fairgate check`` does.

    Returns the :class:`~fairgate.core.outcome.GateReport` (``.verdict``, ``.passed``,
    ``.exit_code``, ``.results``, ``.values``, ``.intervals``, ``.groups``, ``.to_dict()``);
    a failed gate is a report with ``passed`` False, not an exception. Raises a
    :class:`~fairgate.errors.FairgateError` subclass for anything the CLI exits 2, 3 or 4 on.

    ``out``: write the reports there (``formats``: any of json, md, junit, html; default all).
    ``mlflow``: log the run as the CLI does (needs ``out``, whose reports are the artifacts);
    a :class:`~fairgate.errors.TrackingError` when the policy requires logging and it failed.
    """
    from fairgate.run import GateRequest, gate_and_write

    unknown = sorted(set(formats) - {"json", "md", "junit", "html"})
    if unknown:
        raise UsageError(f"formats: unknown report format {unknown[0]!r} (json, md, junit, html)")
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if mlflow and out is None:
        raise UsageError("mlflow=True logs the written reports as the run's artifacts: give out=")
    out_dir = None if out is None else Path(out)
    loaded = _loaded(policy)
    request = GateRequest(
        policy=loaded.path, data=_data(data), teacher=_model(teacher, "teacher"),
        student=_model(student, "student"), teacher_scores=teacher_scores,
        student_scores=student_scores,
        reference_student=_model(reference_student, "reference_student"),
        reference_scores=reference_scores, out=out_dir or Path("fairgate-report"), seed=seed,
        batch_rows=batch_size, formats=tuple(formats), today=today,
        engine=_engine(engine, spark_master, spark_conf, out_dir))
    logger = _logger(loaded, parent_run) if mlflow else None
    try:
        report = gate_and_write(loaded, request, out_dir)  # as `fairgate check` runs it
        if logger is not None:
            from fairgate.integrations.mlflow import record_in_report

            assert out_dir is not None
            logged = logger.log_check(report, out_dir)
            record_in_report(out_dir / "report.json", logged)
            if not logged.ok and loaded.policy.mlflow.required:
                raise TrackingError(
                    f"the policy requires MLflow logging (mlflow.required: true) and the run was "
                    f"not logged ({logged.error}); the gate's own verdict was {report.verdict}")
        return report
    finally:
        if logger is not None:
            logger.close()


def _logger(loaded: LoadedPolicy, parent_run: str | None) -> Any:
    from fairgate.integrations.mlflow import Logger

    logger = Logger()
    try:
        logger.configure(loaded, parent_run)  # a malformed tracking URI: UsageError first
    except BaseException:
        logger.close()
        raise
    return logger


def compare(policy: PolicyArg, data: Data, *, teacher: Model | None = None,
            candidates: Sequence[str | os.PathLike[str]] = (),
            teacher_scores: str | None = None, candidate_scores: Sequence[str] = (),
            out: str | os.PathLike[str] | None = None, mlflow: bool = False,
            parent_run: str | None = None, seed: int | None = None, batch_size: int = 65_536,
            engine: Literal["local", "spark"] = "local", spark_master: str | None = None,
            spark_conf: Sequence[tuple[str, str]] | dict[str, str] = ()) -> Comparison:
    """Gate several candidate students against one teacher and rank them, as
    ``fairgate compare`` does; returns the :class:`~fairgate.comparison.Comparison`:
    ``.ranking`` (best first; each :class:`~fairgate.comparison.Ranked` with its rank, Pareto
    layer, ``standing`` per objective and ``indistinguishable_from``), ``.best`` (the
    first-ranked candidates that pass), ``.recommended`` (the only best one, else None),
    ``.indistinguishable`` (passing candidates no objective tells from a best one),
    ``.passing``, ``.verdict``, ``.candidates`` (each with its GateReport), ``.exit_code``.

    Candidates are files or MLflow URIs (their names come from them) or score columns; the
    teacher and the audit set may be in memory as for :func:`check`. ``out``: write
    compare.html, compare.md, compare.json and each candidate's report.html, report.md and
    report.json there.
    """
    import tempfile

    from fairgate.comparison import CompareRequest, run_compare, write_comparison

    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if mlflow and out is None:
        raise UsageError("mlflow=True logs the written reports as the run's artifacts: give out=")
    for c in candidates:
        if not isinstance(c, str | os.PathLike):
            raise UsageError("candidates: give files or MLflow URIs (a candidate's name is made "
                             f"from its file name), not a {type(c).__name__}")
    loaded = _loaded(policy)
    logger = _logger(loaded, parent_run) if mlflow else None
    scratch = None
    try:
        if out is None:  # run_compare prepares a folder per candidate; nothing is kept
            scratch = tempfile.TemporaryDirectory(prefix="fairgate-compare-")
        out_dir = Path(out) if out is not None else Path(scratch.name) if scratch else Path()
        request = CompareRequest(
            policy=loaded.path, data=_data(data), teacher=_model(teacher, "teacher"),
            candidates=tuple(c if isinstance(c, Path | str) else Path(os.fspath(c))
                             for c in candidates),
            teacher_scores=teacher_scores, candidate_scores=tuple(candidate_scores),
            out=out_dir, seed=seed, batch_rows=batch_size,
            engine=_engine(engine, spark_master, spark_conf, None if out is None else out_dir))
        result = run_compare(request)
        if out is not None:
            write_comparison(result, out_dir)
        if logger is not None:
            from fairgate.integrations.mlflow import record_in_report

            parent, runs = logger.log_compare(result, out_dir)
            record_in_report(out_dir / "compare.json", parent)
            for cand, one in zip(result.candidates, runs, strict=True):
                record_in_report(out_dir / cand.name / "report.json", one)
            missed = [n for n, one in zip(["compare", *(c.name for c in result.candidates)],
                                          [parent, *runs], strict=True) if not one.ok]
            if missed and loaded.policy.mlflow.required:
                raise TrackingError(
                    f"the policy requires MLflow logging (mlflow.required: true) and the runs of "
                    f"{', '.join(missed)} were not logged; the comparison's own exit code was "
                    f"{result.exit_code}")
        return result
    finally:
        if scratch is not None:
            scratch.cleanup()
        if logger is not None:
            logger.close()
