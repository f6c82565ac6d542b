"""What an engine's pass hands over: the tables and samples it counted, and the plans of what
to count (multi-class tables, bias alignment)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from fairgate.core.counts import Grouping, GroupingCounts
from fairgate.core.individual import SampledRows
from fairgate.core.multiclass import ClassIndex, Disagreement, alignment, equals
from fairgate.errors import DataError


@dataclass(frozen=True)
class SpuriousCut:
    """Rows split by whether a spurious attribute agrees with the label it goes with."""

    attribute: str
    value: object
    label: object
    grouping: Grouping  # derived: groups "aligned" and "conflicting"

    def column(self, batch: pa.RecordBatch, label_column: str, path: object,
               seen: dict[str, int]) -> pa.Array:
        """The alignment of a batch's rows; ``seen`` counts rows with the label, the value."""
        attribute = batch.column(self.attribute)
        if attribute.null_count:  # a missing attribute is neither aligned nor conflicting
            raise DataError(f"{path}: column {self.attribute!r} has {attribute.null_count} "
                            "missing value(s); bias alignment (audit.spurious) is undefined there")
        has_value = equals(attribute, self.value)
        has_label = equals(batch.column(label_column), self.label)
        seen["value"] = seen.get("value", 0) + int(has_value.sum())
        seen["label"] = seen.get("label", 0) + int(has_label.sum())
        return alignment(has_value, has_label)

    def check(self, seen: dict[str, int], label_column: str, path: object) -> None:
        """A label or attribute value that never occurs is a typo, not a finding."""
        for what, value, column in (("label", self.label, label_column),
                                    ("value", self.value, self.attribute)):
            if seen.get(what, 0) == 0:
                raise DataError(f"{path}: audit.spurious.{what} {value!r} never occurs in column "
                                f"{column!r}")


@dataclass(frozen=True)
class CountResult:
    counts: dict[Grouping, GroupingCounts]
    rows: int
    sample: SampledRows | None = None  # rows kept for individual fairness, if asked
    score_sample: SampledRows | None = None  # rows kept for score metrics (label, scores)
    reference: GroupingCounts | None = None  # multi-class: reference student vs student
    disagreements: tuple[Disagreement, ...] = ()  # multi-class: pairs of models
    classes: tuple[str, ...] = ()  # multi-class: class labels by index


@dataclass(frozen=True)
class MulticlassPlan:
    """What to count for a K-class gate (see fairgate/core/multiclass.py)."""

    label: str
    classes: ClassIndex
    top1: list[Grouping]  # top-1 correctness tables, incl. the true-class grouping
    classes_grouping: Grouping  # derived: one group per true class
    positives: tuple[str, ...]  # one-vs-rest tables of these classes, over ``base``
    base: list[Grouping]
    spurious: SpuriousCut | None = None
