"""fairgate compare: Pareto front and ranking (hand-worked tables), objectives, CLI end to end."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fairgate.comparison import (
    Scored,
    best_and_ties,
    better_beyond_noise,
    candidate_names,
    dominates,
    layers,
    objective_values,
    pareto_front,
    rank,
)
from fairgate.core.gate import Verdict
from fairgate.report.safe import visible
from fairgate.run import GateRequest, run_gate
from tests.conftest import EXAMPLE, SYNTHETIC_POLICY
from tests.mlflow_server import free_port

NAN = math.nan
INF = math.inf
P, W, F = Verdict.PASS, Verdict.WARN, Verdict.FAIL
STUDENTS = ("student_distilled_T4", "student_int8", "student_pruned")

# ----------------------------------------------------------------------------- pure functions

# (name, verdict, (accuracy ↑, lo, hi), (worst DP ↓, lo, hi), (worst EO ↓, lo, hi)): each
# objective's estimate and its change interval against the teacher (one grouping; the
# teacher's value is 0 here, so estimates and changes are on one scale). Worked by hand:
#   A and C are the same vector and intervals: indistinguishable, neither dominates.
#   B trades accuracy (+0.01, within noise) for DP (+0.02, beyond noise: .11 < .115): a
#     trade-off, both on the front.
#   D is A with less accuracy, but within noise ([.835, .845] overlaps [.84, .86]): the
#     estimates say A dominates D, the intervals do not, so D stays on the front.
#   H is A with accuracy .80 [.79, .81]: beyond noise below A, C and D (.81 < .835), so
#     dominated by them (not by B, which is worse on DP): the second layer.
#   E has the best accuracy beyond noise but fails the gate.
#   F is best on DP and EO but its accuracy is undefined: not comparable, dominates nobody
#     (else D and H would be dominated), leads no objective, ranks last though it passes.
#   G is beaten beyond noise by everyone comparable (H too: equal accuracy, DP .11 < .19):
#     the third layer.
TABLE = [
    ("A", P, (0.85, 0.84, 0.86), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21)),
    ("B", P, (0.86, 0.855, 0.865), (0.12, 0.115, 0.125), (0.20, 0.19, 0.21)),
    ("C", W, (0.85, 0.84, 0.86), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21)),
    ("D", P, (0.84, 0.835, 0.845), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21)),
    ("E", F, (0.90, 0.895, 0.905), (0.15, 0.14, 0.16), (0.25, 0.24, 0.26)),
    ("F", P, (NAN, NAN, NAN), (0.05, 0.04, 0.06), (0.05, 0.04, 0.06)),
    ("G", F, (0.80, 0.79, 0.81), (0.20, 0.19, 0.21), (0.30, 0.29, 0.31)),
    ("H", P, (0.80, 0.79, 0.81), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21)),
]
POINT_DOMINATED_BY = {"A": (), "B": (), "C": (), "D": ("A", "C"), "E": (), "F": (),
                      "G": ("A", "B", "C", "D", "E", "H"), "H": ("A", "C", "D")}
DOMINATED_BY = {"A": (), "B": (), "C": (), "D": (), "E": (), "F": (),
                "G": ("A", "B", "C", "D", "E", "H"), "H": ("A", "C", "D")}
LAYER = {"A": 1, "B": 1, "C": 1, "D": 1, "E": 1, "F": None, "G": 3, "H": 2}
# pass: layer 1 {A, B, D} share rank 1 (shown by accuracy: B, A, D), H layer 2; warn: C;
# fail: E (layer 1), G (layer 3); F last
ORDER = [("B", 1), ("A", 1), ("D", 1), ("H", 4), ("C", 5), ("E", 6), ("G", 7), ("F", 8)]
# accuracy: E leads, every other interval lies below [.895, .905]; DP: A, C, D, H tie at
# .10 and B, E, G lie beyond .11; EO: A, B, C, D, H tie at .20, E and G lie beyond .21
STANDING = {
    "A": ("worse", "best", "best"), "B": ("worse", "worse", "best"),
    "C": ("worse", "best", "best"), "D": ("worse", "best", "best"),
    "E": ("best", "worse", "worse"), "F": ("not comparable",) * 3,
    "G": ("worse", "worse", "worse"), "H": ("worse", "best", "best"),
}
INDISTINGUISHABLE = {"A": ("C", "D"), "B": (), "C": ("A", "D"), "D": ("A", "C"), "E": (),
                     "F": (), "G": (), "H": ()}


def scored(rows) -> list[Scored]:
    return [Scored(n, v, tuple(x[0] for x in objs), tuple((("g", x[1], x[2]),) for x in objs))
            for n, v, *objs in rows]


def test_dominates_is_strict_and_oriented() -> None:
    assert dominates((0.9, 0.1, 0.2), (0.8, 0.1, 0.2))  # better accuracy, rest equal
    assert dominates((0.8, 0.1, 0.1), (0.8, 0.1, 0.2))  # lower EO is better
    assert not dominates((0.8, 0.1, 0.2), (0.8, 0.1, 0.2))  # equal: not strictly better
    assert not dominates((0.9, 0.2, 0.2), (0.8, 0.1, 0.2))  # a trade-off
    assert not dominates((0.9, 0.0, 0.0), (NAN, 0.1, 0.2))  # undefined is never compared
    assert not dominates((NAN, 0.0, 0.0), (0.5, 0.9, 0.9))


def test_better_beyond_noise_needs_every_grouping() -> None:
    a = (("sex", 0.00, 0.01), ("race", -0.05, 0.00))
    b = (("sex", 0.02, 0.03), ("race", 0.01, 0.04))
    assert better_beyond_noise(a, b, "min") and not better_beyond_noise(b, a, "min")
    assert better_beyond_noise(b, a, "max") and not better_beyond_noise(a, b, "max")
    overlapping = (("sex", 0.02, 0.03), ("race", -0.01, 0.04))  # race overlaps a's: blocks
    assert not better_beyond_noise(a, overlapping, "min")
    touching = (("sex", 0.01, 0.03), ("race", 0.01, 0.04))  # a shared end is not beyond
    assert not better_beyond_noise(a, touching, "min")
    assert not better_beyond_noise(a, b[::-1], "min")  # groupings must match
    assert not better_beyond_noise(a, (("sex", NAN, NAN), ("race", 0.01, 0.04)), "min")
    assert not better_beyond_noise((), (), "min")
    unbounded = (("sex", -INF, 0.01), ("race", -INF, 0.00))  # an unbounded end still compares
    assert better_beyond_noise(unbounded, b, "min")
    assert not better_beyond_noise(unbounded, (("sex", 0.02, INF), ("race", -INF, 1.0)), "min")


def test_pareto_front_and_ranking_hand_worked() -> None:
    s = scored(TABLE)
    dominated = pareto_front([x.values for x in s])
    assert {x.name: tuple(s[j].name for j in d) for x, d in zip(s, dominated, strict=True)} \
        == POINT_DOMINATED_BY
    assert dict(zip([x.name for x in s], layers(s), strict=True)) == LAYER
    ranked = rank(s)
    assert [(r.name, r.rank) for r in ranked] == ORDER
    assert {r.name: r.on_front for r in ranked} == {n: layer == 1 for n, layer in LAYER.items()}
    assert {r.name: r.layer for r in ranked} == LAYER
    assert {r.name: r.dominated_by for r in ranked} == DOMINATED_BY
    assert {r.name: r.standing for r in ranked} == STANDING
    assert {r.name: r.indistinguishable_from for r in ranked} == INDISTINGUISHABLE
    assert {r.name: r.undefined for r in ranked if r.undefined} == {"F": ("accuracy",)}


def test_ranking_does_not_depend_on_input_order() -> None:
    forward = [(r.name, r.rank, r.on_front, r.standing) for r in rank(scored(TABLE))]
    backward = [(r.name, r.rank, r.on_front, r.standing) for r in rank(scored(TABLE[::-1]))]
    assert forward == backward


def test_noise_is_not_ranked() -> None:
    # X is ahead on every estimate but every interval overlaps Y's: one shared rank
    rows = [("Y", P, (0.84, 0.83, 0.86), (0.11, 0.09, 0.12), (0.21, 0.19, 0.22)),
            ("X", P, (0.85, 0.84, 0.86), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21))]
    ranked = rank(scored(rows))
    assert [(r.name, r.rank, r.on_front) for r in ranked] == [("X", 1, True), ("Y", 1, True)]
    assert ranked[1].standing == ("indistinguishable",) * 3
    assert ranked[0].indistinguishable_from == ("Y",)
    # the same estimates with narrow intervals: X dominates Y beyond noise on accuracy
    rows[0] = ("Y", P, (0.84, 0.839, 0.841), (0.11, 0.09, 0.12), (0.21, 0.19, 0.22))
    rows[1] = ("X", P, (0.85, 0.849, 0.851), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21))
    ranked = rank(scored(rows))
    assert [(r.name, r.rank, r.on_front, r.dominated_by) for r in ranked] == [
        ("X", 1, True, ()), ("Y", 2, False, ("X",))]
    assert ranked[1].standing == ("worse", "indistinguishable", "indistinguishable")


def test_undefined_or_missing_intervals_rank_last_even_when_passing() -> None:
    rows = [("undef-fair", P, (0.99, 0.98, 1.0), (NAN, NAN, NAN), (0.0, 0.0, 0.0)),
            ("no-interval", P, (0.98, NAN, NAN), (0.0, NAN, NAN), (0.0, NAN, NAN)),
            ("fails", F, (0.50, 0.49, 0.51), (0.5, 0.4, 0.6), (0.5, 0.4, 0.6))]
    ranked = rank(scored(rows))
    assert [(r.name, r.rank, r.on_front) for r in ranked] == [
        ("fails", 1, True), ("undef-fair", 2, False), ("no-interval", 2, False)]
    assert ranked[1].undefined == ("worst_dp",)
    assert ranked[2].undefined == ("accuracy", "worst_dp", "worst_eo")
    assert ranked[0].standing == ("best",) * 3  # alone among the comparable ones
    assert all(r.standing == ("not comparable",) * 3 for r in ranked[1:])
    no_changes = rank([Scored("a", P, (0.9, 0.1, 0.1)), Scored("b", F, (0.8, 0.2, 0.2))])
    assert not any(r.on_front for r in no_changes)  # no intervals at all: nobody is best
    assert [r.name for r in no_changes] == ["a", "b"]  # among the undefined: verdict


def _candidate(name: str, verdict: Verdict) -> Any:
    class Decision:
        exit_code = 0 if verdict is not F else 1

    class Report:
        decision = Decision

    return type("C", (), {"name": name, "passed": verdict is not F, "report": Report})()


def test_best_and_indistinguishable_hand_worked() -> None:
    ranked = rank(scored(TABLE))
    cands = [_candidate(n, v) for n, v, *_ in TABLE]
    best, ties = best_and_ties(cands, ranked)
    # H is beaten beyond noise by A and D; C passes (with warnings) and no objective tells
    # it from A or D
    assert best == ("B", "A", "D") and ties == ("C",)
    # X and Y are one rank, but Z (passing, second layer) is indistinguishable from X alone
    rows = [("X", P, (0.85, 0.84, 0.86), (0.10, 0.09, 0.11), (0.20, 0.19, 0.21)),
            ("Z", P, (0.84, 0.83, 0.86), (0.12, 0.10, 0.13), (0.20, 0.19, 0.21)),
            ("Y", P, (0.85, 0.849, 0.851), (0.10, 0.095, 0.099), (0.20, 0.19, 0.21)),
            ("Q", F, (0.84, 0.83, 0.86), (0.11, 0.10, 0.12), (0.20, 0.19, 0.21))]
    ranked = rank(scored(rows))
    assert [(r.name, r.rank) for r in ranked] == [("X", 1), ("Y", 1), ("Z", 3), ("Q", 4)]
    assert ranked[2].dominated_by == ("Y",)  # DP .13 is beyond noise above Y's .099
    best, ties = best_and_ties([_candidate(n, v) for n, v, *_ in rows], ranked)
    assert best == ("X", "Y") and ties == ("Z",)  # Q fails the gate: never listed


def test_candidate_names_unique_and_folder_safe() -> None:
    assert candidate_names(["m/a.onnx", "n/b.onnx"]) == ["a", "b"]
    assert candidate_names(["v1/model.onnx", "v2/model.onnx", "c.onnx"]) == [
        "model-1", "model-2", "c"]
    assert candidate_names(["score col/x", ".."]) == ["score_col_x", "candidate"]


# ----------------------------------------------------------------------------- objectives


def _dp_eo(df: pd.DataFrame, pred: np.ndarray, cols: list[str], min_size: int) -> tuple[float, float]:
    """Oracle: DP and EO differences over the groups of ``cols`` with at least min_size rows."""
    d = df.assign(p=pred.astype(float), key=df[cols].astype(str).agg("|".join, axis=1))
    groups = [g for _, g in d.groupby("key") if len(g) >= min_size]
    sel = [g.p.mean() for g in groups]
    tpr = [g.p[g.y == 1].mean() for g in groups]
    fpr = [g.p[g.y == 0].mean() for g in groups]
    return max(sel) - min(sel), max(max(tpr) - min(tpr), max(fpr) - min(fpr))


def test_objectives_match_a_direct_computation(synthetic, write_policy) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    report = run_gate(GateRequest(policy=policy, data=synthetic, teacher_scores="t",
                                  student_scores="s"))
    df = pd.read_parquet(synthetic)
    for role, col in (("student", "s"), ("teacher", "t")):
        pred = (df[col] >= 0.5).to_numpy()
        acc, dp, eo = objective_values(report, role)
        assert acc.value == pytest.approx(float((pred == df.y).mean()), abs=1e-12)
        per = {name: _dp_eo(df, pred, cols, 30)
               for name, cols in (("sex", ["sex"]), ("race", ["race"]),
                                  ("sex*race", ["sex", "race"]))}
        worst_dp = max(per, key=lambda k: per[k][0])
        worst_eo = max(per, key=lambda k: per[k][1])
        assert (dp.value, dp.grouping) == (pytest.approx(per[worst_dp][0], abs=1e-12), worst_dp)
        assert (eo.value, eo.grouping) == (pytest.approx(per[worst_eo][1], abs=1e-12), worst_eo)


# ----------------------------------------------------------------------------- CLI


def compare_example(run_cli, out: Path, *extra: str):
    args = ["compare", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
            "--teacher", EXAMPLE / "teacher.onnx"]
    for s in STUDENTS:
        args += ["--candidate", EXAMPLE / f"{s}.onnx"]
    return run_cli(*args, "--out", out, *extra)


def _objectives_from_report(report: dict) -> tuple[float, float, float]:
    kpis = report["kpis"]
    acc = next(k["student"] for k in kpis if k["metric"] == "accuracy")
    dp = max(k["student"] for k in kpis if k["metric"] == "demographic_parity_difference")
    eo = max(k["student"] for k in kpis if k["metric"] == "equalized_odds_difference")
    return acc, dp, eo


METRICS = ("accuracy", "demographic_parity_difference", "equalized_odds_difference")


def _changes_from_report(report: dict) -> list[dict[str, tuple[float, float]]]:
    """Per objective, the change interval of each grouping as report.json has it."""
    return [{"*".join(k["grouping"]) or "overall": tuple(k["interval"]["delta"])
             for k in report["kpis"] if k["metric"] == m} for m in METRICS]


def _beyond(a: dict, b: dict, higher: bool) -> bool:
    """Reference: a's change interval beyond b's, on the better side, in every grouping."""
    assert a.keys() == b.keys()
    return all((a[g][0] > b[g][1]) if higher else (a[g][1] < b[g][0]) for g in a)


def test_example_students_ranked_consistently_with_their_reports(run_cli, tmp_path) -> None:
    out = tmp_path / "cmp"
    r = compare_example(run_cli, out, "--no-mlflow")
    reports = {s: json.loads((out / s / "report.json").read_text()) for s in STUDENTS}
    summary = json.loads((out / "compare.json").read_text())
    assert r.exit_code == (0 if any(x["verdict"] != "fail" for x in reports.values()) else 1)
    assert summary["exit_code"] == r.exit_code
    assert sorted(c["name"] for c in summary["candidates"]) == sorted(STUDENTS)

    obj = {s: _objectives_from_report(rep) for s, rep in reports.items()}
    changes = {s: _changes_from_report(rep) for s, rep in reports.items()}
    higher = (True, False, False)
    point = lambda a, b: (a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]  # noqa: E731
                          and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2]))
    beats = lambda a, b: point(obj[a], obj[b]) and any(  # noqa: E731
        _beyond(changes[a][k], changes[b][k], higher[k]) for k in range(3))
    order = {"pass": 0, "warn": 1, "fail": 2}
    for c in summary["candidates"]:
        rep = reports[c["name"]]
        assert c["verdict"] == rep["verdict"]
        acc, dp, eo = obj[c["name"]]
        assert c["objectives"]["accuracy"]["value"] == acc
        assert c["objectives"]["worst_dp"]["value"] == dp
        assert c["objectives"]["worst_eo"]["value"] == eo
        for k, name in enumerate(("accuracy", "worst_dp", "worst_eo")):
            got = {x["grouping"]: tuple(x["interval"]) for x in c["objectives"][name]["changes"]}
            assert got == changes[c["name"]][k]
            best_value = (max if higher[k] else min)(o[k] for o in obj.values())
            leaders = [s for s in STUDENTS if obj[s][k] == best_value]
            expected = ("best" if c["name"] in leaders else "worse" if any(
                _beyond(changes[lead][k], changes[c["name"]][k], higher[k]) for lead in leaders)
                else "indistinguishable")
            assert c["objectives"][name]["standing"] == expected
        dominators = [o for o in STUDENTS if o != c["name"] and beats(o, c["name"])]
        assert c["on_front"] == (not dominators)
        assert sorted(c["dominated_by"]) == dominators
        blocking = [x for x in rep["results"] if x["blocking"]]
        assert len(c["failed_checks"]) == len(blocking)
        for x in blocking:
            assert any(f.startswith(f"{x['check']}[{'*'.join(x['grouping'])}]")
                       for f in c["failed_checks"])
    # no candidate here dominates another beyond noise (three layers at most: checked above),
    # so the rank is set by the verdict alone, and candidates of one verdict share it
    assert all(c["layer"] == 1 for c in summary["candidates"])
    ranks = [c["rank"] for c in summary["candidates"]]
    verdicts = [order[c["verdict"]] for c in summary["candidates"]]
    assert verdicts == sorted(verdicts)
    assert ranks == [1 + verdicts.index(v) for v in verdicts]
    passing = [c["name"] for c in summary["candidates"] if c["verdict"] != "fail"]
    assert summary["passing"] == passing
    assert summary["best"] == [c["name"] for c in summary["candidates"]
                               if c["rank"] == 1 and c["verdict"] != "fail"]
    assert summary["recommended"] == (summary["best"][0] if len(summary["best"]) == 1 else None)

    # the terminal table lists the candidates in rank order, with the teacher below
    table = r.stdout.splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("────")) + 1
    rows = [line.split()[1] for line in table[start:start + len(STUDENTS)]]
    assert rows == [c["name"] for c in summary["candidates"]]
    assert any(line.strip().startswith("teacher: teacher.onnx") for line in table)
    md = (out / "compare.md").read_text()
    for c in summary["candidates"]:
        assert f"| {c['rank']} | {c['name']} | {c['verdict']} |" in md


def test_each_candidate_report_equals_fairgate_check(run_cli, tmp_path) -> None:
    out = tmp_path / "cmp"
    compare_example(run_cli, out, "--no-mlflow", "--seed", "3")
    check = run_cli("check", "--policy", EXAMPLE / "policy.yaml", "--data",
                    EXAMPLE / "audit.parquet", "--teacher", EXAMPLE / "teacher.onnx", "--student",
                    EXAMPLE / "student_pruned.onnx", "--no-mlflow", "--seed", "3",
                    "--out", tmp_path / "check")
    mine = json.loads((out / "student_pruned" / "report.json").read_text())
    theirs = check.report
    for key in ("verdict", "results", "kpis", "groups", "statistics"):
        assert mine[key] == theirs[key], key
    assert mine["statistics"]["seed"] == 3


def _two_candidates(synthetic: Path) -> Path:
    df = pd.read_parquet(synthetic)
    df["s2"] = df["t"]  # identical to the teacher: no change at all
    path = synthetic.with_name("audit2.parquet")
    df.to_parquet(path)
    return path


def compare_scores(run_cli, policy: Path, data: Path, out: Path, *extra: str):
    return run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", "t",
                   "--candidate-scores", "s", "--candidate-scores", "s2", "--out", out,
                   "--no-mlflow", *extra)


def test_scores_mode_exit_0_when_one_passes_1_when_none(synthetic, write_policy, run_cli,
                                                        tmp_path) -> None:
    data = _two_candidates(synthetic)
    # s raises DP (it favours F); s2 is the teacher itself, so its change is exactly 0: it
    # passes on the estimate; on intervals a bound of exactly 0 is inconclusive (no audit rules
    # out a tiny change from 0 disagreeing rows), a warning that still lets it through
    strict = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0")
                          + "  decide_on: estimate\n")
    r = compare_scores(run_cli, strict, data, tmp_path / "a")
    verdicts = {c["name"]: c["verdict"] for c in json.loads((r.out / "compare.json").read_text())
                ["candidates"]}
    assert verdicts == {"s": "fail", "s2": "pass"} and r.exit_code == 0
    on_intervals = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.0"),
                                "intervals.yaml")
    r = compare_scores(run_cli, on_intervals, data, tmp_path / "c")
    verdicts = {c["name"]: c["verdict"] for c in json.loads((r.out / "compare.json").read_text())
                ["candidates"]}
    assert verdicts == {"s": "fail", "s2": "warn"} and r.exit_code == 0
    impossible = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max: 0.0")
                              + "  decide_on: estimate\n", "impossible.yaml")
    r = compare_scores(run_cli, impossible, data, tmp_path / "b")
    summary = json.loads((r.out / "compare.json").read_text())
    assert {c["verdict"] for c in summary["candidates"]} == {"fail"}
    assert r.exit_code == 1 and summary["recommended"] is None
    assert "no candidate passes the gate" in r.stdout


def test_undefined_objective_is_shown_and_never_on_front(synthetic, write_policy, run_cli,
                                                         tmp_path) -> None:
    df = pd.read_parquet(synthetic)
    df.loc[df.race == "C", "y"] = 0  # race C has no positives: its TPR, so EO, is undefined
    df["s2"] = df["t"]
    data = tmp_path / "undef.parquet"
    df.to_parquet(data)
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5"))
    r = compare_scores(run_cli, policy, data, tmp_path / "u")
    summary = json.loads((r.out / "compare.json").read_text())
    assert r.exit_code == 0  # the gate itself (DP and accuracy checks) passes
    for c in summary["candidates"]:
        assert c["objectives"]["worst_eo"]["value"] is None
        assert "equalized_odds_difference over race is undefined" in \
            c["objectives"]["worst_eo"]["undefined"]
        assert c["on_front"] is False
    assert summary["recommended"] is None
    assert "worst EO diff undefined (ranked last, not on the front)" in r.stdout
    assert "undef" in (r.out / "compare.md").read_text()


def test_usage_and_input_errors(synthetic, write_policy, run_cli, tmp_path) -> None:
    policy = write_policy(SYNTHETIC_POLICY)
    out = tmp_path / "e"
    base = ["compare", "--policy", policy, "--data", synthetic, "--out", out, "--no-mlflow"]
    cases = [
        (2, ["--teacher-scores", "t"], "give one or more candidates: --candidate S.onnx or "
         "--candidate-scores COL (both repeatable)"),
        (2, ["--teacher", EXAMPLE / "teacher.onnx", "--teacher-scores", "t", "--candidate-scores",
             "s"], "give the teacher once: --teacher T.onnx or --teacher-scores COL"),
        (2, ["--candidate", EXAMPLE / "student_int8.onnx"], "give the teacher once"),
        (3, ["--teacher", EXAMPLE / "teacher.onnx", "--candidate", tmp_path / "nope.onnx"],
         f"candidate model {tmp_path / 'nope.onnx'}: file not found"),
        (3, ["--teacher-scores", "t", "--candidate-scores", "s", "--candidate-scores", "zz"],
         "gating candidate zz: "),
    ]
    for code, extra, message in cases:
        r = run_cli(*base, *extra)
        assert r.exit_code == code, (extra, r.stderr)
        assert r.stderr.startswith("fairgate: error: ") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not (out / "compare.json").exists()
    bad = write_policy("version: 1\naudit: {label: y}\nbogus: 1\n", "bad.yaml")
    r = run_cli("compare", "--policy", bad, "--data", synthetic, "--teacher-scores", "t",
                "--candidate-scores", "s", "--out", out, "--no-mlflow")
    assert r.exit_code == 2 and "bogus" in r.stderr


@pytest.mark.parametrize("required", [False, True])
def test_mlflow_failures_do_not_change_the_result(synthetic, write_policy, run_cli, tmp_path,
                                                  monkeypatch, required) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody there
    data = _two_candidates(synthetic)
    text = SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
    if required:
        text += "mlflow:\n  required: true\n"
    out = tmp_path / "m"
    r = run_cli("compare", "--policy", write_policy(text), "--data", data, "--teacher-scores", "t",
                "--candidate-scores", "s", "--candidate-scores", "s2", "--out", out)
    assert r.exit_code == (3 if required else 0), r.stderr
    for name in ("compare", "s", "s2"):
        assert f"{name}: MLflow: run NOT logged to http://127.0.0.1:" in r.stderr
    assert r.stderr.count("connection refused (is the tracking server running?)") == 3
    assert (out / "s" / "report.json").exists() and (out / "compare.json").exists()
    summary = json.loads((out / "compare.json").read_text())
    assert summary["exit_code"] == 0 and summary["mlflow"]["logged"] is False
    assert ("the runs of compare, s, s2 were not logged; the comparison's own exit code was 0"
            in r.stderr) == required


def test_mlflow_one_parent_run_with_candidates_nested(synthetic, write_policy, run_cli,
                                                      tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    data = _two_candidates(synthetic)
    policy = write_policy(SYNTHETIC_POLICY + "mlflow:\n  timeout: 120\n")
    out = tmp_path / "ml"
    r = run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", "t",
                "--candidate-scores", "s", "--candidate-scores", "s2", "--out", out)
    summary = json.loads((out / "compare.json").read_text())
    assert r.exit_code == summary["exit_code"], r.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # run_cli works in tmp_path
    runs = client.search_runs([client.get_experiment_by_name("fairgate").experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = {run.data.tags["fairgate.verdict"]: run for run in runs if run is not parent}
    assert summary["mlflow"]["run_id"] == parent.info.run_id
    assert parent.info.run_name.startswith("compare 2 candidates vs t · policy · ")
    assert parent.data.tags["fairgate.kind"] == "compare"
    assert parent.data.tags["fairgate.best"] == ",".join(summary["best"])
    assert parent.data.tags.get("fairgate.indistinguishable", "") == ",".join(
        summary["indistinguishable"])
    assert parent.data.metrics["fairgate.passed"] == float(summary["exit_code"] == 0)
    assert parent.data.metrics["fairgate.candidates"] == 2.0
    assert parent.info.status == ("FINISHED" if summary["exit_code"] == 0 else "FAILED")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "compare.json", "compare.md", "compare.html"}
    nested = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == 2 == len(runs) - 1 and children
    verdicts = {c["name"]: c["verdict"] for c in summary["candidates"]}
    for cand in summary["candidates"]:
        report = json.loads((out / cand["name"] / "report.json").read_text())
        run = client.get_run(report["mlflow"]["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name.startswith(f"{cand['name']} vs t · policy · ")
        assert run.data.tags["fairgate.verdict"] == verdicts[cand["name"]]
    assert r.stdout.count("MLflow: logged run") == 3


def test_malformed_tracking_uri_exits_2_before_any_gate(synthetic, write_policy, run_cli,
                                                        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp://127.0.0.1:5000")
    out = tmp_path / "bad-uri"
    r = compare_scores(run_cli, write_policy(SYNTHETIC_POLICY), _two_candidates(synthetic), out)
    assert r.exit_code == 0  # --no-mlflow: the URI is never looked at
    out2 = tmp_path / "bad-uri-2"
    r = run_cli("compare", "--policy", write_policy(SYNTHETIC_POLICY), "--data", synthetic,
                "--teacher-scores", "t", "--candidate-scores", "s", "--out", out2)
    assert r.exit_code == 2 and "unknown scheme 'htp'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out2.exists()


# ----------------------------------------------------------------------------- written files


class _Page(HTMLParser):
    """The page as the standard library parser reads it: every tag with its attributes,
    and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


