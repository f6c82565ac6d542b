"""Cost of high-cardinality sensitive columns: `fairgate check` at 10k / 50k / 200k groups.

Issue 10: a column of 200,000 distinct values was killed at 8 GB, 50,000 took minutes, and
intersections of two such columns were worse. This script times ``fairgate check
--teacher-scores t --student-scores s --no-mlflow`` (precomputed scores: no inference, so
the figures are fairgate's own) on 1M seeded rows with:

- ``dozens``: the common case, ``sex`` (2), ``race`` (5, one of them rare) and ``age``
  (4) with their intersection: 51 groups, a few of them below min_group_size;
- ``10k``, ``50k``, ``200k``: one column ``g`` of that many values, Zipf-like shares (a
  few thousand groups reach min_group_size 30, most do not);
- ``500x500``: two columns of 500 values each and their intersection (~245,000 groups);
- ``ids`` (not run by default): a column with a unique value a row.

The policy has four checks (demographic parity and equalized odds differences, disparate
impact, accuracy), 2,000 resamples and min_group_size 30. With ``--before REV`` the same
runs are made with fairgate as of git revision ``REV`` (``git archive`` into a temporary
folder, put first on PYTHONPATH), interleaved with the current tree, and the ratios are
printed. ``*-nocap`` scenarios (current tree only) lift ``audit.max_groups`` to show what
the cap saves and how the fixed code scales past it.

Each run is a fresh process under ``/usr/bin/time -v`` (or a ``getrusage`` wrapper): wall
and CPU time, peak RSS, exit code, report.json size, and the counting / statistics split
that report.json records. Address space is limited to ``--limit-gib`` (default 10) and
time to ``--timeout`` seconds, so a run that would eat the machine ends with exit 4
("out of memory") instead.

    python benchmarks/bench_groups.py                          # current tree, ~3 min
    python benchmarks/bench_groups.py --before d04c64d         # also the code before; ~12 min
    python benchmarks/bench_groups.py --scenarios dozens --repeat-small 7 --before d04c64d
    python benchmarks/bench_groups.py --scenarios ids ids-nocap

Inputs are generated once into ``--cache`` (default $TMPDIR/fairgate-bench-groups, ~150 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DATA_VERSION = 1
ROW_GROUP_ROWS = 131_072

POLICY = """\
version: 1
audit:
  label: y
  positive_label: 1
  sensitive: {sensitive}
  intersections: true
  min_group_size: 30{extra}
checks:
  - {{id: dp, metric: demographic_parity_difference, max_increase: 0.05}}
  - {{id: eo, metric: equalized_odds_difference, max_increase: 0.05}}
  - {{id: di, metric: disparate_impact, min: 0.5, severity: warn}}
  - {{id: acc, metric: accuracy, max_decrease: 0.05}}
statistics:
  resamples: 2000
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    sensitive: tuple[str, ...]
    values: int  # distinct values of ``g`` (0: none), or per column of ``a`` and ``b``
    cap: bool = True  # False: audit.max_groups lifted (current tree only)
    small: bool = False  # the common case: more repeats


SCENARIOS = {s.name: s for s in (
    Scenario("dozens", ("sex", "race", "age"), 0, small=True),
    Scenario("10k", ("g",), 10_000),
    Scenario("50k", ("g",), 50_000),
    Scenario("200k", ("g",), 200_000),
    Scenario("500x500", ("a", "b"), 500),
    Scenario("200k-nocap", ("g",), 200_000, cap=False),
    Scenario("500x500-nocap", ("a", "b"), 500, cap=False),
    Scenario("ids", ("id",), 0),
    Scenario("ids-nocap", ("id",), 0, cap=False),
)}
DEFAULT = ("dozens", "10k", "50k", "200k", "500x500", "200k-nocap", "500x500-nocap")


