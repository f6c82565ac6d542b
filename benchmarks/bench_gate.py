"""End-to-end benchmark of `fairgate check` against the floor of issue 2.

The floor is what any gate must do at least: read the same columns of the audit set in the
same batches, with the same reader options, and run both ONNX models on every batch with
onnxruntime, nothing else. Targets: the whole ``fairgate check --no-mlflow`` within 1.3x
the floor's wall time and no more peak memory than the floor at 1M rows; at 10M rows,
peak memory within 1.2x of the 1M-row run.

Each command runs in a fresh subprocess so that peak RSS is per process (``/usr/bin/time
-v`` when present, else a small wrapper reading ``RUSAGE_CHILDREN``). The floor runs the
models in four straightforward ways (see ``FLOORS``: sequential or both at once, with or
without onnxruntime's spinning threads) and the fastest is the floor. Reference-only runs
show pyarrow's default reader (``pre_buffer=True`` keeps every column chunk read, so its
memory grows with the file) and onnxruntime without its memory pattern.

    python benchmarks/bench_gate.py                    # 1M rows x3, then 10M rows x1
    python benchmarks/bench_gate.py --rows 1000000     # 1M only
    python benchmarks/bench_gate.py --student int8     # the teacher int8-quantized
    python benchmarks/bench_gate.py --variant mine=/tmp/patched   # price a patched copy

Inputs are generated once (seeded) into ``--cache`` (default: $TMPDIR/fairgate-bench,
~2.1 GB with the 10M-row file, ~80 s to generate) and reused; nothing is written into
the repository. The default run takes about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FEATURES = [f"f{i:02d}" for i in range(20)]
SEX = np.array(["Female", "Male"], dtype=object)
RACE = np.array(["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"],
                dtype=object)
RACE_P = [0.80, 0.10, 0.05, 0.02, 0.03]
BATCH_ROWS = 65_536
ROW_GROUP_ROWS = 131_072
DATA_VERSION = 1  # bump when the generator changes, so stale cached files are not reused

POLICY = """\
# benchmark policy: a few checks over both attributes and their intersection
version: 1
audit:
  label: label
  positive_label: 1
  sensitive: [sex, race]
  intersections: true
  reference_groups: {{sex: Male, race: White}}
  min_group_size: 30
model:
  features: [{features}]
  threshold: 0.5
  output: probabilities
checks:
  - id: dp-no-amplification
    metric: demographic_parity_difference
    max_increase: 0.02
  - id: eo-no-amplification
    metric: equalized_odds_difference
    max_increase: 0.02
  - id: four-fifths
    metric: demographic_parity_ratio
    min: 0.8
    severity: warn
  - id: accuracy-kept
    metric: accuracy
    max_decrease: 0.01
statistics:
  confidence: 0.95
  resamples: 2000
  seed: 0
  decide_on: estimate
"""


# ----------------------------------------------------------------------------- inputs


def write_audit(path: Path, rows: int, seed: int = 0) -> None:
    """A seeded audit set: 20 float64 features, a 0/1 label, string sex and race.

    The label depends on the features so that models and metrics are not degenerate; 1% of
    ``sex`` is missing, which fairgate reports as its own group. Written in chunks, so the
    10M-row file never sits in memory.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    w = rng.normal(size=len(FEATURES)) / np.sqrt(len(FEATURES))
    tmp = path.with_suffix(".partial")
    chunk = 1 << 20
    schema = pa.schema([*(pa.field(f, pa.float64()) for f in FEATURES),
                        pa.field("label", pa.int64()), pa.field("sex", pa.string()),
                        pa.field("race", pa.string())])
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            x = rng.normal(size=(n, len(FEATURES)))
            race = rng.choice(len(RACE), size=n, p=RACE_P)
            sex = rng.integers(0, 2, size=n)
            logit = x @ w + 0.3 * (sex == 1) - 0.2 * (race > 0)
            label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
            sex_col = pa.array(SEX[sex], type=pa.string(),
                               mask=rng.random(n) < 0.01)
            arrays = [*(pa.array(x[:, j]) for j in range(len(FEATURES))),
                      pa.array(label), sex_col, pa.array(RACE[race], type=pa.string())]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema),
                               row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)