HOSTILE = "<script>alert(1)</script>|**b** `x` [l](http://e.vil)\n::error::pwned ##[group]"


def _hostile_audit(synthetic: Path, tmp_path: Path) -> Path:
    """The synthetic audit set in a folder with a hostile name, with two more candidates:
    ``good``, the teacher's own scores (every change exactly 0), and a column with a hostile
    name that turns 40% of the teacher's correct decisions wrong."""
    df = pd.read_parquet(synthetic)
    rng = np.random.default_rng(1)
    right = (df.t >= 0.5) == (df.y == 1)
    flip = right & (rng.random(len(df)) < 0.4)
    df["good"] = df["t"]
    df[HOSTILE] = np.where(flip, 1.0 - df["t"], df["t"])
    folder = tmp_path / "<img src=x onerror=alert(2)>|dir"
    folder.mkdir()
    path = folder / "audit.parquet"
    df.to_parquet(path)
    return path


def test_reports_written_parse_link_and_escape(synthetic, write_policy, run_cli,
                                               tmp_path) -> None:
    import cmarkgfm
    from cmarkgfm.cmark import Options

    data = _hostile_audit(synthetic, tmp_path)
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
                          .replace("max_decrease: 0.05", "max_decrease: 0.5"))
    out = tmp_path / "cmp"
    r = run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", "t",
                "--candidate-scores", "good", "--candidate-scores", HOSTILE, "--out", out,
                "--no-mlflow")
    assert r.exit_code == 0, r.stderr
    summary = json.loads((out / "compare.json").read_text())
    names = [c["name"] for c in summary["candidates"]]
    hostile = next(n for n in names if n != "good")
    assert set(hostile) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    for name in names:  # each candidate's own reports, whole and parseable
        json.loads((out / name / "report.json").read_text())
        assert (out / name / "report.md").read_text().startswith("#")
        parse_page((out / name / "report.html").read_text())
    assert next(c for c in summary["candidates"] if c["name"] == hostile)["source"] == HOSTILE

    # compare.html: parses, links to every candidate's reports (which exist), and carries
    # the hostile texts as text only
    page = parse_page((out / "compare.html").read_text())
    assert not [t for t, _ in page.tags if t in ("script", "img", "iframe")]
    assert not [a for _, a in page.tags for k in a if k.startswith("on")]
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    for name in names:
        for rel in (f"{name}/report.html", f"{name}/report.md", f"{name}/report.json"):
            assert rel in hrefs and (out / rel).is_file()
    text = "".join(page.text)
    assert visible(HOSTILE) in text and str(data.parent.name) in text
    rows = [a for t, a in page.tags if t == "tr" and "data-rank" in a]
    assert [(a["data-candidate"], a["data-rank"], a["data-verdict"]) for a in rows] == [
        (c["name"], str(c["rank"]), c["verdict"]) for c in summary["candidates"]]
    cells = [(a["data-field"], a["data-value"], a["data-standing"])
             for t, a in page.tags if t == "td" and "data-standing" in a]
    assert cells == [(k, repr(o["value"]), o["standing"]) for c in summary["candidates"]
                     for k, o in c["objectives"].items()]
    raw = (out / "compare.html").read_text()
    assert 'name="viewport"' in raw and "width:" not in raw.replace("max-width:", "")

    # compare.md: GitHub's renderer, raw HTML allowed, sees no hostile tag, one table row per
    # candidate (plus the teacher's) and working links
    md = (out / "compare.md").read_text()
    rendered = cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)
    html_page = parse_page(rendered)
    assert not [t for t, _ in html_page.tags if t in ("script", "img", "iframe")]
    md_links = [a["href"] for t, a in html_page.tags if t == "a"]
    assert md_links == [x for name in [c["name"] for c in summary["candidates"]]
                        for x in (f"{name}/report.md", f"{name}/report.html")]
    first_table = rendered.split("</table>")[0]
    assert first_table.count("<tr>") == 1 + len(names) + 1  # header, candidates, teacher
    assert data.parent.name in "".join(html_page.text)  # the audit set's path, as text
    assert not [line for line in r.stdout.splitlines() if line.startswith("::")]


