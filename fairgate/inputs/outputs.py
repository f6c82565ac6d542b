"""How a model's raw output becomes decisions: planned from the graph and the policy,
checked on every batch.

The rule is *prove it or refuse it*. Which output is read, whether its numbers are
probabilities or logits, which column is the positive class and which column is which
class come from the model's graph (:mod:`fairgate.inputs.graph`), from the policy, or, for
the probabilities/logits question only, from values that leave no doubt. Anything else is
a :class:`ModelError` that names the options and the policy setting that resolves them.
What was chosen, and why, is kept in the plan and shown in every report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from fairgate.core.counts import value_label
from fairgate.errors import ModelError
from fairgate.inputs.graph import OutputFacts, Scale

OutputMode = Literal["auto", "probabilities", "logits", "labels"]
FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)")
PROB_TOL = 1e-4  # |row sum − 1| of a probability vector (float32 softmax of many classes)
UNIT_TOL = 1e-6  # how far outside [0, 1] a float32 probability may round
#: Values of an unproven scale within this margin outside [0, 1] could be slightly-off
#: probabilities or small logits: ambiguous, so refused. Logits are proven by going further.
LOGIT_EVIDENCE = 0.5


@dataclass(frozen=True)
class ReadSettings:
    """One model's policy settings for reading its output (see policy ``model:``)."""

    output: OutputMode = "auto"
    output_name: str | None = None
    threshold: float = 0.5
    positive_label: object = None  # binary: the audit set's positive label
    positive_class: object = None  # binary: the model's own class that means it
    positive_column: int | None = None  # binary: the positive column of unnamed [N, 2]
    classes: tuple[str, ...] | None = None  # multi-class: declared class of each column
    classes_from: str = ""  # e.g. "multiclass.classes", "model.student.classes"
    multiclass: bool = False


@dataclass(frozen=True)
class Output:
    """An output as onnxruntime declares it, with what the graph proves about it."""

    name: str
    type: str
    shape: tuple[Any, ...] | None  # None: unknown rank
    facts: OutputFacts

    @property
    def is_float(self) -> bool:
        return self.type in FLOAT_TYPES

    @property
    def width(self) -> int | None:
        """Columns of a 2-D output (None when dynamic); 1 for a 1-D output."""
        if self.shape is None:
            return None
        if len(self.shape) == 1:
            return 1
        last = self.shape[-1]
        return last if isinstance(last, int) else None

    def text(self) -> str:
        return f"{self.name} {self.type} {shape_text(self.shape)}"


def shape_text(shape: tuple[Any, ...] | list[Any] | None) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in shape) + "]"


@dataclass
class Plan:
    """What to read from which output; fixed at load, except a scale left to the values."""

    output: str
    kind: Literal["proba2", "score", "labels", "classes", "deferred"]
    scale: Scale | None = None  # proba2 / score; None until the first batch decides
    scale_from: str = ""
    column: int = 1  # proba2: the positive column
    positive: object = None  # binary labels: the positive label value
    positive_text: str = ""  # which class is positive, for reports
    positive_from: str = ""
    zero_one: bool = False  # the 0/1 convention: the engine checks the labels are 0 and 1
    columns: tuple[str, ...] | None = None  # classes: the class of each column
    columns_from: str = ""
    positions: bool = False  # label values are column positions (ArgMax)
    check_label: str | None = None  # a label output cross-checked against the argmax
    check_classes: tuple[str, ...] | None = None  # classes by column for that check
    others: set[str] = field(default_factory=set)  # binary labels: non-positive values seen
    # deferred: an output whose width is only known at run time, planned on its first batch
    pending: tuple[Output, Output | None, ReadSettings, str] | None = None

    @property
    def outputs(self) -> list[str]:
        return [self.output] + ([self.check_label] if self.check_label else [])


