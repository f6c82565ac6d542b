"""fairgate compare: gate several candidate students against one teacher, then rank them.

A release team choosing a distillation temperature or a pruning level has several students
and one teacher. Each candidate is gated exactly as ``fairgate check`` would gate it (one
:func:`fairgate.run.run_gate` per candidate, same policy, same audit set, same seed), then
the candidates are placed on three objectives taken from each gate report's KPIs:

* ``accuracy``: the student's accuracy over the whole audit set (higher is better);
* ``worst_dp``: the student's largest ``demographic_parity_difference`` over the policy's
  groupings (lower is better);
* ``worst_eo``: the student's largest ``equalized_odds_difference`` over the policy's
  groupings (lower is better).

The worst over groupings is used because a release is only as fair as its worst-served
grouping; if any grouping's value is undefined, the worst is unknown and the objective is
undefined (fail closed). A candidate is dominated when another is at least as good on every
objective and strictly better on one; the undominated candidates form the Pareto front. A
candidate with an undefined objective neither dominates nor is on the front, and ranks last.

Ranking: defined objectives first, then the verdict (pass, warn, fail), then front
membership, then accuracy (higher first), then worst DP, then worst EO (lower first).
Candidates equal on all of these share a rank.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fairgate.core.evaluate import MetricValue
from fairgate.core.gate import Status, Verdict, passes
from fairgate.core.outcome import GateReport
from fairgate.engine.run import EngineOptions
from fairgate.errors import FairgateError, ModelError, UsageError
from fairgate.inputs.audit import DEFAULT_BATCH_ROWS
from fairgate.inputs.files import require_regular_file
from fairgate.inputs.memory import InMemoryTable
from fairgate.inputs.sources import ModelFiles, ModelSource, model_label, model_source, source_label
from fairgate.policy import load_policy
from fairgate.report import prepare_out_dir, safe, write_atomic, write_reports
from fairgate.report.json import num as json_number
from fairgate.run import GateRequest, ModelRef, run_gate

SCHEMA_VERSION = 1
Sense = Literal["max", "min"]
Role = Literal["teacher", "student"]


@dataclass(frozen=True)
class Objective:
    """One axis of the ranking: a KPI metric and which direction is better."""

    name: str
    metric: str
    sense: Sense
    title: str
    worst_over_groupings: bool


OBJECTIVES: tuple[Objective, ...] = (
    Objective("accuracy", "accuracy", "max", "accuracy", False),
    Objective("worst_dp", "demographic_parity_difference", "min", "worst DP diff", True),
    Objective("worst_eo", "equalized_odds_difference", "min", "worst EO diff", True),
)
SENSES: tuple[Sense, ...] = tuple(o.sense for o in OBJECTIVES)
_VERDICT_ORDER = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


@dataclass(frozen=True)
class ObjectiveValue:
    """A candidate's value on one objective; NaN means undefined and ``reason`` says why."""

    value: float
    grouping: str | None = None  # where the worst was found (None: overall metric)
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)


@dataclass(frozen=True)
class Scored:
    """What the ranking needs of one candidate: pure input of :func:`rank`."""

    name: str
    verdict: Verdict
    values: tuple[float, ...]  # one per objective, NaN = undefined


@dataclass(frozen=True)
class Ranked:
    name: str
    rank: int  # 1 = best; equal candidates share a rank
    on_front: bool
    dominated_by: tuple[str, ...]
    undefined: tuple[str, ...]  # names of the undefined objectives


# ----------------------------------------------------------------------------- pure ranking


def _defined(values: Sequence[float]) -> bool:
    return all(not math.isnan(v) for v in values)


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[Sense] = SENSES) -> bool:
    """True if ``a`` is at least as good as ``b`` everywhere and strictly better somewhere.

    Undefined values dominate nothing and are dominated by nothing: NaN is never compared.
    """
    if not (_defined(a) and _defined(b)):
        return False
    strictly = False
    for x, y, sense in zip(a, b, senses, strict=True):
        better, worse = (x > y, x < y) if sense == "max" else (x < y, x > y)
        if worse:
            return False
        strictly = strictly or better
    return strictly


