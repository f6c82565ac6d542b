"""Every catalogue metric against an independent oracle (issue 2, "Correctness").

Predictions come from onnxruntime directly (tests/oracles.py), never from fairgate's model
code. fairgate's values come through its public paths: ``run_gate`` on the example models
(headline metrics and report.json's groups), and ``compute_values`` on counts that
``CountAccumulator`` built from the oracle's own predictions (the catalogue-wide sweep).
The oracles are fairlearn where it has the metric, AIF360's published formulas computed
row-wise over individuals otherwise, Aequitas's crosstabs for the per-group counts, and
hand counts on tiny tables.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import fairlearn.metrics as fm
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from fairgate.core.counts import CountAccumulator, Grouping, GroupingCounts
from fairgate.core.evaluate import (
    MetricKey,
    MetricValue,
    Settings,
    compute_values,
    context_for,
    group_rows,
)
from fairgate.core.metrics import CATALOGUE, Context, explain_undefined, lookup
from fairgate.core.outcome import GateReport
from fairgate.core.stats import resample_cells, rng_for
from fairgate.report.json import to_dict
from fairgate.run import GateRequest, run_gate
from tests import oracles
from tests.conftest import EXAMPLE

TOL = 1e-12
CONFIDENCE = 0.95
LEVEL = 1 - CONFIDENCE  # significance level of the paired tests
ALPHAS = (0.5, 2.0, 3.0)
GROUPINGS = (("sex",), ("race",), ("sex", "race"))
STUDENT = "student_distilled_T4.onnx"
PRUNED = "student_pruned.onnx"  # the student whose accuracy changes significantly
EXAMPLE_POLICY = yaml.safe_load((EXAMPLE / "policy.yaml").read_text())

# Settings of the catalogue sweep. "example" is the shipped policy's audit section; the others
# move the gating boundary (149 gates Amer-Indian-Eskimo's 149 rows but not Other's 122),
# use the largest group as reference, and put the reference below min_group_size.
SETTINGS = (
    oracles.Setting("example", EXAMPLE_POLICY["audit"]["min_group_size"],
                    EXAMPLE_POLICY["audit"]["reference_groups"]),
    oracles.Setting("largest-reference", 149),
    oracles.Setting("default-size", 30, {"sex": "Female", "race": "Black"}),
    oracles.Setting("small-reference", 149, {"sex": "Female", "race": "Other"}),
)


@dataclass(frozen=True)
class Adult:
    frame: pd.DataFrame
    y: np.ndarray
    teacher: np.ndarray
    student: np.ndarray
    pruned: np.ndarray

    def model(self, role: str) -> np.ndarray:
        return self.teacher if role == "teacher" else self.student


@pytest.fixture(scope="module")
def adult() -> Adult:
    frame = pd.read_parquet(EXAMPLE / "audit.parquet")
    return Adult(
        frame=frame,
        y=(frame["income"] == ">50K").to_numpy(),
        teacher=oracles.onnx_decisions(EXAMPLE / "teacher.onnx", frame),
        student=oracles.onnx_decisions(EXAMPLE / STUDENT, frame),
        pruned=oracles.onnx_decisions(EXAMPLE / PRUNED, frame),
    )


_ORACLE_CACHE: dict[tuple[str, str, tuple[str, ...]], dict[str, float]] = {}
_AEQUITAS_CACHE: dict[tuple[str, str, tuple[str, ...], str], dict[str, float]] = {}


def oracle(adult: Adult, setting: oracles.Setting, role: str) -> dict[str, float]:
    """Oracle value of every catalogue metric: 'name' (overall) and 'name[grouping]'."""
    out = {}
    y, p = adult.y, adult.model(role)
    for name, value in oracles.overall_oracle(y, p, ALPHAS).items():
        out[name] = value
    for attrs in GROUPINGS:
        v = oracles.view(y, p, adult.frame, attrs, setting)
        # fairlearn's part depends only on which groups are gated: compute it once
        cache_key = (role, "*".join(attrs), v.gated)
        if cache_key not in _ORACLE_CACHE:
            _ORACLE_CACHE[cache_key] = oracles.fairlearn_oracle(v)
        aequitas_key = (role, "*".join(attrs), v.gated, v.reference)
        if aequitas_key not in _AEQUITAS_CACHE:
            _AEQUITAS_CACHE[aequitas_key] = oracles.aequitas_oracle(v)
        values = {**_ORACLE_CACHE[cache_key], **oracles.aif360_oracle(v, ALPHAS),
                  **_AEQUITAS_CACHE[aequitas_key],
                  **oracles.paired_oracle(v, adult.teacher, p, LEVEL)}
        for name, value in values.items():
            out[f"{name}[{'*'.join(attrs)}]"] = value
    return out


def key_name(key: MetricKey) -> str:
    name = key.metric if key.alpha is None else f"{key.metric}@{key.alpha:g}"
    return name if key.grouping is None else f"{name}[{key.grouping.name}]"


def all_keys() -> list[MetricKey]:
    keys = []
    for name, metric in CATALOGUE.items():
        if metric.sampled or metric.scored:  # row samples: tests/test_individual*, test_scores
            continue
        if metric.derived:  # per-class and bias-alignment tables: tests/test_multiclass.py
            continue
        targets = [None] if metric.scope == "overall" else [Grouping(a) for a in GROUPINGS]
        alphas = ALPHAS if metric.uses_alpha else (None,)
        keys.extend(MetricKey(name, g, a) for g in targets for a in alphas)
    return keys


def mismatches(values: dict[str, MetricValue], want: dict[str, dict[str, float]]
               ) -> list[str]:
    """Every (metric, role) where fairgate and the oracle differ by more than TOL or in NaN."""
    bad = []
    for name, value in values.items():
        for role in ("teacher", "student"):
            got, exp = getattr(value, role), want[role][name]
            if math.isnan(got) != math.isnan(exp) or (
                not math.isnan(exp) and abs(got - exp) > TOL
            ):
                bad.append(f"{role} {name}: fairgate {got!r}, oracle {exp!r}")
        defined = not (math.isnan(value.teacher) or math.isnan(value.student))
        if defined and abs(value.delta - (want["student"][name] - want["teacher"][name])) > TOL:
            bad.append(f"delta {name}: fairgate {value.delta!r}")
    return bad


def count_in_batches(adult: Adult, groupings: list[Grouping], student: np.ndarray | None = None
                     ) -> dict[Grouping, GroupingCounts]:
    """fairgate's counts of the oracle's predictions, fed in uneven batches (they must add)."""
    acc = CountAccumulator(groupings)
    n = len(adult.y)
    s = adult.student if student is None else student
    edges = [0, 1, 1000, 1000, 7777, n]
    for lo, hi in itertools.pairwise(edges):
        rows = adult.frame.iloc[lo:hi]
        acc.add(adult.y[lo:hi], adult.teacher[lo:hi], s[lo:hi],
                {a: pa.array(rows[a].to_numpy()) for a in ("sex", "race")})
    assert acc.rows == n
    return acc.result()


# ----------------------------------------------------------------------------- the sweep


def test_every_catalogue_metric_has_an_oracle(adult: Adult) -> None:
    want = oracle(adult, SETTINGS[0], "teacher")
    assert sorted(key_name(k) for k in all_keys()) == sorted(want)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_catalogue_matches_oracles_on_counts(adult: Adult, setting: oracles.Setting) -> None:
    """All metrics, both models, every grouping including sex*race, to 1e-12."""
    counts = count_in_batches(adult, [Grouping(a) for a in GROUPINGS])
    settings = Settings(setting.min_group_size, dict(setting.reference_groups), CONFIDENCE,
                        0, 0)
    values = {key_name(k): v for k, v in compute_values(all_keys(), counts, settings).items()}
    want = {r: oracle(adult, setting, r) for r in ("teacher", "student")}
    assert mismatches(values, want) == []
    # fairgate and the oracle agree on which groups are gated and which is the reference
    for attrs in GROUPINGS:
        gc = counts[Grouping(attrs)]
        ctx = context_for(gc, settings)
        v = oracles.view(adult.y, adult.teacher, adult.frame, attrs, setting)
        assert [gc.labels[i] for i in ctx.gated_index] == list(v.gated)
        assert ctx.reference is not None and gc.labels[ctx.reference] == v.reference


@pytest.mark.parametrize("min_size", [30, 100, 149])
def test_paired_tests_match_mcnemar_and_holm(adult: Adult, min_size: int) -> None:
    """Groups whose accuracy changed significantly, with the pruned student (the distilled
    one changes none, so the sweep only checks zeros). The gated set decides Holm's m."""
    groupings = [Grouping(a) for a in GROUPINGS]
    counts = count_in_batches(adult, groupings, adult.pruned)
    settings = Settings(min_size, {}, CONFIDENCE, 0, 0)
    names = ("significant_accuracy_loss_groups", "significant_accuracy_change_groups")
    keys = [MetricKey(n, g) for n in names for g in groupings]
    values = compute_values(keys, counts, settings)
    found = 0.0
    for attrs in GROUPINGS:
        v = oracles.view(adult.y, adult.pruned, adult.frame, attrs,
                         oracles.Setting("pruned", min_size))
        want = oracles.paired_oracle(v, adult.teacher, adult.pruned, LEVEL)
        for name in names:
            got = values[MetricKey(name, Grouping(attrs))]
            assert (got.teacher, got.student) == (0.0, want[name]), (attrs, name)
            found += want[name]
    assert found > 0  # the test sees significant groups, not only zeros