def make_data(path: Path, scenario: Scenario, rows: int) -> dict[str, int]:
    """Seeded audit set; returns its number of groups (of ``g``, or of the intersection)
    and how many have min_group_size rows."""
    rng = np.random.default_rng(0)
    y = rng.random(rows) < 0.4
    t = np.clip(y * 0.3 + rng.random(rows) * 0.7, 0, 1)
    cols: dict[str, object] = {"y": y.astype(np.int64), "t": t}
    bump = np.zeros(rows)
    if scenario.sensitive == ("sex", "race", "age"):
        sex = rng.choice(2, rows)
        race = rng.choice(5, rows, p=[0.8, 0.1, 0.05, 0.0498, 0.0002])
        age = rng.choice(4, rows, p=[0.3, 0.4, 0.2, 0.1])
        cols |= {"sex": pa.array(np.array(["F", "M"])[sex]),
                 "race": pa.array(np.array(["W", "B", "A", "N", "O"])[race]),
                 "age": pa.array(np.array(["<25", "25-45", "45-65", "65+"])[age])}
        bump = (sex == 0) * 0.05
        combos = sex * 20 + race * 4 + age
    elif scenario.sensitive == ("id",):  # a unique id a row
        cols["id"] = pa.array([f"id{i}" for i in range(rows)])
        bump = (np.arange(rows) % 7 == 0) * 0.05
        combos = np.arange(rows)
    elif scenario.sensitive == ("g",):
        k = scenario.values
        w = 1.0 / (np.arange(k) + 50.0)  # Zipf-like; every value occurs at least once
        g = np.concatenate([np.arange(k), rng.choice(k, max(rows - k, 0), p=w / w.sum())])[:rows]
        rng.shuffle(g)
        cols["g"] = pa.array([f"v{i}" for i in g])
        bump = (g % 7 == 0) * 0.05
        combos = g
    else:
        m = scenario.values
        a, b = rng.integers(0, m, rows), rng.integers(0, m, rows)
        cols |= {"a": pa.array([f"a{i}" for i in a]), "b": pa.array([f"b{i}" for i in b])}
        bump = (a % 7 == 0) * 0.05
        combos = a * m + b
    cols["s"] = np.clip(y * 0.25 + rng.random(rows) * 0.7 + bump, 0, 1)
    pq.write_table(pa.table(cols), path, row_group_size=ROW_GROUP_ROWS)
    sizes = np.bincount(combos)
    sizes = sizes[sizes > 0]
    return {"groups": len(sizes), "gated": int((sizes >= 30).sum())}


def inputs(cache: Path, scenario: Scenario, rows: int) -> tuple[Path, Path, dict[str, int]]:
    base = scenario.name.removesuffix("-nocap")
    folder = cache / f"v{DATA_VERSION}-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    data, meta = folder / f"{base}.parquet", folder / f"{base}.json"
    if not (data.exists() and meta.exists()):
        info = make_data(data, scenario, rows)
        meta.write_text(json.dumps(info))
    extra = "" if scenario.cap else "\n  max_groups: 1000000"
    policy = folder / f"{scenario.name}.yaml"
    policy.write_text(POLICY.format(sensitive=f"[{', '.join(scenario.sensitive)}]", extra=extra))
    return data, policy, json.loads(meta.read_text())


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_mib: float
    report_mb: float | None
    count_s: float | None
    statistics_s: float | None
    error: str


def _measure_child(argv: list[str]) -> None:
    """Without /usr/bin/time: run ``argv``, print the lines GNU time -v would."""
    code = subprocess.run(argv).returncode
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"Maximum resident set size (kbytes): {use.ru_maxrss}", file=sys.stderr)
    print(f"User time (seconds): {use.ru_utime:.2f}", file=sys.stderr)
    print(f"System time (seconds): {use.ru_stime:.2f}", file=sys.stderr)
    sys.exit(code)


