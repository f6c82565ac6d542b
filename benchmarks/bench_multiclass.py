"""Multi-class benchmark: `fairgate check` with K = 1000 classes against raw onnxruntime.

Not a test: prints figures and ratios. Run from the repository root:

    python benchmarks/bench_multiclass.py                  # 1M rows, K = 1000 and K = 10, best of 3
    python benchmarks/bench_multiclass.py --rows 200000    # quick mode, about a minute
    python benchmarks/bench_multiclass.py --profile gate   # also cProfile one in-process gate

Inputs (seeded; generated once into ``--cache``, default $TMPDIR/fairgate-bench-multiclass,
and reused): a Parquet audit set of ``--rows`` rows with 20 float32 features, an int64
label in 0 .. K-1 whose class frequencies fall off like Zipf's law (many classes are small),
``sex`` (2 values) and ``region`` (50 values, also Zipf-like), and the two models' top-1
classes as int64 columns ``teacher_class`` and ``student_class``. The models are built with
``onnx.helper``: teacher 20-256-ReLU-K-Softmax (Gemm, Relu, Gemm, Softmax), student
20-64-ReLU-K-Softmax: 64 of the teacher's hidden units with perturbed output weights, the
other 192 units of the teacher carrying small weights, so that the two agree on ~85% of
rows. The label is a noisy argmax of the teacher's logits (Gumbel noise), which gives a
top-1 accuracy of ~0.43 at K = 1000.

Measured, each in a fresh process (so that peak RSS is per variant; imports are done before
the clock starts and the RSS after them is shown too), interleaved, best of ``--repeats``:

- **floor**: raw onnxruntime, both sessions with default ``SessionOptions`` one after the
  other, over the same rows in batches of 65,536 read from the Parquet file with pyarrow
  (the columns the gate reads, with its reader options), argmax of each output: inference
  and reading only;
- **floor, fairgate's session settings**: the same with onnxruntime run as fairgate runs it
  (memory pattern and spinning off, teacher in a worker thread): reference only, to tell
  fairgate's own work from its session settings;
- **gate (ONNX)**: ``fairgate.run.run_gate(GateRequest(...))`` with a multi-class policy
  (classes from the teacher's output width; two one-vs-rest positive classes; checks
  classes_changed, worst_class_accuracy, accuracy and demographic parity on sex; 1,000
  resamples); its ``report.timings`` split it into the counting pass (reading, inference,
  counting) and the statistics part;
- **gate (class columns)**: the same policy with ``teacher_scores``/``student_scores``, the
  precomputed class columns: counting without inference;
- **read**: raw pyarrow reading of the columns the class-column gate reads: the floor of
  the class-column gate.

The same runs at K = 10 (``--small-classes``) and the same rows show how memory grows
with K; one more run of the class-column gate per K under tracemalloc splits fairgate's own
arrays into the counting pass (its tables) and the statistics (the bootstrap copies).
``--profile`` adds an in-process cProfile of one gate (note: the teacher predicts in a
worker thread, which cProfile does not see). The default run takes about 2.5 minutes on
2 cores (the first one also ~25 s to generate the inputs); the machine is shared and noisy:
read the ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = [f"f{i:02d}" for i in range(20)]
SEX = np.array(["Female", "Male"], dtype=object)
REGIONS = np.array([f"r{i:02d}" for i in range(50)], dtype=object)
REGION_P = 1.0 / np.arange(1, 51)
REGION_P /= REGION_P.sum()
BATCH_ROWS = 65_536
ROW_GROUP_ROWS = 131_072
HIDDEN_T, HIDDEN_S = 256, 64
# logit scale, strength of the Zipf prior, weight of the teacher's extra hidden units,
# perturbation of the student's output weights, label noise: tuned once (100k rows, K = 1000)
# for ~85% top-1 agreement, top-1 accuracy ~0.43, ~780 classes ever predicted, the largest
# class 6% of rows and the median one 0.03%
GAMMA, ALPHA, WEAK, EPS, TAU = 3.0, 1.0, 0.05, 0.05, 1.0
DATA_VERSION = 1  # bump when the generator changes, so stale cached files are not reused
POSITIVE_CLASSES = (0, 3)
RESAMPLES = 1000

POLICY = """\
# benchmark policy: K-class models, classes 0 .. K-1 from the teacher's output width
version: 1
audit:
  label: label
  sensitive: [sex, region]
  reference_groups: {{sex: Male}}
  min_group_size: 30