def plan_output(outputs: list[Output], settings: ReadSettings, where: str) -> Plan:
    """The plan for one model, or a ModelError naming the options and the setting to use."""
    options = ", ".join(o.text() for o in outputs)
    if settings.output_name is not None:
        chosen = [o for o in outputs if o.name == settings.output_name]
        if not chosen:
            raise ModelError(f"{where}: no output named {settings.output_name!r} (outputs: "
                             f"{options}); fix model.output_name")
        candidates = chosen
    else:
        candidates = outputs
    floats = [o for o in candidates if o.is_float]
    labels = [o for o in candidates if not o.is_float and o.type.startswith("tensor(")]
    zipmaps = [o for o in candidates if o.type.startswith("seq(map(")]
    if zipmaps:
        raise ModelError(f"{where}: ZipMap output that cannot be read as a tensor ({options}); "
                         "export with zipmap=False")
    if settings.output == "labels" or (not floats and labels):
        if len(labels) != 1:
            what = "no label output" if not labels else "several label outputs"
            raise ModelError(f"{where}: {what} ({options}); set model.output_name to the one "
                             "to read")
        read = _class_labels if settings.multiclass else _binary_labels
        return read(labels[0], settings, where)
    if not floats:
        raise ModelError(f"{where}: no output gives {settings.output} ({options})")
    if len(floats) > 1:
        raise ModelError(f"{where}: cannot tell which output holds the scores ({options}); set "
                         "model.output_name to one of them")
    out = floats[0]
    label_out = labels[0] if len(labels) == 1 and settings.output_name is None else None
    if settings.multiclass:
        return _class_scores(out, label_out, settings, where)
    return _binary_scores(out, label_out, settings, where)


# ----------------------------------------------------------------------------- binary


def _match(classes: tuple[Any, ...], wanted: object) -> int | None:
    """Index of the class that reads as ``wanted`` (``1`` and ``1.0`` alike; never a bool
    for a number: ``True`` is not class 1)."""
    want = value_label(wanted)
    hits = [i for i, c in enumerate(classes)
            if value_label(c) == want and isinstance(c, bool) == isinstance(wanted, bool)]
    return hits[0] if len(hits) == 1 else None


def _named_positive(classes: tuple[Any, ...], source: str, settings: ReadSettings, where: str
                    ) -> tuple[int, str]:
    """Index of the positive class among classes the model names, and how it was found."""
    shown = ", ".join(repr(c) for c in classes)
    if len(classes) != 2:
        raise ModelError(f"{where}: {len(classes)} classes ({shown}); fairgate gates binary "
                         "decisions here (a multi-class model needs a multiclass: section)")
    if settings.positive_class is not None:
        i = _match(classes, settings.positive_class)
        if i is None:
            raise ModelError(f"{where}: model.positive_class {settings.positive_class!r} is not "
                             f"one of its classes ({shown}, from {source})")
        return i, f"model.positive_class {settings.positive_class!r} (classes from {source})"
    i = _match(classes, settings.positive_label)
    column = settings.positive_column
    if column is not None:
        if i is not None and i != column:
            raise ModelError(f"{where}: model.positive_column is {column}, but its graph names "
                             f"column {i} {classes[i]!r}, which is positive_label (classes "
                             f"{shown}, from {source}); remove model.positive_column")
        return column, f"model.positive_column (classes from {source})"
    if i is None:
        raise ModelError(
            f"{where}: its classes are {shown} (from {source}) and none is positive_label "
            f"{settings.positive_label!r}; set model.positive_class to the class that means "
            f"{settings.positive_label!r} (one of: {shown}), for every model or under "
            "model.teacher / model.student")
    return i, f"positive_label (classes from {source})"


def _positive_text(settings: ReadSettings, cls: object = None, named: bool = False) -> str:
    """How the positive class reads in reports: the model's class, and what it means."""
    label = f"positive_label {value_label(settings.positive_label)!r}"
    if not named:
        return label
    if value_label(cls) == value_label(settings.positive_label):
        return repr(value_label(cls))
    return f"class {value_label(cls)!r} = {label}"


def _zero_one(settings: ReadSettings) -> int | None:
    """The column of positive_label under the 0/1 convention (labels 0 and 1 are column
    positions), or None when the label is not 0/1. The engine verifies afterwards that the
    audit set's labels are exactly 0 and 1 (booleans: False and True)."""
    p = settings.positive_label
    if isinstance(p, bool):
        return int(p)
    if isinstance(p, int | float) and p in (0, 1):
        return int(p)
    return None


