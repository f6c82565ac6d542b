"""``fairgate init``: a starter policy proposed from an audit set (and the models).

Proposals, never silent guesses. Each proposed value says in the policy why it was proposed
and that it must be reviewed, and the terminal lists them. Where the evidence is decisive
(a 0/1 label, a column named like a protected attribute, the column of an unnamed [N, 2]
output that agrees with the label on the sample) the value is written; where it is not,
an optional setting is written commented out with the choices, and a required one (the
label, its positive value, the sensitive attributes) stops init with the choices and the
option that settles it. The gate itself still refuses what it cannot prove.

:func:`sample_audit` and :func:`inspect_model` read files; :func:`propose` and
:func:`render` are pure functions of what was read.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairgate.core.bins import Bins, edge_text
from fairgate.core.counts import value_label
from fairgate.errors import FairgateError, InternalError, UsageError
from fairgate.report.safe import yaml_scalar

SAMPLE_ROWS = 100_000
MIN_GROUP_SIZE = 50  # as in policies/no-amplification.yaml
BIN_WHEN_DISTINCT = 20  # a numeric attribute with more values than this is proposed with bins
FEW_VALUES = 12  # other columns with at most this many values are listed as choices
#: How clearly one column of an unnamed [N, 2] output must agree with the label to be proposed.
AGREE_MIN, AGREE_MARGIN = 0.6, 0.2

_LABEL_NAMES = frozenset({"label", "target", "y", "class", "outcome", "ground_truth", "truth"})
_SENSITIVE_TOKENS = frozenset({
    "sex", "gender", "race", "ethnicity", "ethnic", "age", "religion", "nationality",
    "disability", "pregnancy", "caste", "colour", "color", "orientation"})
_SENSITIVE_NAMES = frozenset({"native_country", "country_of_birth", "marital_status",
                              "sexual_orientation", "national_origin"})
_POSITIVE_WORDS = {frozenset({"yes", "no"}): "yes", frozenset({"y", "n"}): "y",
                   frozenset({"true", "false"}): "true", frozenset({"t", "f"}): "t",
                   frozenset({"1", "0"}): "1", frozenset({"positive", "negative"}): "positive",
                   frozenset({"pos", "neg"}): "pos"}


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Proposal:
    """One proposed setting: the value (None: not proposed, written commented out), why,
    and the choices a person picks from."""

    key: str
    value: Any
    why: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attribute:
    """A proposed sensitive attribute, its bins if numeric, and its groups in the sample."""

    column: str
    why: str
    groups: tuple[tuple[str, int], ...]  # (group label, rows in the sample), largest first
    bins: Bins | None = None
    missing: int = 0  # rows without a value in the sample

    def small(self, min_size: int) -> int:
        return sum(1 for _, n in self.groups if n < min_size)


@dataclass(frozen=True)
class ModelFacts:
    """What init learnt of one model: its inputs and, for an unnamed [N, 2] output, how
    often each column agrees with the proposed positive label on the sample."""

    role: str
    path: str
    inputs: tuple[str, ...]  # "name type [shape]"
    reads: str = ""  # how fairgate reads the output, when it can without a setting
    agreement: tuple[float, float] | None = None  # columns 0 and 1
    rows: int = 0
    missing_inputs: tuple[str, ...] = ()  # per-column inputs the audit set lacks
    note: str = ""  # what stops fairgate reading it, if anything


@dataclass(frozen=True)
class Sample:
    """The first rows of the audit set, and whether they are all of it."""

    data: str
    table: pa.Table
    complete: bool

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def where(self) -> str:
        rows = f"{self.rows:,}"
        return f"all {rows} rows" if self.complete else f"the first {rows} rows"


@dataclass(frozen=True)
class Starter:
    """Everything ``fairgate init`` proposes."""

    sample: Sample
    label: Proposal
    positive: Proposal
    attributes: tuple[Attribute, ...]
    others: tuple[str, ...]  # other columns with few values, as choices
    positive_column: dict[str, Proposal] = field(default_factory=dict)  # "" shared, or role
    models: tuple[ModelFacts, ...] = ()
    min_group_size: int = MIN_GROUP_SIZE
    cross_groups: int = 0  # groups of the cross of all attributes in the sample
    cross_gated: int = 0  # of them, with at least min_group_size rows


# ----------------------------------------------------------------------------- reading


def sample_audit(data: str, rows: int = SAMPLE_ROWS) -> Sample:
    """The audit set's first ``rows`` rows, every column (files, folders and globs, as
    ``fairgate check`` reads them)."""
    from fairgate.inputs.audit import AuditSet
    from fairgate.inputs.data_source import discover

    source = discover(data)
    if source.kind == "table":
        raise UsageError(f"--data {data}: fairgate init reads files; export a sample of the table")
    names = tuple(AuditSet(source, (), {}).schema().names)
    audit = AuditSet(source, names, {}, batch_rows=min(rows, 65_536))
    batches, held, complete = [], 0, True
    for _, _, batch in audit.batches():
        batches.append(batch)
        held += batch.num_rows
        if held >= rows:
            complete = False
            break
    if not batches:
        from fairgate.errors import DataError

        raise DataError(f"{data}: the audit set has no rows")
    table = pa.Table.from_batches(batches).slice(0, rows)
    return Sample(data, table, complete and held <= rows)


def inspect_model(role: str, path: Path, sample: Sample, label: str, positive: Any) -> ModelFacts:
    """A model's inputs, and which column of an unnamed [N, 2] output agrees with
    ``label == positive`` on the sample (run with each column taken as positive)."""
    from fairgate.inputs.audit import LabelSpec, cast_columns
    from fairgate.inputs.model import OnnxPredictor
    from fairgate.inputs.outputs import ReadSettings

    def predictor(column: int | None) -> OnnxPredictor:
        return OnnxPredictor(role, path, None, ReadSettings(positive_label=positive,
                                                            positive_column=column))

    try:
        plain = predictor(None)
    except FairgateError as e:
        first = str(e)
    else:  # read without a setting; but a 0/1 positive_label taken as the column index is
        # a convention the values can contradict: check it like an unnamed output
        if not plain.zero_one:
            return ModelFacts(role, str(path), _inputs_of(plain), reads=_reads(plain),
                              missing_inputs=_missing(plain.columns, sample))
        first = ""
    try:
        ones = predictor(1)
    except FairgateError:  # what stops it is in the message (a matrix input needs features)
        return ModelFacts(role, str(path), (), note=first)
    zeros = predictor(0)
    inputs = _inputs_of(ones)
    missing = _missing(ones.columns, sample)
    if missing:
        return ModelFacts(role, str(path), inputs, missing_inputs=missing,
                          note="its inputs are not all columns of the audit set")
    table = sample.table
    y = LabelSpec(label, positive).positives(table.column(label).combine_chunks(), sample.data,
                                             0, set())
    agree = []
    try:
        for p in (zeros, ones):
            batch = table.select(list(p.columns)).combine_chunks().to_batches()[0]
            batch = cast_columns(batch, p.columns, p.column_types(), sample.data)
            agree.append(float(np.mean(p.predict(batch, 0)[1] == y)))
    except FairgateError as e:
        return ModelFacts(role, str(path), inputs, note=str(e))
    return ModelFacts(role, str(path), inputs, agreement=(agree[0], agree[1]), rows=len(y))


def _inputs_of(p: Any) -> tuple[str, ...]:
    """The model's inputs as its report describes them: ``name type [shape]``."""
    return tuple(f"{i['name']} {i['type']} {i['shape']}" for i in p.describe()["inputs"])


