"""Benchmark of fairgate's statistics: the KPI table with paired bootstrap intervals.

Not a test: prints figures and ratios. Run from the repository root:

    python benchmarks/bench_statistics.py                # (a) and (b)
    python benchmarks/bench_statistics.py --coverage     # also (c), about a minute
    python benchmarks/bench_statistics.py --intervals    # (d) only: uniform vs percentile

(a) 1M rows of predictions, 12 groups: fairgate's counting pass and its statistics part
    (KPI table of both models with 2,000 paired resamples, McNemar per group with Holm)
    against fairlearn's MetricFrame with the same per-group rates, without bootstrap and
    with a small n_boot (fairlearn's bootstrap refits the frame on resampled rows).
(b) the statistics part alone at 10k, 100k, 1M and 10M rows: it reads the joint counts,
    never the rows, so it should not grow with the audit set.
(d) ``--intervals``: the statistics part at 1M rows with uniform intervals (the default
    since issue 11) against percentile ones, interleaved.
(c) coverage of the 95% interval of the change near zero gaps, where max − min metrics
    are biased (the test suite asserts coverage only for clearly separated groups).

Timings on a shared machine are noisy: fairgate figures are the median (and in (b) also the
minimum and CPU time) of a few repeats; the machine's core count and load are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from fairgate.core.counts import CountAccumulator, Grouping, GroupingCounts
from fairgate.core.evaluate import MetricKey, Settings, compute_values, context_for, group_rows
from fairgate.core.metrics import CATALOGUE, KPI_METRICS

GROUPS = 12
RESAMPLES = 2000
GROUPING = Grouping(("group",))
LABELS = np.array([f"g{i:02d}" for i in range(GROUPS)])
# group shares from 30% down to 1%, so some groups are small as in real audits
SHARES = np.array([30, 18, 12, 9, 7, 6, 5, 4, 3, 3, 2, 1], dtype=float) / 100
PREVALENCE = np.linspace(0.15, 0.45, GROUPS)


def synthetic(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Group codes, labels, teacher and student decisions (student differs on ~8% of rows)."""
    g = rng.choice(GROUPS, rows, p=SHARES)
    y = rng.random(rows) < PREVALENCE[g]
    t = np.where(rng.random(rows) < 0.84, y, ~y)
    s = np.where(rng.random(rows) < 0.92, t, ~t)
    return g, y, t, s


def timed(fn: Callable[[], object], repeats: int,
          summary: Callable[[list[float]], float] = statistics.median) -> float:
    """Median (or ``summary``) of the wall times of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary(times)


def count_rows(g: np.ndarray, y: np.ndarray, t: np.ndarray, s: np.ndarray,
               batch: int = 65_536) -> dict[Grouping, GroupingCounts]:
    """fairgate's counting pass over batches, sensitive values as Arrow strings."""
    acc = CountAccumulator([GROUPING])
    for start in range(0, len(y), batch):
        sl = slice(start, start + batch)
        acc.add(y[sl], t[sl], s[sl], {"group": pa.array(LABELS[g[sl]])})
    return acc.result()


def count_direct(rows: int, seed: int, chunk: int = 1_000_000) -> dict[Grouping, GroupingCounts]:
    """Joint counts of ``rows`` synthetic rows, built chunk by chunk with bincount."""
    rng = np.random.default_rng(seed)
    cells = np.zeros(GROUPS * 8, dtype=np.int64)
    for start in range(0, rows, chunk):
        g, y, t, s = synthetic(min(chunk, rows - start), rng)
        code = g * 8 + (y.astype(np.int64) << 2) + (t.astype(np.int64) << 1) + s
        cells += np.bincount(code, minlength=GROUPS * 8)
    groups = tuple((str(label),) for label in LABELS)
    return {GROUPING: GroupingCounts(GROUPING, groups, cells.reshape(GROUPS, 2, 2, 2))}