model:
  features: [{features}]
  output: probabilities
multiclass:
  positive_classes: [{positives}]
checks:
  - id: no-class-changed
    metric: classes_changed
    max: 0
  - id: worst-class-kept
    metric: worst_class_accuracy
    max_decrease: 0.02
  - id: accuracy-kept
    metric: accuracy
    max_decrease: 0.01
  - id: dp-no-amplification
    metric: demographic_parity_difference
    on: [sex]
    max_increase: 0.02
statistics:
  confidence: 0.95
  resamples: {resamples}
  seed: 0
"""

# ----------------------------------------------------------------------------- inputs

Weights = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # W1 [F, H], b1, W2 [H, K], b2


def weights(k: int, seed: int = 0) -> tuple[Weights, Weights]:
    """Teacher and student weights; the student keeps the teacher's first 64 hidden units.

    The output bias centres the hidden activations (so that the argmax is spread over many
    classes, not decided by the mean activation) and adds a Zipf prior ``-ALPHA log(k+1)``.
    """
    rng = np.random.default_rng(seed)
    f = len(FEATURES)
    w1 = (rng.normal(size=(f, HIDDEN_T)) * np.sqrt(2 / f)).astype(np.float32)
    b1 = (rng.normal(size=HIDDEN_T) * 0.1).astype(np.float32)
    scale = np.where(np.arange(HIDDEN_T) < HIDDEN_S, 1.0, WEAK)
    w2 = (rng.normal(size=(HIDDEN_T, k)) * np.sqrt(2 / HIDDEN_S) * scale[:, None] * GAMMA)
    xs = np.random.default_rng(seed + 99).normal(size=(20_000, f)).astype(np.float32)
    mean_h = np.maximum(xs @ w1 + b1, 0).mean(axis=0)
    b2 = -ALPHA * np.log(np.arange(1, k + 1)) - mean_h @ w2
    sw2 = w2[:HIDDEN_S] + rng.normal(size=(HIDDEN_S, k)) * EPS * np.sqrt(2 / HIDDEN_S) * GAMMA
    teacher = (w1, b1, w2.astype(np.float32), b2.astype(np.float32))
    student = (w1[:, :HIDDEN_S].copy(), b1[:HIDDEN_S].copy(), sw2.astype(np.float32),
               b2.astype(np.float32))
    return teacher, student


def logits(m: Weights, x: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = m
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def onnx_mlp(m: Weights, name: str) -> bytes:
    """``[N, 20] -> Gemm -> Relu -> Gemm -> Softmax -> [N, K]`` with the given weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = m
    k = w2.shape[1]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"),
                                                        (b2, "B2"))]
    nodes = [helper.make_node("Gemm", ["input", "W1", "B1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", len(FEATURES)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="fairgate-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_audit(path: Path, rows: int, k: int, teacher: Weights, student: Weights,
                seed: int = 1) -> dict[str, Any]:
    """The audit set, written a row group at a time; returns a few facts about it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([*(pa.field(f, pa.float32()) for f in FEATURES),
                        pa.field("label", pa.int64()), pa.field("sex", pa.string()),
                        pa.field("region", pa.string()), pa.field("teacher_class", pa.int64()),
                        pa.field("student_class", pa.int64())])
    freq = np.zeros(k, dtype=np.int64)
    agree = correct_t = correct_s = 0
    tmp = path.with_suffix(".partial")
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for start in range(0, rows, ROW_GROUP_ROWS):
            n = min(ROW_GROUP_ROWS, rows - start)
            x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
            sex = rng.integers(0, 2, size=n)
            region = rng.choice(len(REGIONS), size=n, p=REGION_P)
            x[:, 0] += 0.3 * sex  # groups differ in what the models see
            x[:, 1] += 0.5 * (region % 5 == 0)
            lt = logits(teacher, x)
            t = lt.argmax(axis=1)
            s = logits(student, x).argmax(axis=1)
            u = np.maximum(rng.random(size=lt.shape, dtype=np.float32), np.float32(1e-30))
            lt -= TAU * np.log(-np.log(u))  # + Gumbel noise: y ~ softmax(logits / TAU)
            y = lt.argmax(axis=1)
            del lt, u
            freq += np.bincount(y, minlength=k)
            agree += int(np.count_nonzero(t == s))
            correct_t += int(np.count_nonzero(t == y))
            correct_s += int(np.count_nonzero(s == y))
            arrays = [*(pa.array(x[:, j]) for j in range(len(FEATURES))), pa.array(y),
                      pa.array(SEX[sex], type=pa.string()),
                      pa.array(REGIONS[region], type=pa.string()), pa.array(t), pa.array(s)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema),
                               row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)
    ordered = np.sort(freq)[::-1]
    return {"rows": rows, "classes": k, "classes_present": int(np.count_nonzero(freq)),
            "largest_class_share": float(ordered[0] / rows),
            "median_class_rows": float(np.median(freq)),
            "classes_below_30_rows": int(np.count_nonzero(freq < 30)),
            "classes_below_100_rows": int(np.count_nonzero(freq < 100)),
            "top1_agreement": agree / rows, "teacher_accuracy": correct_t / rows,
            "student_accuracy": correct_s / rows}


@dataclass(frozen=True)
class Inputs:
    data: Path
    teacher: Path
    student: Path
    policy: Path
    facts: dict[str, Any]


def prepare(cache: Path, rows: int, k: int) -> Inputs:
    """Generate (once) the audit set, both models and the policy for ``k`` classes."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"k{k}_v{DATA_VERSION}"
    teacher_w, student_w = weights(k)
    teacher = cache / f"teacher_{stem}.onnx"
    student = cache / f"student_{stem}.onnx"
    if not teacher.exists() or not student.exists():
        teacher.write_bytes(onnx_mlp(teacher_w, "teacher"))
        student.write_bytes(onnx_mlp(student_w, "student"))
    data = cache / f"audit_{rows}_{stem}.parquet"
    facts_path = data.with_suffix(".json")
    if not data.exists() or not facts_path.exists():
        t0 = time.perf_counter()
        print(f"generating {data} ...", flush=True)
        facts = write_audit(data, rows, k, teacher_w, student_w)
        facts_path.write_text(json.dumps(facts))
        print(f"  {data.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s",
              flush=True)
    policy = cache / f"policy_{stem}.yaml"
    policy.write_text(POLICY.format(features=", ".join(FEATURES), resamples=RESAMPLES,
                                    positives=", ".join(map(str, POSITIVE_CLASSES))))
    return Inputs(data, teacher, student, policy, json.loads(facts_path.read_text()))


# ----------------------------------------------------------------------------- child processes


def _rss_mib() -> float:
    """Peak RSS of this process so far, in MiB.

    VmHWM, not ``getrusage``: Linux carries ``ru_maxrss`` over from the parent across
    fork and exec, so a child would report the generator's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    use = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return use / (2**20 if sys.platform == "darwin" else 1024)


def floor(data: str, teacher: str, student: str, batch_rows: int,
          like_fairgate: bool = False) -> dict[str, Any]:
    """Read features, label and sensitive columns; run both sessions; argmax. Nothing else.

    ``like_fairgate``: onnxruntime as fairgate.inputs.model runs it (memory pattern and spinning
    off, the teacher in a worker thread while the student runs), to separate fairgate's own
    work from its choice of session settings.
    """
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort
    import pyarrow.parquet as pq

    base = _rss_mib()
    cpu0, t0 = time.process_time(), time.perf_counter()
    opts = ort.SessionOptions()
    if like_fairgate:
        opts.enable_mem_pattern = False
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
                for p in (teacher, student)]
    pool = ThreadPoolExecutor(1) if like_fairgate else None

    def top1(i: int, x: np.ndarray) -> np.ndarray:
        return np.argmax(sessions[i].run(["probabilities"], {"input": x})[0], axis=1)

    rows = agree = 0
    # the same reader options as fairgate.inputs.audit.AuditSet
    pf = pq.ParquetFile(data, pre_buffer=False, buffer_size=1 << 16)
    for batch in pf.iter_batches(batch_size=batch_rows,
                                 columns=[*FEATURES, "label", "sex", "region"]):
        x = np.empty((batch.num_rows, len(FEATURES)), dtype=np.float32)
        for j in range(len(FEATURES)):
            x[:, j] = batch.column(j).to_numpy()
        if pool is not None:
            pending = pool.submit(top1, 0, x)
            s = top1(1, x)
            t = pending.result()
        else:
            t, s = top1(0, x), top1(1, x)
        agree += int(np.count_nonzero(t == s))
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
            "rows": rows, "agreement": agree / rows,
            "base_rss_mib": base, "peak_rss_mib": _rss_mib()}


def read(data: str, batch_rows: int) -> dict[str, Any]:
    """Read the columns the class-column gate reads, as numpy: its floor."""
    import pyarrow.parquet as pq

    base = _rss_mib()
    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = 0
    pf = pq.ParquetFile(data, pre_buffer=False, buffer_size=1 << 16)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[
            "label", "sex", "region", "teacher_class", "student_class"]):
        for col in batch.columns:
            col.to_numpy(zero_copy_only=False)
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
            "rows": rows, "base_rss_mib": base,
            "peak_rss_mib": _rss_mib()}


def _gate_imports() -> None:
    """Everything run_gate imports lazily, so that the clock measures the work."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import pyarrow.parquet  # noqa: F401



def gate_request(inp: dict[str, str], columns: bool, batch_rows: int) -> Any:
    from fairgate.run import GateRequest

    common: dict[str, Any] = {"policy": Path(inp["policy"]), "data": Path(inp["data"]),
                              "batch_rows": batch_rows,
                              "out": Path(tempfile.gettempdir()) / "fairgate-bench-unused"}
    if columns:
        return GateRequest(teacher_scores="teacher_class", student_scores="student_class",
                           **common)
    return GateRequest(teacher=Path(inp["teacher"]), student=Path(inp["student"]), **common)


def gate(inp: dict[str, str], columns: bool, batch_rows: int) -> dict[str, Any]:
    """One run_gate call; timings and the sizes of what it counted."""
    _gate_imports()
    from fairgate.run import run_gate

    req = gate_request(inp, columns, batch_rows)
    base = _rss_mib()
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = run_gate(req)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"seconds": seconds, "cpu": cpu, "base_rss_mib": base, "peak_rss_mib": _rss_mib(),
            **report.timings, **summary_of(report)}


def trace(inp: dict[str, str], batch_rows: int) -> dict[str, Any]:
    """The class-column gate with tracemalloc around its counting pass and its statistics.

    numpy registers its buffers with tracemalloc, so this sees fairgate's tables and
    bootstrap arrays (not onnxruntime's memory): how much each part holds at its peak and
    keeps afterwards.
    """
    import tracemalloc

    _gate_imports()
    import fairgate.run as run

    out: dict[str, Any] = {}

    def wrap(name: str, fn: Any) -> Any:
        def traced(*a: Any, **kw: Any) -> Any:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            result = fn(*a, **kw)
            now, peak = tracemalloc.get_traced_memory()
            out[f"{name}_peak_mib"] = (peak - before) / 2**20
            out[f"{name}_retained_mib"] = (now - before) / 2**20
            return result
        return traced

    run.count_multiclass = wrap("count", run.count_multiclass)  # type: ignore[assignment]
    run.compute_values = wrap("statistics", run.compute_values)  # type: ignore[assignment]
    tracemalloc.start()
    run.run_gate(gate_request(inp, True, batch_rows))
    tracemalloc.stop()
    return out


def summary_of(report: Any) -> dict[str, Any]:
    cw = report.classwise or {}
    per_class = cw.get("teacher_vs_student", [])
    groups: dict[str, int] = {}
    for row in report.groups:
        groups[str(row.grouping)] = groups.get(str(row.grouping), 0) + 1
    pair = cw["disagreement"][0] if cw.get("disagreement") else {}
    kpis = {f"{v.key.metric}" + (f" [{v.key.grouping}]" if v.key.grouping else ""):
            (v.teacher, v.student) for v in report.kpis}
    return {
        "rows": report.inputs["data"]["rows"],
        "verdict": report.verdict,
        "checks": {r.check.id + (f" [{r.key.grouping}]" if r.key.grouping else ""):
                   (r.status.value, r.value.teacher, r.value.student)
                   for r in report.decision.results},
        "classes": len(cw.get("classes", [])),
        "class_table_groups": len(per_class),
        "class_table_gated": sum(1 for r in per_class if r["gated"]),
        "classes_significant": sum(1 for r in per_class if r["significant"]),
        "disagreement_pairs": pair.get("pairs"),
        "disagreement_rate": pair.get("rate"),
        "groups_per_grouping": groups,
        "kpis": {k: v for k, v in kpis.items() if "accuracy" in k},
    }


def child(argv: list[str]) -> None:
    mode, spec = argv[0], json.loads(argv[1])
    if mode in ("floor", "floor-fairgate-ort"):
        out = floor(spec["data"], spec["teacher"], spec["student"], spec["batch_rows"],
                    like_fairgate=mode == "floor-fairgate-ort")
    elif mode == "read":
        out = read(spec["data"], spec["batch_rows"])
    elif mode == "trace":
        out = trace(spec, spec["batch_rows"])
    else:
        out = gate(spec, mode == "gate-columns", spec["batch_rows"])
    print("RESULT " + json.dumps(out, default=str))


# ----------------------------------------------------------------------------- parent

VARIANTS = ("floor", "floor-fairgate-ort", "gate", "gate-columns", "read")
LABELS = {
    "floor": "raw onnxruntime (floor)",
    "floor-fairgate-ort": "raw onnxruntime, fairgate's session settings",
    "gate": "fairgate run_gate, ONNX models",
    "gate-columns": "fairgate run_gate, class columns",
    "read": "raw read of the class columns",
}


def run_child(mode: str, inp: Inputs, batch_rows: int) -> dict[str, Any]:
    spec = {"data": str(inp.data), "teacher": str(inp.teacher), "student": str(inp.student),
            "policy": str(inp.policy), "batch_rows": batch_rows}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "_child", mode, json.dumps(spec)],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{mode}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    return {**json.loads(line[len("RESULT "):]), "process_wall": wall}


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def bench(inputs: dict[int, Inputs], repeats: int, batch_rows: int,
          variants: tuple[str, ...]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Interleaved runs (every variant at every K, then again), best of ``repeats``."""
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {k: {v: [] for v in variants}
                                                        for k in inputs}
    for i in range(repeats):
        for k, inp in inputs.items():
            warm(inp.data)
            for v in variants:
                r = run_child(v, inp, batch_rows)
                runs[k][v].append(r)
                extra = ""
                if "count_seconds" in r:
                    extra = (f"  (count {r['count_seconds']:.2f} s, statistics "
                             f"{r['statistics_seconds']:.2f} s)")
                print(f"  K={k:<5} {v:<18} run {i + 1}: {r['seconds']:7.2f} s  cpu "
                      f"{r['cpu']:6.2f} s  process {r['process_wall']:6.2f} s  peak "
                      f"{r['peak_rss_mib']:6.0f} MiB{extra}",
                      flush=True)
    return runs


def best(rs: list[dict[str, Any]], key: str = "seconds") -> float:
    return min(r[key] for r in rs)


def _rounds(rs: list[dict[str, Any]], floor: list[dict[str, Any]] | None, key: str) -> str:
    """Median of the per-round ratios to the floor: robust to load that changes between rounds."""
    if not floor:
        return ""
    ratios = [r[key] / f["seconds"] for r, f in zip(rs, floor, strict=False)]
    return f"{statistics.median(ratios):.2f}x"


def report(inputs: dict[int, Inputs], runs: dict[int, dict[str, list[dict[str, Any]]]],
           repeats: int, traced: dict[int, dict[str, Any]]) -> None:
    for k, by in runs.items():
        f = inputs[k].facts
        print(f"\nK = {k}, {f['rows']:,} rows (best of {repeats}, and the median; peak RSS: "
              "median)")
        print(f"  data: {f['classes_present']} classes present, largest {f['largest_class_share']:.1%}"
              f" of rows, median class {f['median_class_rows']:.0f} rows, "
              f"{f['classes_below_30_rows']} classes < 30 rows, {f['classes_below_100_rows']} < 100;"
              f" top-1 agreement {f['top1_agreement']:.3f}, accuracy teacher "
              f"{f['teacher_accuracy']:.3f} student {f['student_accuracy']:.3f}")
        fl = best(by["floor"]) if by.get("floor") else float("nan")
        print(f"  {'variant':<44} {'best s':>7} {'/ floor':>8} {'median s':>9} {'rounds':>8} "
              f"{'cpu s':>6} {'peak MiB':>9} {'after imports':>14}")
        for v, rs in by.items():
            if not rs:
                continue
            peak = statistics.median(r["peak_rss_mib"] for r in rs)
            base = statistics.median(r["base_rss_mib"] for r in rs)
            med = statistics.median(r["seconds"] for r in rs)
            print(f"  {LABELS[v]:<44} {best(rs):7.2f} {best(rs) / fl:7.2f}x {med:9.2f} "
                  f"{_rounds(rs, by.get('floor'), 'seconds'):>8} {best(rs, 'cpu'):6.2f} "
                  f"{peak:9.0f} {base:14.0f}")
            if "count_seconds" in rs[0]:
                for part in ("count_seconds", "statistics_seconds"):
                    print(f"  {'  of which ' + part.replace('_seconds', ''):<44} "
                          f"{best(rs, part):7.2f} {best(rs, part) / fl:7.2f}x "
                          f"{statistics.median(r[part] for r in rs):9.2f} "
                          f"{_rounds(rs, by.get('floor'), part):>8}")
        print("  (/ floor: best over best; rounds: median over the rounds of the ratio to the "
              "floor run just before, which saw about the same load)")
        cols, rd = by.get("gate-columns"), by.get("read")
        if cols and rd:
            c = best(cols, "count_seconds")
            print(f"  class-column gate, counting pass / raw read: {c / best(rd):.2f}x "
                  f"({c - best(rd):+.2f} s: fairgate's per-batch work without inference)")
        g = by.get("gate")
        if g and by.get("floor"):
            print(f"  ONNX gate, counting pass / floor: {best(g, 'count_seconds') / fl:.2f}x "
                  f"({best(g, 'count_seconds') - fl:+.2f} s)")
        if g and by.get("floor-fairgate-ort"):
            ff = best(by["floor-fairgate-ort"])
            print(f"  ONNX gate / raw onnxruntime with fairgate's session settings: "
                  f"{best(g) / ff:.2f}x whole, {best(g, 'count_seconds') / ff:.2f}x counting pass "
                  f"({best(g, 'count_seconds') - ff:+.2f} s: fairgate's per-batch work)")
        for v in ("gate", "gate-columns"):
            if not by.get(v):
                continue
            r = by[v][0]
            print(f"  {v}: verdict {r['verdict']}; classes {r['classes']}, class table "
                  f"{r['class_table_groups']} groups ({r['class_table_gated']} gated, "
                  f"{r['classes_significant']} significant after Holm); disagreement: "
                  f"{r['disagreement_pairs']} nonzero (teacher, student) pairs, rate "
                  f"{r['disagreement_rate']}; groups per grouping {r['groups_per_grouping']}")
            print(f"    checks: {r['checks']}")
    if len(runs) > 1:
        ks = sorted(runs)
        lo, hi = ks[0], ks[-1]
        print(f"\npeak RSS (median), K = {hi} vs K = {lo}, same rows:")
        print(f"  {'variant':<44} {'K=' + str(hi):>9} {'K=' + str(lo):>9} {'ratio':>7} "
              f"{'diff MiB':>9} {'work, K=' + str(hi):>12} {'work, K=' + str(lo):>11}")
        for v in runs[hi]:
            if not runs[hi][v] or not runs[lo].get(v):
                continue
            ph = statistics.median(r["peak_rss_mib"] for r in runs[hi][v])
            pl = statistics.median(r["peak_rss_mib"] for r in runs[lo][v])
            wh = statistics.median(r["peak_rss_mib"] - r["base_rss_mib"] for r in runs[hi][v])
            wl = statistics.median(r["peak_rss_mib"] - r["base_rss_mib"] for r in runs[lo][v])
            print(f"  {LABELS[v]:<44} {ph:9.0f} {pl:9.0f} {ph / pl:6.2f}x {ph - pl:9.0f} "
                  f"{wh:12.0f} {wl:11.0f}")
        print("  (work = peak minus the RSS after imports; a [65,536, K] float32 output is "
              f"{BATCH_ROWS * hi * 4 / 2**20:.0f} MiB at K = {hi})")
    if traced:
        print("\nfairgate's own arrays (tracemalloc, class-column gate), MiB:")
        print(f"  {'K':>6} {'counting peak':>14} {'tables kept':>12} {'statistics peak':>16}")
        for k, t in sorted(traced.items(), reverse=True):
            print(f"  {k:>6} {t['count_peak_mib']:14.1f} {t['count_retained_mib']:12.1f} "
                  f"{t['statistics_peak_mib']:16.1f}")
        print(f"  (statistics: {RESAMPLES} bootstrap copies of every table at once, "
              "[B, groups, 2, 2, 2] int64: O(K x B), not O(N))")


def profile(inp: Inputs, columns: bool, batch_rows: int, top: int) -> None:
    """One in-process run_gate under cProfile: where the time goes."""
    _gate_imports()
    from fairgate.run import run_gate

    spec = {"data": str(inp.data), "teacher": str(inp.teacher), "student": str(inp.student),
            "policy": str(inp.policy)}
    req = gate_request(spec, columns, batch_rows)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    rep = run_gate(req)
    prof.disable()
    print(f"\ncProfile of run_gate ({'class columns' if columns else 'ONNX models'}, "
          f"K = {inp.facts['classes']}): {time.perf_counter() - t0:.2f} s under the profiler, "
          f"timings {rep.timings}")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--classes", type=int, default=1000, help="K of the main run")
    p.add_argument("--small-classes", type=int, default=10,
                   help="K of the memory comparison at the same rows (0: skip it)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                   "fairgate-bench-multiclass"))
    p.add_argument("--clean", action="store_true", help="delete the cache afterwards")
    p.add_argument("--profile", choices=("gate", "gate-columns"), action="append", default=[],
                   help="also cProfile one in-process run_gate of this variant at K = --classes")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--json", help="also write every run to this file")
    args = p.parse_args()

    import onnxruntime as ort
    import pyarrow as pa

    print(f"fairgate multi-class benchmark: nproc={os.cpu_count()} "
          f"({len(os.sched_getaffinity(0))} usable), python {platform.python_version()}, "
          f"onnxruntime {ort.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; this machine is "
          "shared, so timings are noisy: read the ratios", flush=True)
    print(f"rows {args.rows:,}, batch {args.batch_rows:,}, teacher 20-{HIDDEN_T}-K, student "
          f"20-{HIDDEN_S}-K, positive classes {POSITIVE_CLASSES}, resamples {RESAMPLES}",
          flush=True)
    cache = Path(args.cache)
    try:
        ks = [args.classes] + ([args.small_classes] if args.small_classes else [])
        inputs = {k: prepare(cache, args.rows, k) for k in ks}
        runs = bench(inputs, args.repeats, args.batch_rows, tuple(args.variants))
        traced = {k: run_child("trace", inp, args.batch_rows) for k, inp in inputs.items()}
        report(inputs, runs, args.repeats, traced)
        for v in args.profile:
            profile(inputs[args.classes], v == "gate-columns", args.batch_rows, args.profile_top)
        if args.json:
            Path(args.json).write_text(json.dumps({str(k): r for k, r in runs.items()}, indent=1,
                                                  default=str))
    finally:
        if args.clean:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
