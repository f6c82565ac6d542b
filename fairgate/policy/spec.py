"""The policy, version 1: validation of parsed YAML into frozen, typed values.

Structure (unknown keys, types) is checked by pydantic; meaning (metric names, groupings,
impossible bounds) by :func:`_semantic_errors`. Every error names the file, the line and
the key path, and all errors are reported at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from fairgate.core.bins import Bins
from fairgate.core.bins import edge_text as _edge
from fairgate.core.counts import MAX_GROUPS, value_label
from fairgate.core.metrics import CATALOGUE, TOP1_METRICS, Metric, suggest
from fairgate.errors import PolicyError
from fairgate.policy.loader import Path_, _dotted, _line_for, parse_yaml, read_policy

Scalar = str | int | float | bool
MAX_LISTED = 100  # problems listed in one error; the rest are counted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AuditSpec(_Strict):
    """Which columns hold the label and the sensitive attributes, and which groups count."""

    label: str = Field(description="Label column.")
    positive_label: Scalar | None = Field(
        None, description="Value of the label column that is positive (binary models).")
    sensitive: list[Sensitive] = Field(
        min_length=1, description="Sensitive attribute columns: names, or {column, bins} for a "
        "numeric column grouped into right-open intervals; one name may be written alone.")
    intersections: bool = Field(False, description="Also gate on the cross of all attributes.")
    reference_groups: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Privileged group per attribute for reference metrics; default: largest.",
    )
    min_group_size: int = Field(30, ge=1, description="Smaller groups are reported, not gated.")
    max_groups: int = Field(
        MAX_GROUPS, ge=1, description="Most distinct groups a grouping (an attribute or an "
        "intersection) may have; more is an input error (exit 3): bin the column.")
    spurious: SpuriousSpec | None = Field(
        None, description="A spurious attribute and the label value it goes with, for "
        "spurious_gap and bias_conflicting_accuracy.")
    row_id: str | None = Field(
        None, description="A column that identifies each row uniquely. The row samples "
        "(individual fairness, score metrics) keep rows by a hash of it; without it, by a hash "
        "of the values the gate reads. Either way a sample does not depend on row order, "
        "files or partitions.")

    @field_validator("sensitive", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        """``sensitive: sex`` is ``sensitive: [sex]``."""
        return [v] if isinstance(v, str | dict) else v

    @property
    def attributes(self) -> list[str]:
        """The sensitive columns by name, in policy order (groupings, checks' ``on``)."""
        return [a if isinstance(a, str) else a.column for a in self.sensitive]

    @property
    def binned(self) -> dict[str, Bins]:
        """The numeric attributes grouped into intervals, by column."""
        return {a.column: Bins(a.column, tuple(a.bins)) for a in self.sensitive
                if isinstance(a, BinnedAttribute)}


class BinnedAttribute(_Strict):
    """A numeric sensitive column, grouped into right-open intervals ``[a, b)``."""

    column: str = Field(description="The numeric column.")
    bins: list[float] = Field(
        min_length=2, description="Increasing interval edges: [0, 25, 40, 65] makes groups "
        "[0, 25), [25, 40) and [40, 65); a value outside them stops the gate unless the first "
        "edge is -.inf or the last .inf.")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(x != x for x in v):
            raise ValueError("bins must be numbers, not NaN")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"bins must be strictly increasing, got [{', '.join(map(_edge, v))}]")
        return v


def _sensitive_kind(v: Any) -> str:
    return "BinnedAttribute" if isinstance(v, dict | BinnedAttribute) else "str"


#: One sensitive attribute: a column name, or a numeric column with its bins (validated as
#: the one its form says, so an error names that form only).
Sensitive = Annotated[Annotated[str, Tag("str")] | Annotated[BinnedAttribute, Tag("BinnedAttribute")],
                      Discriminator(_sensitive_kind)]


class SpuriousSpec(_Strict):
    """Rows with ``attribute == value`` and label ``label``, or neither, are bias-aligned."""

    attribute: str = Field(description="Column of the spurious attribute (any audit column).")
    value: Scalar = Field(description="The attribute value that goes with `label`.")
    label: Scalar = Field(description="The label value it goes with.")


class MulticlassSpec(_Strict):
    """K-class models: top-1 accuracy metrics, per-class tests, one-vs-rest group metrics."""

    classes: list[Scalar] | None = Field(
        None, description="The classes, in the order of the output columns of models whose "
        "graph does not name them (a model's own class labels win); never guessed.")
    positive_classes: list[Scalar] = Field(
        default_factory=list, description="Classes whose one-vs-rest tables carry the group "
        "metrics other than accuracy (demographic parity, equalized odds, ...).")


OutputMode = Literal["auto", "probabilities", "logits", "labels"]
Roles = ("teacher", "student", "reference_student")


class TextInput(_Strict):
    """A string column tokenized with a Hugging Face ``tokenizer.json`` (fairgate/inputs/text.py)."""

    column: str = Field(description="The text column.")
    tokenizer: str = Field(description="A Hugging Face tokenizer.json, relative to the policy.")
    max_length: int = Field(ge=1, le=1_000_000, description="Tokens per row at most: longer "
                            "rows are truncated by the tokenizer (its own truncation keeps the "
                            "closing special token). Required: rows longer than the model's "
                            "position table would fail inside the graph.")
    padding: Literal["longest", "max_length"] = Field(
        "longest", description="Pad each batch to its longest row, or every row to max_length.")


