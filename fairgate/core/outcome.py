"""What one gate run produced: the single value every reporter and the tracker read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import GroupRow, MetricValue, Unlisted
from fairgate.core.gate import Decision
from fairgate.policy import LoadedPolicy


@dataclass(frozen=True)
class GateReport:
    policy: LoadedPolicy
    decision: Decision
    groupings: tuple[Grouping, ...]
    kpis: tuple[MetricValue, ...]
    groups: tuple[GroupRow, ...]
    inputs: dict[str, Any]
    started_at: str
    version: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # about the inputs (the student is the teacher): in every report
    individual: dict[str, Any] | None = None  # sample details behind the individual metrics
    classwise: dict[str, Any] | None = None  # multi-class: per-class tests, disagreement
    scores: dict[str, Any] | None = None  # the row sample behind the score metrics, per group
    unlisted: tuple[Unlisted, ...] = ()  # ungated groups that ``groups`` leaves out, per grouping
    engine: dict[str, Any] = field(default_factory=dict)  # which engine counted, and where

    @property
    def verdict(self) -> str:
        return self.decision.verdict.value

    def unlisted_groups(self, grouping: Grouping) -> int:
        """Groups of ``grouping`` that ``groups`` leaves out (all below min_group_size)."""
        return sum(u.groups for u in self.unlisted if u.grouping == grouping)
