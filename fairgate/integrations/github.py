"""GitHub Actions: the step summary, step outputs, and annotations on the policy file.

Used only when ``GITHUB_ACTIONS=true``. Annotations are built by
:func:`fairgate.report.safe.workflow_command` (data escapes ``%``, CR and LF, properties
also ``:`` and ``,``; ``##[`` and other control characters shown escaped) and written by
``emit_workflow_command``, the one output path the line guard does not rewrite. Outputs use
the heredoc form with a random delimiter, so a value may hold any line. GitHub shows at
most 10 error and 10 warning annotations per step, so past 10 the tenth one names the rest.
A runner file that cannot be written is reported as a warning and never changes the
verdict or exit code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fairgate.core.gate import CheckResult, Status, passes
from fairgate.core.outcome import GateReport
from fairgate.policy import Waiver
from fairgate.report.markdown import (
    grouping_name,
    render_markdown,
    status_text,
    value_text,
)
from fairgate.report.safe import (
    WorkflowCommand,
    clip,
    emit_workflow_command,
    markdown,
    visible,
    workflow_command,
)
from fairgate.report.terminal import power_text, unresolved

if TYPE_CHECKING:
    from fairgate.comparison import Comparison

MAX_ANNOTATIONS = 10  # per level and step, GitHub's own limit
MESSAGE_CHARS = 2000
TITLE_CHARS = 300

Level = Literal["error", "warning", "notice"]


@dataclass(frozen=True)
class Annotation:
    level: Level
    title: str
    message: str
    file: str | None = None
    line: int | None = None

    def command(self) -> WorkflowCommand:
        """The workflow command, e.g. ``::error file=p.yaml,line=12,title=...::message``;
        title and message are one line each (data's control characters shown escaped)."""
        where: dict[str, object] = {}
        if self.file:
            where["file"] = self.file
            if self.line:
                where["line"] = self.line
        return workflow_command(self.level, visible(self.message), **where,
                                title=visible(clip(self.title, TITLE_CHARS)))


def workspace_path(path: Path, workspace: str | None) -> str:
    """The policy path as GitHub resolves annotation files: relative to the workspace."""
    if workspace:
        try:
            return (Path.cwd() / path).resolve().relative_to(Path(workspace).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    return path.as_posix()


def _check_line(report: GateReport, check_id: str) -> int:
    checks = report.policy.policy.checks
    i = next((i for i, c in enumerate(checks) if c.id == check_id), None)
    return 1 if i is None else report.policy.line_of(("checks", i))


def _waiver_line(report: GateReport, waiver: Waiver) -> int:
    waivers = report.policy.policy.waivers
    i = next((i for i, w in enumerate(waivers) if w == waiver), None)
    return 1 if i is None else report.policy.line_of(("waivers", i))


def _result_note(report: GateReport, r: CheckResult, level: Level, file: str) -> Annotation:
    v = r.value
    where = grouping_name(r.key.grouping)
    line = _check_line(report, r.check.id)
    if r.status is Status.WAIVED and r.waiver is not None:
        line = _waiver_line(report, r.waiver)
    message = (f"{r.key.metric} on {where}: teacher {value_text(v.teacher)}, student "
               f"{value_text(v.student)}, change {value_text(v.delta, v.delta_interval, True)}. "
               f"{r.reason}")
    return Annotation(level, f"fairgate {status_text(r)}: {r.check.id} [{where}]",
                      clip(message, MESSAGE_CHARS), file, line)


def _capped(notes: list[Annotation], level: Level, what: str, file: str) -> list[Annotation]:
    """At most MAX_ANNOTATIONS; past that the last one lists what did not fit."""
    if len(notes) <= MAX_ANNOTATIONS:
        return notes
    rest = notes[MAX_ANNOTATIONS - 1:]
    names = "; ".join(n.title.removeprefix("fairgate ") for n in rest)
    summary = Annotation(level, f"fairgate: {len(rest)} more {what}",
                         clip(f"{len(rest)} more {what} (see the step summary or report.md): "
                              f"{names}", MESSAGE_CHARS), file, 1)
    return [*notes[: MAX_ANNOTATIONS - 1], summary]


def _report_notes(report: GateReport, file: str) -> tuple[list[Annotation], list[Annotation]]:
    """(errors, warnings) of one gate report, uncapped."""
    errors, warnings = [], []
    for r in report.decision.results:
        if r.blocking:
            errors.append(_result_note(report, r, "error", file))
        elif not passes(r):
            warnings.append(_result_note(report, r, "warning", file))
    for r, b in unresolved(report):
        where = grouping_name(r.key.grouping)
        warnings.append(Annotation("warning", f"fairgate: audit too small: {r.check.id} [{where}]",
                                   clip(power_text(r, b), MESSAGE_CHARS), file,
                                   _check_line(report, r.check.id)))
    for text in report.warnings:
        warnings.append(Annotation("warning", "fairgate: input warning", clip(text, MESSAGE_CHARS),
                                   file, 1))
    for w in report.decision.expired_waivers:
        warnings.append(Annotation(
            "warning", f"fairgate: expired waiver for {w.check}",
            clip(f"The waiver for {w.check} (owner {w.owner}) expired on {w.expires} and no "
                 f"longer applies. Its reason was: {w.reason}", MESSAGE_CHARS),
            file, _waiver_line(report, w)))
    return errors, warnings


def build_annotations(report: GateReport, workspace: str | None = None) -> list[Annotation]:
    """Errors for blocking checks; warnings for warn-only, waived and expired waivers."""
    file = workspace_path(report.policy.path, workspace)
    errors, warnings = _report_notes(report, file)
    return (_capped(errors, "error", "blocking checks", file)
            + _capped(warnings, "warning", "warnings", file))


def _of_candidate(name: str, note: Annotation) -> Annotation:
    """A candidate's annotation: its name in the title (``fairgate [name] fail: ...``)."""
    rest = note.title.removeprefix("fairgate")
    return Annotation(note.level, f"fairgate [{name}]{rest}", note.message, note.file, note.line)


def build_compare_annotations(result: Comparison, workspace: str | None = None
                              ) -> list[Annotation]:
    """What ``check`` emits, for every candidate (its name in each title), capped per level
    over the whole comparison; then an error when no candidate passes, a warning when a
    candidate is not comparable, and a notice naming the best candidates."""
    from fairgate.comparison import notes, verdict_line

    file = workspace_path(result.candidates[0].report.policy.path, workspace)
    errors: list[Annotation] = []
    warnings: list[Annotation] = []
    seen: set[str] = set()
    for r in result.ranking:
        cand = result.candidate(r.name)
        e, w = _report_notes(cand.report, file)
        errors += [_of_candidate(cand.name, n) for n in e]
        for n in w:
            if n.title == "fairgate: input warning":  # the same for every candidate: once
                if n.message in seen:
                    continue
                seen.add(n.message)
                warnings.append(n)
            else:
                warnings.append(_of_candidate(cand.name, n))
    warnings += [Annotation("warning", "fairgate compare: not comparable",
                            clip(n, MESSAGE_CHARS), file, 1) for n in notes(result)]
    overall = Annotation("error" if result.exit_code else "notice",
                         f"fairgate compare: {result.verdict}",
                         clip(verdict_line(result), MESSAGE_CHARS), file, 1)
    if result.exit_code:  # first, so the cap never hides it
        errors.insert(0, overall)
    return (_capped(errors, "error", "blocking checks", file)
            + _capped(warnings, "warning", "warnings", file)
            + ([] if result.exit_code else [overall]))


def _delimiter(value: str) -> str:
    while True:
        d = f"ghadelimiter_{secrets.token_hex(16)}"
        if d not in value:
            return d


def format_outputs(values: Mapping[str, str]) -> str:
    """Step outputs in the heredoc form, safe for any value."""
    out = []
    for name, value in values.items():
        d = _delimiter(value)
        out.append(f"{name}<<{d}\n{value}\n{d}\n")
    return "".join(out)


def _label(r: CheckResult) -> str:
    return visible(f"{r.check.id} [{grouping_name(r.key.grouping)}]")  # one line each


def outputs(report: GateReport, out: Path) -> dict[str, str]:
    results = report.decision.results
    failed = [_label(r) for r in results if r.blocking]
    unsure = [_label(r) for r in results if r.status is Status.INCONCLUSIVE]
    return {"verdict": report.verdict, "report-dir": str(out), "failed-checks": "\n".join(failed),
            "inconclusive-checks": "\n".join(unsure)}


def compare_outputs(result: Comparison, out: Path) -> dict[str, str]:
    """The step outputs of ``fairgate compare``: one value a line where there are several.

    ``verdict`` is the best verdict of any candidate (``fail`` when none passes);
    ``failed-checks`` and ``inconclusive-checks`` hold ``candidate: check [grouping]``."""
    from fairgate.comparison import OBJECTIVES

    failed, unsure = [], []
    for r in result.ranking:
        for x in result.candidate(r.name).report.decision.results:
            if x.blocking:
                failed.append(f"{r.name}: {_label(x)}")
            if x.status is Status.INCONCLUSIVE:
                unsure.append(f"{r.name}: {_label(x)}")
    leaders = []
    for k, o in enumerate(OBJECTIVES):
        best, ties = result.on_objective(k)
        leaders.append(f"{o.name}: {', '.join(best + ties)}")
    return {"verdict": result.verdict, "report-dir": str(out),
            "recommended": result.recommended or "",
            "best-candidates": "\n".join(result.best),
            "indistinguishable-candidates": "\n".join(result.indistinguishable),
            "passing-candidates": "\n".join(result.passing),
            "failing-candidates": "\n".join(r.name for r in result.ranking
                                             if not result.candidate(r.name).passed),
            "best-per-objective": "\n".join(leaders),
            "failed-checks": "\n".join(failed), "inconclusive-checks": "\n".join(unsure)}


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        f.write(text)


def publish(report: GateReport, out: Path, env: Mapping[str, str] | None = None,
            echo: Callable[[WorkflowCommand], None] = emit_workflow_command) -> None:
    """Summary, outputs and annotations for the current GitHub Actions step."""
    _publish(build_annotations(report, (os.environ if env is None else env)
                               .get("GITHUB_WORKSPACE")),
             lambda: render_markdown(report), lambda: outputs(report, out), env, echo)


def publish_compare(result: Comparison, out: Path, env: Mapping[str, str] | None = None,
                    echo: Callable[[WorkflowCommand], None] = emit_workflow_command) -> None:
    """The same for ``fairgate compare``: compare.md as the summary, the outputs of
    :func:`compare_outputs`, the annotations of :func:`build_compare_annotations`."""
    from fairgate.comparison import render_markdown as render_comparison

    _publish(build_compare_annotations(result, (os.environ if env is None else env)
                                       .get("GITHUB_WORKSPACE")),
             lambda: render_comparison(result), lambda: compare_outputs(result, out), env, echo)


def _publish(notes: list[Annotation], summary: Callable[[], str],
             values: Callable[[], Mapping[str, str]], env: Mapping[str, str] | None,
             echo: Callable[[WorkflowCommand], None]) -> None:
    env = os.environ if env is None else env
    for note in notes:
        echo(note.command())
    for var, text in (("GITHUB_STEP_SUMMARY", summary),
                      ("GITHUB_OUTPUT", lambda: format_outputs(values()))):
        path = env.get(var)
        if not path:
            echo(workflow_command("warning", f"{var} is not set: nothing written there",
                                  title="fairgate"))
            continue
        try:
            _append(path, text())
        except OSError as e:
            echo(workflow_command("warning", f"cannot write {var} ({type(e).__name__}: {e})",
                                  title="fairgate"))


def publish_tracking(lines: list[str], logged: Any, promoted: bool | None,
                     env: Mapping[str, str] | None = None) -> None:
    """After MLflow logging: its lines in the step summary, and the step outputs
    ``mlflow-run-id`` and, when --promote was asked, ``promoted`` (``true`` when the alias
    now points to the student's version)."""
    env = os.environ if env is None else env
    summary = "".join(f"- {markdown(line)}\n" for line in lines)
    values = {"mlflow-run-id": logged.run_id or ""}
    if promoted is not None:
        values["promoted"] = "true" if promoted else "false"
    for var, text in (("GITHUB_STEP_SUMMARY", "\n**MLflow**\n\n" + summary),
                      ("GITHUB_OUTPUT", format_outputs(values))):
        path = env.get(var)
        if path:
            with contextlib.suppress(OSError):
                _append(path, text)