class ImageInput(_Strict):
    """An image column (file paths relative to the audit set's folder, or image bytes),
    decoded and normalized as fairgate/inputs/image.py says."""

    column: str = Field(description="Column of image paths or image bytes.")
    size: list[int] = Field(min_length=2, max_length=2, description="[H, W] after resizing.")
    mean: list[float] = Field(min_length=1, max_length=4, description="Per-channel mean.")
    std: list[float] = Field(min_length=1, max_length=4, description="Per-channel std.")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB", "BGR", "L"] = "RGB"
    scale: float = Field(1 / 255, gt=0.0, description="x * scale before (x - mean) / std.")
    resample: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    input: str | None = Field(None, description="Graph input fed (default: the only one).")


class TensorInput(_Strict):
    """A list or fixed-size-list column of numbers, fed as one [N, D] input."""

    column: str = Field(description="Column of equal-length lists of numbers.")
    input: str | None = Field(None, description="Graph input fed (default: the only one).")


class ModelInputs(_Strict):
    """What a model reads when it is not a matrix of scalar columns: exactly one kind."""

    text: TextInput | None = None
    image: ImageInput | None = None
    tensor: TensorInput | None = None

    @property
    def kind(self) -> Literal["text", "image", "tensor"]:
        for kind in ("text", "image", "tensor"):
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated: exactly one kind")

    @property
    def column(self) -> str:
        spec: TextInput | ImageInput | TensorInput = getattr(self, self.kind)
        return spec.column


class _ModelFields(_Strict):
    """Settings that may be shared by every model or given per model."""


    features: list[str] | None = Field(
        None, description="Input columns, in order, of a model with one matrix input.")
    features_file: str | None = Field(
        None, description="A text file (relative to the policy) listing the input columns, one "
        "per line, in order: for one-hot matrices of many columns.")
    threshold: float | None = Field(None, ge=0.0, le=1.0,
                                    description="Decision: score >= threshold (default 0.5).")
    output: OutputMode | None = Field(None, description="How to read the output (default auto).")
    output_name: str | None = Field(None, description="Model output to read, if several.")
    positive_class: Scalar | None = Field(
        None, description="The model's own class label that means audit.positive_label, when "
        "the model names its classes differently from the audit set's labels.")
    positive_column: int | None = Field(
        None, ge=0, le=1, description="Which column of an unnamed [N, 2] output is the positive "
        "class, when the model's graph does not name its columns.")
    missing: Literal["refuse", "pass"] | None = Field(
        None, description="NaN or missing feature values: refuse (default), or pass them to a "
        "model that imputes (float inputs only).")
    inputs: ModelInputs | None = Field(
        None, description="Text, image or tensor inputs (instead of features); a model's own "
        "inputs replace the shared ones as a whole.")


class ModelOverride(_ModelFields):
    """One model's settings where they differ from the shared ones (teachers and students
    are often exported differently)."""

    classes: list[Scalar] | None = Field(
        None, description="Multi-class: the classes of this model's output columns, in order, "
        "when its graph does not name them (default: multiclass.classes).")


class ModelSpec(_ModelFields):
    """How audit rows become model inputs and scores become decisions."""

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Decision: score >= threshold.")
    output: OutputMode = Field("auto", description="How to read the output.")
    missing: Literal["refuse", "pass"] = Field(
        "refuse", description="NaN or missing feature values: refuse, or pass them to a model "
        "that imputes (float inputs only).")

    teacher: ModelOverride | None = None
    student: ModelOverride | None = None
    reference_student: ModelOverride | None = None

    def for_role(self, role: str) -> ModelSettings:
        """The settings of one model: its own where given, else the shared ones."""
        own = getattr(self, role.replace(" ", "_"), None) or ModelOverride()

        def pick(name: str) -> Any:
            mine = getattr(own, name)
            return mine if mine is not None else getattr(self, name)

        features = pick("features")
        return ModelSettings(
            features=tuple(features) if features else None, inputs=pick("inputs"),
            threshold=pick("threshold"), output=pick("output"), output_name=pick("output_name"),
            positive_class=pick("positive_class"), positive_column=pick("positive_column"),
            missing=pick("missing"),
            classes=tuple(own.classes) if own.classes is not None else None)


@dataclass(frozen=True)
class ModelSettings:
    """One model's resolved settings (``model:`` merged with ``model.<role>:``)."""

    features: tuple[str, ...] | None
    inputs: ModelInputs | None  # text, image or tensor (exclusive with features)
    threshold: float
    output: OutputMode
    output_name: str | None
    positive_class: Scalar | None
    positive_column: int | None
    missing: Literal["refuse", "pass"]
    classes: tuple[Scalar, ...] | None  # declared by model.<role>.classes only


Bound = Literal[
    "max", "min", "max_increase", "max_decrease", "max_relative_increase", "max_relative_decrease"
]
BOUNDS: tuple[Bound, ...] = (
    "max", "min", "max_increase", "max_decrease", "max_relative_increase", "max_relative_decrease"
)


