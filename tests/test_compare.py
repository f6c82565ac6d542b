"""fairgate compare: Pareto front and ranking (hand-worked tables), objectives, CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairgate.comparison import (
    Scored,
    candidate_names,
    dominates,
    objective_values,
    pareto_front,
    rank,
)
from fairgate.core.gate import Verdict
from fairgate.run import GateRequest, run_gate
from tests.conftest import EXAMPLE, SYNTHETIC_POLICY
from tests.mlflow_server import free_port

NAN = math.nan
P, W, F = Verdict.PASS, Verdict.WARN, Verdict.FAIL
STUDENTS = ("student_distilled_T4", "student_int8", "student_pruned")

# ----------------------------------------------------------------------------- pure functions

# (name, verdict, accuracy ↑, worst DP ↓, worst EO ↓), worked by hand:
#   A and C are equal vectors: neither dominates the other, both on the front.
#   B trades accuracy (+0.01) for DP (+0.02): not dominated by A or C, on the front.
#   D is A with less accuracy: dominated by A and C (B has a worse DP than D).
#   E has the best accuracy: nobody dominates it, on the front although it fails the gate.
#   F is better than everyone on DP and EO but its accuracy is undefined: never on the front,
#     dominates nobody (else D, G would be dominated by it), ranks last though it passes.
#   G is worse than A, B, C, D, E on all three.
TABLE = [
    ("A", P, 0.85, 0.10, 0.20),
    ("B", P, 0.86, 0.12, 0.20),
    ("C", W, 0.85, 0.10, 0.20),
    ("D", P, 0.84, 0.10, 0.20),
    ("E", F, 0.90, 0.15, 0.25),
    ("F", P, NAN, 0.05, 0.05),
    ("G", F, 0.80, 0.20, 0.30),
]
FRONT = {"A": True, "B": True, "C": True, "D": False, "E": True, "F": False, "G": False}
DOMINATED_BY = {"A": (), "B": (), "C": (), "D": ("A", "C"), "E": (), "F": (),
                "G": ("A", "B", "C", "D", "E")}
# verdict pass: B, A (front, acc .86 > .85), D (off front); warn: C; fail: E (front), G; F last
ORDER = [("B", 1), ("A", 2), ("D", 3), ("C", 4), ("E", 5), ("G", 6), ("F", 7)]


def scored(rows) -> list[Scored]:
    return [Scored(n, v, (a, dp, eo)) for n, v, a, dp, eo in rows]


def test_dominates_is_strict_and_oriented() -> None:
    assert dominates((0.9, 0.1, 0.2), (0.8, 0.1, 0.2))  # better accuracy, rest equal
    assert dominates((0.8, 0.1, 0.1), (0.8, 0.1, 0.2))  # lower EO is better
    assert not dominates((0.8, 0.1, 0.2), (0.8, 0.1, 0.2))  # equal: not strictly better
    assert not dominates((0.9, 0.2, 0.2), (0.8, 0.1, 0.2))  # a trade-off
    assert not dominates((0.9, 0.0, 0.0), (NAN, 0.1, 0.2))  # undefined is never compared
    assert not dominates((NAN, 0.0, 0.0), (0.5, 0.9, 0.9))


def test_pareto_front_and_ranking_hand_worked() -> None:
    s = scored(TABLE)
    dominated = pareto_front([x.values for x in s])
    assert {x.name: tuple(s[j].name for j in d) for x, d in zip(s, dominated, strict=True)} \
        == DOMINATED_BY
    ranked = rank(s)
    assert [(r.name, r.rank) for r in ranked] == ORDER
    assert {r.name: r.on_front for r in ranked} == FRONT
    assert {r.name: r.dominated_by for r in ranked} == DOMINATED_BY
    assert {r.name: r.undefined for r in ranked if r.undefined} == {"F": ("accuracy",)}


def test_ranking_does_not_depend_on_input_order() -> None:
    forward = [(r.name, r.rank, r.on_front) for r in rank(scored(TABLE))]
    backward = [(r.name, r.rank, r.on_front) for r in rank(scored(TABLE[::-1]))]
    assert forward == backward


def test_exact_ties_share_a_rank() -> None:
    rows = [("X", P, 0.85, 0.10, 0.20), ("Y", P, 0.85, 0.10, 0.20), ("Z", P, 0.84, 0.10, 0.20)]
    ranked = rank(scored(rows))
    assert [(r.name, r.rank, r.on_front) for r in ranked] == [
        ("X", 1, True), ("Y", 1, True), ("Z", 3, False)]


def test_accuracy_ties_on_the_front_broken_by_dp_then_eo() -> None:
    rows = [("hiDP", P, 0.85, 0.12, 0.10), ("loDP", P, 0.85, 0.10, 0.30),
            ("loDP-loEO", P, 0.85, 0.10, 0.25)]
    ranked = rank(scored(rows))
    # loDP-loEO dominates loDP (equal accuracy and DP, lower EO)
    assert [(r.name, r.rank, r.on_front) for r in ranked] == [
        ("loDP-loEO", 1, True), ("hiDP", 2, True), ("loDP", 3, False)]


def test_undefined_ranks_last_even_when_it_passes_and_others_fail() -> None:
    rows = [("undef-fair", P, 0.99, NAN, 0.0), ("undef-eo", P, 0.98, 0.0, NAN),
            ("fails", F, 0.50, 0.5, 0.5)]
    ranked = rank(scored(rows))
    assert [(r.name, r.rank, r.on_front) for r in ranked] == [
        ("fails", 1, True), ("undef-fair", 2, False), ("undef-eo", 3, False)]
    assert ranked[1].undefined == ("worst_dp",) and ranked[2].undefined == ("worst_eo",)
    all_undefined = rank(scored([("a", P, NAN, NAN, NAN), ("b", F, 0.7, NAN, 0.1)]))
    assert not any(r.on_front for r in all_undefined)
    assert [r.name for r in all_undefined] == ["a", "b"]  # among the undefined: verdict first
    # then each objective, an undefined value after any defined one (even 0.3 > NaN for DP)
    tail = rank(scored([("nan-dp", P, 0.8, NAN, NAN), ("dp", P, 0.8, 0.3, NAN)]))
    assert [(r.name, r.rank) for r in tail] == [("dp", 1), ("nan-dp", 2)]


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


def test_example_students_ranked_consistently_with_their_reports(run_cli, tmp_path) -> None:
    out = tmp_path / "cmp"
    r = compare_example(run_cli, out, "--no-mlflow")
    reports = {s: json.loads((out / s / "report.json").read_text()) for s in STUDENTS}
    summary = json.loads((out / "compare.json").read_text())
    assert r.exit_code == (0 if any(x["verdict"] != "fail" for x in reports.values()) else 1)
    assert summary["exit_code"] == r.exit_code
    assert sorted(c["name"] for c in summary["candidates"]) == sorted(STUDENTS)

    obj = {s: _objectives_from_report(rep) for s, rep in reports.items()}
    better = lambda a, b: (a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]  # noqa: E731
                           and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2]))
    order = {"pass": 0, "warn": 1, "fail": 2}
    for c in summary["candidates"]:
        rep = reports[c["name"]]
        assert c["verdict"] == rep["verdict"]
        acc, dp, eo = obj[c["name"]]
        assert c["objectives"]["accuracy"]["value"] == acc
        assert c["objectives"]["worst_dp"]["value"] == dp
        assert c["objectives"]["worst_eo"]["value"] == eo
        dominators = [o for o in STUDENTS if o != c["name"] and better(obj[o], obj[c["name"]])]
        assert c["on_front"] == (not dominators)
        assert sorted(c["dominated_by"]) == dominators
        blocking = [x for x in rep["results"] if x["blocking"]]
        assert len(c["failed_checks"]) == len(blocking)
        for x in blocking:
            assert any(f.startswith(f"{x['check']}[{'*'.join(x['grouping'])}]")
                       for f in c["failed_checks"])
    keys = [(order[c["verdict"]], not c["on_front"], -obj[c["name"]][0])
            for c in summary["candidates"]]
    assert keys == sorted(keys)
    assert [c["rank"] for c in summary["candidates"]] == [1, 2, 3]  # no exact ties here

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
    assert parent.data.metrics["fairgate.passed"] == float(summary["exit_code"] == 0)
    assert parent.data.metrics["fairgate.candidates"] == 2.0
    assert parent.info.status == ("FINISHED" if summary["exit_code"] == 0 else "FAILED")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "compare.json", "compare.md"}
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