def mlp(widths: list[int], seed: int, name: str) -> bytes:
    """An ONNX MLP ``[N, widths[0]] -> ... -> [N, 2] -> Softmax`` with seeded He weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "input"
    layers = list(itertools.pairwise(widths))
    for i, (a, b) in enumerate(layers):
        w = (rng.normal(size=(a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
        bias = (rng.normal(size=b) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(bias, f"B{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"h{i}"]))
        prev = f"h{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", widths[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="fairgate-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Inputs:
    data: Path
    teacher: Path
    student: Path
    policy: Path


def prepare(cache: Path, rows: int, student: str) -> Inputs:
    """Generate (once) the audit set, the models and the policy into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    data = cache / f"audit_{rows}_v{DATA_VERSION}.parquet"
    if not data.exists():
        t0 = time.perf_counter()
        print(f"generating {data} ...", flush=True)
        write_audit(data, rows)
        print(f"  {rows:,} rows, {data.stat().st_size / 2**20:.0f} MiB in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    teacher = cache / "teacher_mlp_256x256.onnx"
    if not teacher.exists():
        teacher.write_bytes(mlp([len(FEATURES), 256, 256, 2], seed=1, name="teacher"))
    if student == "int8":
        stud = cache / "student_int8.onnx"
        if not stud.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(teacher), str(stud), weight_type=QuantType.QInt8)
    else:
        stud = cache / "student_mlp_32.onnx"
        if not stud.exists():
            stud.write_bytes(mlp([len(FEATURES), 32, 2], seed=2, name="student"))
    policy = cache / "policy.yaml"
    policy.write_text(POLICY.format(features=", ".join(FEATURES)))
    return Inputs(data, teacher, stud, policy)


# ----------------------------------------------------------------------------- the floor


def floor(args: argparse.Namespace) -> None:
    """Read the gate's columns batch by batch and run both models: nothing else.

    Features go straight into one preallocated float32 matrix (one conversion, no
    intermediate float64 stack); label and sensitive columns are read like the gate reads
    them. ``--mode threads`` runs teacher and student at once (two Python threads; ORT
    releases the GIL); ``--intra-threads`` and ``--spin`` set onnxruntime's intra-op pool.
    """
    import onnxruntime as ort
    import pyarrow.parquet as pq

    def session(path: str) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.enable_mem_pattern = args.mem_pattern == "on"
        if args.intra_threads:
            opts.intra_op_num_threads = args.intra_threads
        if args.spin == "off":
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    teacher, student = session(args.teacher), session(args.student)
    columns = [*FEATURES, "label", "sex", "race"]
    pool = ThreadPoolExecutor(2) if args.mode == "threads" else None
    rows = 0
    if args.reader == "fairgate":  # the same reader options as fairgate.inputs.audit.AuditSet
        pf = pq.ParquetFile(args.data, pre_buffer=False, buffer_size=1 << 16)
    else:  # pyarrow's defaults: pre_buffer keeps every chunk read, memory grows with rows
        pf = pq.ParquetFile(args.data)
    for batch in pf.iter_batches(batch_size=args.batch_rows, columns=columns):
        x = np.empty((batch.num_rows, len(FEATURES)), dtype=np.float32)
        for j in range(len(FEATURES)):
            x[:, j] = batch.column(j).to_numpy()
        feed = {"input": x}
        if pool is None:
            t = teacher.run(["probabilities"], feed)[0]
            s = student.run(["probabilities"], feed)[0]
        else:
            ft = pool.submit(teacher.run, ["probabilities"], feed)
            fs = pool.submit(student.run, ["probabilities"], feed)
            t, s = ft.result()[0], fs.result()[0]
        del t, s
        rows += batch.num_rows
    print(json.dumps({"rows": rows}))


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    what: str
    rows: int
    wall_s: float
    cpu_s: float  # user + system: less sensitive than wall time to other load
    peak_rss_mib: float


def _measure_child(argv: list[str]) -> None:
    """Fallback without /usr/bin/time: run ``argv`` and print its own peak RSS."""
    code = subprocess.run(argv).returncode
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    kib = use.ru_maxrss // (1024 if sys.platform == "darwin" else 1)  # KiB on Linux
    print(f"Maximum resident set size (kbytes): {kib}", file=sys.stderr)
    print(f"User time (seconds): {use.ru_utime:.2f}", file=sys.stderr)
    print(f"System time (seconds): {use.ru_stime:.2f}", file=sys.stderr)
    sys.exit(code)


def measure(what: str, rows: int, argv: list[str], ok: tuple[int, ...] = (0,),
            env: dict[str, str] | None = None) -> Run:
    """Wall time, CPU time and peak RSS of ``argv`` run in a fresh process.

    The working directory is a scratch folder, so that ``python -m fairgate`` imports the
    installed package (or a variant's PYTHONPATH), never a checkout that happens to be cwd.
    """
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        full = [str(gnu_time), "-v", *argv]
    else:  # the wrapper prints the same three lines as GNU time -v
        full = [sys.executable, __file__, "_measure", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{what}: exit {proc.returncode}\n{proc.stdout[-2000:]}"
                         f"\n{proc.stderr[-4000:]}")
    got = {}
    for key in ("Maximum resident set size (kbytes)", "User time (seconds)",
                "System time (seconds)"):
        found = re.search(re.escape(key) + r": ([\d.]+)", proc.stderr)
        if found is None:
            raise SystemExit(f"{what}: no {key!r} in the output of {full[0]}")
        got[key] = float(found.group(1))
    cpu = got["User time (seconds)"] + got["System time (seconds)"]
    return Run(what, rows, wall, cpu, got["Maximum resident set size (kbytes)"] / 1024)