class Check(_Strict):
    """One gated metric with its bounds."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    metric: str
    on: list[str | list[str]] | None = Field(
        None, description="Groupings: attribute names, or lists of them for intersections."
    )
    max: float | None = Field(None, description="Ceiling on the student's value.")
    min: float | None = Field(None, description="Floor on the student's value.")
    max_increase: float | None = Field(None, description="Bound on student − teacher.")
    max_decrease: float | None = Field(None, description="Bound on teacher − student.")
    max_relative_increase: float | None = None
    max_relative_decrease: float | None = None
    severity: Literal["fail", "warn"] = "fail"
    on_undefined: Literal["fail", "warn"] = Field(
        "fail", description="Status of the check when its value is undefined."
    )
    on_inconclusive: Literal["pass", "warn", "fail"] | None = Field(
        None, description="What an inconclusive check does (its interval straddles a bound): "
        "pass, warn or fail the gate. Default: statistics.on_inconclusive.")
    alpha: float | None = Field(None, description="Generalized entropy parameter (> 0).")
    description: str | None = None

    def bounds(self) -> dict[Bound, float]:
        return {b: getattr(self, b) for b in BOUNDS if getattr(self, b) is not None}


DecideOn = Literal["estimate", "interval", "significant", "conservative"]
OnInconclusive = Literal["pass", "warn", "fail"]


class Statistics(_Strict):
    """Bootstrap settings and how intervals enter a decision."""

    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    resamples: int = Field(2000, ge=0, le=1_000_000)
    seed: int = Field(0, ge=0)
    decide_on: DecideOn = Field(
        "interval", description="interval: a bound passes when the whole interval is within it, "
        "fails when the whole interval is beyond it, and is inconclusive otherwise "
        "(on_inconclusive says what that does); significant: interval with inconclusive "
        "counted as pass; conservative: as fail; estimate: the point estimate alone. "
        "Default: interval, or estimate when resamples is 0.")
    on_inconclusive: OnInconclusive = Field(
        "warn", description="What an inconclusive check does under decide_on: interval: pass, "
        "warn (the verdict is a pass with warnings) or fail the gate; a check may override it.")
    interval: Literal["uniform", "percentile"] = Field(
        "uniform", description="uniform: intervals of max/min-type metrics that hold at ties "
        "and for small groups; percentile: the percentile interval of every metric (fairgate "
        "before 0.2, which under-covers near ties).")
    min_defined: float = Field(
        0.99, gt=0.0, le=1.0,
        description="Share of resamples that must be defined for an interval to be used.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        """decide_on defaults to interval, or to estimate when there are no intervals
        (resamples: 0), so a policy without resamples keeps working."""
        if isinstance(data, dict) and "decide_on" not in data and data.get("resamples") == 0:
            return {**data, "decide_on": "estimate"}
        return data

    @property
    def mode(self) -> DecideOn:
        return self.decide_on

    def inconclusive_for(self, check: Check) -> OnInconclusive:
        """What an inconclusive result of ``check`` does under this policy's decide_on."""
        if self.mode == "significant":
            return "pass"
        if self.mode == "conservative":
            return "fail"
        return check.on_inconclusive or self.on_inconclusive


class MlflowSpec(_Strict):
    """Where and how the run is logged."""

    tracking_uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    required: bool = False
    timeout: float = Field(15.0, gt=0.0, le=600.0)


class Waiver(_Strict):
    """An accepted, owned, expiring exception to a check (optionally one grouping of it)."""

    check: str
    grouping: str | list[str] | None = Field(
        None, description="The grouping: its name as reports print it (sex, sex*age) or the "
        "list of its attributes ([sex, age]).")
    group: str | None = Field(
        None, description="Reserved: checks are decided per grouping, so waive the grouping.")
    reason: str = Field(pattern=r"\S")
    owner: str = Field(pattern=r"\S")
    expires: dt.date = Field(description="Last day the waiver applies (YYYY-MM-DD).")

    @field_validator("expires", mode="before")
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        """Accept a quoted ISO date too: YAML reads 2030-01-31 as a date, "2030-01-31" not."""
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                raise ValueError(f"expires must be a date YYYY-MM-DD, got {v!r}") from None
        return v


def waived_groupings(grouping: str | list[Any]) -> list[tuple[str, ...]]:
    """The groupings a waiver's ``grouping`` may mean: a list names the attributes; a name
    is one column or, with ``*``, the intersection reports print as ``sex*age`` (validation
    refuses a name that means both)."""
    if isinstance(grouping, list):
        return [tuple(map(str, grouping))]
    out: list[tuple[str, ...]] = [(grouping,)]
    if "*" in grouping:
        out.append(tuple(grouping.split("*")))
    return out


class CounterfactualSpec(_Strict):
    """What the counterfactual flip rate changes: a sensitive model input set to each of its
    values (``column``, ``values``), or terms swapped in a text input (``text`` with ``swap``,
    ``groups`` or a ``file`` holding either; fairgate/inputs/text_swap.py)."""

    column: str | None = Field(None, description="A sensitive model input column.")
    values: list[Scalar] | None = Field(None, min_length=2,
                                        description="Every value the column takes.")
    text: str | None = Field(None, description="A text column a model reads (text inputs).")
    swap: dict[str, str] | None = Field(
        None, description="Term pairs, applied in both directions (he: she).")
    groups: dict[str, list[str]] | None = Field(
        None, description="Terms by group: each term is swapped for every term of every other "
        "group.")
    file: str | None = Field(None, description="A YAML file (relative to the policy) holding "
                             "swap: or groups:.")


class IndividualSpec(_Strict):
    """Individual fairness on a deterministic sample of rows (see fairgate/core/individual.py)."""

    features: list[str] | None = Field(
        None, description="Distance features; default: the models' inputs minus the sensitive "
        "attributes.")
    categorical: list[str] = Field(default_factory=list,
                                   description="Numeric-coded features compared as categories.")
    sample_rows: int = Field(20_000, ge=10, le=1_000_000)
    pairs: int = Field(200_000, ge=2, le=100_000_000)
    queries: int = Field(5_000, ge=2)
    k: int = Field(5, ge=1)
    counterfactual: CounterfactualSpec | None = None


