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
undefined (fail closed).

**Telling candidates apart, not ranking noise.** Every candidate's report carries, per
grouping, the paired interval of its change against the teacher (student − teacher on the
same rows). The teacher is the same model on the same rows in every report, so two
candidates differ by exactly the difference of their changes: A − B = (A − T) − (B − T).
A is *better beyond noise* than B on an objective when, in every grouping the objective is
taken over, A's change interval lies entirely on the better side of B's (for accuracy,
the one overall interval). If A were in fact no better than B, some grouping h would have
A's true change no better than B's there (for a worst over groupings: the grouping where A
attains its worst), so the claim needs A's interval to miss on one side or B's on the
other in h: it is wrong in at most 1 − confidence of audits (each side of an interval
misses at most half of that), whatever the dependence between the candidates. The
teacher's own sampling error cancels, which is why this is far sharper than comparing the
candidates' own intervals. It is conservative: two candidates that no such claim separates
are called *indistinguishable* on that objective, not equal.

A candidate whose value or any change interval on an objective is undefined (an undefined
metric, ``statistics.resamples: 0``, too few defined resamples) is *not comparable*: it
beats nothing, is beaten by nothing, is never on the front and ranks after every comparable
candidate (fail closed, and said in every report).

Pareto front: A *dominates* B when A is at least as good on every objective's estimate,
strictly better on one, and better beyond noise on at least one; the undominated comparable
candidates form the front. Requiring point dominance keeps the relation acyclic, so the
fronts peel off in layers (the front, then the front of the rest, ...).

Ranking: comparable candidates first, then the verdict (pass, warn, fail), then the layer.
Candidates equal on all three share a rank: no candidate of a shared rank dominates
another, so they are trade-offs or indistinguishable, and their order within it (accuracy,
then worst DP, then worst EO estimates) is for display only. The *best* candidates are the
first-ranked ones that pass the gate; ``recommended`` is set only when there is exactly one.
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
from fairgate.core.gate import CheckResult, Status, Verdict, passes
from fairgate.core.outcome import GateReport
from fairgate.core.stats import Interval
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

SCHEMA_VERSION = 2
Sense = Literal["max", "min"]
Role = Literal["teacher", "student"]
#: How a candidate stands against the best estimate on one objective.
Standing = Literal["best", "indistinguishable", "worse", "not comparable"]
CANDIDATE_FORMATS = ("json", "md", "html")  # each candidate's own reports


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

#: One change interval (student − teacher) per grouping: (grouping, lo, hi); an end may be
#: ±inf (unbounded), NaN means undefined.
Changes = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class ObjectiveValue:
    """A candidate's value on one objective and the paired change intervals behind it.

    NaN means undefined and ``reason`` says why; ``changes`` holds, per grouping the
    objective is taken over (one entry, ``overall``, for accuracy), the interval of the
    change against the teacher, at report.json's precision.
    """

    value: float
    grouping: str | None = None  # where the worst was found (None: overall metric)
    reason: str | None = None
    changes: Changes = ()

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)

    @property
    def comparable(self) -> bool:
        """Defined, with every change interval defined: what a comparison needs."""
        return self.defined and bool(self.changes) and all(
            not (math.isnan(lo) or math.isnan(hi)) for _, lo, hi in self.changes)


@dataclass(frozen=True)
class Scored:
    """What the ranking needs of one candidate: pure input of :func:`rank`.

    ``changes`` holds one :data:`Changes` per objective; empty means no intervals, so the
    candidate is not comparable (as is one with a NaN value)."""

    name: str
    verdict: Verdict
    values: tuple[float, ...]  # one per objective, NaN = undefined
    changes: tuple[Changes, ...] = ()

    def comparable(self, k: int) -> bool:
        if math.isnan(self.values[k]) or len(self.changes) <= k or not self.changes[k]:
            return False
        return all(not (math.isnan(lo) or math.isnan(hi)) for _, lo, hi in self.changes[k])

    @property
    def fully_comparable(self) -> bool:
        return all(self.comparable(k) for k in range(len(self.values)))


