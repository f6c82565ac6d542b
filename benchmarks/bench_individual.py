"""Individual-fairness measures on 1M rows against the inference time of both models (issue 6).

The target: the three measures (sampling during the pass, I(f), kNN consistency, and the
counterfactual flip rate, which re-runs both models on the sample) within 2x the time
onnxruntime takes to run both models on every row. The models are 2x256 MLPs built with
onnx.helper (seeded He weights; the student is the teacher with perturbed weights, as a
compressed model would be) on 20 float features; feature f00 is a 0/1 sensitive attribute
that the models read, and the distance uses f01..f19.

Besides time, it prints how accurate the defaults are on this data: each estimate's
standard error and relative error, I(f) against 2M pairs drawn from all 1M rows, and kNN
consistency of the same query rows against the whole 1M-row reference instead of the
sample (the effect of bounding the neighbour search).

    python benchmarks/bench_individual.py                 # 1M rows, 3 repeats, ~5 min
    python benchmarks/bench_individual.py --rows 200000 --repeat 1 --no-full-knn
    python benchmarks/bench_individual.py --adult         # also the Adult example's models

Nothing is written into the repository (models go to a temporary folder).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fairgate.core import individual as ind  # noqa: E402
from fairgate.inputs.model import OnnxPredictor  # noqa: E402
from fairgate.inputs.outputs import ReadSettings  # noqa: E402

FEATURES = [f"f{i:02d}" for i in range(20)]
# the Adult example models: unnamed [N, 2] probabilities, column 1 = P(">50K")
ADULT_READ = ReadSettings(positive_label=">50K", positive_column=1)
BATCH_ROWS = 65_536


def mlp(path: Path, seed: int, perturb: float = 0.0) -> Path:
    """[N, 20] -> 256 -> 256 -> 1 -> Sigmoid, He weights from ``seed`` (+ perturbation)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(seed + 1000)
    widths = [20, 256, 256, 1]
    nodes, inits, prev = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        w = rng.normal(size=(a, b)) * np.sqrt(2.0 / a)
        if i == 0:
            w[0] *= 4.0  # make the sensitive input f00 matter
        w = w * (1 + perturb * noise.normal(size=w.shape))
        bias = rng.normal(size=b) * 0.1
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(bias.astype(np.float32), f"B{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], [f"h{i}"])]
        prev = f"h{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Sigmoid", [prev], ["prob"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 20])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def data(rows: int) -> tuple[np.ndarray, list[pa.RecordBatch]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    x[:, 0] = rng.random(rows) < 0.5
    batches = []
    for start in range(0, rows, BATCH_ROWS):
        chunk = x[start:start + BATCH_ROWS].astype(np.float64)
        batches.append(pa.RecordBatch.from_arrays([pa.array(chunk[:, j]) for j in range(20)],
                                                  names=FEATURES))
    return x, batches


def infer(session, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = [session.run(["prob"], {"input": x[s:s + BATCH_ROWS]})[0][:, 0]
           for s in range(0, len(x), BATCH_ROWS)]
    return np.concatenate(out).astype(np.float64)


def run_measures(batches: list[pa.RecordBatch], t_score: np.ndarray, s_score: np.ndarray,
                 teacher: OnnxPredictor, student: OnnxPredictor, args: argparse.Namespace,
                 ) -> tuple[dict[str, float], dict[str, object]]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    sampler = ind.RowSampler(args.sample_rows, seed=0)
    offset = 0
    for batch in batches:
        n = batch.num_rows
        ts, ss = t_score[offset:offset + n], s_score[offset:offset + n]
        sampler.add(batch, offset, {"teacher_score": ts, "student_score": ss,
                                    "teacher_decision": ts >= 0.5, "student_decision": ss >= 0.5})
        offset += n
    sample = sampler.result()
    t1 = time.perf_counter()
    z = ind.embed(sample.table, FEATURES[1:])
    t2 = time.perf_counter()
    lip = ind.lipschitz(z, sample.extra["teacher_score"], sample.extra["student_score"],
                        pairs=args.pairs, seed=0)
    t3 = time.perf_counter()
    knn = ind.knn_consistency(z, sample.extra["teacher_decision"], sample.extra["student_decision"],
                              k=args.k, queries=args.queries, seed=0)
    t4 = time.perf_counter()
    flips = ind.counterfactual_flips(sample.batch(), "f00", [0.0, 1.0],
                                     lambda b: teacher.decide(b, 0), lambda b: student.decide(b, 0))
    t5 = time.perf_counter()
    times = {"sample (in the pass)": t1 - t0, "embed": t2 - t1, "lipschitz": t3 - t2,
             "knn_consistency": t4 - t3, "counterfactual": t5 - t4}
    return times, {"sample": sample, "z": z, "lip": lip, "knn": knn, "flips": flips}


def fmt(e: ind.Estimate) -> str:
    return f"{e.value:.5f} ± {e.se:.5f} (rel. err. 95% {e.relative_error():.2%})"


def show(name: str, p: ind.Paired) -> None:
    assert p.student is not None and p.delta is not None
    print(f"  {name:<26} teacher {fmt(p.teacher)}")
    print(f"  {'':<26} student {fmt(p.student)}")
    print(f"  {'':<26} delta   {p.delta.value:+.5f} ± {p.delta.se:.5f}")


def full_knn(x: np.ndarray, z: ind.Embedding, sample: ind.SampledRows, decisions: np.ndarray,
             k: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Consistency of the same query rows with neighbours among the sample and among all rows.

    ``decisions`` is [rows, models]; returns one value per model for each reference.
    """
    from sklearn.neighbors import NearestNeighbors

    mean = np.array([x[:, j + 1].mean() for j in range(19)])
    scale = np.array([z.scale[f] for f in FEATURES[1:]])
    all_z = (x[:, 1:].astype(np.float64) - mean) / scale
    n = len(sample.rows)
    stream = np.random.SeedSequence([0, zlib.crc32(b"knn_consistency")])  # the module's draw
    q_local = (np.arange(n) if queries >= n
               else np.sort(np.random.default_rng(stream).choice(n, size=queries, replace=False)))
    q_global = sample.rows[q_local]
    near = sample.rows[ind.nearest_neighbours(z.matrix, q_local, k)]
    sampled = 1 - np.mean(np.abs(decisions[q_global] - decisions[near].mean(axis=1)), axis=0)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(all_z)
    idx = nn.kneighbors(all_z[q_global], return_distance=False)
    drop = idx == q_global[:, None]
    drop[~drop.any(axis=1), -1] = True
    nb = idx[~drop].reshape(len(q_global), k)
    return sampled, 1 - np.mean(np.abs(decisions[q_global] - decisions[nb].mean(axis=1)), axis=0)


def p_positive(path: Path, batch: pa.RecordBatch) -> np.ndarray:
    """P(income = ">50K"): column 1 of the example models' probabilities (examples/adult/README)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in session.get_inputs():
        col = batch.column(inp.name)
        arr = (col.to_numpy().astype(np.float32) if inp.type == "tensor(float)"
               else np.asarray(col.to_pylist(), dtype=object))
        feeds[inp.name] = arr.reshape(-1, 1)
    return np.asarray(session.run(["probabilities"], feeds)[0])[:, 1].astype(np.float64)


def adult(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    folder = ROOT / "examples" / "adult"
    table = pq.read_table(folder / "audit.parquet")
    numeric = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
    table = pa.table({c: (table.column(c).cast(pa.float64()) if c in numeric else table.column(c))
                      for c in table.column_names})
    teacher = OnnxPredictor("teacher", folder / "teacher.onnx", None, ADULT_READ)
    print(f"\nAdult example ({table.num_rows} rows; distance over {', '.join(numeric)} and "
          "workclass, marital_status, occupation, relationship; sex and race excluded)")
    for student_file in ("student_distilled_T4.onnx", "student_pruned.onnx", "student_int8.onnx"):
        student = OnnxPredictor("student", folder / student_file, None, ADULT_READ)
        batch = table.combine_chunks().to_batches()[0]
        ts, ss = (p_positive(folder / f, batch) for f in ("teacher.onnx", student_file))
        sampler = ind.RowSampler(args.sample_rows, seed=0)
        sampler.add(batch, 0, {"t": ts, "s": ss})
        sample = sampler.result()
        z = ind.embed(sample.table, [*numeric, "workclass", "marital_status", "occupation",
                                     "relationship"])
        t0 = time.perf_counter()
        lip = ind.lipschitz(z, sample.extra["t"], sample.extra["s"], pairs=args.pairs, seed=0)
        knn = ind.knn_consistency(z, sample.extra["t"] >= 0.5, sample.extra["s"] >= 0.5,
                                  k=args.k, queries=args.queries, seed=0)
        flips = ind.counterfactual_flips(sample.batch(), "sex", ["Male", "Female"],
                                         lambda b, m=teacher: m.decide(b, 0),
                                         lambda b, m=student: m.decide(b, 0))
        took = time.perf_counter() - t0
        print(f" {student_file} (measures {took:.2f} s; {lip.zero_distance_pairs} of "
              f"{lip.pairs_drawn} pairs at distance 0, of which teacher/student scores differ "
              f"in {lip.zero_distance_conflicts})")
        show("individual_lipschitz", lip.paired)
        print(f"  {'':<26} se parts (pairs, rows): teacher {lip.se_pairs[0]:.5f}, {lip.se_rows[0]:.5f}")
        show("knn_consistency", knn.paired)
        show("counterfactual_flip_rate", flips.overall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sample-rows", type=int, default=ind.DEFAULT_SAMPLE_ROWS)
    ap.add_argument("--pairs", type=int, default=ind.DEFAULT_PAIRS)
    ap.add_argument("--queries", type=int, default=ind.DEFAULT_QUERIES)
    ap.add_argument("--k", type=int, default=ind.DEFAULT_K)
    ap.add_argument("--no-full-knn", action="store_true", help="skip the 1M-row reference check")
    ap.add_argument("--adult", action="store_true", help="also run on examples/adult")
    args = ap.parse_args()

    import onnxruntime as ort

    print(f"python {platform.python_version()}, onnxruntime {ort.__version__}, "
          f"{os.cpu_count()} cpu(s); rows {args.rows:,}; sample {args.sample_rows:,} rows, "
          f"{args.pairs:,} pairs, {args.queries:,} kNN queries, k={args.k}")
    with tempfile.TemporaryDirectory() as tmp:
        tpath = mlp(Path(tmp) / "teacher.onnx", seed=1)
        spath = mlp(Path(tmp) / "student.onnx", seed=1, perturb=0.15)
        x, batches = data(args.rows)
        opts = ort.SessionOptions()
        sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                    for p in (tpath, spath)]
        read = ReadSettings("probabilities", positive_label=1)
        teacher = OnnxPredictor("teacher", tpath, tuple(FEATURES), read)
        student = OnnxPredictor("student", spath, tuple(FEATURES), read)
        infer(sessions[0], x[:BATCH_ROWS])  # warm up
        inference, measures = [], []
        results: dict[str, object] = {}
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            t_score = infer(sessions[0], x)
            s_score = infer(sessions[1], x)
            inference.append(time.perf_counter() - t0)
            times, results = run_measures(batches, t_score, s_score, teacher, student, args)
            measures.append(times)
            print(f" repeat {rep + 1}: inference of both models {inference[-1]:.2f} s; measures "
                  f"{sum(times.values()):.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in times.items())})")
        inf = statistics.median(inference)
        parts = {k: statistics.median(m[k] for m in measures) for k in measures[0]}
        total = statistics.median(sum(m.values()) for m in measures)
        print(f"\nmedian of {args.repeat}: inference of both models {inf:.2f} s "
              f"(teacher and student, 2x256 MLPs, {args.rows:,} rows)")
        for k, v in parts.items():
            print(f"  {k:<22} {v:6.3f} s  {v / inf:6.1%} of inference")
        print(f"  {'all measures':<22} {total:6.3f} s  ratio {total / inf:.3f} (target <= 2)")

        lip = results["lip"]
        knn = results["knn"]
        flips = results["flips"]
        sample = results["sample"]
        z = results["z"]
        assert isinstance(lip, ind.Lipschitz) and isinstance(knn, ind.KnnConsistency)
        assert isinstance(flips, ind.CounterfactualFlips) and isinstance(sample, ind.SampledRows)
        assert isinstance(z, ind.Embedding)
        print("\naccuracy of the defaults on this data")
        show("individual_lipschitz", lip.paired)
        print(f"  {'':<26} se parts (pairs, rows): teacher {lip.se_pairs[0]:.5f}, "
              f"{lip.se_rows[0]:.5f}; {lip.zero_distance_pairs} pairs at distance 0")
        show("knn_consistency", knn.paired)
        show("counterfactual_flip_rate", flips.overall)

        # I(f) over 2M pairs drawn from all rows, standardized the same way
        rng = np.random.default_rng(123)
        i = rng.integers(0, args.rows, 2_000_000)
        j = rng.integers(0, args.rows - 1, 2_000_000)
        j += j >= i
        scale = np.array([z.scale[f] for f in FEATURES[1:]])
        xi, xj = x[i, 1:].astype(np.float64) / scale, x[j, 1:].astype(np.float64) / scale
        d = np.sqrt(((xi - xj) ** 2).sum(axis=1))
        t_all = infer(sessions[0], x)
        s_all = infer(sessions[1], x)
        ratios = np.abs(t_all[i] - t_all[j]) / d
        ref = float(ratios.mean())
        ref_se = float(ratios.std(ddof=1) / np.sqrt(len(ratios)))
        gap = lip.paired.teacher.value - ref
        print(f"  I(f) teacher over 2M pairs of all rows: {ref:.5f} ± {ref_se:.5f}; sample "
              f"estimate − that = {gap:+.5f} = {gap / lip.paired.teacher.se:+.2f} of its se")
        if not args.no_full_knn:
            t0 = time.perf_counter()
            dec = np.column_stack([t_all >= 0.5, s_all >= 0.5]).astype(np.float64)
            sampled, full = full_knn(x, z, sample, dec, args.k, args.queries)
            print(f"  kNN consistency on the same {min(args.queries, len(sample.rows)):,} queries, "
                  f"neighbours among the sample ({len(sample.rows):,} rows) vs all {args.rows:,} rows "
                  f"({time.perf_counter() - t0:.1f} s for the full reference):")
            for name, a, b in (("teacher", sampled[0], full[0]), ("student", sampled[1], full[1]),
                               ("delta", sampled[1] - sampled[0], full[1] - full[0])):
                print(f"    {name:<8} sample {a:+.5f}  all rows {b:+.5f}  difference {a - b:+.5f}")
    if args.adult:
        adult(args)


if __name__ == "__main__":
    main()