def test_paired_tests_by_hand() -> None:
    """a: 12 rows only the teacher gets right; b: 12 only the student; c: 2 and 2.

    Exact McNemar p = 2 · 0.5^12 for a and b, 1 for c; Holm over 3 groups: 3p and 2p, both
    below 0.05: one loss (a) and two changes (a, b).
    """
    rows = ([("a", 1, 1, 0)] * 12 + [("a", 0, 0, 0)] * 4 + [("b", 1, 0, 1)] * 12
            + [("c", 1, 1, 0)] * 2 + [("c", 1, 0, 1)] * 2 + [("c", 0, 0, 0)] * 10)
    gc = hand_counts(rows)
    v = hand_values(gc, ["significant_accuracy_loss_groups", "significant_accuracy_change_groups"])
    assert 3 * 2 * 0.5**12 < 0.05
    assert v["significant_accuracy_loss_groups"].student == 1.0
    assert v["significant_accuracy_change_groups"].student == 2.0
    assert v["significant_accuracy_change_groups"].teacher == 0.0


def test_reference_below_min_group_size_is_undefined_with_reason(adult: Adult) -> None:
    """Race 'Other' has 122 rows: below 149 it is not gated, so it cannot be the reference."""
    counts = count_in_batches(adult, [Grouping(("race",))])
    settings = Settings(149, {"race": "Other"}, CONFIDENCE, 0, 0)
    key = MetricKey("statistical_parity_difference", Grouping(("race",)))
    value = compute_values([key], counts, settings)[key]
    assert math.isnan(value.teacher) and math.isnan(value.student)
    assert value.reason == "teacher and student: reference group Other is below min_group_size"


