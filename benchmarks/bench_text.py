"""Text models end to end: fairgate's tokenization + both models against the floor (issue 15).

The floor is what any gate of two text classifiers must do at least: tokenize every row with
each model's own ``tokenizers`` tokenizer (``encode_batch_fast``, the same truncation to
``max_length`` and padding to the longest row of the batch), build the arrays its graph
declares, and run both ONNX models with onnxruntime on the same batches of 65,536 rows,
nothing else. It runs in two straightforward ways, one model after the other with
onnxruntime's defaults, and both models at once in two threads (one intra-op thread each,
spinning off, as fairgate runs them); the faster is the floor. A reference row (not a
floor) uses ``encode_batch``, which also computes character offsets.
Target: ``fairgate.check`` within 1.3x the floor's wall time.

The models, tokenizers and sentences are the shipped text example (examples/text: a
2-layer transformer teacher, d = 64, and a 1-layer distilled student, d = 32). The audit set
is ``--rows`` sentences drawn with replacement (seeded) from its audit.parquet, as a pandas
DataFrame given to the Python API, with the example's policy without the counterfactual
probes (the floor does not re-run the models on substituted texts). ``--probes`` also times
the policy with the probes (sample_rows 5000), which is reported but not held to the target.

    python benchmarks/bench_text.py                       # 100k rows, 3 interleaved rounds
    python benchmarks/bench_text.py --rows 20000 --repeat 1 --probes

Every run is in this process after one warm-up of each (imports and first-run costs out of
the figures); wall times are the median of the rounds. Nothing is written into the
repository (the policy goes to a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "text"
BATCH_ROWS = 65_536  # fairgate's default --batch-size
# (model file, tokenizer file, max_length): as examples/text/policy.yaml declares them
MODELS = [("teacher.onnx", "teacher-tokenizer.json", 128),
          ("student.onnx", "student-tokenizer.json", 64)]
POLICY = """\
version: 1
audit: {label: toxic, positive_label: 1, sensitive: [gender], min_group_size: 100}
model:
  threshold: 0.5
  positive_column: 1
  teacher: {inputs: {text: {column: comment, tokenizer: teacher-tokenizer.json, max_length: 128}}}
  student: {inputs: {text: {column: comment, tokenizer: student-tokenizer.json, max_length: 64}}}
checks:
  - {id: dp, metric: demographic_parity_difference, max_increase: 0.02}
  - {id: eo, metric: equalized_odds_difference, max_increase: 0.02}
  - {id: accuracy, metric: accuracy, max_decrease: 0.02}
statistics: {resamples: 2000, seed: 0}
"""
PROBES = """\
individual:
  sample_rows: 5000
  counterfactual: {text: comment, file: terms.yaml}
checks:
  - {id: flips, metric: counterfactual_flip_rate, max_increase: 0.02}
"""


def audit_frame(rows: int) -> object:
    """``rows`` sentences of the example's audit set drawn with replacement (seeded)."""
    table = pq.read_table(EXAMPLE / "audit.parquet").to_pandas()
    pick = np.random.default_rng(0).integers(0, len(table), rows)
    return table.iloc[pick].reset_index(drop=True)


