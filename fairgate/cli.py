"""The command line: a thin translator from options to a request, and from results to exit codes.

Exit codes: 0 pass (warnings and waivers allowed) · 1 gate failed · 2 usage or policy
error · 3 input error (model, data, inference) · 4 internal error.

Everything printed goes through :func:`fairgate.report.safe.echo` (click's own usage errors
too, see :class:`_Main`): data in a message can never become a CI workflow command.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from fairgate import __version__
from fairgate.errors import FairgateError, InternalError
from fairgate.report.safe import echo

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("json", "md", "junit", "html")
MODEL_FORMS = ("an .onnx file or an MLflow URI (models:/NAME/VERSION, models:/NAME@ALIAS, "
               "models:/MODEL_ID, runs:/RUN_ID/PATH), resolved and downloaded before the gate")


def _fail(code: int, message: str) -> None:
    echo(f"fairgate: error: {message}", err=True)
    sys.exit(code)


def translate_errors(fn: F) -> F:
    """Map the one exception hierarchy to exit codes; no traceback for anything expected."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FairgateError as e:
            _fail(e.exit_code, str(e))
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except MemoryError:
            _fail(InternalError.exit_code, "out of memory; try a smaller --batch-size")
        except Exception as e:
            if os.environ.get("FAIRGATE_DEBUG"):
                raise
            _fail(InternalError.exit_code,
                  f"internal error ({type(e).__name__}: {e}); this is a bug in fairgate, "
                  "please report it (set FAIRGATE_DEBUG=1 for the traceback)")

    return wrapper  # type: ignore[return-value]


def _gate_inputs(fn: F) -> F:
    """The options every gating command shares: the policy, the audit set, the teacher."""
    for option in reversed([
        click.option("--policy", "policy", required=True, type=click.Path(path_type=Path),
                     help="Policy YAML (see `fairgate policy schema`)."),
        click.option("--data", "data", required=True, metavar="PATH",
                     help="Labelled audit set with sensitive columns: a .parquet, .orc or .csv "
                          "file, a directory or glob of them (key=value folders are columns), "
                          "or with --engine spark a URI or table:catalog.db.name."),
        click.option("--teacher", metavar="MODEL", help=f"Teacher model: {MODEL_FORMS}."),
    ]):
        fn = option(fn)
    return fn


def _spark_conf(ctx: click.Context, param: click.Parameter,
                value: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        out.append((key.strip(), val))
    return tuple(out)


def _engine_options(fn: F) -> F:
    """--engine and the Spark options, for every command that reads the audit set."""
    for option in reversed([
        click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
                     show_default=True, help="Where the pass over the audit set runs: this "
                     "process, or Apache Spark (pip install 'fairgate[spark]'); the reports "
                     "are the same."),
        click.option("--spark-master", metavar="URL", help="Spark master (local[4], "
                     "spark://host:7077, yarn, k8s://..., sc://host:15002 for Spark Connect, "
                     "as SPARK_REMOTE: pip install 'fairgate[spark-connect]'); "
                     "default: the running session's, or spark-submit's."),
        click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE",
                     callback=_spark_conf, help="A Spark setting (repeatable)."),
    ]):
        fn = option(fn)
    return fn


def _engine(engine: str, master: str | None, conf: tuple[tuple[str, str], ...],
            out: Path, quiet: bool = False) -> Any:
    from fairgate.engine.run import EngineOptions

    return EngineOptions(engine, master, conf, out / "spark.log",  # type: ignore[arg-type]
                         progress=not quiet)


QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress on stderr (errors and "
                     "the report still print).")