def statistics_part(counts: dict[Grouping, GroupingCounts], resamples: int = RESAMPLES,
                    interval: str = "uniform") -> None:
    """What run_gate does after counting: the KPI table with intervals, then group rows.
    ``interval``: statistics.interval (uniform, the default since issue 11, or percentile)."""
    settings = Settings(min_group_size=30, reference_groups={}, confidence=0.95,
                        resamples=resamples, seed=0, interval=interval)  # type: ignore[arg-type]
    keys = [MetricKey(m, None if CATALOGUE[m].scope == "overall" else GROUPING)
            for m in KPI_METRICS]
    compute_values(keys, counts, settings)
    gc = counts[GROUPING]
    group_rows(gc, context_for(gc, settings))


def fairlearn_frame(y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                    n_boot: int | None) -> None:
    """One MetricFrame with the per-group rates behind the KPI table, and its disparities."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, precision_score

    extra = {} if n_boot is None else {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975],
                                       "random_state": 0}
    mf = MetricFrame(
        metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                 "fpr": false_positive_rate, "accuracy": accuracy_score,
                 "precision": precision_score, "count": count},
        y_true=y, y_pred=pred, sensitive_features=groups, **extra,
    )
    mf.difference()
    mf.ratio()


def machine_note() -> str:
    import fairlearn

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: nproc {cores}, {platform.machine()}, load average {load}; "
            f"python {platform.python_version()}, numpy {np.__version__}, "
            f"fairlearn {fairlearn.__version__}")


def part_a(rows: int, fairlearn_boot: int, repeats: int) -> None:
    print(f"\n(a) {rows:,} rows, {GROUPS} groups: KPI table ({len(KPI_METRICS)} metrics, both "
          f"models) with {RESAMPLES:,} paired resamples vs fairlearn MetricFrame")
    g, y, t, s = synthetic(rows, np.random.default_rng(0))
    counts: dict[Grouping, GroupingCounts] = {}

    def count() -> None:
        counts.update(count_rows(g, y, t, s))

    t_count = timed(count, repeats)
    t_stats = timed(lambda: statistics_part(counts), repeats)
    print(f"  fairgate counting pass (Arrow batches of 65,536)   {t_count:8.3f} s")
    print(f"  fairgate statistics part (after counting)          {t_stats:8.3f} s (median of "
          f"{repeats}; fastest {timed(lambda: statistics_part(counts), repeats, min):.3f} s)")
    print(f"  fairgate total                                     {t_count + t_stats:8.3f} s")
    groups = LABELS[g]
    t_mf = timed(lambda: fairlearn_frame(y, t, groups, None), 1)
    print(f"  fairlearn MetricFrame, one model, no bootstrap     {t_mf:8.3f} s")
    print(f"  ratio: one MetricFrame / fairgate statistics part  {t_mf / t_stats:8.0f} x")
    both = t_count + t_stats
    print(f"  ratio: one MetricFrame / fairgate count+statistics {t_mf / both:8.1f} x")
    print(f"  ratio: two MetricFrames (teacher, student; est.) / fairgate count+statistics "
          f"{2 * t_mf / (t_count + t_stats):.1f} x")
    if fairlearn_boot:
        t_boot = timed(lambda: fairlearn_frame(y, t, groups, fairlearn_boot), 1)
        per = max(t_boot - t_mf, 0.0) / fairlearn_boot
        print(f"  fairlearn MetricFrame, one model, n_boot={fairlearn_boot}"
              f"{'':9s}{t_boot:8.3f} s  (about {per:.1f} s per resample)")
        est = t_mf + per * RESAMPLES
        print(f"  fairlearn, n_boot={RESAMPLES:,} extrapolated, one model, unpaired: "
              f"{est / 3600:.1f} h; vs fairgate statistics part: {est / t_stats:,.0f} x")


def part_b(sizes: list[int], repeats: int) -> None:
    print(f"\n(b) statistics part alone ({RESAMPLES:,} resamples) by audit-set size; "
          "counts built directly with bincount in chunks of 1M rows")
    counts = {}
    for rows in sizes:
        start = time.perf_counter()
        counts[rows] = count_direct(rows, seed=rows)
        print(f"  {rows:>12,} rows counted in {time.perf_counter() - start:6.2f} s")
        statistics_part(counts[rows])  # warm-up
    # interleaved rounds, so a burst of load from other processes hits every size alike
    wall: dict[int, list[float]] = {rows: [] for rows in sizes}
    cpu: dict[int, list[float]] = {rows: [] for rows in sizes}
    for _ in range(repeats):
        for rows in sizes:
            w, c = time.perf_counter(), time.process_time()
            statistics_part(counts[rows])
            wall[rows].append(time.perf_counter() - w)
            cpu[rows].append(time.process_time() - c)
    print(f"  statistics part, {repeats} interleaved rounds: wall min / median, CPU min")
    for rows in sizes:
        med = statistics.median(wall[rows])
        print(f"  {rows:>12,} rows: {min(wall[rows]):6.3f} / {med:6.3f} s, "
              f"CPU {min(cpu[rows]):6.3f} s")
    if 100_000 in wall and 10_000_000 in wall:
        lo, hi = wall[100_000], wall[10_000_000]
        print(f"  ratio 10M / 100k (target <= 2): wall min {min(hi) / min(lo):.2f}, "
              f"wall median {statistics.median(hi) / statistics.median(lo):.2f}, "
              f"CPU min {min(cpu[10_000_000]) / min(cpu[100_000]):.2f}")


def part_d(rows: int, repeats: int) -> None:
    """(d) the statistics part at ``rows`` with uniform intervals (the default) against
    percentile ones (before issue 11), in interleaved rounds."""
    counts = count_direct(rows, seed=rows)
    methods = ("uniform", "percentile")
    for m in methods:
        statistics_part(counts, interval=m)  # warm-up
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            w, c = time.perf_counter(), time.process_time()
            statistics_part(counts, interval=m)
            wall[m].append(time.perf_counter() - w)
            cpu[m].append(time.process_time() - c)
    print(f"\n(d) statistics part at {rows:,} rows, {GROUPS} groups, {RESAMPLES:,} resamples, "
          f"{repeats} interleaved rounds: wall min / median, CPU min")
    for m in methods:
        print(f"  {m:10s}: {min(wall[m]):6.3f} / {statistics.median(wall[m]):6.3f} s, "
              f"CPU {min(cpu[m]):6.3f} s")
    print(f"  ratio uniform / percentile: wall min {min(wall['uniform']) / min(wall['percentile']):.2f}, "
          f"CPU min {min(cpu['uniform']) / min(cpu['percentile']):.2f}")


# ----------------------------------------------------------------------------- (c) coverage


def _population(p_y: list[float], tpr: list[float], fpr: list[float],
                keep: list[tuple[float, float]], share: list[float]) -> np.ndarray:
    """Cell probabilities p[g, y, ŷt, ŷs]: P(y), teacher TPR/FPR, P(student keeps ŷt)."""
    p = np.zeros((len(share), 2, 2, 2))
    for gi, w in enumerate(share):
        for y in (0, 1):
            py = p_y[gi] if y else 1 - p_y[gi]
            pt1 = tpr[gi] if y else fpr[gi]
            for yt in (0, 1):
                pt = pt1 if yt else 1 - pt1
                for ys in (0, 1):
                    k = keep[gi][yt]
                    p[gi, y, yt, ys] = w * py * pt * (k if ys == yt else 1 - k)
    return p


def _truth(p: np.ndarray, name: str) -> float:
    vals = []
    for q in (p.sum(axis=3), p.sum(axis=2)):  # teacher, student: [g, y, ŷ]
        if name == "accuracy":
            vals.append(q[:, 0, 0].sum() + q[:, 1, 1].sum())
            continue
        sel = (q[:, 0, 1] + q[:, 1, 1]) / q.sum(axis=(1, 2))
        tpr = q[:, 1, 1] / q[:, 1].sum(axis=1)
        fpr = q[:, 0, 1] / q[:, 0].sum(axis=1)
        vals.append(sel.max() - sel.min() if name == "demographic_parity_difference"
                    else max(tpr.max() - tpr.min(), fpr.max() - fpr.min()))
    return float(vals[1] - vals[0])


def part_c(audits: int, rows: int, resamples: int) -> None:
    print(f"\n(c) coverage of the 95% percentile interval of the change (student − teacher): "
          f"{audits} simulated audits of {rows:,} rows, {resamples:,} resamples each")
    print("    share of audits with the truth below / inside / above the interval")
    share = [0.45, 0.35, 0.2]
    flat = dict(p_y=[0.4] * 3, tpr=[0.7] * 3, fpr=[0.1] * 3)
    populations = {
        "separated groups (as in the test)": _population(
            [0.5, 0.35, 0.25], [0.8, 0.65, 0.55], [0.08, 0.12, 0.03],
            [(0.9, 0.95), (0.95, 0.9), (0.97, 0.85)], share),
        "every gap 0 for both models": _population(
            flat["p_y"], flat["tpr"], flat["fpr"], [(0.95, 0.9)] * 3, share),
        "teacher gaps 0, student gaps small": _population(
            flat["p_y"], flat["tpr"], flat["fpr"], [(0.95, 0.9), (0.95, 0.9), (0.9, 0.95)], share),
        "teacher gaps 0, student gaps clear": _population(
            flat["p_y"], flat["tpr"], flat["fpr"], [(0.95, 0.9), (0.85, 0.95), (0.75, 0.97)],
            share),
    }
    names = ("demographic_parity_difference", "equalized_odds_difference", "accuracy")
    grouping = Grouping(("g",))
    keys = [MetricKey(n, None if n == "accuracy" else grouping) for n in names]
    for title, p in populations.items():
        truth = {n: _truth(p, n) for n in names}
        tally = {n: [0, 0, 0] for n in names}
        draws = np.random.default_rng(1).multinomial(rows, p.reshape(-1), size=audits)
        labels = tuple((str(i),) for i in range(p.shape[0]))
        for i, draw in enumerate(draws):
            counts = {grouping: GroupingCounts(grouping, labels, draw.reshape(p.shape))}
            values = compute_values(keys, counts, Settings(30, {}, 0.95, resamples, 100_000 + i))
            for key in keys:
                iv = values[key].delta_interval
                assert iv is not None
                x = truth[key.metric]
                tally[key.metric][0 if x < iv.lo else 1 if x <= iv.hi else 2] += 1
        print(f"  {title}")
        for n in names:
            below, inside, above = (c / audits for c in tally[n])
            print(f"    {n:32s} true change {truth[n]:+.4f}: "
                  f"{below:.3f} / {inside:.3f} / {above:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for part (a)")
    parser.add_argument("--fairlearn-boot", type=int, default=2,
                        help="n_boot for the fairlearn bootstrap timing in (a); 0 skips it")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per fairgate timing")
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000",
                        help="audit-set sizes for part (b)")
    parser.add_argument("--coverage", action="store_true", help="also run part (c)")
    parser.add_argument("--skip-a", action="store_true", help="skip part (a) (fairlearn is slow)")
    parser.add_argument("--intervals", action="store_true",
                        help="only part (d): uniform against percentile intervals at --rows")
    args = parser.parse_args()
    print(machine_note())
    if args.intervals:
        part_d(args.rows, args.repeats)
        print(f"\n{machine_note()}")
        return
    if not args.skip_a:
        part_a(args.rows, args.fairlearn_boot, args.repeats)
    part_b([int(x) for x in args.sizes.split(",")], args.repeats)
    if args.coverage:
        part_c(audits=1000, rows=4000, resamples=1000)
    print(f"\n{machine_note()}")


if __name__ == "__main__":
    main()