def policy_dir(probes: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fairgate-bench-text-"))
    for name in ("teacher-tokenizer.json", "student-tokenizer.json", "terms.yaml"):
        shutil.copy(EXAMPLE / name, folder / name)
    text = POLICY
    if probes:  # the probe section, and its check appended to the checks list
        head, checks = POLICY.split("checks:\n")
        extra_section, extra_check = PROBES.split("checks:\n")
        text = head + extra_section + "checks:\n" + checks.replace(
            "statistics:", extra_check + "statistics:")
    (folder / "policy.yaml").write_text(text, encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- the floor


def floor_parts(threaded: bool) -> list[tuple[object, object, list[str]]]:
    """Each model's tokenizer (truncating to its max_length) and session; ``threaded``: one
    intra-op thread and no spinning, so two models can share two cores."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    parts = []
    for model, tok_file, max_length in MODELS:
        tok = Tokenizer.from_file(str(EXAMPLE / tok_file))  # its json pads to the longest row
        tok.enable_truncation(max_length)
        opts = ort.SessionOptions()
        if threaded:
            opts.intra_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(EXAMPLE / model), opts,
                                    providers=["CPUExecutionProvider"])
        parts.append((tok, sess, [i.name for i in sess.get_inputs()]))
    return parts


def score(part: tuple[object, object, list[str]], texts: list[str], fast: bool) -> np.ndarray:
    """P(toxic) of one batch: encode, build only the arrays the graph declares, run."""
    tok, sess, names = part
    encode = tok.encode_batch_fast if fast else tok.encode_batch  # type: ignore[attr-defined]
    enc = encode(texts)
    field = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    feed = {n: np.array([getattr(e, field[n]) for e in enc], dtype=np.int64) for n in names}
    return sess.run(None, feed)[0][:, 1]  # type: ignore[attr-defined,no-any-return]


def floor(texts: list[str], threaded: bool, fast: bool = True) -> int:
    """Both models on every batch; returns the number of toxic decisions (a use of the
    scores, so nothing is optimized away). ``fast``: ``encode_batch_fast`` (no character
    offsets; the same ids and masks), else ``encode_batch``."""
    parts = floor_parts(threaded)
    flagged = 0
    pool = ThreadPoolExecutor(2) if threaded else None
    for start in range(0, len(texts), BATCH_ROWS):
        batch = texts[start:start + BATCH_ROWS]
        if pool is not None:
            outs = list(pool.map(score, parts, [batch] * len(parts), [fast] * len(parts)))
        else:
            outs = [score(p, batch, fast) for p in parts]
        flagged += sum(int((o >= 0.5).sum()) for o in outs)
    if pool is not None:
        pool.shutdown()
    return flagged


# --------------------------------------------------------------------------- fairgate


def gate(frame: object, folder: Path) -> str:
    import fairgate

    report = fairgate.check(folder / "policy.yaml", frame,
                            teacher=EXAMPLE / "teacher.onnx", student=EXAMPLE / "student.onnx")
    return str(report.verdict)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--probes", action="store_true",
                    help="also time the policy with the counterfactual text probes")
    args = ap.parse_args()

    import onnxruntime as ort
    import tokenizers

    print(f"fairgate text benchmark: {args.rows:,} rows, nproc={os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; onnxruntime {ort.__version__}, "
          f"tokenizers {tokenizers.__version__}")
    frame = audit_frame(args.rows)
    texts = frame["comment"].tolist()  # type: ignore[index]
    plain = policy_dir(probes=False)
    runs: dict[str, Callable[[], object]] = {
        "floor, sequential, onnxruntime defaults": lambda: floor(texts, threaded=False),
        "floor, two threads, no spinning": lambda: floor(texts, threaded=True),
        "ref: floor sequential, encode_batch": lambda: floor(texts, False, fast=False),
        "fairgate.check (DataFrame)": lambda: gate(frame, plain),
    }
    if args.probes:
        probes = policy_dir(probes=True)
        runs["fairgate.check + text probes (5,000 rows)"] = lambda: gate(frame, probes)
    for fn in runs.values():  # warm-up: imports, first session creation
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved, so load from other jobs hits all alike
        for name, fn in runs.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    floor_name = min((n for n in med if n.startswith("floor")), key=med.__getitem__)
    fairgate_runs = [n for n in med if n.startswith("fairgate")]
    print(f"\n{'run':<44} {'median s':>9} {'min s':>7} {'/ floor':>8}")
    for name, t in times.items():
        ratio = f"{med[name] / med[floor_name]:.2f}x" if name in fairgate_runs else ""
        print(f"{name:<44} {med[name]:>9.2f} {min(t):>7.2f} {ratio:>8}")
    print(f"\nfloor = {floor_name}; target: fairgate.check within 1.30x of it "
          f"({med['fairgate.check (DataFrame)'] / med[floor_name]:.2f}x); load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