def floor_argv(inp: Inputs, options: tuple[str, ...], batch_rows: int) -> list[str]:
    return [sys.executable, __file__, "floor", "--data", str(inp.data), "--teacher",
            str(inp.teacher), "--student", str(inp.student), "--batch-rows", str(batch_rows),
            *options]


@dataclass(frozen=True)
class Variant:
    """fairgate imported from another tree (a patched copy) and/or with extra environment."""

    name: str
    pythonpath: str | None
    env: tuple[tuple[str, str], ...]

    @staticmethod
    def parse(spec: str) -> Variant:
        head, *envs = spec.split(",")
        name, _, path = head.partition("=")
        pairs = tuple(tuple(e.split("=", 1)) for e in envs)
        if not name or any(len(p) != 2 for p in pairs):
            raise argparse.ArgumentTypeError(f"--variant {spec!r}: NAME[=DIR][,KEY=VALUE...]")
        return Variant(name, path or None, pairs)  # type: ignore[arg-type]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        env.update(self.env)
        return env


def gate_argv(inp: Inputs, out: Path, batch_rows: int) -> list[str]:
    return [sys.executable, "-m", "fairgate", "check", "--policy", str(inp.policy),
            "--data", str(inp.data), "--teacher", str(inp.teacher), "--student",
            str(inp.student), "--no-mlflow", "--format", "json", "--out", str(out),
            "--batch-size", str(batch_rows)]