def pareto_front(
    values: Sequence[Sequence[float]], senses: Sequence[Sense] = SENSES
) -> list[tuple[int, ...]]:
    """For each candidate, the indices of the candidates that dominate it.

    A candidate is on the front when it is fully defined and nobody dominates it; ties
    (equal vectors) dominate neither way, so both stay on the front.
    """
    return [
        tuple(j for j, other in enumerate(values) if j != i and dominates(other, mine, senses))
        for i, mine in enumerate(values)
    ]


def rank(scored: Sequence[Scored], senses: Sequence[Sense] = SENSES) -> list[Ranked]:
    """Order the candidates (see the module docstring); best first, input order on ties."""
    dominated = pareto_front([s.values for s in scored], senses)
    names = [o.name for o in OBJECTIVES] if len(senses) == len(OBJECTIVES) else [
        f"objective {k}" for k in range(len(senses))]

    def key(i: int) -> tuple[Any, ...]:
        s = scored[i]
        on_front = _defined(s.values) and not dominated[i]
        # undefined sorts after every defined value, whatever the sense
        oriented = tuple(
            (1, 0.0) if math.isnan(v) else (0, -v if sense == "max" else v)
            for v, sense in zip(s.values, senses, strict=True)
        )
        return (not _defined(s.values), _VERDICT_ORDER[s.verdict], not on_front, *oriented)

    order = sorted(range(len(scored)), key=key)  # stable: input order breaks exact ties
    out: list[Ranked] = []
    for pos, i in enumerate(order):
        s = scored[i]
        same_as_previous = pos > 0 and key(order[pos - 1]) == key(i)
        r = out[-1].rank if same_as_previous else pos + 1
        out.append(Ranked(
            name=s.name, rank=r, on_front=_defined(s.values) and not dominated[i],
            dominated_by=tuple(scored[j].name for j in dominated[i]),
            undefined=tuple(n for n, v in zip(names, s.values, strict=True) if math.isnan(v)),
        ))
    return out


# ----------------------------------------------------------------------------- objectives


def _value_of(v: MetricValue, role: Role) -> tuple[float, str | None]:
    """The value at report.json's precision, so the ranking is the same on every machine."""
    x, why = (v.teacher, v.teacher_reason) if role == "teacher" else (v.student, v.student_reason)
    rounded = json_number(x)
    return (math.nan if rounded is None else rounded), why


def objective_value(report: GateReport, objective: Objective, role: Role = "student") -> ObjectiveValue:
    """One objective of one model, from the gate report's KPIs; undefined if any part is."""
    found = [v for v in report.kpis if v.key.metric == objective.metric and v.key.alpha is None
             and (v.key.grouping is not None) == objective.worst_over_groupings]
    if not found:
        return ObjectiveValue(math.nan, reason=f"{objective.metric} is not in the gate report")
    undefined = []
    for v in found:
        x, why = _value_of(v, role)
        if math.isnan(x):
            where = f" over {v.key.grouping}" if v.key.grouping else ""
            undefined.append(f"{objective.metric}{where} is undefined"
                             + (f" ({why})" if why else ""))
    if undefined:
        return ObjectiveValue(math.nan, reason="; ".join(undefined))
    if not objective.worst_over_groupings:
        return ObjectiveValue(_value_of(found[0], role)[0])
    worst = max(found, key=lambda v: _value_of(v, role)[0])  # first grouping wins ties
    return ObjectiveValue(_value_of(worst, role)[0], grouping=str(worst.key.grouping))


def objective_values(report: GateReport, role: Role = "student") -> tuple[ObjectiveValue, ...]:
    return tuple(objective_value(report, o, role) for o in OBJECTIVES)


# ----------------------------------------------------------------------------- running


@dataclass(frozen=True)
class CompareRequest:
    policy: Path
    data: Path | str | InMemoryTable
    teacher: ModelRef | None = None
    candidates: tuple[Path | str | ModelSource, ...] = ()  # files or MLflow URIs (sources.py)
    teacher_scores: str | None = None
    candidate_scores: tuple[str, ...] = ()
    out: Path = Path("fairgate-compare")
    seed: int | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    engine: EngineOptions = field(default_factory=EngineOptions)