def test_oracle_groups_are_gated_as_documented(adult: Adult) -> None:
    """The settings exercise what they claim: excluded intersections, the 149 boundary."""
    example = oracles.view(adult.y, adult.teacher, adult.frame, ("sex", "race"), SETTINGS[0])
    assert "Female|Other" not in example.gated and "Male|White" in example.gated
    assert len(example.gated) < len(set(example.labels))
    boundary = oracles.view(adult.y, adult.teacher, adult.frame, ("race",), SETTINGS[1])
    assert (adult.frame["race"] == "Amer-Indian-Eskimo").sum() == 149
    assert "Amer-Indian-Eskimo" in boundary.gated and "Other" not in boundary.gated


# ----------------------------------------------------------------------------- run_gate


@pytest.fixture(scope="module")
def gate_report(tmp_path_factory: pytest.TempPathFactory) -> GateReport:
    """The real pipeline on the example models, with a check on every catalogue metric."""
    policy = dict(EXAMPLE_POLICY)
    checks = []
    for key in all_keys():
        if key.grouping is not None and key.grouping != Grouping(("sex",)):
            continue  # a check without `on` covers every grouping
        check = {"id": f"c{len(checks)}", "metric": key.metric, "max_increase": 1.0}
        if key.alpha is not None:
            check["alpha"] = key.alpha
        checks.append(check)
    policy["checks"] = checks
    policy["statistics"] = {"resamples": 0}
    path = tmp_path_factory.mktemp("oracle") / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return run_gate(GateRequest(policy=path, data=EXAMPLE / "audit.parquet",
                                teacher=EXAMPLE / "teacher.onnx", student=EXAMPLE / STUDENT,
                                out=path.parent / "out"))