def _unnamed_positive(width: int, settings: ReadSettings, where: str, what: str
                      ) -> tuple[int, str, bool]:
    """(positive column, how it was found, 0/1 convention) for unnamed columns."""
    if settings.positive_class is not None:
        raise ModelError(f"{where}: {what} does not name its classes, so model.positive_class "
                         "cannot be matched; set model.positive_column (0 or 1) instead")
    if settings.positive_column is not None:
        if settings.positive_column >= width:
            raise ModelError(f"{where}: model.positive_column {settings.positive_column} is "
                             f"outside its {width} columns")
        return settings.positive_column, "model.positive_column", False
    column = _zero_one(settings)
    if column is None:
        raise ModelError(
            f"{where}: {what} does not name its classes, so which column is positive_label "
            f"{settings.positive_label!r} is unknown; set model.positive_column (0 or 1), for "
            "every model or under model.teacher / model.student")
    return column, f"positive_label {settings.positive_label!r} as the column index (labels 0/1)", \
        not isinstance(settings.positive_label, bool)


def _binary_scores(out: Output, label_out: Output | None, settings: ReadSettings, where: str
                   ) -> Plan:
    facts = out.facts
    width = out.width
    if out.shape is not None and (len(out.shape) > 2 or (width is not None and width > 2)):
        raise ModelError(f"{where}: output {out.name!r} has shape {shape_text(out.shape)}: "
                         f"{width} classes; fairgate gates binary decisions here ([N, 2], [N, 1] "
                         "or [N] scores; a multi-class model needs a multiclass: section)")
    scale, scale_from = _declared_scale(out, settings, where)
    if width == 1 or (out.shape is not None and len(out.shape) == 1):
        if facts.classes is not None and len(facts.classes) == 2:
            i, how = _named_positive(facts.classes, facts.classes_from, settings, where)
            if i != 1:
                raise ModelError(f"{where}: output {out.name!r} is one score for class "
                                 f"{facts.classes[1]!r}, but the positive class is "
                                 f"{facts.classes[0]!r}; gate its label output (model.output: "
                                 "labels) or export the score of the positive class")
        return Plan(out.name, "score", scale, scale_from, positive_text=_positive_text(settings),
                    positive_from="one score per row: the positive class's")
    if facts.classes is not None:
        column, how = _named_positive(facts.classes, facts.classes_from, settings, where)
        plan = Plan(out.name, "proba2", scale, scale_from, column=column,
                    positive_text=_positive_text(settings, facts.classes[column], True),
                    positive_from=how)
    elif width == 2:
        column, how, zero_one = _unnamed_positive(2, settings, where,
                                                  f"output {out.name!r} [N, 2]")
        plan = Plan(out.name, "proba2", scale, scale_from, column=column,
                    positive_text=_positive_text(settings), positive_from=how, zero_one=zero_one)
    else:  # width unknown until the first batch: [N, 1] and [N, 2] need different proofs
        return Plan(out.name, "deferred", pending=(out, label_out, settings, where))
    if label_out is not None and facts.classes is not None and label_out.facts.classes == \
            facts.classes and label_out.facts.labels == "class values":
        plan.check_label = label_out.name
        plan.check_classes = tuple(value_label(c) for c in facts.classes)
    return plan


