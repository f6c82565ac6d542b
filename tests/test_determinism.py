"""The same inputs and seed give a byte-identical report.json apart from its ``run`` key,
in the same process and in a fresh interpreter with another hash seed; another seed moves
the intervals and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
checks:
  - id: dp
    metric: demographic_parity_difference
    max_increase: 0.02
  - id: eo
    metric: equalized_odds_difference
    max_increase: 0.05
  - id: acc
    metric: accuracy
    max_decrease: 0.05
statistics:
  resamples: 500
  seed: 11
  decide_on: significant
"""


def _without_run(path: Path) -> bytes:
    """report.json up to its last key, ``run`` (timestamps and timings)."""
    raw = path.read_bytes()
    cut = raw.rindex(b'\n  "run": {')
    assert list(json.loads(raw))[-1] == "run"
    return raw[:cut]


def test_same_seed_same_bytes_in_process_and_in_a_subprocess(synthetic, write_policy, run_cli,
                                                              tmp_path) -> None:
    policy = write_policy(POLICY)
    args = ["check", "--policy", str(policy), "--data", str(synthetic), "--teacher-scores", "t",
            "--student-scores", "s", "--no-mlflow"]
    first = run_cli(*args, "--out", tmp_path / "a")
    second = run_cli(*args, "--out", tmp_path / "b")
    assert first.exit_code in (0, 1) and second.exit_code == first.exit_code
    reference = _without_run(first.out / "report.json")
    assert _without_run(second.out / "report.json") == reference
    # the intervals are there, so the comparison covers the bootstrap
    assert all(r["interval"]["delta"] is not None for r in first.report["results"])

    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "c"
    proc = subprocess.run([sys.executable, "-m", "fairgate", *args, "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == first.exit_code, proc.stderr
    assert _without_run(out / "report.json") == reference


# AVX-512 dispatch targets (numpy 2.4 and older names): without them numpy takes the AVX2
# (or plain) code path, as on a machine without AVX-512. Unknown names are ignored.
NO_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX AVX512_CLX AVX512_CNL"


def test_same_bytes_on_another_simd_code_path(synthetic, write_policy, run_cli,
                                              tmp_path) -> None:
    """The same bytes "on any machine": numpy's vectorised log and power differ in the last
    bit between SIMD targets, so every float in report.json must be stable to that noise."""
    policy = write_policy(POLICY)
    args = ["check", "--policy", str(policy), "--data", str(synthetic), "--teacher-scores", "t",
            "--student-scores", "s", "--no-mlflow"]
    here = run_cli(*args, "--out", tmp_path / "a")
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=NO_AVX512)
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "c"
    proc = subprocess.run([sys.executable, "-m", "fairgate", *args, "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == here.exit_code, proc.stderr
    assert _without_run(out / "report.json") == _without_run(here.out / "report.json")


def test_another_seed_moves_the_intervals_only(synthetic, write_policy, run_cli,
                                               tmp_path) -> None:
    policy = write_policy(POLICY)
    args = ["check", "--policy", str(policy), "--data", str(synthetic), "--teacher-scores", "t",
            "--student-scores", "s", "--no-mlflow"]
    a = run_cli(*args, "--out", tmp_path / "a").report
    b = run_cli(*args, "--out", tmp_path / "b", "--seed", "12").report
    assert b["statistics"]["seed"] == 12
    by_key = {(r["check"], tuple(r["grouping"])): r for r in b["results"]}
    assert len(by_key) == len(a["results"])
    pairs = [(r, by_key[(r["check"], tuple(r["grouping"]))]) for r in a["results"]]
    for ra, rb in pairs:
        assert (ra["teacher"], ra["student"], ra["delta"]) == (rb["teacher"], rb["student"],
                                                                rb["delta"])
    assert all(ra["interval"]["delta"] != rb["interval"]["delta"] for ra, rb in pairs)
    # counts and McNemar tests do not resample; the groups' rate intervals do
    def without_intervals(groups: list[dict]) -> list[dict]:
        return [{k: v for k, v in g.items() if k != "intervals"} for g in groups]

    assert without_intervals(a["groups"]) == without_intervals(b["groups"])
    assert [g["intervals"] for g in a["groups"]] != [g["intervals"] for g in b["groups"]]