def test_run_gate_matches_oracles(adult: Adult, gate_report: GateReport) -> None:
    """Through the real pipeline: fairgate's own model code, counts and gate."""
    values = {key_name(r.key): r.value for r in gate_report.decision.results}
    values.update({key_name(v.key): v for v in gate_report.kpis})
    assert sorted(values) == sorted(key_name(k) for k in all_keys())
    want = {r: oracle(adult, SETTINGS[0], r) for r in ("teacher", "student")}
    assert mismatches(values, want) == []


def test_headline_metrics_match_fairlearn_on_raw_rows(
    adult: Adult, gate_report: GateReport
) -> None:
    """The example policy's checks against fairlearn on the individual rows (no weights).

    On the intersection, where groups are excluded by min_group_size; this also shows that
    the sweep's collapsed, weighted rows give fairlearn's answer on the raw rows.
    """
    attrs = ("sex", "race")
    names = ["demographic_parity_difference", "demographic_parity_ratio",
             "equalized_odds_difference"]
    values = {key_name(r.key): r.value for r in gate_report.decision.results}
    for role in ("teacher", "student"):
        v = oracles.view(adult.y, adult.model(role), adult.frame, attrs, SETTINGS[0])
        want = oracles.fairlearn_oracle(v, names, collapse=False)
        assert set(want) == set(names)
        for name in names:
            got = getattr(values[f"{name}[{'*'.join(attrs)}]"], role)
            assert got == pytest.approx(want[name], abs=TOL), (role, name)


def test_report_groups_match_aequitas_crosstabs(adult: Adult, gate_report: GateReport) -> None:
    """report.json's per-group counts and rates equal Aequitas's on the same predictions."""
    report = json.loads(json.dumps(to_dict(gate_report)))
    rates = {"selection_rate": "pprev", "tpr": "tpr", "fnr": "fnr", "fpr": "fpr", "tnr": "tnr",
             "precision": "precision", "fdr": "fdr", "npv": "npv", "for": "for",
             "accuracy": "accuracy", "prevalence": "prev"}
    seen = 0
    for role in ("teacher", "student"):
        xtab = oracles.aequitas_crosstab(adult.y, adult.model(role), adult.frame, GROUPINGS)
        want = {(r["attribute_name"], r["attribute_value"]): r for r in xtab.to_dict("records")}
        rows = [g for g in report["groups"]]
        assert len(rows) == len(want)
        for g in rows:
            exp = want[("*".join(g["grouping"]), g["label"])]
            got = g[role]
            assert {k: got[k] for k in ("tp", "fp", "tn", "fn")} == {
                k: exp[k] for k in ("tp", "fp", "tn", "fn")}
            assert g["n"] == exp["group_size"]
            for ours, theirs in rates.items():
                if got[ours] is None:  # undefined: Aequitas's denominator must be empty too
                    assert ours in ("precision", "fdr", "npv", "for")
                    assert exp["pp" if ours in ("precision", "fdr") else "pn"] == 0
                else:
                    assert got[ours] == pytest.approx(exp[theirs], abs=TOL), ours
            assert got["error_rate"] == pytest.approx((exp["fp"] + exp["fn"]) / exp["group_size"],
                                                      abs=TOL)
            seen += 1
    assert seen == 2 * (2 + 5 + 10)


def test_report_groups_flags_match_the_policy(adult: Adult, gate_report: GateReport) -> None:
    report = to_dict(gate_report)
    for attrs in GROUPINGS:
        v = oracles.view(adult.y, adult.teacher, adult.frame, attrs, SETTINGS[0])
        rows = [g for g in report["groups"] if tuple(g["grouping"]) == attrs]
        assert sorted(g["label"] for g in rows if g["gated"]) == list(v.gated)
        assert [g["label"] for g in rows if g["reference"]] == [v.reference]