def _reads(p: Any) -> str:
    plan = p.plan
    what = plan.positive_text or plan.kind
    return f"output {plan.output!r}: {what}" + (f" ({plan.positive_from})" if plan.positive_from
                                                 else "")


def _missing(columns: Sequence[str], sample: Sample) -> tuple[str, ...]:
    return tuple(c for c in columns if c not in sample.table.column_names)


# ----------------------------------------------------------------------------- proposing


def normalized(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def sensitive_named(name: str) -> bool:
    """Named like a protected attribute (sex, race, age_group, native_country, ...)."""
    n = normalized(name)
    return n in _SENSITIVE_NAMES or bool(set(n.split("_")) & _SENSITIVE_TOKENS)


def _distinct(col: pa.ChunkedArray) -> list[Any]:
    values = pc.unique(col.drop_null()).to_pylist()
    return [v for v in values if not (isinstance(v, float) and v != v)]


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _require_column(option: str, name: str, sample: Sample) -> None:
    names = sample.table.column_names
    if name not in names:
        raise UsageError(f"{option} {name!r}: no such column in {sample.data}"
                         f"{_did_you_mean(name, names)} (columns: {', '.join(names[:30])}"
                         f"{' …' if len(names) > 30 else ''})")


def _counts_text(col: pa.ChunkedArray) -> str:
    counts = Counter(value_label(v) for v in col.to_pylist())
    return ", ".join(f"{v!r} ({n:,})" for v, n in counts.most_common(10))


def propose_label(sample: Sample, given: str | None) -> Proposal:
    """The label column: as given, else the one two-valued column named like a label, else
    the one two-valued column not named like a sensitive attribute; otherwise ask."""
    table = sample.table
    if given is not None:
        _require_column("--label", given, sample)
        n = len(_distinct(table.column(given)))
        if n != 2:
            raise UsageError(f"--label {given!r} holds {n} distinct values in {sample.where()} "
                             "of the audit set; fairgate init writes binary policies (two "
                             "values): for K classes start from "
                             "policies/multiclass-no-amplification.yaml")
        return Proposal("audit.label", given, "given with --label")
    binary = [c for c in table.column_names if len(_distinct(table.column(c))) == 2]
    named = [c for c in binary if normalized(c) in _LABEL_NAMES
             or normalized(c).endswith(("_label", "_target", "_outcome"))]
    if len(named) == 1:
        return Proposal("audit.label", named[0], "the only two-valued column named like a "
                        "label", tuple(binary))
    plain = [c for c in binary if not sensitive_named(c)]
    if not named and len(plain) == 1:
        return Proposal("audit.label", plain[0], "the only two-valued column not named like "
                        "a sensitive attribute", tuple(binary))
    shown = ", ".join(named or binary) or "none"
    raise UsageError(f"{sample.data}: cannot tell which column is the label (two-valued "
                     f"columns: {shown}); give --label COLUMN")


def propose_positive(sample: Sample, label: str, given: str | None) -> Proposal:
    """The positive (favourable) label value: as given, else 1 of 0/1, true of booleans,
    yes of yes/no (and the like); otherwise ask, listing both values."""
    col = sample.table.column(label)
    values = _distinct(col)
    by_text = {value_label(v): v for v in values}
    if given is not None:
        if given not in by_text:
            raise UsageError(f"--positive {given!r}: label column {label!r} holds "
                             f"{_counts_text(col)}{_did_you_mean(given, list(by_text))}")
        return Proposal("audit.positive_label", by_text[given], "given with --positive")
    if pa.types.is_boolean(col.type):
        return Proposal("audit.positive_label", True, "the label is boolean")
    if set(by_text) == {"0", "1"} and not pa.types.is_string(col.type):
        return Proposal("audit.positive_label", by_text["1"], "the label is 0/1")
    word = _POSITIVE_WORDS.get(frozenset(t.lower() for t in by_text))
    if word is not None:
        value = next(v for t, v in by_text.items() if t.lower() == word)
        return Proposal("audit.positive_label", value, f"the label's values are "
                        f"{' and '.join(sorted(by_text))}")
    choices = " or ".join(f"--positive {yaml_scalar(t)}" for t in sorted(by_text))
    raise UsageError(f"label column {label!r} holds {_counts_text(col)}: which is the positive "
                     f"(favourable) outcome is yours to say; give {choices}")


def propose_attributes(sample: Sample, label: str, given: Sequence[str], min_size: int,
                       ) -> tuple[tuple[Attribute, ...], tuple[str, ...]]:
    """The sensitive attributes (as given, else the columns named like protected
    attributes), numeric ones with many values binned at the sample's quartiles; and the
    other columns with few values, as choices."""
    table = sample.table
    for g in given:
        _require_column("--sensitive", g, sample)
    chosen = list(dict.fromkeys(given)) or [c for c in table.column_names
                                           if c != label and sensitive_named(c)]
    why = "given with --sensitive" if given else "named like a protected attribute"
    if label in chosen:
        raise UsageError(f"--sensitive {label!r} is the label column")
    out = [_attribute(table.column(c), c, why) for c in chosen]
    others = tuple(c for c in table.column_names if c not in chosen and c != label
                   and 1 < len(_distinct(table.column(c))) <= FEW_VALUES)
    if not out:
        raise UsageError(f"{sample.data}: no column is named like a protected attribute (sex, "
                         f"race, age, ...); give --sensitive COLUMN (columns with few values: "
                         f"{', '.join(others) or 'none'})")
    return tuple(out), others


def _attribute(col: pa.ChunkedArray, name: str, why: str) -> Attribute:
    missing = col.null_count
    numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
    if numeric and len(_distinct(col)) > BIN_WHEN_DISTINCT:
        values = col.drop_null().to_numpy()
        values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
        missing = len(col) - len(values)
        cuts = np.quantile(values, [0.25, 0.5, 0.75])
        if pa.types.is_integer(col.type):
            cuts = np.round(cuts)
        edges = (float("-inf"), *sorted({float(c) for c in cuts}), float("inf"))
        bins = Bins(name, edges)
        labels = bins.assign(pa.array(values, pa.float64()), name, 0).to_pylist()
        counts = Counter(labels)
        groups = tuple((lab, counts.get(lab, 0)) for lab in bins.labels)
        return Attribute(name, f"{why}; numeric with {len(_distinct(col)):,} values, so binned "
                         "at the sample's quartiles", groups, bins, missing)
    counts = Counter(value_label(v) for v in col.to_pylist())
    return Attribute(name, why, tuple(counts.most_common()), None, 0)


def propose_positive_column(models: Sequence[ModelFacts], label: str, positive: Any,
                            ) -> dict[str, Proposal]:
    """``model.positive_column`` (shared, key ``""``) or per model, for models whose [N, 2]
    output does not name its columns: the column that clearly agrees with the label."""
    out: dict[str, Proposal] = {}
    for m in models:
        if m.agreement is None:
            continue
        a0, a1 = m.agreement
        best = 1 if a1 >= a0 else 0
        hi, lo = max(a0, a1), min(a0, a1)
        figures = (f"on {m.rows:,} sample rows, {label} == {value_label(positive)!r} agrees with "
                   f"column 1 taken as positive on {a1:.1%} and column 0 on {a0:.1%}")
        if hi >= AGREE_MIN and hi - lo >= AGREE_MARGIN:
            out[m.role] = Proposal("positive_column", best, figures)
        else:
            out[m.role] = Proposal("positive_column", None, figures + ": not clear enough to "
                                   "propose", ("0", "1"))
    values = {p.value for p in out.values()}
    if len(out) > 1 and len(values) == 1 and None not in values:
        whys = "; ".join(f"{role}: {p.why}" for role, p in out.items())
        return {"": Proposal("positive_column", values.pop(), whys)}
    return out


def propose(sample: Sample, *, label: str | None = None, positive: str | None = None,
            sensitive: Sequence[str] = (), models: Sequence[tuple[str, Path]] = (),
            min_size: int = MIN_GROUP_SIZE) -> Starter:
    """Every proposal for ``sample`` (and the models, run on it)."""
    lab = propose_label(sample, label)
    pos = propose_positive(sample, lab.value, positive)
    attributes, others = propose_attributes(sample, lab.value, sensitive, min_size)
    facts = tuple(inspect_model(role, path, sample, lab.value, pos.value) for role, path in models)
    cross = _cross_sizes(sample, attributes)
    return Starter(sample, lab, pos, attributes, others,
                   propose_positive_column(facts, lab.value, pos.value), facts, min_size,
                   len(cross), sum(1 for n in cross.values() if n >= min_size))


def _cross_sizes(sample: Sample, attributes: Sequence[Attribute]) -> Counter[tuple[str, ...]]:
    """Rows of each group of the cross of all attributes in the sample (binned ones by
    interval; rows a bin refuses are left out)."""
    parts = []
    for a in attributes:
        col = sample.table.column(a.column)
        if a.bins is None:
            parts.append([value_label(v) for v in col.to_pylist()])
            continue
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        edges = np.asarray(a.bins.edges)
        where = np.searchsorted(edges, values, side="right") - 1
        labels = a.bins.labels
        parts.append([labels[i] if 0 <= i < len(labels) else "" for i in where])
    return Counter(t for t in zip(*parts, strict=True) if "" not in t)


# ----------------------------------------------------------------------------- writing


REVIEW = "proposed, review:"
MAX_CROSS = 50  # intersections are proposed when the cross has at most this many sample groups


def render(starter: Starter, template: str) -> str:
    """The starter policy: ``template``'s checks and statistics (policies/
    no-amplification.yaml) under an ``audit`` and a ``model`` section written from the
    proposals, each value with why it was proposed."""
    sections = _sections(template)
    head = [
        "# Starter policy written by `fairgate init` from "
        f"{yaml_scalar(starter.sample.data)} ({starter.sample.where()}),",
        "# based on policies/no-amplification.yaml: the student may not be less fair, or less",
        "# accurate, than its teacher. Every value marked `proposed` is a proposal: review it",
        "# (and the group sizes) before this policy gates a release. `fairgate policy validate`",
        "# checks it alone.",
        "version: 1",
        "",
    ]
    body = [*_audit_lines(starter), "", *_model_lines(starter), ""]
    rest = [text for key, text in sections if key not in ("version", "audit", "model", "")]
    return "\n".join(head + body) + "\n" + "\n".join(rest).rstrip("\n") + "\n"


def _sections(text: str) -> list[tuple[str, str]]:
    """Top-level sections of a policy, each with the comment lines just above it."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    key, lines = "", list[str]()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_]+):", line)
        if m:
            out.append((key, "\n".join(lines)))
            key, lines, pending = m.group(1), [*pending, line], []
        elif line.startswith("#") or not line.strip():
            pending.append(line)
        else:
            lines += [*pending, line]
            pending = []
    out.append((key, "\n".join(lines)))
    return [(k, t.strip("\n") + "\n") for k, t in out]


def _audit_lines(s: Starter) -> list[str]:
    lab, pos = s.label, s.positive
    out = ["audit:                           # what the audit set holds",
           f"  label: {yaml_scalar(lab.value)}" + _why(lab),
           f"  positive_label: {yaml_scalar(pos.value)}" + _why(pos),
           "  sensitive:                     # one grouping per attribute"]
    for a in s.attributes:
        if a.bins is None:
            out.append(f"    - {yaml_scalar(a.column)}  # {REVIEW} {a.why}")
        else:
            edges = ", ".join(_edge_yaml(e) for e in a.bins.edges)
            out.append(f"    - {{column: {yaml_scalar(a.column)}, bins: [{edges}]}}  "
                       f"# {REVIEW} {a.why}")
        out.append(f"      # groups in the sample: {_groups_text(a, s.min_group_size)}")
    if s.others:
        out.append("    # other columns with few values, if they are sensitive here: "
                   + ", ".join(yaml_scalar(c) for c in s.others))
    if len(s.attributes) > 1:
        cross = "*".join(yaml_scalar(a.column) for a in s.attributes)
        figures = (f"{cross} has {s.cross_groups:,} groups in the sample, "
                   f"{s.cross_gated:,} of at least min_group_size")
        if s.cross_groups <= MAX_CROSS:
            out.append(f"  intersections: true  # {REVIEW} {figures}")
        else:
            out.append(f"  # intersections: true  # not proposed: {figures}; list fewer "
                       "attributes, or gate a cross with a check's on: [[a, b]]")
    out.append(f"  min_group_size: {s.min_group_size}             # smaller groups are reported "
               "but never gated")
    first = s.attributes[0]
    if first.groups:
        largest = max(first.groups, key=lambda g: g[1])[0]
        out.append(f"  # reference_groups: {{{yaml_scalar(first.column)}: "
                   f"{yaml_scalar(largest)}}}  # privileged group for AIF360 metrics; "
                   "default: the largest")
    return out


def _groups_text(a: Attribute, min_size: int) -> str:
    shown = ", ".join(f"{yaml_scalar(g)} {n:,}" for g, n in a.groups[:8])
    more = f", … {len(a.groups) - 8} more" if len(a.groups) > 8 else ""
    small = a.small(min_size)
    note = f"; {small} below min_group_size (reported, not gated)" if small else ""
    miss = f"; {a.missing:,} missing (the gate refuses them)" if a.missing else ""
    return f"{shown}{more}{note}{miss}"


def _model_lines(s: Starter) -> list[str]:
    out = ["model:",
           "  threshold: 0.5                 # positive decision when P(positive) >= threshold",
           "  output: auto                   # auto | probabilities | logits | labels (auto says "
           "what it chose)"]
    for m in s.models:
        shown = ", ".join(yaml_scalar(i) for i in m.inputs[:12])
        more = f", … {len(m.inputs) - 12} more" if len(m.inputs) > 12 else ""
        out.append(f"  # {m.role} {yaml_scalar(Path(m.path).name)}"
                   + (f" inputs: {shown}{more}" if m.inputs else ":"))
        if m.reads:
            out.append(f"  #   read as {yaml_scalar(m.reads)}: no setting needed")
        if m.missing_inputs:
            out.append("  #   inputs not in the audit set: "
                       + ", ".join(yaml_scalar(c) for c in m.missing_inputs))
        if m.note and not m.missing_inputs:
            out.append(f"  #   {yaml_scalar(m.note)}")
    matrix = [m for m in s.models if m.note and "model.features" in m.note]
    if matrix:
        out.append("  # features: [...]             # one matrix input: its columns, in order "
                   "(not proposed: the graph does not name them)")
    shared = s.positive_column.get("")
    if shared is not None:
        out.append(f"  positive_column: {shared.value}  # {REVIEW} {shared.why}")
    else:
        for role, p in s.positive_column.items():
            if p.value is None:
                out.append(f"  # {role}: {{positive_column: 0 or 1}}  # not proposed: {p.why}")
            else:
                out.append(f"  {role}: {{positive_column: {p.value}}}  # {REVIEW} {p.why}")
    if not s.models:
        out.append("  # positive_column: 1           # which column of an unnamed [N, 2] output "
                   "is positive_label;")
        out.append("                                 # not proposed: run init with --teacher and "
                   "--student to check it")
    return out


def _why(p: Proposal) -> str:
    if p.why.startswith("given"):
        return f"  # {p.why}"
    return f"  # {REVIEW} {p.why}"


def _edge_yaml(x: float) -> str:
    return yaml_scalar(int(x)) if np.isfinite(x) and float(x).is_integer() else yaml_scalar(x)


def summary(s: Starter) -> list[str]:
    """What init proposed and why, for the terminal (untrusted text: the caller makes it
    safe for the terminal)."""
    out = [f"read {s.sample.where()} of {s.sample.data}",
           f"label: {s.label.value!r} ({s.label.why})",
           f"positive_label: {value_label(s.positive.value)!r} ({s.positive.why})",
           "sensitive attributes:"]
    for a in s.attributes:
        bins = f", bins {[edge_text(e) for e in a.bins.edges]}" if a.bins else ""
        out.append(f"  {a.column}{bins} ({a.why})")
        out.append(f"    groups: {_groups_text(a, s.min_group_size)}")
    if s.others:
        out.append(f"  not proposed, few values: {', '.join(s.others)}")
    for m in s.models:
        out.append(f"{m.role} {m.path}" + (f": inputs {', '.join(m.inputs[:6])}"
                                            + (" …" if len(m.inputs) > 6 else "")
                                            if m.inputs else ""))
        if m.reads:
            out.append(f"  read as {m.reads}")
        if m.note:
            out.append(f"  {m.note}")
    for role, p in s.positive_column.items():
        where = "model.positive_column" if not role else f"model.{role}.positive_column"
        shown = "not proposed (commented out)" if p.value is None else str(p.value)
        out.append(f"{where}: {shown} ({p.why})")
    return out


# ----------------------------------------------------------------------------- ready policies


@dataclass(frozen=True)
class ReadyPolicy:
    """A policy shipped in policies/ and the one-line purpose its header states."""

    name: str
    path: Path
    purpose: str


def policies_dir() -> Path:
    """The shipped policies: fairgate/policies in an installed package (a link to the
    repository's policies/ in a checkout)."""
    return Path(__file__).resolve().parent.parent / "policies"


def starter_template() -> str:
    """policies/no-amplification.yaml, which a starter policy is based on."""
    path = policies_dir() / "no-amplification.yaml"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise InternalError(f"{path}: the ready policies are missing from this installation "
                            f"({e.strerror or e}); reinstall fairgate") from None


def ready_policies(folder: Path | None = None) -> list[ReadyPolicy]:
    """Every ``*.yaml`` of the policies folder, sorted, with the first comment paragraph of
    its header (``# name: purpose``) as its purpose."""
    folder = folder or policies_dir()
    out = []
    for path in sorted(folder.glob("*.yaml")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#") or not line.strip("# "):
                break
            lines.append(line.lstrip("#").strip())
        text = " ".join(lines)
        prefix = f"{path.stem}:"
        purpose = text[len(prefix):].strip() if text.startswith(prefix) else text
        out.append(ReadyPolicy(path.stem, path, purpose))
    return out