@dataclass(frozen=True)
class Ranked:
    name: str
    rank: int  # 1 = best; candidates that share a rank are trade-offs or indistinguishable
    on_front: bool
    dominated_by: tuple[str, ...]  # dominated beyond noise by these
    undefined: tuple[str, ...]  # names of the objectives that are not comparable
    layer: int | None = None  # 1 = the front, 2 = the front of the rest, ...; None: not comparable
    standing: tuple[Standing, ...] = ()  # per objective, against its best estimate
    indistinguishable_from: tuple[str, ...] = ()  # the others no objective tells apart


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


def better_beyond_noise(a: Changes, b: Changes, sense: Sense) -> bool:
    """In every grouping, ``a``'s change interval lies entirely on the better side of
    ``b``'s (module docstring: wrong in at most 1 − confidence of audits). False when
    either is undefined or their groupings differ."""
    if not a or not b or [g for g, _, _ in a] != [g for g, _, _ in b]:
        return False
    if any(math.isnan(x) for _, lo, hi in (*a, *b) for x in (lo, hi)):
        return False
    if sense == "max":
        return all(lo_a > hi_b for (_, lo_a, _), (_, _, hi_b) in zip(a, b, strict=True))
    return all(hi_a < lo_b for (_, _, hi_a), (_, lo_b, _) in zip(a, b, strict=True))


def dominates_beyond_noise(a: Scored, b: Scored, senses: Sequence[Sense] = SENSES) -> bool:
    """``a`` dominates ``b`` on the estimates and is better beyond noise on one objective;
    both must be comparable on every objective."""
    if not (a.fully_comparable and b.fully_comparable):
        return False
    return dominates(a.values, b.values, senses) and any(
        better_beyond_noise(x, y, s) for x, y, s in zip(a.changes, b.changes, senses, strict=True))


def pareto_front(
    values: Sequence[Sequence[float]], senses: Sequence[Sense] = SENSES
) -> list[tuple[int, ...]]:
    """For each candidate, the indices of the candidates that dominate it on the estimates
    alone (no intervals). Ties (equal vectors) dominate neither way."""
    return [
        tuple(j for j, other in enumerate(values) if j != i and dominates(other, mine, senses))
        for i, mine in enumerate(values)
    ]


def layers(scored: Sequence[Scored], senses: Sequence[Sense] = SENSES) -> list[int | None]:
    """Non-dominated sorting under :func:`dominates_beyond_noise`: 1 for the front, 2 for the
    front of the rest, ...; None for a candidate that is not comparable."""
    out: list[int | None] = [None] * len(scored)
    left = [i for i, s in enumerate(scored) if s.fully_comparable]
    layer = 0
    while left:
        layer += 1
        front = [i for i in left
                 if not any(dominates_beyond_noise(scored[j], scored[i], senses) for j in left)]
        for i in front:  # never empty: point dominance is acyclic
            out[i] = layer
        left = [i for i in left if i not in front]
    return out


def standings(scored: Sequence[Scored], senses: Sequence[Sense] = SENSES) -> list[tuple[Standing, ...]]:
    """Per candidate and objective: ``best`` (the best estimate among the candidates
    comparable on every objective, all of them on an exact tie), ``worse`` (a best one is
    better beyond noise), ``indistinguishable`` (none is), or ``not comparable`` (on every
    objective of a candidate that is not comparable on one: it leads nothing)."""
    out: list[list[Standing]] = [[] for _ in scored]
    pool = [i for i, s in enumerate(scored) if s.fully_comparable]
    for k, sense in enumerate(senses):
        pick = max if sense == "max" else min
        top = pick((scored[i].values[k] for i in pool), default=math.nan)
        leaders = [i for i in pool if scored[i].values[k] == top]
        for i, s in enumerate(scored):
            if i not in pool:
                out[i].append("not comparable")
            elif i in leaders:
                out[i].append("best")
            elif any(better_beyond_noise(scored[j].changes[k], s.changes[k], sense)
                     for j in leaders):
                out[i].append("worse")
            else:
                out[i].append("indistinguishable")
    return [tuple(x) for x in out]


