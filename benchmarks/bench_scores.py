"""Benchmark of the score-based metrics (ROC AUC, Brier, ECE) on the row sample.

Not a test: prints figures and ratios. Run from the repository root:

    python benchmarks/bench_scores.py                      # 20k and 200k rows
    python benchmarks/bench_scores.py --rows 50000 --resamples 0,500,1000

For each sample size, with 3 groupings (sex: 2 groups, race: 5, sex × race: 10) and the
21 keys of 9 metrics (3 overall, 6 per grouping):
(a) score_values without intervals (MetricFrame point values only), and with 200 and
    2,000 paired resamples;
(b) a plain fairlearn MetricFrame computing the same point values (one frame per grouping
    and model, the three metrics as separate scalar metrics) and, for the intervals, a
    MetricFrame per replicate on the same weights (timed on a few, extrapolated).

Timings on a shared machine are noisy: fairgate figures are the median of a few repeats, and
the machine's core count and load are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from fairgate.core.counts import Grouping
from fairgate.core.evaluate import MetricKey
from fairgate.core.scores import (
    SCORE_METRICS,
    ScoreGroups,
    draw_weights,
    expected_calibration_error,
    score_points,
    score_values,
)

SEX, RACE, CROSS = Grouping(("sex",)), Grouping(("race",)), Grouping(("race", "sex"))
RACE_SHARES = np.array([0.62, 0.2, 0.1, 0.05, 0.03])
BINS = 10


def synthetic(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  dict[Grouping, ScoreGroups]]:
    """Labels, teacher and student scores (student: noisier, rounded to 0.01), 3 groupings."""
    rng = np.random.default_rng(seed)
    sex = (rng.random(rows) < 0.33).astype(np.int64)  # 0 Female, 1 Male
    race = rng.choice(5, rows, p=RACE_SHARES)
    prevalence = 0.12 + 0.1 * sex + 0.03 * race
    y = rng.random(rows) < prevalence
    logit = np.log(prevalence / (1 - prevalence)) + np.where(y, 1.2, -1.2) + rng.normal(0, 1.1, rows)
    teacher = 1 / (1 + np.exp(-logit))
    student = np.round(1 / (1 + np.exp(-(logit + rng.normal(0, 0.4, rows) + 0.1 * race))), 2)
    cross = race * 2 + sex
    groups = {
        SEX: ScoreGroups(SEX, sex, ["Female", "Male"], np.ones(2, bool)),
        RACE: ScoreGroups(RACE, race, [f"r{i}" for i in range(5)], np.ones(5, bool)),
        CROSS: ScoreGroups(CROSS, cross, [f"r{i}|{s}" for i in range(5) for s in ("Female", "Male")],
                           np.ones(10, bool)),
    }
    return y, teacher, student, groups


def keys() -> list[MetricKey]:
    return [MetricKey(name, None if spec.scope == "overall" else g)
            for name, spec in SCORE_METRICS.items()
            for g in ([None] if spec.scope == "overall" else [SEX, RACE, CROSS])]


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_metricframes(y: np.ndarray, teacher: np.ndarray, student: np.ndarray,
                       groups: dict[Grouping, ScoreGroups], weights: np.ndarray | None = None) -> None:
    """What one would write with fairlearn: a frame per grouping and model, scalar metrics."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import brier_score_loss, roc_auc_score

    metrics = {"roc_auc": roc_auc_score, "brier_score": brier_score_loss,
               "ece": partial(expected_calibration_error, bins=BINS)}
    params = None if weights is None else {m: {"sample_weight": weights} for m in metrics}
    for sg in groups.values():
        for scores in (teacher, student):
            frame = MetricFrame(metrics=metrics, y_true=y, y_pred=scores,
                                sensitive_features=sg.codes, sample_params=params)
            frame.difference()


def machine_note() -> str:
    import fairlearn
    import sklearn

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: nproc {cores}, {platform.machine()}, load average {load}; "
            f"python {platform.python_version()}, numpy {np.__version__}, "
            f"fairlearn {fairlearn.__version__}, scikit-learn {sklearn.__version__}")


def bench(rows: int, resamples: list[int], repeats: int, frame_boot: int) -> None:
    y, teacher, student, groups = synthetic(rows)
    ks = keys()
    print(f"\n{rows:,} rows, 3 groupings (2, 5, 10 groups), {len(ks)} keys of "
          f"{len(SCORE_METRICS)} metrics")

    def run(b: int) -> None:
        score_values(ks, y, teacher, student, groups, bins=BINS, resamples=b, confidence=0.95,
                     seed=0)

    run(0)  # warm-up: imports fairlearn and sklearn
    t_points = timed(lambda: score_points(y, teacher, student, groups, bins=BINS), repeats)
    print(f"  MetricFrame point values (score_points)          {t_points:8.2f} s")
    t_plain = timed(lambda: plain_metricframes(y, teacher, student, groups), 1)
    print(f"  plain MetricFrame, 6 frames × 3 scalar metrics   {t_plain:8.2f} s "
          f"(ratio plain / score_points {t_plain / t_points:.1f}x)")
    total = {}
    for b in resamples:
        total[b] = t = timed(lambda b=b: run(b), repeats if b <= 500 else 1)
        boot = max(t - t_points, 0.0)
        per = f"  (bootstrap {boot:6.2f} s = {1e3 * boot / b:5.2f} ms/replicate)" if b else ""
        print(f"  score_values, resamples {b:>5,}                   {t:8.2f} s{per}")
    if frame_boot:
        w = draw_weights(rows, frame_boot, np.random.default_rng(0))
        start = time.perf_counter()
        for r in range(frame_boot):
            plain_metricframes(y, teacher, student, groups, w[:, r])
        per = (time.perf_counter() - start) / frame_boot
        print(f"  plain MetricFrame per replicate (weights)        {per:8.2f} s per replicate "
              f"(timed on {frame_boot})")
        for b in resamples:
            if b:
                est = t_plain + per * b
                print(f"    extrapolated to {b:>5,} replicates: {est:8.0f} s "
                      f"= {est / 60:6.1f} min; vs score_values {est / total[b]:6.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="20000,200000", help="sample sizes")
    parser.add_argument("--resamples", default="0,200,2000", help="resample counts")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per fairgate timing")
    parser.add_argument("--frame-boot", type=int, default=2,
                        help="replicates for the MetricFrame-per-replicate timing; 0 skips it")
    args = parser.parse_args()
    print(machine_note())
    for rows in (int(x) for x in args.rows.split(",")):
        bench(rows, [int(x) for x in args.resamples.split(",")], args.repeats, args.frame_boot)
    print(f"\n{machine_note()}")


if __name__ == "__main__":
    main()