def measure(data: Path, policy: Path, pythonpath: Path, args: argparse.Namespace) -> Run:
    out = Path(tempfile.mkdtemp(prefix="fairgate-bench-groups-"))
    argv = [sys.executable, "-m", "fairgate", "check", "--policy", str(policy), "--data",
            str(data), "--teacher-scores", "t", "--student-scores", "s", "--no-mlflow",
            "--out", str(out / "report")]
    timer = Path("/usr/bin/time")
    full = [str(timer), "-v", *argv] if timer.exists() else [
        sys.executable, __file__, "_measure", *argv]
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    limit = int(args.limit_gib * 2**30)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(full, capture_output=True, text=True, env=env, cwd=out,
                              preexec_fn=cap_memory, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return Run(-1, args.timeout, float("nan"), float("nan"), None, None, None, "timeout")
    wall = time.perf_counter() - t0
    got = {}
    for key in ("Maximum resident set size (kbytes)", "User time (seconds)",
                "System time (seconds)"):
        found = re.search(re.escape(key) + r": ([\d.]+)", proc.stderr)
        got[key] = float(found.group(1)) if found else float("nan")
    report = out / "report" / "report.json"
    size = count = stats = None
    if report.exists():
        size = report.stat().st_size / 1e6
        timings = json.loads(report.read_text())["run"]["timings"]
        count, stats = timings.get("count_seconds"), timings.get("statistics_seconds")
    error = next((line[len("fairgate: error: "):] for line in proc.stderr.splitlines()
                  if line.startswith("fairgate: error: ")), "")
    shutil.rmtree(out, ignore_errors=True)
    return Run(proc.returncode, wall, got["User time (seconds)"] + got["System time (seconds)"],
               got["Maximum resident set size (kbytes)"] / 1024, size, count, stats, error)


def checkout(rev: str) -> Path:
    """fairgate as of ``rev``, extracted from this repository into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"fairgate-{rev[:12]}-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fairgate"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _median(runs: list[Run], field: str) -> float:
    values = [getattr(r, field) for r in runs if getattr(r, field) is not None]
    return statistics.median(values) if values else float("nan")


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None or x != x else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--scenarios", nargs="+", default=list(DEFAULT), choices=list(SCENARIOS))
    p.add_argument("--before", metavar="REV", help="also time fairgate at this git revision")
    p.add_argument("--repeat", type=int, default=1, help="runs of the large scenarios")
    p.add_argument("--repeat-small", type=int, default=5, help="runs of the common case")
    p.add_argument("--limit-gib", type=float, default=10.0, help="address-space limit a run")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a run")
    p.add_argument("--cache", type=Path,
                   default=Path(tempfile.gettempdir()) / "fairgate-bench-groups")
    args = p.parse_args()
    print(f"fairgate groups benchmark: {args.rows:,} rows, nproc={os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; numpy {np.__version__}, "
          f"pyarrow {pa.__version__}. Medians; read the ratios, the machine may be shared.")
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": checkout(args.before), **trees}
    header = (f"{'scenario':<14} {'groups':>8} {'gated':>6} {'code':<7} {'exit':>4} "
              f"{'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'count s':>8} {'stats s':>8} "
              f"{'json MB':>8}")
    print(header)
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        data, policy, info = inputs(args.cache, scenario, args.rows)
        names = [t for t in trees if scenario.cap or t == "after"]
        runs: dict[str, list[Run]] = {t: [] for t in names}
        for _ in range(args.repeat_small if scenario.small else args.repeat):
            for t in names:  # interleaved, so that load from other jobs hits both alike
                runs[t].append(measure(data, policy, trees[t], args))
        for t in names:
            r = runs[t]
            print(f"{name:<14} {info['groups']:>8,} {info['gated']:>6,} {t:<7} "
                  f"{r[0].exit_code:>4} {_fmt(_median(r, 'wall_s'), '.2f'):>8} "
                  f"{_fmt(_median(r, 'cpu_s'), '.2f'):>8} {_fmt(_median(r, 'peak_mib'), '.0f'):>9} "
                  f"{_fmt(_median(r, 'count_s'), '.2f'):>8} "
                  f"{_fmt(_median(r, 'statistics_s'), '.2f'):>8} "
                  f"{_fmt(_median(r, 'report_mb'), '.1f'):>8}")
            if r[0].error:
                print(f"{'':<14} error: {r[0].error[:150]}")
        if "before" in runs:
            b, a = runs["before"], runs["after"]
            print(f"{'':<14} before / after: wall {_median(b, 'wall_s') / _median(a, 'wall_s'):.2f}x"
                  f", CPU {_median(b, 'cpu_s') / _median(a, 'cpu_s'):.2f}x, peak "
                  f"{_median(b, 'peak_mib') / _median(a, 'peak_mib'):.2f}x")
        sys.stdout.flush()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "before" in trees:
        shutil.rmtree(trees["before"], ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        _measure_child(sys.argv[2:])
    else:
        main()