def indistinguishable(a: Scored, b: Scored, senses: Sequence[Sense] = SENSES) -> bool:
    """Comparable on every objective, and neither is better beyond noise on any."""
    if not (a.fully_comparable and b.fully_comparable):
        return False
    return not any(better_beyond_noise(x, y, s) or better_beyond_noise(y, x, s)
                   for x, y, s in zip(a.changes, b.changes, senses, strict=True))


def rank(scored: Sequence[Scored], senses: Sequence[Sense] = SENSES) -> list[Ranked]:
    """Order the candidates (see the module docstring); best first."""
    layer = layers(scored, senses)
    stand = standings(scored, senses)
    names = [o.name for o in OBJECTIVES] if len(senses) == len(OBJECTIVES) else [
        f"objective {k}" for k in range(len(senses))]

    def key(i: int) -> tuple[Any, ...]:
        s = scored[i]
        return (layer[i] is None, _VERDICT_ORDER[s.verdict], layer[i] or 0)

    def shown(i: int) -> tuple[Any, ...]:  # within a shared rank: display order only
        return tuple((1, 0.0) if math.isnan(v) else (0, -v if sense == "max" else v)
                     for v, sense in zip(scored[i].values, senses, strict=True))

    order = sorted(range(len(scored)), key=lambda i: (key(i), shown(i)))  # stable: input order
    out: list[Ranked] = []
    for pos, i in enumerate(order):
        s = scored[i]
        r = out[-1].rank if pos > 0 and key(order[pos - 1]) == key(i) else pos + 1
        out.append(Ranked(
            name=s.name, rank=r, on_front=layer[i] == 1,
            dominated_by=tuple(o.name for o in scored if dominates_beyond_noise(o, s, senses)),
            undefined=tuple(n for k, n in enumerate(names) if not s.comparable(k)),
            layer=layer[i], standing=stand[i],
            indistinguishable_from=tuple(o.name for o in scored
                                         if o is not s and indistinguishable(s, o, senses)),
        ))
    return out


# ----------------------------------------------------------------------------- objectives


def _value_of(v: MetricValue, role: Role) -> tuple[float, str | None]:
    """The value at report.json's precision, so the ranking is the same on every machine."""
    x, why = (v.teacher, v.teacher_reason) if role == "teacher" else (v.student, v.student_reason)
    rounded = json_number(x)
    return (math.nan if rounded is None else rounded), why


def _end(x: float) -> float:
    """An interval end at report.json's precision; ±inf stays (an unbounded end)."""
    if math.isinf(x):
        return x
    rounded = json_number(x)
    return math.nan if rounded is None else rounded


def _change(v: MetricValue, min_defined: float) -> tuple[str, float, float]:
    where = str(v.key.grouping) if v.key.grouping is not None else "overall"
    i: Interval | None = v.delta_interval
    if i is None or i.defined < min_defined:
        return where, math.nan, math.nan
    return where, _end(i.lo), _end(i.hi)