@dataclass(frozen=True)
class Candidate:
    name: str  # unique; also the name of its report folder
    source: str  # model path or score column
    report: GateReport
    objectives: tuple[ObjectiveValue, ...]

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """The blocking results (failed or undefined), as ``check[grouping]``."""
        return tuple(_check_label(r.check.id, r.key.grouping, r.status)
                     for r in self.report.decision.results if r.blocking)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(_check_label(r.check.id, r.key.grouping, r.status)
                     for r in self.report.decision.results
                     if not r.blocking and not passes(r))


def _check_label(check: str, grouping: object, status: Status) -> str:
    where = f"[{grouping}]" if grouping is not None else ""
    extra = "" if status is Status.FAIL else f" ({status.value})"
    return f"{check}{where}{extra}"


@dataclass(frozen=True)
class Comparison:
    request: CompareRequest
    teacher: str
    teacher_objectives: tuple[ObjectiveValue, ...]
    candidates: tuple[Candidate, ...]  # in input order
    ranking: tuple[Ranked, ...]  # best first

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    @property
    def exit_code(self) -> int:
        """0 when at least one candidate passes the gate (pass or warn), else 1."""
        return 0 if any(c.report.decision.exit_code == 0 for c in self.candidates) else 1

    @property
    def recommended(self) -> str | None:
        """The first-ranked candidate, if it passes the gate and all its objectives are defined."""
        if not self.ranking:
            return None
        top = self.candidate(self.ranking[0].name)
        if top.report.decision.exit_code != 0 or self.ranking[0].undefined:
            return None
        return top.name


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def candidate_names(sources: Sequence[str]) -> list[str]:
    """Folder-safe unique names: the file stem (or column), suffixed ``-1``, ``-2`` on clashes."""
    base = [_UNSAFE.sub("_", Path(s).stem if s.endswith(".onnx") else s).strip(".") or "candidate"
            for s in sources]
    counts = {b: base.count(b) for b in base}
    seen: dict[str, int] = {}
    out = []
    for b in base:
        if counts[b] > 1:
            seen[b] = seen.get(b, 0) + 1
            out.append(f"{b}-{seen[b]}")
        else:
            out.append(b)
    return out


def _sources(req: CompareRequest) -> tuple[list[tuple[ModelSource | str, str]], str]:
    """(candidate, name source) for every candidate (a model, or a scores column given as
    text), and the teacher's name: ONNX models, MLflow URIs and columns of logged scores may
    be mixed, as in ``fairgate check``. Files are checked here; URIs when they are resolved."""
    if (req.teacher is None) == (req.teacher_scores is None):
        raise UsageError("give the teacher once: --teacher T.onnx or --teacher-scores COL")
    if not req.candidates and not req.candidate_scores:
        raise UsageError("give one or more candidates: --candidate S.onnx or --candidate-scores "
                         "COL (both repeatable)")
    models = [model_source(c, "--candidate") for c in req.candidates]
    if req.teacher is not None and not isinstance(req.teacher, bytes):
        model_source(req.teacher, "--teacher")  # a malformed URI: exit 2 before any work
    for m in models:
        if m.path is not None:
            require_regular_file(m.path, ModelError, where=f"candidate model {m.given}",
                                 expected="an .onnx file")
    sources: list[tuple[ModelSource | str, str]] = [(m, _name_seed(m)) for m in models]
    sources += [(c, c) for c in req.candidate_scores]
    if isinstance(req.teacher, bytes):  # the Python API
        return sources, f"in-memory teacher model ({len(req.teacher):,} bytes)"
    return sources, str(req.teacher) if req.teacher is not None else str(req.teacher_scores)


def _name_seed(m: ModelSource) -> str:
    """What a candidate's name is made from: the file, ``credit/7``, ``credit@champion``,
    the logged model's id, ``run_<id>_<path>``."""
    if m.kind == "logged_model":
        return str(m.model_id)
    if m.kind == "run":
        return f"run_{(m.run_id or '')[:8]}_{m.artifact_path}"
    return m.given if m.path is not None else source_label(m)