# ----------------------------------------------------------------------------- hand counts


def hand_counts(rows: list[tuple[str, int, int, int]]) -> GroupingCounts:
    """fairgate's counts of (group, y, ŷ_teacher, ŷ_student) rows."""
    g, y, t, s = zip(*rows, strict=True)
    acc = CountAccumulator([Grouping(("g",))])
    acc.add(np.array(y, bool), np.array(t, bool), np.array(s, bool), {"g": pa.array(g)})
    return acc.result()[Grouping(("g",))]


def hand_values(gc: GroupingCounts, names: list[str], min_size: int = 1,
                reference: str | None = None, alpha: float | None = None
                ) -> dict[str, MetricValue]:
    refs: dict[str, object] = {} if reference is None else {"g": reference}
    settings = Settings(min_size, refs, CONFIDENCE, 0, 0)
    keys = [MetricKey(n, None if CATALOGUE[n].scope == "overall" else gc.grouping, alpha)
            for n in names]
    return {k.metric: v for k, v in compute_values(keys, {gc.grouping: gc}, settings).items()}


# (group, y, ŷ_teacher, ŷ_student); the student predicts everyone positive.
# Counted by hand, teacher:  a: TP 2, FN 1, FP 1, TN 2    b: TP 1, FN 1, FP 1, TN 3
#                  student:  a: TP 3, FP 3                b: TP 2, FP 4
TWELVE = [
    ("a", 1, 1, 1), ("a", 1, 1, 1), ("a", 1, 0, 1), ("a", 0, 1, 1), ("a", 0, 0, 1),
    ("a", 0, 0, 1), ("b", 1, 1, 1), ("b", 1, 0, 1), ("b", 0, 0, 1), ("b", 0, 0, 1),
    ("b", 0, 0, 1), ("b", 0, 1, 1),
]


def test_hand_counted_table() -> None:
    gc = hand_counts(TWELVE)
    ctx = Context(gated=np.array([True, True]), reference=0)
    rows = {r.group: r for r in group_rows(gc, ctx)}
    assert rows[("a",)].teacher == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert rows[("b",)].teacher == {"tp": 1, "fp": 1, "tn": 3, "fn": 1}
    assert rows[("a",)].student == {"tp": 3, "fp": 3, "tn": 0, "fn": 0}
    assert rows[("b",)].student == {"tp": 2, "fp": 4, "tn": 0, "fn": 0}
    a, b = rows[("a",)].teacher_rates, rows[("b",)].teacher_rates
    assert (a["tpr"], b["tpr"]) == pytest.approx((2 / 3, 1 / 2), abs=TOL)
    assert (a["fpr"], b["fpr"]) == pytest.approx((1 / 3, 1 / 4), abs=TOL)
    assert (a["selection_rate"], b["selection_rate"]) == pytest.approx((1 / 2, 1 / 3), abs=TOL)
    assert (a["npv"], b["npv"]) == pytest.approx((2 / 3, 3 / 4), abs=TOL)
    assert math.isnan(rows[("a",)].student_rates["npv"])  # no negative predictions

    v = hand_values(gc, [
        "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
        "equalized_odds_ratio", "equalized_odds_difference_mean", "accuracy_equality",
        "predictive_parity", "statistical_parity_difference", "disparate_impact",
        "average_odds_difference", "average_abs_odds_difference", "accuracy", "tpr", "fpr",
        "theil_index", "generalized_entropy_index", "between_group_theil_index", "npv_difference",
    ], reference="a")
    teacher = {k: x.teacher for k, x in v.items()}
    assert teacher == pytest.approx({
        "demographic_parity_difference": 1 / 2 - 1 / 3,
        "demographic_parity_ratio": (1 / 3) / (1 / 2),
        "equalized_odds_difference": max(2 / 3 - 1 / 2, 1 / 3 - 1 / 4),
        "equalized_odds_ratio": min((1 / 2) / (2 / 3), (1 / 4) / (1 / 3)),
        "equalized_odds_difference_mean": ((2 / 3 - 1 / 2) + (1 / 3 - 1 / 4)) / 2,
        "accuracy_equality": 0.0,  # 4/6 in both groups
        "predictive_parity": 2 / 3 - 1 / 2,
        "statistical_parity_difference": 1 / 3 - 1 / 2,  # b against reference a
        "disparate_impact": (1 / 3) / (1 / 2),
        "average_odds_difference": ((1 / 4 - 1 / 3) + (1 / 2 - 2 / 3)) / 2,
        "average_abs_odds_difference": (abs(1 / 4 - 1 / 3) + abs(1 / 2 - 2 / 3)) / 2,
        "accuracy": 8 / 12, "tpr": 3 / 5, "fpr": 2 / 7,
        # benefits: two FN (0), two FP (2), eight others (1): mean 1
        "theil_index": 2 * 2 * math.log(2) / 12,
        "generalized_entropy_index": (2 * (0 - 1) + 2 * (4 - 1)) / 12 / 2,
        "between_group_theil_index": 0.0,  # both groups have mean benefit 1
        "npv_difference": 3 / 4 - 2 / 3,
    }, abs=TOL)
    assert v["demographic_parity_difference"].student == 0.0
    assert v["predictive_parity"].student == pytest.approx(1 / 2 - 1 / 3, abs=TOL)
    assert math.isnan(v["npv_difference"].student)
    assert v["npv_difference"].reason == "student: npv is undefined for a, b: no negative predictions"