def test_a_candidate_known_worse_is_told_apart(synthetic, write_policy, run_cli,
                                               tmp_path) -> None:
    # good is the teacher itself: its accuracy change is 0 in every resample, interval [0, 0]
    # (the gaps' intervals get an analytic floor, so they are not a point). bad turns 40% of
    # the teacher's correct decisions wrong, so its accuracy change is -flipped/N (counted
    # here) with an interval far below 0: good is better beyond noise.
    data = _hostile_audit(synthetic, tmp_path)
    df = pd.read_parquet(data)
    flipped = int(((df["t"] >= 0.5) != (df[HOSTILE] >= 0.5)).sum())
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
                          .replace("max_decrease: 0.05", "max_decrease: 0.5"))
    out = tmp_path / "k"
    r = run_cli("compare", "--policy", policy, "--data", data, "--teacher-scores", "t",
                "--candidate-scores", HOSTILE, "--candidate-scores", "good", "--out", out,
                "--no-mlflow")
    assert r.exit_code == 0, r.stderr
    summary = json.loads((out / "compare.json").read_text())
    good = next(c for c in summary["candidates"] if c["name"] == "good")
    bad = next(c for c in summary["candidates"] if c["name"] != "good")
    assert good["objectives"]["accuracy"]["changes"] == [
        {"grouping": "overall", "interval": [0.0, 0.0]}]
    bad_acc = bad["objectives"]["accuracy"]
    assert bad_acc["value"] == pytest.approx(good["objectives"]["accuracy"]["value"]
                                             - flipped / len(df), abs=1e-12)
    assert bad_acc["changes"][0]["interval"][1] < 0
    assert good["objectives"]["accuracy"]["standing"] == "best"
    assert bad_acc["standing"] == "worse"
    # good dominates bad beyond noise only if it is no worse on every estimate
    point = all(good["objectives"][k]["value"] <= bad["objectives"][k]["value"]
                for k in ("worst_dp", "worst_eo"))
    assert bad["dominated_by"] == (["good"] if point else [])
    assert summary["best"][0] == "good" and summary["candidates"][0]["name"] == "good"
    assert ("good" in summary["best"]) and (bad["name"] in summary["best"]) == (not point)
    assert "accuracy: good (better than every other beyond noise)" in r.stdout


def test_no_intervals_means_no_recommendation(synthetic, write_policy, run_cli,
                                              tmp_path) -> None:
    data = _two_candidates(synthetic)
    policy = write_policy(SYNTHETIC_POLICY.replace("max_increase: 0.02", "max_increase: 0.5")
                          .replace("resamples: 200", "resamples: 0"))
    r = compare_scores(run_cli, policy, data, tmp_path / "z")
    summary = json.loads((r.out / "compare.json").read_text())
    assert r.exit_code == 0  # both pass the gate on their estimates
    assert summary["recommended"] is None and summary["best"] == []
    for c in summary["candidates"]:
        assert not c["on_front"] and c["layer"] is None
        for o in c["objectives"].values():
            assert o["standing"] == "not comparable"
            assert "statistics.resamples is 0" in o["not_comparable"]
    assert "not comparable (ranked last, not on the front)" in r.stdout
    assert "no recommendation" in r.stdout
    assert "n/c" in (r.out / "compare.md").read_text()