def objective_value(report: GateReport, objective: Objective, role: Role = "student") -> ObjectiveValue:
    """One objective of one model, from the gate report's KPIs; undefined if any part is.
    The change intervals are the student's (against the teacher) whatever ``role``."""
    found = [v for v in report.kpis if v.key.metric == objective.metric and v.key.alpha is None
             and (v.key.grouping is not None) == objective.worst_over_groupings]
    if not found:
        return ObjectiveValue(math.nan, reason=f"{objective.metric} is not in the gate report")
    changes = tuple(_change(v, report.policy.policy.statistics.min_defined) for v in found)
    undefined = []
    for v in found:
        x, why = _value_of(v, role)
        if math.isnan(x):
            where = f" over {v.key.grouping}" if v.key.grouping else ""
            undefined.append(f"{objective.metric}{where} is undefined"
                             + (f" ({why})" if why else ""))
    if undefined:
        return ObjectiveValue(math.nan, reason="; ".join(undefined), changes=changes)
    missing = [g for g, lo, hi in changes if math.isnan(lo) or math.isnan(hi)]
    reason = None
    if missing and role == "student":
        resamples = report.policy.policy.statistics.resamples
        why = ("statistics.resamples is 0" if resamples == 0 else
               "too few resamples defined it (statistics.min_defined)")
        reason = f"no interval of the change over {', '.join(missing)}: {why}"
    if not objective.worst_over_groupings:
        return ObjectiveValue(_value_of(found[0], role)[0], reason=reason, changes=changes)
    worst = max(found, key=lambda v: _value_of(v, role)[0])  # first grouping wins ties
    return ObjectiveValue(_value_of(worst, role)[0], grouping=str(worst.key.grouping),
                          reason=reason, changes=changes)


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
    def passed(self) -> bool:
        """The gate lets this candidate through (pass, or warn)."""
        return self.report.decision.exit_code == 0

    @property
    def blocking(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.report.decision.results if r.blocking)

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """The blocking results (failed or undefined), as ``check[grouping]``."""
        return tuple(_check_label(r.check.id, r.key.grouping, r.status) for r in self.blocking)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(_check_label(r.check.id, r.key.grouping, r.status)
                     for r in self.report.decision.results
                     if not r.blocking and not passes(r))

    @property
    def scored(self) -> Scored:
        return Scored(self.name, self.report.decision.verdict,
                      tuple(o.value for o in self.objectives),
                      tuple(o.changes for o in self.objectives))


def _check_label(check: str, grouping: object, status: Status) -> str:
    where = f"[{grouping}]" if grouping is not None else ""
    extra = "" if status is Status.FAIL else f" ({status.value})"
    return f"{check}{where}{extra}"


@dataclass(frozen=True)
class Comparison:
    """What ``fairgate compare`` decided; ``fairgate.compare`` returns it.

    ``ranking`` best first; ``best`` the first-ranked candidates that pass the gate (several
    when none dominates another beyond noise); ``recommended`` the only best one, else None;
    ``indistinguishable`` the other passing candidates that no objective tells apart from a
    best one.
    """

    request: CompareRequest
    teacher: str
    teacher_objectives: tuple[ObjectiveValue, ...]
    candidates: tuple[Candidate, ...]  # in input order
    ranking: tuple[Ranked, ...]  # best first
    best: tuple[str, ...] = ()
    indistinguishable: tuple[str, ...] = ()

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def on_objective(self, k: int) -> tuple[list[str], list[str]]:
        """Objective ``k``'s best candidates and those indistinguishable from them, in rank
        order."""
        return ([r.name for r in self.ranking if r.standing[k] == "best"],
                [r.name for r in self.ranking if r.standing[k] == "indistinguishable"])

    @property
    def exit_code(self) -> int:
        """0 when at least one candidate passes the gate (pass or warn), else 1."""
        return 0 if any(c.passed for c in self.candidates) else 1

    @property
    def verdict(self) -> str:
        """The best verdict of any candidate: ``pass``, ``warn`` or ``fail``."""
        return min((c.report.decision.verdict for c in self.candidates),
                   key=_VERDICT_ORDER.__getitem__).value

    @property
    def recommended(self) -> str | None:
        """The best candidate when there is exactly one; None when none passes, when no
        passing one is comparable, or when several are tied for best."""
        return self.best[0] if len(self.best) == 1 else None

    @property
    def passing(self) -> tuple[str, ...]:
        """The candidates that pass the gate, in rank order."""
        return tuple(r.name for r in self.ranking if self.candidate(r.name).passed)