def warm(path: Path) -> None:
    """Read the file once so that every timed run starts from the same (warm) page cache."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def bench(args: argparse.Namespace) -> dict[str, object]:
    """Interleaved runs (every floor, then fairgate and the variants; repeat), so that load
    from other jobs hits all commands alike."""
    cache = Path(args.cache)
    out = Path(tempfile.mkdtemp(prefix="fairgate-bench-out-"))
    runs: list[Run] = []
    try:
        for rows in args.rows:
            inp = prepare(cache, rows, args.student)
            warm(inp.data)
            repeat = args.repeat if rows == args.rows[0] else args.repeat_large
            for i in range(repeat):
                for name, options in FLOORS:
                    runs.append(measure(name, rows,
                                        floor_argv(inp, options, args.batch_rows)))
                    _show(runs[-1], i)
                for v in [Variant("fairgate", None, ()), *args.variant]:
                    report = out / f"{v.name}_{rows}_{i}"
                    runs.append(measure(v.name, rows, gate_argv(inp, report, args.batch_rows),
                                        ok=(0, 1), env=v.environ()))
                    _show(runs[-1], i)
                    got = json.loads((report / "report.json").read_text())
                    if got["inputs"]["data"]["rows"] != rows:
                        raise SystemExit(f"{v.name} counted {got['inputs']['data']['rows']} "
                                         f"rows, expected {rows}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"runs": [asdict(r) for r in runs], "summary": summarize(runs)}


# The floor is the fastest by median wall time of the "floor-" ways to run the two models
# (onnxruntime defaults, sequential; both at once with one intra-op thread each; both
# ways with spinning threads off, which helps on a busy machine). "ref-" runs are context
# only, never the floor: pyarrow's default reader options, and onnxruntime's memory
# pattern off (what fairgate would need to be compared with if it turned it off).
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("floor-sequential", ("--mode", "sequential")),
    ("floor-threads", ("--mode", "threads", "--intra-threads", "1")),
    ("floor-sequential-nospin", ("--mode", "sequential", "--spin", "off")),
    ("floor-threads-nospin", ("--mode", "threads", "--spin", "off")),
    ("ref-pyarrow-defaults", ("--mode", "sequential", "--reader", "default")),
    ("ref-no-mem-pattern", ("--mode", "sequential", "--mem-pattern", "off")),
)


def _show(r: Run, i: int) -> None:
    print(f"  {r.rows:>11,} rows  {r.what:<23} run {i + 1}: wall {r.wall_s:7.2f} s  "
          f"cpu {r.cpu_s:7.2f} s  peak {r.peak_rss_mib:6.0f} MiB", flush=True)


def summarize(runs: list[Run]) -> dict[str, dict[str, object]]:
    """Medians per size and command; the floor is the faster floor mode by median wall."""
    out: dict[str, dict[str, object]] = {}
    for rows in sorted({r.rows for r in runs}):
        med = {}
        for what in dict.fromkeys(r.what for r in runs if r.rows == rows):
            rs = [r for r in runs if r.rows == rows and r.what == what]
            med[what] = {k: statistics.median(getattr(r, k) for r in rs)
                         for k in ("wall_s", "cpu_s", "peak_rss_mib")} | {"n": len(rs)}
        floor = min((k for k in med if k.startswith("floor-")), key=lambda k: med[k]["wall_s"])
        out[str(rows)] = {"median": med, "floor": floor}
    return out


def table(summary: dict[str, dict[str, object]]) -> str:
    lines = [f"{'rows':>11}  {'command (median of n)':<32} {'wall s':>8} {'cpu s':>8} "
             f"{'peak MiB':>9}"]
    for rows, s in summary.items():
        med: dict[str, dict[str, float]] = s["median"]  # type: ignore[assignment]
        for what, m in med.items():
            mark = "  <- floor" if what == s["floor"] else ""
            label = f"{what} (n={m['n']:.0f})"
            lines.append(f"{int(rows):>11,}  {label:<32} "
                         f"{m['wall_s']:8.2f} {m['cpu_s']:8.2f} {m['peak_rss_mib']:9.0f}{mark}")
        f = med[str(s["floor"])]
        for what, g in med.items():
            if what.startswith(("floor-", "ref-")):
                continue
            lines.append(f"{int(rows):>11,}  {what + ' / floor':<32} "
                         f"{g['wall_s'] / f['wall_s']:7.2f}x {g['cpu_s'] / f['cpu_s']:7.2f}x "
                         f"{g['peak_rss_mib'] / f['peak_rss_mib']:8.2f}x"
                         "   (targets: wall <= 1.30x, peak <= 1.00x)")
    if len(summary) > 1:
        lo, hi = min(summary, key=int), max(summary, key=int)
        small: dict[str, dict[str, float]] = summary[lo]["median"]  # type: ignore[assignment]
        big: dict[str, dict[str, float]] = summary[hi]["median"]  # type: ignore[assignment]
        for what in small:
            if what in big and not what.startswith("floor-"):
                ratio = big[what]["peak_rss_mib"] / small[what]["peak_rss_mib"]
                target = "" if what.startswith("ref-") else " (target <= 1.20x)"
                lines.append(f"{what} peak RSS, {int(hi):,} / {int(lo):,} rows: "
                             f"{ratio:.2f}x{target}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        _measure_child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    f = sub.add_parser("floor", help="(internal) the floor: read + run both models")
    f.add_argument("--data", required=True)
    f.add_argument("--teacher", required=True)
    f.add_argument("--student", required=True)
    f.add_argument("--mode", choices=("sequential", "threads"), default="sequential")
    f.add_argument("--reader", choices=("fairgate", "default"), default="fairgate")
    f.add_argument("--mem-pattern", choices=("on", "off"), default="on",
                   help="onnxruntime's enable_mem_pattern (on: its default)")
    f.add_argument("--intra-threads", type=int, default=0, help="0: onnxruntime's default")
    f.add_argument("--spin", choices=("on", "off"), default="on",
                   help="session.intra_op.allow_spinning (on: onnxruntime's default)")
    f.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3, help="runs at the smallest size (median)")
    p.add_argument("--repeat-large", type=int, default=1, help="runs at the other sizes")
    p.add_argument("--student", choices=("small", "int8"), default="small",
                   help="small: a 20-32-2 MLP (a distilled student); int8: the teacher "
                   "quantized by onnxruntime.quantization.quantize_dynamic")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "fairgate-bench"))
    p.add_argument("--json", help="also write all runs and medians to this file")
    p.add_argument("--variant", type=Variant.parse, action="append", default=[],
                   metavar="NAME[=DIR][,KEY=VALUE...]",
                   help="also measure fairgate imported from DIR (a patched copy of the "
                   "package) and/or with extra environment, e.g. to price a proposed change")
    args = p.parse_args()
    if args.cmd == "floor":
        floor(args)
        return
    args.rows = sorted(args.rows)
    print(f"fairgate end-to-end benchmark: nproc={os.cpu_count()} "
          f"({len(os.sched_getaffinity(0))} usable), python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; this machine is "
          "shared, so timings are noisy: read the ratios", flush=True)
    print(f"teacher 20-256-256-2 MLP, student {args.student}, batch {args.batch_rows:,} rows, "
          f"row groups {ROW_GROUP_ROWS:,} rows, resamples 2000", flush=True)
    result = bench(args)
    print(table(result["summary"]))  # type: ignore[arg-type]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