class ScoresSpec(_Strict):
    """Score metrics (ROC AUC, Brier score, ECE) on a deterministic row sample (scores.py)."""

    sample_rows: int = Field(50_000, ge=100, le=5_000_000,
                             description="Rows kept; every row when the audit set is smaller.")
    bins: int = Field(10, ge=2, le=1000, description="Equal-width score bins of the ECE.")
    resamples: int | None = Field(None, ge=0, le=100_000, description="Bootstrap resamples; "
                                  "default: statistics.resamples, at most 2000.")


class Policy(_Strict):
    """A fairgate policy, version 1."""

    version: Literal[1]
    audit: AuditSpec
    model: ModelSpec = ModelSpec()
    checks: list[Check] = Field(min_length=1)
    statistics: Statistics = Statistics()
    mlflow: MlflowSpec = MlflowSpec()
    waivers: list[Waiver] = Field(default_factory=list)
    individual: IndividualSpec | None = None
    multiclass: MulticlassSpec | None = None
    scores: ScoresSpec | None = None


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy, where it came from, and the line of each key (for annotations)."""

    policy: Policy
    path: Path
    sha256: str
    text: str
    lines: dict[Path_, int]

    def line_of(self, path: Path_) -> int:
        return _line_for(self.lines, path)


# ----------------------------------------------------------------------------- validation


def _allowed_keys(path: Path_) -> list[str]:
    model: type[BaseModel] = Policy
    for p in path[:-1]:
        if isinstance(p, int):
            continue
        field = model.model_fields.get(p)
        ann = getattr(field, "annotation", None)
        inner = getattr(ann, "__args__", (ann,))
        nxt = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return []
        model = nxt
    return list(model.model_fields)


def _location(data: Any, loc: tuple[Any, ...], missing: bool) -> Path_:
    """pydantic's error location as a key path of ``data``.

    Steps that are not keys or indexes there are the names of union members (`str`,
    `list[str]`) and are dropped; a user's key that merely contains `[` is kept.
    """
    out: list[str | int] = []
    node = data
    for i, p in enumerate(loc):
        if isinstance(node, dict) and (p in node or (missing and i == len(loc) - 1)):
            out.append(p)
            node = node.get(p)
        elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
            out.append(p)
            node = node[p]
    return tuple(out)


def _pydantic_errors(e: ValidationError, data: Any) -> list[tuple[Path_, str]]:
    out: dict[Path_, str] = {}
    for err in e.errors():
        kind = err["type"]
        loc = _location(data, err["loc"], kind == "missing")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc)
            msg = f"unknown key {loc[-1]!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"])
        elif kind == "string_pattern_mismatch" and err["ctx"]["pattern"] == r"\S":
            msg = "must not be blank"
        elif kind == "literal_error":
            msg = f"{err['msg'].replace('Input should be', 'must be')}, got {err['input']!r}"
        else:
            msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"
        # a union reports once per member; keep the first message per location
        if loc not in out:
            out[loc] = msg
    return list(out.items())


def _groupings_of(on: list[str | list[str]]) -> list[tuple[str, ...]]:
    return [(g,) if isinstance(g, str) else tuple(g) for g in on]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _sensitive_entries(v: Any) -> list[tuple[Path_, str, Bins | None]]:
    """The sensitive attributes as written: where each is, its column, its bins if any
    (a scalar is one attribute; malformed entries are left to pydantic)."""
    out: list[tuple[Path_, str, Bins | None]] = []
    if isinstance(v, str):
        return [(("audit", "sensitive"), v, None)]
    for i, a in enumerate(_list(v)):
        if isinstance(a, str):
            out.append((("audit", "sensitive", i), a, None))
        elif isinstance(a, dict) and isinstance(a.get("column"), str):
            edges = _list(a.get("bins"))
            ok = (len(edges) >= 2 and all(_num(x) is not None and x == x for x in edges)
                  and all(y > x for x, y in itertools.pairwise(edges)))
            out.append((("audit", "sensitive", i, "column"), a["column"],
                        Bins(a["column"], tuple(float(x) for x in edges)) if ok else None))
    return out


def _semantic_errors(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """Problems of meaning, found on the raw data so they show next to type errors."""
    errs: list[tuple[Path_, str]] = []
    audit = _dict(data.get("audit"))
    entries = _sensitive_entries(audit.get("sensitive"))
    sens = [name for _, name, _ in entries]
    for i, (at, a, _) in enumerate(entries):
        if sens.index(a) != i:
            errs.append((at, f"{a!r} is listed twice"))
    errs += _mode_errors(data, audit, sens)
    bins = {name: edges for _, name, edges in entries if edges is not None}
    for attr, value in _dict(audit.get("reference_groups")).items():
        if attr not in sens:
            errs.append((("audit", "reference_groups", attr),
                         f"{attr!r} is not a sensitive attribute ({', '.join(sens)})"))
        elif attr in bins and value not in bins[attr].labels:
            errs.append((("audit", "reference_groups", attr), f"{attr} is binned: its groups are "
                         f"{', '.join(bins[attr].labels)}; got {value!r}"))
    errs += _model_errors(_dict(data.get("model")), data.get("multiclass") is not None)
    ids: dict[str, int] = {}
    individual = data.get("individual")
    for i, c in enumerate(_list(data.get("checks"))):
        if isinstance(c, dict):
            errs += _check_errors(c, ("checks", i), sens, ids, suggest_metric=i < MAX_LISTED)
            metric = CATALOGUE.get(str(c.get("metric")))
            if metric is not None and metric.sampled and not isinstance(individual, dict):
                errs.append((("checks", i, "metric"),
                             f"{metric.name} needs an `individual:` section (features, sample size)"))
            elif (metric is not None and metric.name == "counterfactual_flip_rate"
                  and not isinstance(_dict(individual).get("counterfactual"), dict)):
                errs.append((("checks", i, "metric"), "counterfactual_flip_rate needs "
                             "individual.counterfactual (a column and its values, or a text "
                             "column and its terms)"))
    ind = _dict(individual)
    errs += _counterfactual_errors(ind.get("counterfactual"))
    k, rows = ind.get("k", 5), ind.get("sample_rows", 20_000)
    if isinstance(k, int) and isinstance(rows, int) and rows < k + 2:
        errs.append((("individual", "sample_rows"), f"sample_rows {rows} must be at least k + 2 "
                     f"= {k + 2}"))
    st = _dict(data.get("statistics"))
    if st.get("resamples") == 0 and st.get("decide_on", "estimate") != "estimate":
        errs.append((("statistics", "decide_on"),
                     f"decide_on: {st['decide_on']} needs intervals; set resamples > 0"))
    errs += _inconclusive_errors(data, st)
    checks = {c["id"]: c for c in _list(data.get("checks"))
              if isinstance(c, dict) and isinstance(c.get("id"), str)}
    for i, w in enumerate(_list(data.get("waivers"))):
        if not isinstance(w, dict):
            continue
        if isinstance(w.get("check"), str) and w["check"] not in ids:
            errs.append((("waivers", i, "check"), f"no check with id {w['check']!r}"))
        if w.get("group") is not None:
            errs.append((("waivers", i, "group"), "group-level waivers are not supported: checks "
                         "are decided per grouping, so waive the grouping"))
        g = w.get("grouping")
        check = checks.get(w.get("check"))
        if g is not None and check is not None and isinstance(g, str | list):
            on = check.get("on")
            allowed = ([[x] if isinstance(x, str) else _list(x) for x in on] if isinstance(on, list)
                       else [[a] for a in sens] + ([sens] if audit.get("intersections") else []))
            hits = [x for x in waived_groupings(g) if list(x) in allowed]
            names = ", ".join("*".join(map(str, x)) for x in allowed)
            if not hits:
                shown = g if isinstance(g, str) else "*".join(map(str, g))
                errs.append((("waivers", i, "grouping"), f"check {w['check']!r} is not decided on "
                             f"grouping {shown} (it is on: {names})"))
            elif len(hits) > 1:
                errs.append((("waivers", i, "grouping"), f"{g!r} names the column {g!r} and the "
                             f"intersection {'*'.join(hits[1])}; write the list form to choose"))
    return errs


def _inconclusive_errors(data: dict[str, Any], st: dict[str, Any]) -> list[tuple[Path_, str]]:
    """on_inconclusive means something only where intervals decide and may straddle."""
    mode = st.get("decide_on")
    if mode is None:
        mode = "estimate" if st.get("resamples") == 0 else "interval"
    if mode == "interval":
        return []
    why = {"estimate": f"decide_on: {mode} compares the point estimate, so no check is "
                       "inconclusive",
           "significant": "decide_on: significant counts an inconclusive check as a pass",
           "conservative": "decide_on: conservative counts an inconclusive check as a fail"}
    fix = "; use decide_on: interval to choose" if isinstance(mode, str) and mode in why else ""
    errs: list[tuple[Path_, str]] = []
    if "on_inconclusive" in st:
        errs.append((("statistics", "on_inconclusive"), f"{why.get(str(mode), '')}{fix}"))
    for i, c in enumerate(_list(data.get("checks"))):
        if isinstance(c, dict) and "on_inconclusive" in c:
            errs.append((("checks", i, "on_inconclusive"), f"{why.get(str(mode), '')}{fix}"))
    return errs if str(mode) in why else []


def _model_errors(model: dict[str, Any], multi: bool) -> list[tuple[Path_, str]]:
    """Per-model and shared model settings: each key where it means something, once."""
    errs: list[tuple[Path_, str]] = []
    scopes: list[tuple[Path_, dict[str, Any]]] = [(("model",), model)]
    scopes += [(("model", r), _dict(model.get(r))) for r in Roles if isinstance(model.get(r), dict)]
    for at, scope in scopes:
        features = _list(scope.get("features"))
        for i, f in enumerate(features):
            if features.index(f) != i:
                errs.append(((*at, "features", i), f"{f!r} is listed twice"))
        for a, b in (("features", "features_file"), ("positive_class", "positive_column")):
            if scope.get(a) is not None and scope.get(b) is not None:
                errs.append(((*at, b), f"give {a} or {b}, not both"))
        wrong = (("positive_class", "positive_column", "threshold") if multi else ("classes",))
        for key in wrong:
            if key in scope and not (key == "threshold" and at == ("model",)):
                why = ("is for binary models; a multi-class model's decision is its top-1 class"
                       if multi else "is for multi-class models (a multiclass: section)")
                errs.append(((*at, key), f"{key} {why}"))
        classes = [value_label(c) for c in _list(scope.get("classes"))]
        for i, c in enumerate(classes):
            if classes.index(c) != i:
                errs.append(((*at, "classes", i), f"class {c!r} is listed twice"))
        errs += _inputs_errors(at, scope, model)
    return errs


def _counterfactual_errors(cf: Any) -> list[tuple[Path_, str]]:
    """individual.counterfactual: a column and its values, or a text column and its terms."""
    if not isinstance(cf, dict):
        return []
    at: Path_ = ("individual", "counterfactual")
    if cf.get("text") is None:
        errs = [((*at, k), "is for text probes: give it with text (the text column)")
                for k in ("swap", "groups", "file") if cf.get(k) is not None]
        for key in ("column", "values"):
            if cf.get(key) is None:
                errs.append(((*at, key), f"give {key} (the column and every value it takes), or "
                             "text with swap, groups or file for a text column"))
        return errs
    errs = [((*at, k), "is for a column's values; a text probe swaps terms (swap, groups or "
             "file)") for k in ("column", "values") if cf.get(k) is not None]
    given = [k for k in ("swap", "groups", "file") if cf.get(k) is not None]
    if len(given) != 1:
        errs.append(((*at, "text"), "give the terms to swap: one of swap, groups or file" if not
                     given else f"give one of swap, groups or file, not {' and '.join(given)}"))
    from fairgate.inputs.text_swap import term_errors

    for key in ("swap", "groups"):
        if isinstance(cf.get(key), dict):
            errs += [((*at, key, *where), msg) for where, msg in term_errors(key, cf[key])]
    return errs


def _inputs_errors(at: Path_, scope: dict[str, Any], model: dict[str, Any]) -> list[tuple[Path_, str]]:
    """model.inputs / model.<role>.inputs: one kind, sensible image settings, and never
    together with features for the same model (a shared one counts for every model)."""
    inputs = scope.get("inputs")
    if not isinstance(inputs, dict):
        shared = model.get("inputs")
        if at != ("model",) and isinstance(shared, dict) and scope.get("features") is not None:
            return [((*at, "features"), "model.inputs applies to this model too; give this model "
                     "its own inputs or features, not both")]
        return []
    errs: list[tuple[Path_, str]] = []
    kinds = [k for k in ("text", "image", "tensor") if inputs.get(k) is not None]
    if len(kinds) != 1:
        errs.append(((*at, "inputs"), "give exactly one of text, image or tensor" if not kinds
                     else f"give one kind of input, not {' and '.join(kinds)}"))
    for key in ("features", "features_file"):
        if scope.get(key) is not None:
            errs.append(((*at, key), f"give inputs or {key}, not both"))
        elif at != ("model",) and model.get(key) is not None:
            errs.append(((*at, "inputs"), f"model.{key} applies to this model too; give inputs "
                         f"or {key} for it, not both"))
    image = inputs.get("image")
    if isinstance(image, dict):
        channels = 1 if image.get("channels") == "L" else 3
        for key in ("mean", "std"):
            got = _list(image.get(key))
            if got and len(got) != channels:
                errs.append(((*at, "inputs", "image", key), f"needs {channels} value(s), one per "
                             f"channel of {image.get('channels', 'RGB')}, got {len(got)}"))
        for i, v in enumerate(_list(image.get("std"))):
            if (n := _num(v)) is not None and n <= 0:
                errs.append(((*at, "inputs", "image", "std", i), "must be greater than 0"))
        for i, v in enumerate(_list(image.get("size"))):
            if isinstance(v, int) and v < 1:
                errs.append(((*at, "inputs", "image", "size", i), "must be at least 1"))
    return errs


def _mode_errors(data: dict[str, Any], audit: dict[str, Any], sens: list[str]) -> list[tuple[Path_, str]]:
    """Binary vs multi-class: which keys and metrics each needs or cannot have."""
    errs: list[tuple[Path_, str]] = []
    multi = data.get("multiclass")
    label = audit.get("label")
    if label in sens:
        errs.append((_sensitive_entries(audit.get("sensitive"))[sens.index(label)][0],
                     f"{label!r} is the label column; it cannot be a sensitive attribute"))
    spurious = _dict(audit.get("spurious"))
    if spurious.get("attribute") is not None and spurious.get("attribute") == label:
        errs.append((("audit", "spurious", "attribute"), "the spurious attribute must not be the "
                     "label column"))
    if multi is None:
        if "positive_label" not in audit and isinstance(data.get("audit"), dict):
            errs.append((("audit", "positive_label"), "required key is missing (binary models; "
                         "for K-class models add a multiclass: section instead)"))
    else:
        m = _dict(multi)
        if "positive_label" in audit:
            errs.append((("audit", "positive_label"), "positive_label is for binary models; with "
                         "multiclass, list one-vs-rest classes in multiclass.positive_classes"))
        if "threshold" in _dict(data.get("model")):
            errs.append((("model", "threshold"), "a threshold does not apply to multi-class "
                         "models: their decision is the top-1 class"))
        if data.get("scores") is not None:
            errs.append((("scores",), "score metrics need a positive-class score; they are not "
                         "available for multi-class models"))
        if data.get("individual") is not None:
            errs.append((("individual",), "individual fairness measures need a positive-class "
                         "score; they are not available for multi-class models"))
        for key in ("classes", "positive_classes"):
            texts = [value_label(c) for c in _list(m.get(key))]
            for i, t in enumerate(texts):
                if texts.index(t) != i:
                    errs.append((("multiclass", key, i), f"class {t!r} is listed twice"))
        classes = [value_label(c) for c in _list(m.get("classes"))]
        if classes:
            for i, c in enumerate(_list(m.get("positive_classes"))):
                if value_label(c) not in classes:
                    errs.append((("multiclass", "positive_classes", i),
                                 f"{value_label(c)!r} is not one of multiclass.classes"))
    for i, c in enumerate(_list(data.get("checks"))):
        metric = CATALOGUE.get(str(_dict(c).get("metric")))
        if metric is not None:
            msg = _metric_mode_error(metric, multi, spurious)
            if msg:
                errs.append((("checks", i, "metric"), msg))
    return errs


def _metric_mode_error(metric: Metric, multi: Any, spurious: dict[str, Any]) -> str | None:
    if metric.derived in ("classes", "reference") and multi is None:
        return f"{metric.name} is class-wise: it needs a multi-class policy (a multiclass: section)"
    if metric.derived == "alignment" and not spurious:
        return f"{metric.name} needs audit.spurious (the attribute, its value and the label)"
    if multi is not None and metric.scored:
        return (f"{metric.name} needs a positive-class score; score metrics are not available "
                "for multi-class models")
    if multi is None or metric.derived is not None or metric.sampled or metric.name in TOP1_METRICS:
        return None
    if metric.scope == "overall":
        return (f"{metric.name} is a binary metric over the whole audit set; for multi-class "
                f"models gate accuracy, error_rate or the class-wise metrics")
    if not _list(_dict(multi).get("positive_classes")):
        return (f"{metric.name} needs multiclass.positive_classes: for K classes it is computed "
                "one-vs-rest for each positive class (accuracy metrics are top-1)")
    return None


def _check_errors(
    c: dict[str, Any], at: Path_, sens: list[str], ids: dict[str, int], suggest_metric: bool = True
) -> list[tuple[Path_, str]]:
    errs: list[tuple[Path_, str]] = []
    cid = c.get("id")
    if isinstance(cid, str):
        if cid in ids:
            errs.append(((*at, "id"), f"duplicate check id {cid!r} (also checks[{ids[cid]}])"))
        ids.setdefault(cid, at[1])  # type: ignore[arg-type]
    name = c.get("metric")
    if not isinstance(name, str):
        return errs
    metric = CATALOGUE.get(name)
    if metric is None:  # difflib costs ~0.2 ms a name: suggest where a person will read it
        unknown = suggest(name) if suggest_metric else f"unknown metric {name!r}"
        return [*errs, ((*at, "metric"), unknown)]
    bounds = {b: _num(c[b]) for b in BOUNDS if b in c}
    if not bounds:
        errs.append((at, "a check needs at least one bound: " + ", ".join(BOUNDS)))
    on = c.get("on")
    if isinstance(on, list):
        if metric.scope == "overall":
            errs.append(((*at, "on"), f"{name} is computed over the whole audit set; remove 'on'"))
        for j, g in enumerate(on):
            group = [g] if isinstance(g, str) else _list(g)
            if not group or any(a not in sens for a in group) or len(set(map(str, group))) != len(group):
                errs.append(((*at, "on", j), f"grouping {group} must name distinct sensitive "
                             f"attributes ({', '.join(sens)})"))
    alpha = _num(c.get("alpha"))
    if "alpha" in c and not metric.uses_alpha:
        errs.append(((*at, "alpha"), f"{name} takes no alpha"))
    elif alpha is not None and alpha <= 0:
        errs.append(((*at, "alpha"), f"alpha must be > 0, got {alpha:g}"))
    for b, v in bounds.items():
        if v is None:
            continue
        if v != v or v in (float("inf"), float("-inf")):
            errs.append(((*at, b), f"{b} must be a finite number, got {v}"))
        elif b.startswith("max_") and v < 0:
            errs.append(((*at, b), f"{b} must be >= 0 (it bounds how much worse the student "
                         f"may get), got {v:g}"))
    hi_, lo_ = bounds.get("max"), bounds.get("min")
    if hi_ is not None and hi_ < metric.lo:
        errs.append(((*at, "max"), f"max {hi_:g} is below {metric.lo:g}, the lowest value "
                     f"{name} can take: no model can pass"))
    if lo_ is not None and lo_ > metric.hi:
        errs.append(((*at, "min"), f"min {lo_:g} is above {metric.hi:g}, the highest value "
                     f"{name} can take: no model can pass"))
    if hi_ is not None and lo_ is not None and lo_ > hi_:
        errs.append(((*at, "min"), f"min {lo_:g} is above max {hi_:g}"))
    return errs


def validate(data: Any, lines: dict[Path_, int], where: str) -> Policy:
    """Validated :class:`Policy`, or one PolicyError listing every problem with its line."""
    if not isinstance(data, dict):
        raise PolicyError(f"{where}:1: the policy must be a mapping of keys, got {type(data).__name__}")
    problems: dict[Path_, str] = {}
    policy = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        problems.update(_pydantic_errors(e, data))
    for path, msg in _semantic_errors(data):
        problems.setdefault(path, msg)
    if problems or policy is None:
        ordered = sorted(problems.items(), key=lambda kv: (_line_for(lines, kv[0]), _dotted(kv[0])))
        rendered = [f"{where}:{_line_for(lines, p)}: {_dotted(p)}: {m}"
                    for p, m in ordered[:MAX_LISTED]]
        if len(ordered) == 1:
            raise PolicyError(rendered[0])
        if len(ordered) > MAX_LISTED:
            rendered.append(f"… and {len(ordered) - MAX_LISTED:,} more")
        raise PolicyError(f"{len(ordered):,} problems in the policy:\n  " + "\n  ".join(rendered))
    return policy


def load_policy(path: Path) -> LoadedPolicy:
    """Read and validate a policy file (a bounded, regular UTF-8 file: see policy/loader.py)."""
    raw, text = read_policy(path)
    data, lines = parse_yaml(text, str(path))
    policy = validate(data, lines, str(path))
    policy = _with_features_files(policy, path, lines)
    _require_tokenizers(policy, path, lines)
    policy = _with_terms_file(policy, path, lines)
    return LoadedPolicy(policy, path, hashlib.sha256(raw).hexdigest(), text, lines)


#: A features file lists a model's input columns; a few thousand one-hot columns is large.
FEATURES_FILE_BYTES = 1 << 20
FEATURES_FILE_NAMES = 100_000


def _with_features_files(policy: Policy, path: Path, lines: dict[Path_, int]) -> Policy:
    """The policy with each ``features_file`` read into ``features`` (relative to the policy)."""
    model = policy.model
    updates: dict[str, Any] = {}
    for role in (None, *Roles):
        scope = model if role is None else getattr(model, role)
        if scope is None or scope.features_file is None:
            continue
        at: Path_ = ("model", "features_file") if role is None else ("model", role, "features_file")
        where = f"{path}:{_line_for(lines, at)}: {_dotted(at)}"
        names = read_features_file(path.parent / scope.features_file, where)
        changed = scope.model_copy(update={"features": names, "features_file": None})
        if role is None:
            updates.update(features=names, features_file=None)
        else:
            updates[role] = changed
    if not updates:
        return policy
    return policy.model_copy(update={"model": model.model_copy(update=updates)})


def _require_tokenizers(policy: Policy, path: Path, lines: dict[Path_, int]) -> None:
    """Each tokenizer the policy names exists (relative to the policy), or a PolicyError
    naming its key; it is read when its model is loaded."""
    from fairgate.inputs.files import require_regular_file

    for role in (None, *Roles):
        scope = policy.model if role is None else getattr(policy.model, role)
        if scope is None or scope.inputs is None or scope.inputs.text is None:
            continue
        at: Path_ = ("model", "inputs", "text", "tokenizer") if role is None else (
            "model", role, "inputs", "text", "tokenizer")
        file = path.parent / scope.inputs.text.tokenizer
        require_regular_file(file, PolicyError, where=f"{path}:{_line_for(lines, at)}: "
                             f"{_dotted(at)}: {file}", what="tokenizer",
                             expected="a Hugging Face tokenizer.json")


#: A counterfactual terms file: a few thousand terms is large.
TERMS_FILE_BYTES = 1 << 20


def _with_terms_file(policy: Policy, path: Path, lines: dict[Path_, int]) -> Policy:
    """The policy with individual.counterfactual.file read into swap or groups."""
    from fairgate.inputs.files import read_regular_file
    from fairgate.inputs.text_swap import term_errors

    ind = policy.individual
    cf = ind.counterfactual if ind is not None else None
    if ind is None or cf is None or cf.file is None:
        return policy
    at: Path_ = ("individual", "counterfactual", "file")
    file = path.parent / cf.file
    where = f"{path}:{_line_for(lines, at)}: {_dotted(at)}: {file}"
    raw = read_regular_file(file, TERMS_FILE_BYTES, PolicyError, where=where,
                            what="terms file", expected="a YAML file of swap: or groups:")
    data, file_lines = parse_yaml(_decode_terms(raw, where), str(file))
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in ("swap", "groups"):
        raise PolicyError(f"{where}: the file must hold one key, swap: or groups:")
    kind, terms = next(iter(data.items()))
    try:
        checked = CounterfactualSpec.model_validate({"text": cf.text, kind: terms})
    except ValidationError as e:
        raise PolicyError(f"{where}: {e.errors()[0]['msg']}") from None
    errs = term_errors(kind, terms)
    if errs:
        key, msg = errs[0]
        raise PolicyError(f"{file}:{_line_for(file_lines, (kind, *key))}: "
                          f"{_dotted((kind, *key))}: {msg}")
    changed = cf.model_copy(update={kind: getattr(checked, kind)})
    return policy.model_copy(update={"individual": ind.model_copy(
        update={"counterfactual": changed})})


def _decode_terms(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PolicyError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_features_file(file: Path, where: str) -> list[str]:
    """Column names, one per line in order; blank lines and lines starting with ``#`` are
    skipped (a ``#`` inside a line is part of the name)."""
    from fairgate.inputs.files import read_regular_file

    raw = read_regular_file(file, FEATURES_FILE_BYTES, PolicyError, where=f"{where}: {file}",
                            what="features file", expected="a text file of column names")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"{where}: {file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    names: list[str] = []
    first: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in first:
            raise PolicyError(f"{where}: {file}:{number}: {name!r} is listed twice (first on line "
                              f"{first[name]})")
        first[name] = number
        names.append(name)
    if not names:
        raise PolicyError(f"{where}: {file} lists no column")
    if len(names) > FEATURES_FILE_NAMES:
        raise PolicyError(f"{where}: {file} lists {len(names):,} columns; at most "
                          f"{FEATURES_FILE_NAMES:,}")
    return names


def json_schema() -> dict[str, Any]:
    """JSON Schema of policy version 1 (for editors and `fairgate policy schema`)."""
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fairgate policy, version 1"
    check = schema["$defs"]["Check"]["properties"]
    check["metric"]["enum"] = sorted(CATALOGUE)
    audit = schema["$defs"]["AuditSpec"]["properties"]
    listed = audit.pop("sensitive")  # one attribute may be written alone (sensitive: sex)
    audit["sensitive"] = {"description": listed.pop("description"), "title": listed.pop("title"),
                          "anyOf": [listed, *listed["items"]["oneOf"]]}
    return schema
