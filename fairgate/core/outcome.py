"""What one gate run produced: the single value every reporter and the tracker read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import GroupRow, MetricValue, Unlisted
from fairgate.core.gate import CheckResult, Decision
from fairgate.core.stats import Interval
from fairgate.policy import LoadedPolicy


@dataclass(frozen=True)
class GateReport:
    """One gate run: what ``fairgate check`` writes as report.json and the Python API returns.

    ``verdict``, ``passed`` and ``exit_code`` say what the gate decided; ``results`` holds
    one result per check and grouping, ``values`` and ``intervals`` every computed metric by
    its label (``"demographic_parity_difference [sex]"``), ``groups`` the per-group rates.
    """

    #: The validated policy, its path and sha256.
    policy: LoadedPolicy
    #: The verdict and each check's result (status, bounds, waiver).
    decision: Decision
    #: Every table counted: the policy's groupings, then the derived ones.
    groupings: tuple[Grouping, ...]
    #: The KPI table: the same metrics for every gate of a kind.
    kpis: tuple[MetricValue, ...]
    #: Per-group counts and rates of both models, per grouping.
    groups: tuple[GroupRow, ...]
    #: What was gated: policy, audit set and models (paths or in-memory, sha256).
    inputs: dict[str, Any]
    #: When the run started (UTC, ISO 8601).
    started_at: str
    #: The fairgate version that ran.
    version: str
    #: Seconds spent counting and computing statistics.
    timings: dict[str, float] = field(default_factory=dict)
    #: Remarks shown in every report.
    notes: tuple[str, ...] = ()
    #: About the inputs (the student is the teacher): in every report.
    warnings: tuple[str, ...] = ()
    #: Sample details behind the individual-fairness metrics.
    individual: dict[str, Any] | None = None
    #: Multi-class: per-class tests, disagreement matrices.
    classwise: dict[str, Any] | None = None
    #: The row sample behind the score metrics, per group.
    scores: dict[str, Any] | None = None
    #: Ungated groups that ``groups`` leaves out, per grouping.
    unlisted: tuple[Unlisted, ...] = ()
    #: Which engine counted, and where.
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"pass"``, ``"warn"`` or ``"fail"``."""
        return self.decision.verdict.value

    @property
    def exit_code(self) -> int:
        """What ``fairgate check`` exits with: 0 (pass or warn) or 1 (fail)."""
        return self.decision.exit_code

    @property
    def passed(self) -> bool:
        """The gate lets the student through (pass, or warn: warnings and waivers allowed)."""
        return self.exit_code == 0

    @property
    def results(self) -> tuple[CheckResult, ...]:
        """One result per check and grouping, in policy order."""
        return self.decision.results

    @property
    def values(self) -> dict[str, MetricValue]:
        """Every metric computed (checks first, then KPIs), by its label."""
        out = {r.key.label: r.value for r in self.decision.results}
        for v in self.kpis:
            out.setdefault(v.key.label, v)
        return out

    @property
    def intervals(self) -> dict[str, Interval]:
        """The confidence interval of each metric's change (student − teacher), where
        resampling gave one."""
        return {label: v.delta_interval for label, v in self.values.items()
                if v.delta_interval is not None}

    def to_dict(self) -> dict[str, Any]:
        """report.json as a dict (before any MLflow section is added)."""
        from fairgate.report.json import to_dict

        return to_dict(self)

    def unlisted_groups(self, grouping: Grouping) -> int:
        """Groups of ``grouping`` that ``groups`` leaves out (all below min_group_size)."""
        return sum(u.groups for u in self.unlisted if u.grouping == grouping)