def _binary_labels(out: Output, settings: ReadSettings, where: str) -> Plan:
    facts = out.facts
    if facts.labels == "positions":
        column, how, zero_one = _unnamed_positive(2, settings, where,
                                                  f"label output {out.name!r} (an argmax)")
        return Plan(out.name, "labels", positive=column,
                    positive_text=f"column {column} = {_positive_text(settings)}",
                    positive_from=how, zero_one=zero_one, positions=True)
    if facts.classes is not None:
        i, how = _named_positive(facts.classes, facts.classes_from, settings, where)
        return Plan(out.name, "labels", positive=facts.classes[i],
                    positive_text=_positive_text(settings, facts.classes[i], True),
                    positive_from=how)
    # a label output whose classes the graph does not list: its values must be comparable
    wanted = settings.positive_class if settings.positive_class is not None else \
        settings.positive_label
    setting = "model.positive_class" if settings.positive_class is not None else "positive_label"
    text = out.type == "tensor(string)"
    if text != isinstance(wanted, str) or (out.type == "tensor(bool)") != isinstance(wanted, bool):
        kind = {"tensor(string)": "text", "tensor(bool)": "booleans"}.get(out.type, "numbers")
        raise ModelError(f"{where}: label output {out.name!r} holds {kind} ({out.type}) but "
                         f"{setting} is {wanted!r}; set model.positive_class to the label value "
                         "this model gives for the positive class")
    return Plan(out.name, "labels", positive=wanted,
                positive_text=_positive_text(settings, wanted, True), positive_from=setting)


def _declared_scale(out: Output, settings: ReadSettings, where: str) -> tuple[Scale | None, str]:
    """The scale the policy declares, checked against what the graph proves."""
    proven, source = out.facts.scale, out.facts.scale_from
    if settings.output in ("probabilities", "logits"):
        if proven is not None and proven != settings.output:
            raise ModelError(f"{where}: model.output is {settings.output}, but output "
                             f"{out.name!r} comes out of {source}: it holds {proven}; remove "
                             "model.output or set it to " + proven)
        return settings.output, "model.output"
    if proven is not None:
        return proven, f"the graph ({source})"
    return None, ""


# ----------------------------------------------------------------------------- multi-class


def _class_scores(out: Output, label_out: Output | None, settings: ReadSettings, where: str
                  ) -> Plan:
    if out.shape is not None and (len(out.shape) != 2 or (out.width is not None and out.width < 2)):
        raise ModelError(f"{where}: output {out.name!r} has shape {shape_text(out.shape)}; a "
                         "multi-class model gives [N, K] probabilities or logits, or a label per "
                         "row")
    columns, source = _column_classes(out.facts, settings, where, f"output {out.name!r}",
                                      out.width)
    plan = Plan(out.name, "classes", columns=columns, columns_from=source)
    if label_out is not None and label_out.facts.labels == "class values":
        plan.check_label = label_out.name
        plan.check_classes = columns
    return plan


def _column_classes(facts: OutputFacts, settings: ReadSettings, where: str, what: str,
                    width: int | None) -> tuple[tuple[str, ...], str]:
    """The class of each column: from the graph, else declared; refused when neither."""
    declared = settings.classes
    if facts.classes is not None:
        named = tuple(value_label(c) for c in facts.classes)
        if declared is not None and settings.classes_from.startswith("model.") and \
                named != declared:
            raise ModelError(f"{where}: {settings.classes_from} declares the columns as "
                             f"{', '.join(declared)} but its graph names them {', '.join(named)} "
                             f"(from {facts.classes_from}); remove {settings.classes_from}")
        return named, f"the graph ({facts.classes_from})"
    if declared is None:
        raise ModelError(
            f"{where}: {what} has {width or 'K'} class columns that its graph does not name, and "
            "nothing declares their order; list the classes in column order under "
            "multiclass.classes (every model) or model.teacher.classes / model.student.classes "
            "(this model)")
    if width is not None and width != len(declared):
        raise ModelError(f"{where}: {what} has {width} class columns but {settings.classes_from} "
                         f"lists {len(declared)} classes")
    return declared, settings.classes_from


def _class_labels(out: Output, settings: ReadSettings, where: str) -> Plan:
    facts = out.facts
    if facts.labels == "positions":
        columns, source = _column_classes(facts, settings, where,
                                          f"label output {out.name!r} (an argmax)", None)
        return Plan(out.name, "labels", columns=columns, columns_from=source, positions=True)
    if facts.classes is not None or out.type == "tensor(string)":
        return Plan(out.name, "labels", columns_from="the label values")
    # integers from an unknown node: class values, unless the classes have names no integer
    # can equal, in which case they can only be positions into the declared order
    declared = settings.classes
    if declared is not None and not any(_integer_text(c) for c in declared):
        return Plan(out.name, "labels", columns=declared, columns_from=settings.classes_from,
                    positions=True)
    if declared is not None and not all(_integer_text(c) for c in declared):
        raise ModelError(f"{where}: label output {out.name!r} holds integers, and "
                         f"{settings.classes_from} mixes integer and text class names, so they "
                         "could be class values or column positions; export the model's label "
                         "as text, or its [N, K] scores with model.output_name")
    return Plan(out.name, "labels", columns_from="the label values")


