"""``--engine spark`` on one machine against the local engine and the floor (issue 12).

Inputs: the audit sets of bench_gate.py (20 float64 features, a 0/1 label, ``sex`` with 1%
missing, ``race``; row groups of 131,072 rows), written as folders of 16 Parquet files of
1M and 10M rows, and bench_gate.py's models (teacher MLP 20-256-256-2, student 20-32-2) and
policy. Every command runs in a fresh process; the parent samples the process tree every
0.2 s and reports peak memory per role: the fairgate (driver) Python process, the JVM
(Spark's driver, which in local mode also runs the executors' JVM side) and the sum of
the Spark Python workers. Timed commands, interleaved so that load hits all alike:

- ``floor``: read the same columns of every file with fairgate's reader options and run
  both models on every batch, nothing else; the fastest of: both models at once in two
  threads without onnxruntime's spinning (default intra-op threads, or one each), and one
  after the other without spinning;
- ``local``: ``fairgate check --engine local`` on the folder;
- ``spark``: ``fairgate check --engine spark --spark-master local[2]`` on the folder.
  report.json's ``run.engine`` splits its wall time into starting Spark (a JVM) and the
  pass; the pass is what scales with rows.

Targets: spark's report.json identical to local's (apart from ``run``); spark within 1.5x of
local's wall time (end to end, and the pass alone); the driver's peak memory flat from 1M to
10M rows (within 1.2x); local within 1.25x of the floor.

    python benchmarks/bench_spark.py                          # 1M x3 and 10M x1; ~10 minutes
    python benchmarks/bench_spark.py --rows 1000000 --repeat 1
    python benchmarks/bench_spark.py --variant before=/tmp/fairgate-before --only floor local

``--variant NAME=DIR`` also times the local engine imported from DIR (e.g. ``git archive``
of an earlier revision), to compare before and after. Inputs go to ``--cache`` (default
$TMPDIR/fairgate-bench-spark, ~2.3 GB with 10M rows; generated once, ~90 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gate  # the audit sets, models and policy of the end-to-end benchmark

FILES = 16
ROOT = Path(__file__).resolve().parents[1]


def prepare(cache: Path, rows: int) -> tuple[Path, Path, Path, Path]:
    """A folder of ``FILES`` Parquet files holding ``rows`` rows, the models and the policy."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / f"audit_{rows}_{FILES}files_v{bench_gate.DATA_VERSION}"
    if not folder.exists():
        t0 = time.perf_counter()
        print(f"generating {folder} ...", flush=True)
        tmp = folder.with_suffix(".partial")
        tmp.mkdir(exist_ok=True)
        per = np.full(FILES, rows // FILES)
        per[: rows % FILES] += 1
        for i, n in enumerate(per.tolist()):
            bench_gate.write_audit(tmp / f"part-{i:05d}.parquet", n, seed=1000 + i)
        tmp.rename(folder)
        print(f"  {rows:,} rows in {FILES} files in {time.perf_counter() - t0:.1f} s", flush=True)
    inp = bench_gate.prepare(cache, 1, "small")  # models and policy only (1-row audit file)
    return folder, inp.teacher, inp.student, inp.policy


# ----------------------------------------------------------------------------- the floor


def floor(args: argparse.Namespace) -> None:
    """Read the gate's columns of every file, batch by batch as fairgate does (each row
    group from its first row), and run both models; nothing else."""
    import onnxruntime as ort
    import pyarrow.parquet as pq

    def session(path: str) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if args.intra_threads:
            opts.intra_op_num_threads = args.intra_threads
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    teacher, student = session(args.teacher), session(args.student)
    columns = [*bench_gate.FEATURES, "label", "sex", "race"]
    pool = ThreadPoolExecutor(2) if args.mode == "threads" else None
    rows = 0
    for path in sorted(Path(args.data).glob("*.parquet")):
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
        for group in range(pf.num_row_groups):
            for batch in pf.iter_batches(batch_size=args.batch_rows, row_groups=[group],
                                         columns=columns):
                x = np.empty((batch.num_rows, len(bench_gate.FEATURES)), dtype=np.float32)
                for j in range(len(bench_gate.FEATURES)):
                    x[:, j] = batch.column(j).to_numpy()
                feed = {"input": x}
                if pool is None:
                    teacher.run(["probabilities"], feed)
                    student.run(["probabilities"], feed)
                else:
                    ft = pool.submit(teacher.run, ["probabilities"], feed)
                    fs = pool.submit(student.run, ["probabilities"], feed)
                    ft.result(), fs.result()
                rows += batch.num_rows
    print(json.dumps({"rows": rows}))


FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("floor-threads-nospin", ("--mode", "threads")),
    ("floor-threads-1-nospin", ("--mode", "threads", "--intra-threads", "1")),
    ("floor-sequential-nospin", ("--mode", "sequential")),
)