class _Main(click.Group):
    """click's own error messages (which quote the arguments) printed through ``echo`` too."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as e:
            if not standalone_mode:
                raise
            shown = io.StringIO()
            e.show(file=shown)
            echo(shown.getvalue(), err=True, nl=False)
            sys.exit(e.exit_code)
        except click.Abort:
            if not standalone_mode:
                raise
            echo("Aborted!", err=True)
            sys.exit(1)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fairgate")
def main() -> None:
    """fairgate: stop a compressed model that treats groups worse than its teacher."""


@main.command()
@_gate_inputs
@click.option("--student", metavar="MODEL", help=f"Student model: {MODEL_FORMS}.")
@click.option("--teacher-scores", metavar="COL",
              help="Audit-set column of teacher scores (multi-class: predicted classes).")
@click.option("--student-scores", metavar="COL",
              help="Audit-set column of student scores (multi-class: predicted classes).")
@click.option("--reference-student", metavar="MODEL",
              help="Multi-class: a third model, e.g. a non-distilled student, compared with "
                   "the student class by class (#SC); a file or an MLflow URI.")
@click.option("--reference-scores", metavar="COL",
              help="Multi-class: audit-set column of the reference student's predicted classes.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fairgate-report"),
              show_default=True, help="Directory for the reports.")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="Report formats to write (repeatable; default all; report.json always).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow (model URIs are "
              "still resolved through it).")
@click.option("--parent-run", metavar="RUN_ID",
              help="Nest the MLflow run under this run (default: $MLFLOW_RUN_ID, if set).")
@click.option("--promote", metavar="ALIAS",
              help="When the gate passes (exit 0) and the run is logged, move this registry "
                   "alias to the student's version (--student models:/NAME/VERSION or "
                   "models:/NAME@ALIAS); a promotion that fails exits 3.")
@click.option("--seed", type=int, help="Override statistics.seed.")
@click.option("--batch-size", type=click.IntRange(1), default=65_536, show_default=True,
              help="Rows per batch (memory vs speed).")
@click.option("--color/--no-color", default=None, help="Colour the terminal report (default: "
              "on a terminal and in GitHub Actions; off with NO_COLOR or TERM=dumb; on with "
              "FORCE_COLOR).")
@QUIET
@_engine_options
@translate_errors
def check(policy: Path, data: str, teacher: str | None, student: str | None,
          teacher_scores: str | None, student_scores: str | None,
          reference_student: str | None, reference_scores: str | None, out: Path,
          formats: tuple[str, ...], no_mlflow: bool, parent_run: str | None,
          promote: str | None, seed: int | None, batch_size: int, color: bool | None,
          quiet: bool, engine: str, spark_master: str | None,
          spark_conf: tuple[tuple[str, str], ...]) -> None:
    """Gate a student model against its teacher on an audit set."""
    options = _engine(engine, spark_master, spark_conf, out, quiet)
    if promote is not None:
        _check_promote(promote, student, no_mlflow)
    logger = None
    if not no_mlflow:  # started first: it imports mlflow and opens the store during the gate
        from fairgate.integrations.mlflow import Logger

        logger = Logger()
    try:
        _check(policy, data, teacher, student, teacher_scores, student_scores,
               reference_student, reference_scores, out, formats, parent_run, promote, seed,
               batch_size, color, options, logger)
    finally:
        if logger is not None:
            logger.close()


def _check_promote(alias: str, student: str | None, no_mlflow: bool) -> None:
    """--promote is checked before any work: a promotion that cannot happen is a usage error."""
    import re

    from fairgate.errors import UsageError
    from fairgate.inputs.sources import model_source
    from fairgate.report.safe import terminal

    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,255}", alias) or alias.lower() == "latest" or \
            re.fullmatch(r"[vV]\d+", alias):
        raise UsageError(f"--promote {terminal(alias)!r}: an alias is letters, digits, _ and - "
                         "(MLflow reserves 'latest' and v<digits>)")
    if no_mlflow:
        raise UsageError("--promote moves an MLflow registry alias, which needs the run logged "
                         "to MLflow: drop --no-mlflow")
    if student is None or not model_source(student, "--student").registered:
        raise UsageError(f"--promote {alias}: the student must be a registered model version "
                         "(--student models:/NAME/VERSION or models:/NAME@ALIAS)")


def _check(policy: Path, data: str, teacher: str | None, student: str | None,
           teacher_scores: str | None, student_scores: str | None,
           reference_student: str | None, reference_scores: str | None, out: Path,
           formats: tuple[str, ...], parent_run: str | None, promote: str | None,
           seed: int | None, batch_size: int, color: bool | None, options: Any,
           logger: Any) -> None:
    from fairgate.policy import load_policy
    from fairgate.report import console
    from fairgate.report.terminal import TerminalReporter
    from fairgate.run import GateRequest, gate_and_write

    request = GateRequest(policy=policy, data=data, teacher=teacher, student=student,
                          teacher_scores=teacher_scores, student_scores=student_scores,
                          reference_student=reference_student, reference_scores=reference_scores,
                          out=out, seed=seed, batch_rows=batch_size, formats=formats,
                          engine=options)
    loaded = load_policy(policy)
    if logger is not None:  # a malformed tracking URI is a usage error before any work is done
        logger.configure(loaded, parent_run)
    report = gate_and_write(loaded, request, out)  # the Python API's fairgate.check too
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from fairgate.integrations.github import publish

        publish(report, out)
    color = console.color(color)
    echo(TerminalReporter(out, color, console.width()).render(report), nl=False, color=color,
         styled=True)
    code = report.decision.exit_code
    if logger is not None:  # logging never changes the verdict; see _tracked for exit 3
        from fairgate.integrations.mlflow import record_in_report

        logged = logger.log_check(report, out, promote)
        record_in_report(out / "report.json", logged)
        _tracked([logged], required=report.policy.policy.mlflow.required, report=report,
                 promote=promote, own=f"the gate's own verdict was {report.verdict}")
    sys.exit(code)


def _tracked(logged: list[Any], *, required: bool, own: str, report: Any = None,
             promote: str | None = None, names: Sequence[str] | None = None) -> None:
    """Print what MLflow holds now. Exit 3 (TrackingError) when the policy requires MLflow and
    a run was not logged, or when --promote was asked and the alias did not end on the
    student; ``own`` says what the gate itself decided."""
    from fairgate.errors import TrackingError
    from fairgate.integrations.mlflow import promotion_outcome, stamp_line

    lines = []
    for i, one in enumerate(logged):
        prefix = f"{names[i]}: " if names else ""
        echo(prefix + one.message, err=not one.ok)
        lines.append(prefix + one.message)
        stamped = stamp_line(one)
        if stamped:
            echo(prefix + stamped)
            lines.append(prefix + stamped)
    promoted: tuple[str, bool] | None = None
    if promote is not None:
        promoted = promotion_outcome(report, logged[0], promote)
        echo(promoted[0], err=not promoted[1])
        lines.append(promoted[0])
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from fairgate.integrations.github import publish_tracking

        publish_tracking(lines, logged[0], None if promoted is None else promoted[1])
    if promoted is not None and not promoted[1]:
        raise TrackingError(f"{promoted[0]}; {own}")
    missed = [names[i] if names else "" for i, one in enumerate(logged) if not one.ok]
    if missed and required:
        what = (f"the run was not logged ({logged[0].error})" if not names else
                f"the runs of {', '.join(missed)} were not logged")
        raise TrackingError(f"the policy requires MLflow logging (mlflow.required: true) and "
                            f"{what}; {own}")


@main.command()
@_gate_inputs
@click.option("--candidate", "candidates", multiple=True, metavar="MODEL",
              help="Candidate student model (repeatable): a file or an MLflow URI.")
@click.option("--teacher-scores", metavar="COL", help="Audit-set column of teacher scores.")
@click.option("--candidate-scores", metavar="COL", multiple=True,
              help="Audit-set column of a candidate's scores (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fairgate-compare"),
              show_default=True, help="Directory for compare.html, compare.md, compare.json and "
              "each candidate's report.html, report.md and report.json (in <candidate>/).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the comparison to MLflow.")
@click.option("--parent-run", metavar="RUN_ID", help="Nest the comparison's run under this run.")
@click.option("--seed", type=int, help="Override statistics.seed.")
@click.option("--batch-size", type=click.IntRange(1), default=65_536, show_default=True,
              help="Rows per batch (memory vs speed).")
@QUIET
@_engine_options
@translate_errors
def compare(policy: Path, data: str, teacher: str | None, candidates: tuple[str, ...],
            teacher_scores: str | None, candidate_scores: tuple[str, ...], out: Path,
            no_mlflow: bool, parent_run: str | None, seed: int | None, batch_size: int,
            quiet: bool, engine: str, spark_master: str | None,
            spark_conf: tuple[tuple[str, str], ...]) -> None:
    """Gate several candidate students against one teacher and rank them (Pareto front).

    Candidates are told apart only beyond noise (their paired change intervals against the
    teacher); the rest are reported as indistinguishable. Exit 0 if at least one candidate
    passes the gate, 1 if none does. In MLflow: one run for the comparison, with each
    candidate's gate nested under it.
    """
    options = _engine(engine, spark_master, spark_conf, out, quiet)
    logger = None
    if not no_mlflow:
        from fairgate.integrations.mlflow import Logger

        logger = Logger()
    try:
        _compare(policy, data, teacher, candidates, teacher_scores, candidate_scores, out,
                 parent_run, seed, batch_size, options, logger)
    finally:
        if logger is not None:
            logger.close()


def _compare(policy: Path, data: str, teacher: str | None, candidates: tuple[str, ...],
             teacher_scores: str | None, candidate_scores: tuple[str, ...], out: Path,
             parent_run: str | None, seed: int | None, batch_size: int, options: Any,
             logger: Any) -> None:
    from fairgate.comparison import CompareRequest, render_terminal, run_compare, write_comparison
    from fairgate.policy import load_policy
    from fairgate.report import prepare_out_dir

    request = CompareRequest(policy=policy, data=data, teacher=teacher, candidates=candidates,
                             teacher_scores=teacher_scores, candidate_scores=candidate_scores,
                             out=out, seed=seed, batch_rows=batch_size,
                             engine=options)
    loaded = load_policy(policy)
    if logger is not None:  # a malformed tracking URI is a usage error before any work is done
        logger.configure(loaded, parent_run)
    prepare_out_dir(out)  # a ranking that cannot be written is lost: fail before any work
    result = run_compare(request)
    write_comparison(result, out)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from fairgate.integrations.github import publish_compare

        publish_compare(result, out)
    from fairgate.report.console import width

    echo(render_terminal(result, width()), nl=False)
    if logger is not None:  # logging never changes the ranking; mlflow.required: exit 3
        from fairgate.integrations.mlflow import record_in_report

        parent, runs = logger.log_compare(result, out)
        record_in_report(out / "compare.json", parent)
        for cand, one in zip(result.candidates, runs, strict=True):
            record_in_report(out / cand.name / "report.json", one)
        _tracked([parent, *runs], required=loaded.policy.mlflow.required,
                 own=f"the comparison's own exit code was {result.exit_code}",
                 names=["compare", *(c.name for c in result.candidates)])
    sys.exit(result.exit_code)


@main.command()
@click.option("--policy", "policy", required=True, type=click.Path(path_type=Path),
              help="Policy YAML whose bounds to size the audit for.")
@click.option("--data", "data", type=click.Path(path_type=Path),
              help="Audit set (.parquet or .csv), with --teacher or --teacher-scores.")
@click.option("--teacher", type=click.Path(path_type=Path), help="Teacher ONNX model.")
@click.option("--teacher-scores", metavar="COL", help="Audit-set column of teacher scores.")
@click.option("--report", type=click.Path(path_type=Path),
              help="A report.json of fairgate check: the student's own disagreement.")
@click.option("--disagreement", type=float, metavar="SHARE",
              help="Without a report: the share of rows the student is assumed to decide "
                   "differently (default 0.05).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--batch-size", type=click.IntRange(1), default=65_536, show_default=True,
              help="Rows per batch.")
@translate_errors
def plan(policy: Path, data: Path | None, teacher: Path | None, teacher_scores: str | None,
         report: Path | None, disagreement: float | None, as_json: bool, batch_size: int) -> None:
    """Estimate the rows per group each check's bound needs.

    Exit 0 when this audit set resolves every bound (a change of twice it is detected 80%
    of the time and an unchanged student fails at most 5%), 1 when some bound needs more rows.
    """
    from fairgate.report.console import width
    from fairgate.report.plan import plan_json, render_plan
    from fairgate.run import PlanRequest, plan_audit

    result = plan_audit(PlanRequest(policy=policy, data=data, teacher=teacher,
                                    teacher_scores=teacher_scores, report=report,
                                    disagreement=disagreement, batch_rows=batch_size))
    echo(json.dumps(plan_json(result), indent=2) if as_json else render_plan(result, width()),
         nl=False)
    sys.exit(result.exit_code)


@main.command()
@click.option("--data", "data", metavar="PATH",
              help="The audit set to read a sample of: a .parquet, .orc, .csv or .csv.gz file, or a "
                   "directory or glob of them.")
@click.option("--label", metavar="COLUMN", help="The label column (default: proposed).")
@click.option("--positive", metavar="VALUE",
              help="The label's positive (favourable) value (default: proposed when decisive).")
@click.option("--sensitive", multiple=True, metavar="COLUMN",
              help="A sensitive attribute (repeat; default: the columns named like one).")
@click.option("--teacher", type=click.Path(path_type=Path), metavar="T.onnx",
              help="Teacher model: its inputs, and which output column is positive.")
@click.option("--student", type=click.Path(path_type=Path), metavar="S.onnx",
              help="Student model, as --teacher.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("policy.yaml"),
              show_default=True, help="Where to write the starter policy.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--list", "list_ready", is_flag=True, help="List the ready policies and stop.")
@translate_errors
def init(data: str | None, label: str | None, positive: str | None, sensitive: tuple[str, ...],
         teacher: Path | None, student: Path | None, out: Path, force: bool,
         list_ready: bool) -> None:
    """Write a starter policy proposed from an audit set (and the models): review it."""
    from fairgate.errors import UsageError
    from fairgate.policy import parse_yaml, validate
    from fairgate.policy import starter as st
    from fairgate.report import write_atomic
    from fairgate.report.safe import terminal

    if list_ready:
        for r in st.ready_policies():
            echo(f"{terminal(r.name)}  {terminal(r.purpose, None)}\n    {terminal(r.path)}")
        return
    if data is None:
        raise UsageError("give --data AUDIT (or --list for the ready policies)")
    if out.exists() and not force:
        raise UsageError(f"{out}: exists; add --force to overwrite it")
    models = [(role, p) for role, p in (("teacher", teacher), ("student", student)) if p]
    starter = st.propose(st.sample_audit(data), label=label, positive=positive,
                         sensitive=sensitive, models=models)
    text = st.render(starter, st.starter_template())
    validate(*parse_yaml(text, str(out)), str(out))  # a starter that does not load is a bug
    write_atomic(out, text)
    for line in st.summary(starter):
        echo(terminal(line, None))
    echo(f"wrote {terminal(out)}: review every value marked `proposed`, then run "
         f"fairgate check --policy {terminal(out)} --data {terminal(data)} ...")


@main.group()
def policy() -> None:
    """Validate policies and show their schema."""


@policy.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@translate_errors
def policy_validate(path: Path) -> None:
    """Check a policy file; exit 0 if valid, 2 with every problem listed otherwise."""
    from fairgate.policy import load_policy
    from fairgate.report.safe import terminal
    from fairgate.run import groupings_of

    loaded = load_policy(path)
    p = loaded.policy
    groupings = ", ".join(terminal(g.name) for g in groupings_of(p))
    echo(f"{terminal(path)}: valid policy (version {p.version}): {len(p.checks)} checks over "
         f"groupings {groupings}")


@policy.command("schema")
@translate_errors
def policy_schema() -> None:
    """Print the JSON Schema of policy version 1."""
    from fairgate.policy import json_schema

    echo(json.dumps(json_schema(), indent=2))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@translate_errors
def metrics(as_json: bool) -> None:
    """List the metric catalogue, one line of definition each."""
    from fairgate.core.metrics import CATALOGUE

    if as_json:
        echo(json.dumps([{"name": m.name, "scope": m.scope, "definition": m.definition,
                          **({"differs": m.note} if m.note else {})}
                         for m in CATALOGUE.values()], indent=2))
        return
    width = max(len(n) for n in CATALOGUE)
    for scope, title in (("overall", "Over the whole audit set"),
                         ("grouping", "Across the groups of each grouping")):
        echo(f"{title}:")
        for m in CATALOGUE.values():
            if m.scope == scope:
                echo(f"  {m.name.ljust(width)}  {m.definition}")
                if m.note:
                    echo(f"  {''.ljust(width)}  differs on purpose: {m.note}")
        echo("")