def _integer_text(name: str) -> bool:
    return name.lstrip("-").isdigit()


# ----------------------------------------------------------------------------- every batch


def planned(plan: Plan, raw: Any, rows: int, offset: int) -> Plan:
    """A deferred plan made concrete from the shape of its first batch (else ``plan``)."""
    if plan.kind != "deferred" or plan.pending is None:
        return plan
    out, label_out, settings, where = plan.pending
    arr = rows_of(raw, rows, f"{where}, output {out.name!r}", offset)
    shape = (None,) if arr.ndim == 1 else (None, arr.shape[1])
    return _binary_scores(replace(out, shape=shape), label_out, settings, where)


def reconcile(plans: list[Plan], where: str) -> Plan:
    """One plan from the plans of several passes over parts of the audit set (an engine's
    tasks): those that read no batch are left out; the others must have read the output the
    same way, else a ModelError names the setting that decides it."""
    read = [p for p in plans if p.kind != "deferred" and (p.kind not in ("proba2", "score")
                                                          or p.scale is not None)]
    if not read:
        return plans[0]
    first = read[0]
    scales = sorted({str(p.scale) for p in read if p.kind in ("proba2", "score")})
    if len(scales) > 1:
        raise ModelError(f"{where}: cannot tell probabilities from logits: its graph does not "
                         "say, and the values of some parts of the audit set read as "
                         "probabilities, others as logits; set model.output to probabilities "
                         "or logits")
    others: set[str] = set()
    for p in read:
        others |= p.others
    if len(others) > 1:
        shown = ", ".join(sorted(others)[:5])
        raise ModelError(f"{where}: gives labels other than the positive ({first.positive_text}) "
                         f"and one negative: {shown}; a binary gate needs two classes")
    return replace(first, others=others)


def rows_of(raw: Any, rows: int, where: str, offset: int) -> np.ndarray:
    """The output as an array with exactly ``rows`` rows (an output reduced over the batch,
    which broadcasting would silently spread over every row, is refused)."""
    arr = np.asarray(raw)
    if arr.ndim == 0 or arr.shape[0] != rows or arr.ndim > 2:
        raise ModelError(f"{where}: gave shape {shape_text(list(arr.shape))} for a batch of "
                         f"{rows} rows (from row {offset}); expected one prediction per row")
    return arr


def binary_scores(plan: Plan, raw: Any, rows: int, where: str, offset: int) -> np.ndarray:
    """Positive-class scores in [0, 1] of one batch (labels: 0.0/1.0)."""
    arr = rows_of(raw, rows, where, offset)
    if plan.kind == "labels":
        return _label_scores(plan, arr.reshape(rows, -1), where, offset)
    arr = arr.astype(np.float64, copy=False)
    if plan.kind == "score":
        if arr.ndim == 2 and arr.shape[1] != 1:
            raise ModelError(f"{where}: gave shape {shape_text(list(arr.shape))}, expected [N] "
                             "or [N, 1]")
        arr = arr.reshape(-1)
    elif arr.ndim != 2 or arr.shape[1] != 2:
        raise ModelError(f"{where}: gave shape {shape_text(list(arr.shape))}, expected [N, 2]")
    # one min and one max find NaN (it propagates) and values outside [0, 1]; the rows at
    # fault are looked for only then (each elementwise test is a pass over the batch)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo != lo or hi != hi:
        nan = np.isnan(arr)
        first = int(np.flatnonzero(nan.reshape(rows, -1).any(axis=1))[0])
        raise ModelError(f"{where}: produced NaN scores (first at row {offset + first})")
    if plan.scale is None:
        plan.scale, plan.scale_from = _scale_from_values(arr, plan.kind == "proba2", where,
                                                         offset)
    if plan.scale == "probabilities":
        vectors = plan.kind == "proba2"
        inside = lo >= -UNIT_TOL and hi <= 1 + UNIT_TOL
        if not inside or (vectors and arr.size and not float(
                np.abs(arr[:, 0] + arr[:, 1] - 1.0).max()) < PROB_TOL):
            _check_unit(arr, where, offset, vectors)
        return arr[:, plan.column] if vectors else arr
    if plan.kind == "score":
        return _expit(arr)  # exact at ±inf: 0 and 1
    with np.errstate(invalid="ignore"):  # inf − inf is NaN, refused just below
        margin = arr[:, plan.column] - arr[:, 1 - plan.column]
    bad = np.isnan(margin)  # both logits infinite with the same sign: no decision
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ModelError(f"{where}: row {offset + first} has logits {arr[first].tolist()}, which "
                         "give no decision")
    return _expit(margin)  # softmax of two logits, stable at ±inf


