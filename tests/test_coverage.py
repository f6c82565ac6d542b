"""Coverage of the intervals on a seeded subset of benchmarks/sim_intervals.py (issue 11).

Populations with exact metric values computed by hand (the module's ``truth``, checked
against the catalogue below), audits drawn by multinomial row sampling, values through
``compute_values``. The seeds are fixed, so these numbers do not move between runs; the
bands leave room for a change of seed: with 150 audits and a true coverage of 0.95 an
observed share below 0.90 has probability below 0.5%. The full study, with 1,000 audits a
regime: ``python benchmarks/sim_intervals.py`` (figures in benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from types import ModuleType

import numpy as np
import pytest

from fairgate.core.counts import GroupingCounts
from fairgate.core.metrics import CATALOGUE, Context
from tests.conftest import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sim_intervals",
                                                  ROOT / "benchmarks" / "sim_intervals.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim_intervals"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sim = _load()
DP, EO, RATIO = ("demographic_parity_difference", "equalized_odds_difference",
                 "demographic_parity_ratio")
SPD, WORST = "statistical_parity_difference", "worst_group_accuracy"
QUANTITIES = ("delta", "teacher", "student")


def _coverage(name: str, metrics: tuple[str, ...], audits: int, method: str
              ) -> dict[tuple[str, str], object]:
    regime = replace(sim.regimes()[name], metrics=metrics)
    return sim.coverage(regime, audits, 500, 3, method)


def test_truth_by_hand_is_the_catalogue_on_the_population() -> None:
    """The simulation's hand-computed population values agree with the catalogue applied to
    the cell probabilities (metrics are ratios of counts, so probabilities are counts)."""
    for regime in sim.regimes().values():
        p = regime.p
        ctx = Context(gated=np.ones(p.shape[0], bool), reference=0)
        for m in regime.metrics:
            for model, conf in (("teacher", GroupingCounts.teacher(p)),
                                ("student", GroupingCounts.student(p))):
                got = float(CATALOGUE[m].compute(conf, ctx))
                assert got == pytest.approx(sim.truth(p, m, model), abs=1e-12), (regime.name, m)


# regime, metrics, audits; and where the percentile interval is known to fail there
CASES = [
    ("tie-teacher0", (DP, EO, RATIO), 150),
    ("near-tie-0se", (DP, SPD), 150),
    ("six-switch", (DP,), 100),
    ("small-group", (EO, WORST), 150),
]
PERCENTILE_FAILS = {
    # the teacher's true gap is 0: its own interval never holds 0, and the change is missed
    ("tie-teacher0", DP, "teacher"), ("tie-teacher0", DP, "delta"),
    ("tie-teacher0", EO, "teacher"), ("tie-teacher0", EO, "delta"),
    ("tie-teacher0", RATIO, "teacher"), ("tie-teacher0", RATIO, "delta"),
    # a gated group of about 40 rows: the change rests on a few discordant rows
    ("small-group", EO, "delta"),
}


@pytest.mark.parametrize("name, metrics, audits", CASES, ids=[c[0] for c in CASES])
def test_uniform_intervals_cover_where_percentile_ones_do_not(name: str, metrics: tuple[str, ...],
                                                              audits: int) -> None:
    uniform = _coverage(name, metrics, audits, "uniform")
    percentile = _coverage(name, metrics, audits, "percentile")
    for metric in metrics:
        for q in QUANTITIES:
            got = uniform[(metric, q)].coverage()  # type: ignore[attr-defined]
            assert got >= 0.90, (name, metric, q, got)
            if (name, metric, q) in PERCENTILE_FAILS:
                old = percentile[(metric, q)].coverage()  # type: ignore[attr-defined]
                assert old <= 0.85, (name, metric, q, old)


def test_widths_where_every_metric_is_smooth() -> None:
    """Groups far apart: the uniform interval of the change is the percentile one at level
    (α − β)/2 a side instead of α/2 (about 2% wider), within the issue's 1.1x."""
    metrics = (DP, EO, RATIO, SPD)
    uniform = _coverage("smooth", metrics, 150, "uniform")
    percentile = _coverage("smooth", metrics, 150, "percentile")
    for metric in metrics:
        for q in QUANTITIES:
            u, p = uniform[(metric, q)], percentile[(metric, q)]
            assert u.coverage() >= 0.90, (metric, q)  # type: ignore[attr-defined]
            ratio = u.width() / p.width()  # type: ignore[attr-defined]
            assert 1.0 <= ratio <= 1.1, (metric, q, ratio)