def test_undefined_tpr_makes_equalized_odds_undefined() -> None:
    """Group b has no positive labels: its TPR is 0/0, so equalized odds is undefined.

    fairlearn reports that TPR as 0 and equalized_odds_difference as a number; a gate on
    it could pass by accident. fairgate says undefined and why.
    """
    rows = [
        ("a", 1, 1, 1), ("a", 1, 0, 0), ("a", 0, 0, 0), ("a", 0, 1, 1), ("a", 1, 1, 1),
        ("a", 0, 0, 0), ("b", 0, 0, 0), ("b", 0, 0, 0), ("b", 0, 1, 1), ("b", 0, 0, 0),
        ("b", 0, 0, 0), ("b", 0, 0, 0),
    ]
    gc = hand_counts(rows)
    v = hand_values(gc, ["equalized_odds_difference", "equal_opportunity_ratio", "fpr_difference",
                         "average_odds_difference", "demographic_parity_difference"])
    for name in ("equalized_odds_difference", "equal_opportunity_ratio", "average_odds_difference"):
        assert math.isnan(v[name].teacher) and math.isnan(v[name].student), name
        assert v[name].reason == "teacher and student: tpr is undefined for b: no positive labels"
    # the FPR and the selection rate are defined: undefined stays local to what uses the TPR
    assert v["fpr_difference"].teacher == pytest.approx(1 / 3 - 1 / 6, abs=TOL)
    assert v["demographic_parity_difference"].teacher == pytest.approx(1 / 2 - 1 / 6, abs=TOL)
    metric = lookup("equalized_odds_difference")
    ctx = Context(gated=np.array([True, True]), reference=0)
    assert explain_undefined(metric, GroupingCounts.teacher(gc.cells), ctx, gc.labels) == (
        "tpr is undefined for b: no positive labels")
    y = np.array([r[1] for r in rows])
    p = np.array([r[2] for r in rows])
    g = np.array([r[0] for r in rows])
    # fairlearn (by design) takes b's TPR as 0: |2/3 − 0| beats the FPR gap 1/3 − 1/6
    assert fm.equalized_odds_difference(y, p, sensitive_features=g) == pytest.approx(2 / 3)