def _expit(x: np.ndarray) -> np.ndarray:
    """scipy's logistic sigmoid, imported when a model gives logits (not at start-up: a
    Spark worker imports this module)."""
    from scipy.special import expit

    return np.asarray(expit(x))


def _scale_from_values(arr: np.ndarray, vectors: bool, where: str, offset: int
                       ) -> tuple[Scale, str]:
    """Probabilities or logits, decided on the first batch only when the values prove it."""
    finite = bool(np.isfinite(arr).all())
    lo, hi = float(np.min(arr)), float(np.max(arr))
    in_unit = finite and lo >= -UNIT_TOL and hi <= 1 + UNIT_TOL
    sums = (not vectors) or (finite and bool(np.all(np.abs(arr.sum(axis=1) - 1.0) < PROB_TOL)))
    if in_unit and sums:
        return "probabilities", f"the values (all in [0, 1]{', rows sum to 1' if vectors else ''})"
    if not finite or lo < -LOGIT_EVIDENCE or hi > 1 + LOGIT_EVIDENCE:
        # not the batch's range: the text must not depend on which batch came first
        return "logits", (f"the values (not all within [{-LOGIT_EVIDENCE:g}, "
                          f"{1 + LOGIT_EVIDENCE:g}], so not probabilities)")
    problem = ("rows that do not sum to 1" if in_unit else
               f"values just outside [0, 1] (range [{lo:.4g}, {hi:.4g}])")
    raise ModelError(f"{where}: cannot tell probabilities from logits: its graph does not say, and "
                     f"the first batch (rows from {offset}) has {problem}; set model.output to "
                     "probabilities or logits")


def _check_unit(arr: np.ndarray, where: str, offset: int, vectors: bool) -> None:
    bad = ~((arr >= -UNIT_TOL) & (arr <= 1 + UNIT_TOL))  # NaN and inf are bad too
    if vectors:
        with np.errstate(invalid="ignore"):  # inf + −inf: NaN, already bad
            bad = bad.any(axis=1) | ~(np.abs(arr.sum(axis=1) - 1.0) < PROB_TOL)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))[0])
        raise ModelError(
            f"{where}: read as probabilities, but row {offset + first} is not a probability "
            f"{'vector' if vectors else 'in [0, 1]'}; set model.output: logits if it holds logits")