# ----------------------------------------------------------------------------- measuring


@dataclass
class Run:
    what: str
    rows: int
    wall_s: float
    cpu_s: float  # the command and the children it reaped (user + system)
    driver_peak_mib: float  # the command's own process (fairgate's Python)
    jvm_peak_mib: float = 0.0
    workers_peak_mib: float = 0.0  # Spark's Python workers, summed at each sample
    engine: dict[str, object] = field(default_factory=dict)
    count_s: float | None = None  # report.json timings.count_seconds


def _tree(root: int) -> dict[int, tuple[str, float, float]]:
    """pid -> (command line, VmHWM MiB, VmRSS MiB) of ``root`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += parents.get(pid, [])
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        mem = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in status.splitlines()
               if line.startswith(("VmHWM", "VmRSS"))}
        out[pid] = (cmd, mem.get("VmHWM", 0.0), mem.get("VmRSS", 0.0))
    return out


def measure(what: str, rows: int, argv: list[str], env: dict[str, str] | None = None,
            report: Path | None = None) -> Run:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tempfile.gettempdir(), text=True)
    driver = jvm = workers = 0.0
    while proc.poll() is None:
        tree = _tree(proc.pid)
        if proc.pid in tree:
            driver = max(driver, tree[proc.pid][1])
        jvm = max([jvm] + [hwm for cmd, hwm, _ in tree.values() if "java" in cmd.split(" ")[0]])
        workers = max(workers, sum(rss for pid, (cmd, _, rss) in tree.items()
                                   if pid != proc.pid and "pyspark" in cmd))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{what}: exit {proc.returncode}\n{stdout[-2000:]}\n{stderr[-4000:]}")
    import resource

    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = cpu.ru_utime + cpu.ru_stime
    run = Run(what, rows, wall, total - measure.cpu_before, driver, jvm, workers)  # type: ignore[attr-defined]
    measure.cpu_before = total  # type: ignore[attr-defined]
    if report is not None:
        got = json.loads((report / "report.json").read_text())
        run.engine = got["run"]["engine"]
        run.count_s = got["run"]["timings"]["count_seconds"]
        if got["inputs"]["data"]["rows"] != rows:
            raise SystemExit(f"{what} counted {got['inputs']['data']['rows']} rows, not {rows}")
    return run


measure.cpu_before = 0.0  # type: ignore[attr-defined]


def gate_argv(folder: Path, teacher: Path, student: Path, policy: Path, out: Path,
              engine: str) -> list[str]:
    argv = [sys.executable, "-m", "fairgate", "check", "--policy", str(policy), "--data",
            str(folder), "--teacher", str(teacher), "--student", str(student), "--no-mlflow",
            "--format", "json", "--out", str(out), "--engine", engine]
    if engine == "spark":
        argv += ["--spark-master", "local[2]", "--spark-conf", "spark.ui.enabled=false"]
    return argv


def environ(pythonpath: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    env.pop("PYSPARK_PYTHON", None)
    return env


def without_run(path: Path) -> bytes:
    raw = (path / "report.json").read_bytes()
    return raw[: raw.rindex(b'\n  "run": {')]


def bench(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    out = Path(tempfile.mkdtemp(prefix="fairgate-bench-spark-"))
    for rows in args.rows:
        folder, teacher, student, policy = prepare(Path(args.cache), rows)
        for f in sorted(folder.glob("*.parquet")):
            bench_gate.warm(f)
        repeat = args.repeat if rows == args.rows[0] else args.repeat_large
        for i in range(repeat):
            if "floor" in args.only:
                for name, options in FLOORS:
                    runs.append(measure(name, rows, [
                        sys.executable, __file__, "floor", "--data", str(folder), "--teacher",
                        str(teacher), "--student", str(student), *options]))
                    show(runs[-1], i)
            reports = {}
            variants = [(e, e, str(ROOT)) for e in ("local", "spark") if e in args.only]
            variants += [(f"local-{name}", "local", path) for name, path in args.variant]
            for name, engine, path in variants:
                report = out / f"{name}_{rows}_{i}"
                runs.append(measure(name, rows, gate_argv(folder, teacher, student, policy,
                                                          report, engine),
                                    env=environ(path), report=report))
                show(runs[-1], i)
                reports[name] = report
            if "local" in reports and "spark" in reports:
                same = without_run(reports["local"]) == without_run(reports["spark"])
                print(f"  report.json spark == local (apart from run): {same}", flush=True)
                if not same:
                    raise SystemExit("spark's report differs from local's")
    return runs


def show(r: Run, i: int) -> None:
    extra = ""
    if r.engine.get("name") == "spark":
        extra = (f"  (start {r.engine.get('session_seconds', 0):.1f} s, pass "
                 f"{r.engine.get('pass_seconds', 0):.1f} s, {r.engine.get('partitions')} "
                 f"partitions)")
    print(f"  {r.rows:>11,} rows  {r.what:<24} run {i + 1}: wall {r.wall_s:7.2f} s  cpu "
          f"{r.cpu_s:7.2f} s  driver {r.driver_peak_mib:6.0f} MiB  jvm {r.jvm_peak_mib:6.0f} "
          f"MiB  workers {r.workers_peak_mib:6.0f} MiB{extra}", flush=True)


def summary(runs: list[Run]) -> str:
    lines = []
    med: dict[int, dict[str, dict[str, float]]] = {}
    for rows in sorted({r.rows for r in runs}):
        med[rows] = {}
        for what in dict.fromkeys(r.what for r in runs if r.rows == rows):
            rs = [r for r in runs if r.rows == rows and r.what == what]
            m = {k: statistics.median(getattr(r, k) for r in rs)
                 for k in ("wall_s", "cpu_s", "driver_peak_mib", "jvm_peak_mib",
                           "workers_peak_mib")}
            if rs[0].engine.get("name") == "spark":
                m["pass_s"] = statistics.median(float(r.engine["pass_seconds"]) for r in rs)  # type: ignore[arg-type]
                m["start_s"] = statistics.median(float(r.engine["session_seconds"]) for r in rs)  # type: ignore[arg-type]
            if rs[0].count_s is not None:
                m["count_s"] = statistics.median(float(r.count_s or 0) for r in rs)
            m["n"] = len(rs)
            med[rows][what] = m
            lines.append(f"{rows:>11,}  {what:<24} (n={len(rs)}) wall {m['wall_s']:7.2f} s  cpu "
                         f"{m['cpu_s']:7.2f} s  driver {m['driver_peak_mib']:5.0f} MiB  jvm "
                         f"{m['jvm_peak_mib']:5.0f} MiB  workers {m['workers_peak_mib']:5.0f} MiB"
                         + (f"  count {m['count_s']:.2f} s" if "count_s" in m else "")
                         + (f"  start {m['start_s']:.2f} s pass {m['pass_s']:.2f} s"
                            if "pass_s" in m else ""))
        floors = {k: v for k, v in med[rows].items() if k.startswith("floor-")}
        if floors:
            best = min(floors, key=lambda k: floors[k]["wall_s"])
            f = floors[best]["wall_s"]
            lines.append(f"{rows:>11,}  floor = {best}")
            for what, m in med[rows].items():
                if not what.startswith("floor-"):
                    lines.append(f"{rows:>11,}  {what} / floor: wall {m['wall_s'] / f:.2f}x "
                                 "(target for local: <= 1.25x)")
        if "local" in med[rows] and "spark" in med[rows]:
            lo, sp = med[rows]["local"], med[rows]["spark"]
            lines.append(f"{rows:>11,}  spark / local: wall {sp['wall_s'] / lo['wall_s']:.2f}x end "
                         f"to end, pass {sp['pass_s'] / lo['count_s']:.2f}x (spark's pass vs "
                         "local's counting pass; target <= 1.5x)")
    if len(med) > 1:
        lo_rows, hi_rows = min(med), max(med)
        for what in med[lo_rows]:
            if what in med[hi_rows]:
                a, b = med[lo_rows][what], med[hi_rows][what]
                lines.append(f"{what}: peak at {hi_rows:,} / {lo_rows:,} rows: driver "
                             f"{b['driver_peak_mib'] / a['driver_peak_mib']:.2f}x"
                             + (f", jvm {b['jvm_peak_mib'] / a['jvm_peak_mib']:.2f}x"
                                if a["jvm_peak_mib"] else "")
                             + "  (target for the driver: <= 1.20x)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    f = sub.add_parser("floor", help="(internal) the floor: read + run both models")
    f.add_argument("--data", required=True)
    f.add_argument("--teacher", required=True)
    f.add_argument("--student", required=True)
    f.add_argument("--mode", choices=("sequential", "threads"), default="threads")
    f.add_argument("--intra-threads", type=int, default=0)
    f.add_argument("--batch-rows", type=int, default=bench_gate.BATCH_ROWS)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3, help="runs at the smallest size (median)")
    p.add_argument("--repeat-large", type=int, default=1, help="runs at the other sizes")
    p.add_argument("--only", nargs="+", default=["floor", "local", "spark"],
                   choices=("floor", "local", "spark"))
    p.add_argument("--variant", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                   metavar="NAME=DIR", help="also time the local engine imported from DIR")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "fairgate-bench-spark"))
    p.add_argument("--json", help="also write every run to this file")
    args = p.parse_args()
    if args.cmd == "floor":
        floor(args)
        return
    args.rows = sorted(args.rows)
    print(f"bench_spark: nproc={os.cpu_count()}, python {sys.version.split()[0]}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: read ratios)",
          flush=True)
    runs = bench(args)
    print(summary(runs))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=2))


if __name__ == "__main__":
    main()