def test_fewer_than_two_gated_groups_is_undefined() -> None:
    rows = [("a", i % 2, (i // 2) % 2, 1) for i in range(9)] + [("b", 1, 1, 1)] * 3
    gc = hand_counts(rows)
    names = ["demographic_parity_difference", "equalized_odds_ratio", "between_group_theil_index",
             "statistical_parity_difference", "worst_group_accuracy"]
    v = hand_values(gc, names, min_size=4)
    for name in names[:-1]:
        assert math.isnan(v[name].teacher), name
        assert v[name].reason == (
            "teacher and student: needs at least two gated groups, found 1 (see min_group_size)")
    # one gated group still has a worst accuracy: a is right at i = 0, 3, 4, 7, 8
    assert v["worst_group_accuracy"].teacher == pytest.approx(5 / 9, abs=TOL)


def test_reference_group_below_min_group_size_by_hand() -> None:
    rows = [("a", 1, 1, 1)] * 3 + [("a", 0, 0, 0)] * 2 + [("b", 1, 0, 0)] * 5 + [("c", 1, 1, 1)] * 2
    gc = hand_counts(rows)
    v = hand_values(gc, ["statistical_parity_difference", "disparate_impact"], min_size=3,
                    reference="c")
    for x in v.values():
        assert math.isnan(x.teacher)
        assert x.reason == "teacher and student: reference group c is below min_group_size"
    # against gated reference a, b's selection rate 0 is the farthest from parity
    v = hand_values(gc, ["statistical_parity_difference", "disparate_impact"], min_size=3,
                    reference="a")
    assert v["statistical_parity_difference"].teacher == pytest.approx(0 - 3 / 5, abs=TOL)
    assert v["disparate_impact"].teacher == 0.0
    # against b, whose selection rate is 0, the impact ratio is x/0: undefined, never inf
    v = hand_values(gc, ["statistical_parity_difference", "disparate_impact"], min_size=3,
                    reference="b")
    assert v["statistical_parity_difference"].teacher == pytest.approx(3 / 5, abs=TOL)
    assert math.isnan(v["disparate_impact"].teacher)
    assert v["disparate_impact"].reason == (
        "teacher and student: selection_rate of reference group b is 0")


# ----------------------------------------------------------------------------- vectorisation


def test_stacked_tables_equal_separate_tables() -> None:
    """compute(conf[..., G, 2, 2]) equals compute on each table: the bootstrap relies on it."""
    rng = np.random.default_rng(7)
    stack = rng.integers(0, 5, size=(3, 30, 5, 2, 2))  # small counts: many undefined rates
    stack[0, 0] = 0  # an all-empty table
    stack[1, 1, 1] = 0  # an empty reference group
    gated = np.array([True, True, False, True, True])
    # paired metrics read the joint table and are not bootstrapped (compute_values)
    per_model = {n: m for n, m in CATALOGUE.items() if not (m.paired or m.sampled or m.scored)}
    for ctx in (Context(gated, reference=1, alpha=0.5), Context(gated, reference=2, alpha=2.0)):
        for name, metric in per_model.items():
            whole = metric.compute(stack, ctx)
            assert whole.shape == stack.shape[:2], name
            each = np.array([[metric.compute(stack[i, j], ctx) for j in range(stack.shape[1])]
                             for i in range(stack.shape[0])])
            np.testing.assert_array_equal(whole, each, err_msg=name)
        assert any(np.isnan(m.compute(stack, ctx)).any() for m in per_model.values())


def test_bootstrap_stack_of_example_counts(adult: Adult) -> None:
    """Same on multinomial resamples of the example's sex*race table (the real use)."""
    counts = count_in_batches(adult, [Grouping(("sex", "race"))])
    gc = counts[Grouping(("sex", "race"))]
    ctx = context_for(gc, Settings(100, {"sex": "Male", "race": "White"}, CONFIDENCE,
                                     0, 0))
    boot = GroupingCounts.student(resample_cells(gc.cells, 40, rng_for(0, "oracle")))
    for name in ("equalized_odds_difference", "disparate_impact", "average_odds_difference",
                 "between_group_generalized_entropy_index", "theil_index", "precision_ratio"):
        metric = CATALOGUE[name]
        whole = metric.compute(boot, ctx)
        each = np.array([metric.compute(b, ctx) for b in boot])
        np.testing.assert_array_equal(whole, each, err_msg=name)


# ----------------------------------------------------------------------------- counts


def test_counts_in_batches_match_pandas_with_missing_values() -> None:
    """Joint counts built batch by batch equal a pandas group-by of the same rows.

    Covers values first seen in a later batch, an empty batch, nulls in a text attribute
    and NaN in a float one (both the '(missing)' group), and floats labelled as integers.
    """
    rng = np.random.default_rng(3)
    n = 3000
    a = rng.choice(np.array(["x", "y", None], dtype=object), n, p=[0.6, 0.35, 0.05])
    a[2000:][rng.random(n - 2000) < 0.3] = "z"  # 'z' appears only in the last batches
    b = rng.choice([1.0, 2.0, np.nan], n, p=[0.5, 0.45, 0.05])
    y, t, s = (rng.random((3, n)) < [[0.3], [0.4], [0.5]])
    groupings = [Grouping(("a",)), Grouping(("b",)), Grouping(("a", "b"))]
    acc = CountAccumulator(groupings)
    edges = [0, 10, 1000, 1000, 2000, 2500, n]
    for lo, hi in itertools.pairwise(edges):
        acc.add(y[lo:hi], t[lo:hi], s[lo:hi], {"a": pa.array(list(a[lo:hi]), pa.string()),
                                                "b": pa.array(b[lo:hi], pa.float64())})
    counts = acc.result()
    df = pd.DataFrame({
        "a": ["(missing)" if v is None else v for v in a],
        "b": ["(missing)" if np.isnan(v) else str(int(v)) for v in b],
        "y": y.astype(int), "t": t.astype(int), "s": s.astype(int),
    })
    for grouping in groupings:
        attrs = list(grouping.attributes)
        want = df.groupby([*attrs, "y", "t", "s"]).size()
        gc = counts[grouping]
        got = {(*g, yy, tt, ss): int(gc.cells[i, yy, tt, ss])
               for i, g in enumerate(gc.groups) for yy in (0, 1) for tt in (0, 1) for ss in (0, 1)}
        assert {k: v for k, v in got.items() if v} == {k: int(v) for k, v in want.items()}
        assert gc.labels == sorted(gc.labels)
        assert int(gc.cells.sum()) == n
    assert ("z",) in counts[Grouping(("a",))].groups
    assert ("(missing)",) in counts[Grouping(("b",))].groups


# ----------------------------------------------------------------------------- Aequitas, per group

#: fairgate's reference ratio -> (Aequitas disparity column, Aequitas parity column)
AEQUITAS = {
    "ppr_reference_ratio": ("ppr_disparity", "Statistical Parity"),
    "disparate_impact": ("pprev_disparity", "Impact Parity"),
    **{f"{r}_reference_ratio": (f"{r}_disparity", f"{r.upper()} Parity")
       for r in ("fdr", "fpr", "for", "fnr", "tpr", "tnr", "npv")},
    "precision_reference_ratio": ("precision_disparity", "Precision Parity"),
}


@pytest.mark.parametrize("attrs", [("race",), ("sex", "race")])
def test_per_group_disparities_and_tau_band_match_aequitas(adult: Adult, attrs: tuple[str, ...]
                                                           ) -> None:
    """Every gated group's ratio to the reference equals Aequitas' disparity on the same
    predictions, and a check with min: 0.8, max: 1.25 says of each group what Aequitas'
    parity verdict at its default tau 0.8 says."""
    from fairgate.core.gate import evaluate_check
    from fairgate.policy import Check
    from fairgate.report.json import per_group_dicts

    setting = oracles.Setting("aequitas", 100, {"sex": "Male", "race": "White"})
    grouping = Grouping(attrs)
    counts = count_in_batches(adult, [grouping])
    settings = Settings(setting.min_group_size, dict(setting.reference_groups), CONFIDENCE, 0, 0)
    keys = [MetricKey(name, grouping) for name in AEQUITAS]
    values = compute_values(keys, counts, settings)
    v = oracles.view(adult.y, adult.student, adult.frame, attrs, setting)
    table = oracles.aequitas_disparities(v.y, v.p, v.labels, v.reference)
    compared = 0
    for key in keys:
        disparity, parity = AEQUITAS[key.metric]
        check = Check.model_validate({"id": "band", "metric": key.metric, "min": 0.8,
                                      "max": 1.25})
        result = evaluate_check(check, values[key], "estimate", 0.99)
        rows = per_group_dicts(result)
        assert [r["group"] for r in rows] == [g for g in v.gated if g != v.reference]
        for row in rows:
            want = float(table.loc[row["group"], disparity])
            assert row["student"] == pytest.approx(want, rel=1e-9), (key.metric, row)
            assert row["within"] is bool(table.loc[row["group"], parity]), (key.metric, row)
            compared += 1
    assert compared >= 40