def _label_scores(plan: Plan, arr: np.ndarray, where: str, offset: int) -> np.ndarray:
    if arr.shape[1] != 1:
        raise ModelError(f"{where}: gave shape {shape_text(list(arr.shape))}; a label output has "
                         "one label per row")
    values = arr.reshape(-1)
    if plan.positions:
        bad = (values != 0) & (values != 1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ModelError(f"{where}: row {offset + first} has column position "
                             f"{values[first].item()!r}; a binary model has columns 0 and 1")
        return (values == plan.positive).astype(np.float64)
    hit = values == plan.positive
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise ModelError(f"{where}: produced NaN labels in rows from {offset}")
    for v in np.unique(values[~hit]).tolist():
        plan.others.add(value_label(v))
    if len(plan.others) > 1:
        shown = ", ".join(sorted(plan.others)[:5])
        raise ModelError(f"{where}: gives labels other than the positive ({plan.positive_text}) "
                         f"and one negative: {shown}; a binary gate needs two classes")
    return hit.astype(np.float64)


def check_labels_agree(plan: Plan, scores: np.ndarray, labels: Any, where: str, offset: int
                       ) -> None:
    """The label output names the class of the largest column, wherever that is clear.

    A class order read from the graph or the policy is then confirmed by the model's own
    decisions; rows whose two largest scores are within 1e-6 are skipped (ties).
    """
    assert plan.check_classes is not None
    lab = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or len(lab) != len(scores) or scores.shape[1] != len(plan.check_classes):
        return
    top2 = np.sort(scores, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-6
    top = np.argmax(scores, axis=1)
    names = np.array(plan.check_classes, dtype=object)[top]
    values, inverse = np.unique(lab, return_inverse=True)  # a few classes: label each once
    given = np.array([value_label(v) for v in values.tolist()], dtype=object)[inverse]
    wrong = clear & (names != given)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise ModelError(
            f"{where}: its label output {plan.check_label!r} says {given[i]!r} at row "
            f"{offset + i}, but its largest score is column {int(top[i])}, which "
            f"{plan.columns_from or 'the graph'} calls {names[i]!r}: the class order is wrong; "
            "fix the declared classes, or gate the label output (model.output_name: "
            f"{plan.check_label})")


def class_top1(plan: Plan, raw: Any, rows: int, where: str, offset: int) -> np.ndarray:
    """Top-1 column index per row of [N, K] class scores (probabilities or logits)."""
    arr = rows_of(raw, rows, where, offset)
    if arr.ndim != 2 or (plan.columns is not None and arr.shape[1] != len(plan.columns)):
        raise ModelError(f"{where}: gave shape {shape_text(list(arr.shape))}, expected [N, "
                         f"{len(plan.columns) if plan.columns else 'K'}]")
    top = np.argmax(arr, axis=1)  # points at a row's first NaN, if it has one: check only
    if np.isnan(np.take_along_axis(arr, top[:, None], axis=1)).any():  # those, not [N, K]
        raise ModelError(f"{where}: produced NaN scores in rows from {offset}")
    return top


def describe(plan: Plan, settings: ReadSettings) -> dict[str, Any]:
    """How the output was read, for every report (report.json ``inputs.<model>.output``)."""
    kind = plan.kind
    interpretation: str
    if kind == "deferred":  # no batch was read
        interpretation, how = "undecided", "not read: its width is known only at run time"
    elif kind in ("proba2", "score"):
        interpretation = plan.scale or "undecided"
        how = ({"proba2": f"[N, 2] {interpretation}, column {plan.column} = {plan.positive_text}",
                "score": f"one {'logit' if plan.scale == 'logits' else 'score'} per row for "
                         f"{plan.positive_text}"}[kind])
        if plan.scale == "logits":
            how += " (softmax applied)" if kind == "proba2" else " (sigmoid applied)"
    elif kind == "labels" and not settings.multiclass:
        interpretation = "labels"
        how = f"labels, positive = {plan.positive_text}"
    elif kind == "labels":
        interpretation = "top-1 class"
        how = "top-1 from the model's label output" + (" (column positions)" if plan.positions
                                                       else "")
    else:
        interpretation = "top-1 class"
        how = f"top-1 (argmax) of [N, {len(plan.columns or ()) or 'K'}] class scores"
    out: dict[str, Any] = {"name": plan.output, "interpretation": interpretation, "how": how,
                           "chosen": "auto" if settings.output == "auto" and
                           settings.output_name is None else "policy"}
    if plan.scale_from:
        out["scale_from"] = plan.scale_from
    if not settings.multiclass:
        out["positive_class"] = plan.positive_text
        out["positive_from"] = plan.positive_from
    if plan.columns is not None:
        out["classes"] = list(plan.columns)
        out["classes_from"] = plan.columns_from
    if plan.check_label:
        out["checked_against"] = plan.check_label
    return out