def run_compare(req: CompareRequest) -> Comparison:
    """Gate every candidate against the teacher and rank them; no report is written here.

    Each candidate's report folder is made first, so that one blocked by a file fails
    before any candidate is gated.
    """
    sources, teacher = _sources(req)
    names = candidate_names([label for _, label in sources])
    for name in names:
        prepare_out_dir(req.out / name)
    candidates = []
    with ModelFiles(load_policy(req.policy)) as files:  # the teacher is downloaded once
        for name, (source, _) in zip(names, sources, strict=True):
            model = source if isinstance(source, ModelSource) else None
            gate_req = GateRequest(
                policy=req.policy, data=req.data, teacher=req.teacher,
                teacher_scores=req.teacher_scores,
                student=model, student_scores=source if isinstance(source, str) else None,
                out=req.out / name, seed=req.seed, batch_rows=req.batch_rows, formats=("json",),
                engine=req.engine,
            )
            try:
                report = run_gate(gate_req, files)
            except FairgateError as e:  # same class, so the same exit code; say which one
                raise type(e)(f"gating candidate {name}: {e}") from None
            given = source if isinstance(source, str) else source.given
            candidates.append(Candidate(name, given, report, objective_values(report)))
    ranking = rank([Scored(c.name, c.report.decision.verdict, tuple(o.value for o in c.objectives))
                    for c in candidates])
    return Comparison(req, teacher, objective_values(candidates[0].report, "teacher"),
                      tuple(candidates), tuple(ranking))


# ----------------------------------------------------------------------------- output


def _fmt(o: ObjectiveValue, with_grouping: bool = True) -> str:
    if not o.defined:
        return "undef"
    text = f"{o.value:.4f}"
    return f"{text} ({o.grouping})" if with_grouping and o.grouping else text


def _rows(c: Comparison) -> list[list[str]]:
    rows = []
    for r in c.ranking:
        cand = c.candidate(r.name)
        rows.append([str(r.rank), r.name, cand.report.verdict,
                     ", ".join(cand.failed_checks) or "-",
                     *(_fmt(o) for o in cand.objectives),
                     "yes" if r.on_front else "no"])
    return rows


HEADER = ["rank", "candidate", "verdict", "failed checks", *(o.title for o in OBJECTIVES),
          "on front"]


def _notes(c: Comparison) -> list[str]:
    lines = []
    for r in c.ranking:
        cand = c.candidate(r.name)
        for o, v in zip(OBJECTIVES, cand.objectives, strict=True):
            if not v.defined:
                lines.append(f"{r.name}: {o.title} undefined (ranked last, not on the front): "
                             f"{v.reason}")
    return lines


def _objective_text(c: Comparison) -> str:
    groupings = ", ".join(dict.fromkeys(
        str(v.key.grouping) for v in c.candidates[0].report.kpis
        if v.key.metric == "demographic_parity_difference" and v.key.grouping is not None))
    return ("objectives: accuracy (higher is better); worst DP diff and worst EO diff = the "
            "student's largest demographic_parity_difference and equalized_odds_difference "
            f"over {groupings} (lower is better)")


def _verdict_line(c: Comparison) -> str:
    passing = sum(x.report.decision.exit_code == 0 for x in c.candidates)
    if c.recommended:
        return f"{passing} of {len(c.candidates)} candidates pass; first ranked: {c.recommended}"
    if passing:
        return (f"{passing} of {len(c.candidates)} candidates pass, but the first ranked has an "
                "undefined objective: no recommendation")
    return f"no candidate passes the gate ({len(c.candidates)} gated)"


def _teacher_name(c: Comparison) -> str:
    return model_label(c.candidates[0].report.inputs["teacher"])