def best_and_ties(candidates: Sequence[Candidate], ranking: Sequence[Ranked]
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(best, indistinguishable) as :class:`Comparison` defines them."""
    by_name = {c.name: c for c in candidates}
    best = tuple(r.name for r in ranking if r.rank == 1 and by_name[r.name].passed
                 and not r.undefined)
    ties = tuple(r.name for r in ranking if r.name not in best and by_name[r.name].passed
                 and any(b in r.indistinguishable_from for b in best))
    return best, ties


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
    ranking = rank([c.scored for c in candidates])
    best, ties = best_and_ties(candidates, ranking)
    return Comparison(req, teacher, objective_values(candidates[0].report, "teacher"),
                      tuple(candidates), tuple(ranking), best, ties)


# ----------------------------------------------------------------------------- output

MARK: dict[Standing, str] = {"best": "best", "indistinguishable": "≈best", "worse": "worse",
                             "not comparable": "n/c"}
HEADER = ["rank", "candidate", "verdict", "failed checks", *(o.title for o in OBJECTIVES),
          "on front"]
RULE = ("A candidate is better than another beyond noise on an objective when, in every "
        "grouping the objective is taken over, its paired change interval against the "
        "teacher lies entirely on the better side of the other's (the teacher's own error "
        "cancels; such a claim is wrong in at most 1 − confidence of audits). Marks: best = "
        "the best estimate; ≈best = not distinguishable from it; worse = the best is better "
        "beyond noise; n/c = not comparable (an undefined value or interval on some objective: "
        "never best, ranked last). A candidate is dominated when another is at least as good "
        "on every estimate and better beyond noise on one; the undominated ones form the "
        "Pareto front. Ranking: comparable first, then verdict (pass, warn, fail), then "
        "Pareto layer; a shared rank means trade-offs or indistinguishable candidates, listed "
        "by accuracy for display only.")


def value_text(o: ObjectiveValue, with_grouping: bool = True) -> str:
    if not o.defined:
        return "undef"
    text = f"{o.value:.4f}"
    return f"{text} ({o.grouping})" if with_grouping and o.grouping else text


def cell_text(o: ObjectiveValue, standing: Standing) -> str:
    """An objective's cell: value, where the worst is, and the mark against the best."""
    return f"{value_text(o)} {MARK[standing]}"


def change_text(changes: Changes) -> str:
    """``sex [-0.0100, +0.0200]; race [...]``: the paired changes against the teacher."""
    def end(x: float) -> str:
        return "undef" if math.isnan(x) else "−∞" if x == -math.inf else "+∞" if x == math.inf \
            else f"{x:+.4f}"
    return "; ".join(f"{g} [{end(lo)}, {end(hi)}]" for g, lo, hi in changes) or "none"


def _rows(c: Comparison) -> list[list[str]]:
    rows = []
    for r in c.ranking:
        cand = c.candidate(r.name)
        rows.append([str(r.rank), r.name, cand.report.verdict,
                     ", ".join(cand.failed_checks) or "-",
                     *(cell_text(o, st) for o, st in zip(cand.objectives, r.standing, strict=True)),
                     "yes" if r.on_front else "no"])
    return rows


def notes(c: Comparison) -> list[str]:
    """Why a candidate is not comparable on an objective, one line each."""
    lines = []
    for r in c.ranking:
        cand = c.candidate(r.name)
        for o, v in zip(OBJECTIVES, cand.objectives, strict=True):
            if not v.defined:
                lines.append(f"{r.name}: {o.title} undefined (ranked last, not on the front): "
                             f"{v.reason}")
            elif not v.comparable:
                lines.append(f"{r.name}: {o.title} not comparable (ranked last, not on the "
                             f"front): {v.reason}")
    return lines


def objective_text(c: Comparison) -> str:
    groupings = ", ".join(dict.fromkeys(
        str(v.key.grouping) for v in c.candidates[0].report.kpis
        if v.key.metric == "demographic_parity_difference" and v.key.grouping is not None))
    return ("objectives: accuracy (higher is better); worst DP diff and worst EO diff = the "
            "student's largest demographic_parity_difference and equalized_odds_difference "
            f"over {groupings} (lower is better)")


def verdict_line(c: Comparison) -> str:
    passing = sum(x.passed for x in c.candidates)
    head = f"{passing} of {len(c.candidates)} candidates pass"
    if not passing:
        return f"no candidate passes the gate ({len(c.candidates)} gated)"
    if not c.best:
        return (f"{head}, but none of them is comparable on every objective (an undefined "
                "value or interval): no recommendation")
    if len(c.best) == 1:
        text = f"{head}; best: {c.best[0]}"
    else:
        text = (f"{head}; best, tied (none dominates another beyond noise): "
                f"{', '.join(c.best)}")
    if c.indistinguishable:
        text += ("; indistinguishable from a best one on every objective: "
                 + ", ".join(c.indistinguishable))
    return text


def leaders(c: Comparison) -> list[str]:
    """Per objective, one line: the best estimate and the candidates indistinguishable
    from it."""
    lines = []
    for k, o in enumerate(OBJECTIVES):
        best, ties = c.on_objective(k)
        if not best:
            lines.append(f"{o.title}: no comparable candidate")
            continue
        lines.append(f"{o.title}: {', '.join(best)}"
                     + (f" (indistinguishable: {', '.join(ties)})" if ties else
                        " (better than every other beyond noise)" if len(c.ranking) > 1 else ""))
    return lines


def teacher_name(c: Comparison) -> str:
    return model_label(c.candidates[0].report.inputs["teacher"])


def render_terminal(c: Comparison, width: int | None = None) -> str:
    """The ranking for the terminal and CI logs: every cell and note through safe.terminal;
    fitted to ``width`` columns (None: any), stacked per candidate when the table is wider."""
    from fairgate.report.terminal import fit_table, wrap

    t = safe.terminal
    rows = [[t(x) for x in row] for row in _rows(c)]
    rows.append(["", f"teacher: {t(teacher_name(c))}", "", "",
                 *(t(value_text(o)) for o in c.teacher_objectives), ""])
    first = c.candidates[0].report
    table = [x for _, x in fit_table(rows, HEADER, width, title=2)[0]]
    lines = [*wrap(f"fairgate compare · {t(first.policy.path)} · "
                   f"{first.inputs['data']['rows']:,} rows · "
                   f"{len(c.candidates)} candidates vs {t(teacher_name(c))}", width),
             *wrap(t(objective_text(c), 1000), width), "", *table, "",
             *wrap(t(verdict_line(c), 5000), width), "best estimate per objective:",
             *(x for line in leaders(c) for x in wrap(t(line, 5000), width, "  ")),
             *wrap("marks: best = best estimate; ≈best = not distinguishable from it by the "
                   "paired intervals; worse = beaten beyond noise; n/c = not comparable", width)]
    for n in notes(c):
        lines += wrap(t(n, 500), width)
    lines += ["", *wrap(f"Reports: {t(c.request.out)}/ (compare.html, compare.md, compare.json, "
                        "<candidate>/report.html, report.md, report.json)", width)]
    return "\n".join(lines) + "\n"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def render_markdown(c: Comparison) -> str:
    """compare.md: every cell and phrase that carries data through safe.markdown; each
    candidate links to its own report.md and report.html."""
    cell, code = safe.markdown, safe.markdown_code
    lines = ["# fairgate compare", "",
             f"Policy {code(c.candidates[0].report.policy.path)}, audit set "
             f"{code(c.request.data)} ({c.candidates[0].report.inputs['data']['rows']:,} rows), "
             f"teacher {code(c.teacher)}, {len(c.candidates)} candidates.", "",
             f"**{cell(verdict_line(c), 5000)}**", "", "Best estimate per objective:", "",
             *(f"- {cell(line, 5000)}" for line in leaders(c)), "",
             cell(_capital(objective_text(c))) + ".", "",
             "| " + " | ".join([*HEADER, "reports"]) + " |", "|" + "---|" * (len(HEADER) + 1)]
    for r, row in zip(c.ranking, _rows(c), strict=True):
        name = safe.html(r.name)  # folder-safe already; escaped all the same
        links = f"[md]({name}/report.md) · [html]({name}/report.html)"
        lines.append("| " + " | ".join(cell(x) for x in row) + f" | {links} |")
    lines.append("| | teacher (reference) | | | "
                 + " | ".join(cell(value_text(o)) for o in c.teacher_objectives) + " | | |")
    lines += ["", "<details><summary>How candidates are told apart</summary>", "", cell(RULE), "",
              "| candidate | " + " | ".join(f"{o.title}: change vs teacher" for o in OBJECTIVES)
              + " |", "|---|" + "---|" * len(OBJECTIVES)]
    for r in c.ranking:
        cand = c.candidate(r.name)
        lines.append(f"| {cell(r.name)} | "
                     + " | ".join(cell(change_text(o.changes)) for o in cand.objectives) + " |")
    lines += ["", "</details>"]
    dominated = [(r.name, r.dominated_by) for r in c.ranking if r.dominated_by]
    if dominated:
        lines += ["", "Dominated beyond noise:", "",
                  *(f"- {cell(n)} by {cell(', '.join(by))}" for n, by in dominated)]
    undefined = notes(c)
    if undefined:
        lines += ["", "Not comparable:", "", *(f"- {cell(n)}" for n in undefined)]
    lines += ["", "Each candidate's full gate report: `<candidate>/report.md`, `report.html`, "
              "`report.json`."]
    return "\n".join(lines) + "\n"


def _end_json(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _objective_dict(o: ObjectiveValue, standing: Standing | None = None) -> dict[str, Any]:
    return {"value": o.value if o.defined else None, "grouping": o.grouping,
            **({"standing": standing} if standing is not None else {}),
            "changes": [{"grouping": g, "interval": [_end_json(lo), _end_json(hi)]}
                        for g, lo, hi in o.changes],
            **({"undefined": o.reason} if not o.defined else
               {"not_comparable": o.reason} if standing is not None and not o.comparable
               else {})}


def reports_of(name: str) -> dict[str, str]:
    """Where a candidate's own reports are, relative to the comparison's folder."""
    return {"json": f"{name}/report.json", "md": f"{name}/report.md",
            "html": f"{name}/report.html"}


def to_dict(c: Comparison) -> dict[str, Any]:
    first = c.candidates[0].report.policy.policy.statistics
    return {
        "schema_version": SCHEMA_VERSION,
        "objectives": [{"name": o.name, "metric": o.metric, "better": "higher" if o.sense == "max"
                        else "lower", "aggregate": "max over groupings" if o.worst_over_groupings
                        else "overall"} for o in OBJECTIVES],
        "confidence": first.confidence,
        "rule": RULE,
        "ranking_rule": ["comparable on every objective", "verdict: pass, warn, fail",
                         "Pareto layer (dominance beyond noise)"],
        "exit_code": c.exit_code,
        "verdict": c.verdict,
        "recommended": c.recommended,
        "best": list(c.best),
        "indistinguishable": list(c.indistinguishable),
        "passing": list(c.passing),
        "teacher": {"source": c.teacher,
                    "objectives": {o.name: {"value": v.value if v.defined else None,
                                            "grouping": v.grouping,
                                            **({"undefined": v.reason} if not v.defined else {})}
                                   for o, v in zip(OBJECTIVES, c.teacher_objectives, strict=True)}},
        "candidates": [
            {
                "rank": r.rank,
                "name": r.name,
                "source": (cand := c.candidate(r.name)).source,
                "report": f"{r.name}/report.json",
                "reports": reports_of(r.name),
                "verdict": cand.report.verdict,
                "exit_code": cand.report.decision.exit_code,
                "failed_checks": list(cand.failed_checks),
                "warnings": list(cand.warnings),
                "objectives": {o.name: _objective_dict(v, st) for o, v, st in
                               zip(OBJECTIVES, cand.objectives, r.standing, strict=True)},
                "on_front": r.on_front,
                "layer": r.layer,
                "dominated_by": list(r.dominated_by),
                "indistinguishable_from": list(r.indistinguishable_from),
            }
            for r in c.ranking
        ],
    }


def write_comparison(c: Comparison, out: Path) -> list[Path]:
    """Each candidate's report.json, report.md and report.html in ``out/<name>/``, then
    compare.md, compare.json and compare.html."""
    from fairgate.report.compare_html import render_html

    written = []
    for cand in c.candidates:
        written += write_reports(cand.report, out / cand.name, CANDIDATE_FORMATS)
    for name, text in (("compare.md", render_markdown(c)),
                       ("compare.json", json.dumps(to_dict(c), indent=2, ensure_ascii=False,
                                                   allow_nan=False) + "\n"),
                       ("compare.html", render_html(c))):
        write_atomic(out / name, text)
        written.append(out / name)
    return written