def render_terminal(c: Comparison, width: int | None = None) -> str:
    """The ranking for the terminal and CI logs: every cell and note through safe.terminal;
    fitted to ``width`` columns (None: any), stacked per candidate when the table is wider."""
    from fairgate.report.terminal import fit_table, wrap

    t = safe.terminal
    rows = [[t(x) for x in row] for row in _rows(c)]
    rows.append(["", f"teacher: {t(_teacher_name(c))}", "", "",
                 *(t(_fmt(o)) for o in c.teacher_objectives), ""])
    first = c.candidates[0].report
    table = [x for _, x in fit_table(rows, HEADER, width, title=2)[0]]
    lines = [*wrap(f"fairgate compare · {t(first.policy.path)} · "
                   f"{first.inputs['data']['rows']:,} rows · "
                   f"{len(c.candidates)} candidates vs {t(_teacher_name(c))}", width),
             *wrap(t(_objective_text(c), 1000), width), "", *table, "",
             *wrap(t(_verdict_line(c)), width)]
    for n in _notes(c):
        lines += wrap(t(n, 500), width)
    lines += ["", *wrap(f"Reports: {t(c.request.out)}/ (compare.md, compare.json, "
                        "<candidate>/report.json)", width)]
    return "\n".join(lines) + "\n"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def render_markdown(c: Comparison) -> str:
    """compare.md: every cell and phrase that carries data through safe.markdown."""
    cell, code = safe.markdown, safe.markdown_code
    lines = ["# fairgate compare", "",
             f"Policy {code(c.candidates[0].report.policy.path)}, audit set "
             f"{code(c.request.data)} ({c.candidates[0].report.inputs['data']['rows']:,} rows), "
             f"teacher {code(c.teacher)}, {len(c.candidates)} candidates.", "",
             f"**{cell(_verdict_line(c))}**", "",
             cell(_capital(_objective_text(c))) + ". A candidate is on the Pareto front when "
             "no other is at least as good on all three and strictly better on one. Ranking: "
             "defined objectives first, then verdict (pass, warn, fail), then front membership, "
             "then accuracy, worst DP diff, worst EO diff.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(c):
        lines.append("| " + " | ".join(cell(x) for x in row) + " |")
    lines.append("| | teacher (reference) | | | "
                 + " | ".join(cell(_fmt(o)) for o in c.teacher_objectives) + " | |")
    notes = _notes(c)
    if notes:
        lines += ["", "Undefined objectives:", "", *(f"- {cell(n)}" for n in notes)]
    lines += ["", "Each candidate's full gate report: `<candidate>/report.json`."]
    return "\n".join(lines) + "\n"


def _objective_dict(o: ObjectiveValue) -> dict[str, Any]:
    return {"value": o.value if o.defined else None, "grouping": o.grouping,
            **({"undefined": o.reason} if not o.defined else {})}


def to_dict(c: Comparison) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "objectives": [{"name": o.name, "metric": o.metric, "better": "higher" if o.sense == "max"
                        else "lower", "aggregate": "max over groupings" if o.worst_over_groupings
                        else "overall"} for o in OBJECTIVES],
        "ranking_rule": ["defined objectives", "verdict: pass, warn, fail", "on the Pareto front",
                         "accuracy (higher)", "worst_dp (lower)", "worst_eo (lower)"],
        "exit_code": c.exit_code,
        "recommended": c.recommended,
        "teacher": {"source": c.teacher,
                    "objectives": {o.name: _objective_dict(v)
                                   for o, v in zip(OBJECTIVES, c.teacher_objectives, strict=True)}},
        "candidates": [
            {
                "rank": r.rank,
                "name": r.name,
                "source": (cand := c.candidate(r.name)).source,
                "report": f"{r.name}/report.json",
                "verdict": cand.report.verdict,
                "exit_code": cand.report.decision.exit_code,
                "failed_checks": list(cand.failed_checks),
                "warnings": list(cand.warnings),
                "objectives": {o.name: _objective_dict(v)
                               for o, v in zip(OBJECTIVES, cand.objectives, strict=True)},
                "on_front": r.on_front,
                "dominated_by": list(r.dominated_by),
            }
            for r in c.ranking
        ],
    }


def write_comparison(c: Comparison, out: Path) -> list[Path]:
    """Each candidate's report.json in ``out/<name>/``, then compare.md and compare.json."""
    written = []
    for cand in c.candidates:
        written += write_reports(cand.report, out / cand.name, ("json",))
    for name, text in (("compare.md", render_markdown(c)),
                       ("compare.json", json.dumps(to_dict(c), indent=2, ensure_ascii=False,
                                                   allow_nan=False) + "\n")):
        write_atomic(out / name, text)
        written.append(out / name)
    return written
