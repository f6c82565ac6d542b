"""Image inputs end to end: ``fairgate.check`` on 10k PNG files against the floor of calling
Pillow and onnxruntime directly with the same preprocessing (issue 15).

The floor is what any gate on these images must do at least: read the audit set's path column,
decode every file with Pillow, convert to RGB, resize to each model's size, normalise
``(x / 255 - mean) / std`` into NCHW float32, and run both ONNX models of the shipped vision
example (examples/vision) on every row with onnxruntime; nothing else (no statistics, no
reports). It decodes each file once and shares it between the models when they read the same
size. It runs in four straightforward ways (decode in one thread or a pool of four;
onnxruntime's default session or fairgate's session options) and the fastest is the floor.
fairgate runs ``fairgate.check(policy, audit.parquet, teacher=..., student=...)``, reports
not written, statistics included. Target: fairgate within 1.3x the floor's wall time.

The breakdown times fairgate's decode_images alone on the same files and onnxruntime alone on
the decoded tensors, to show where the time goes.

    python benchmarks/bench_images.py                      # teacher + pruned student, 10k images
    python benchmarks/bench_images.py --student distilled  # the 24x24 student: two resizes
    python benchmarks/bench_images.py --images 2000 --rounds 1

Images (32x32 RGB PNG, seeded) are generated into a temporary folder and removed afterwards;
nothing is written into the repository. Rounds are interleaved (fairgate, floors, fairgate, ...)
so load from other jobs hits both alike. About two minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vision"
MEAN = np.asarray([0.415, 0.419, 0.436], np.float32)  # examples/vision/policy.yaml
STD = np.asarray([0.263, 0.258, 0.251], np.float32)
STUDENTS = {"pruned": ("student_pruned.onnx", 32), "distilled": ("student_distilled.onnx", 24)}

POLICY = """\
version: 1
audit:
  label: is_circle
  positive_label: 1
  sensitive: [camera]
model:
  inputs:
    image: {{column: image, size: [32, 32], mean: [0.415, 0.419, 0.436], std: [0.263, 0.258, 0.251]}}
  student:
    inputs:
      image: {{column: image, size: [{s}, {s}], mean: [0.415, 0.419, 0.436], std: [0.263, 0.258, 0.251]}}
  threshold: 0.5
  positive_column: 1
checks:
  - id: eo
    metric: equalized_odds_difference
    max_increase: 0.05
  - id: acc
    metric: accuracy
    max_decrease: 0.02
statistics:
  resamples: 2000
  seed: 0
"""


def generate(folder: Path, n: int) -> Path:
    """n seeded 32x32 pictures (a disc or a square on a noisy background) and audit.parquet."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:32, 0:32]
    circle = rng.random(n) < 1 / 3
    paths = []
    for i in range(n):
        img = rng.normal(rng.uniform(40, 200, 3), 10, (32, 32, 3))
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if circle[i] else (
            (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8))
        img[mask] = rng.uniform(0, 255, 3)
        name = f"images/{i:05d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
        paths.append(name)
    camera = np.where(rng.random(n) < 0.25, "lowlight", "daylight")
    pq.write_table(pa.table({"image": paths, "is_circle": circle.astype(np.int64), "camera": camera}),
                   folder / "audit.parquet")
    return folder / "audit.parquet"


# ----------------------------------------------------------------------------- the floor


def session(path: Path, fairgate_options: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if fairgate_options:  # as fairgate/inputs/model.py opens its sessions
        opts.enable_mem_pattern = False
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load(path: Path, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """One file decoded once, converted to RGB, resized to each size: uint8 [H, W, 3] each."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    return [np.asarray(rgb.resize((s, s), Image.Resampling.BILINEAR)) for s in sizes]


def normalised(pixels: np.ndarray) -> np.ndarray:
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))


def floor(data: Path, teacher: Path, student: Path, student_size: int, pooled: bool,
          fairgate_options: bool) -> float:
    """Wall seconds of read + decode + preprocess + both models, sessions opened inside."""
    start = time.perf_counter()
    sessions = [session(teacher, fairgate_options), session(student, fairgate_options)]
    paths = [data.parent / p for p in pq.read_table(data, columns=["image"]).column("image").to_pylist()]
    sizes = (32,) if student_size == 32 else (32, student_size)
    if pooled:
        with ThreadPoolExecutor(4) as pool:
            decoded = list(pool.map(lambda p: load(p, sizes), paths, chunksize=64))
    else:
        decoded = [load(p, sizes) for p in paths]
    inputs = [normalised(np.stack([d[k] for d in decoded])) for k in range(len(sizes))]
    for s, x in zip(sessions, (inputs[0], inputs[-1]), strict=True):
        s.run(None, {"pixel_values": x})
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- fairgate


def fairgate_check(policy: Path, data: Path, teacher: Path, student: Path) -> float:
    import fairgate

    start = time.perf_counter()
    fairgate.check(policy, data, teacher=teacher, student=student)
    return time.perf_counter() - start


def breakdown(data: Path, teacher: Path, student: Path, student_size: int) -> dict[str, float]:
    """decode_images alone (each model's settings) and onnxruntime alone, in seconds."""
    from fairgate.inputs.image import ImageSettings, decode_images

    column = pq.read_table(data, columns=["image"]).column("image")
    out = {}
    tensors = []
    for size in (32, student_size):
        settings = ImageSettings("image", (size, size), tuple(MEAN.tolist()), tuple(STD.tolist()))
        start = time.perf_counter()
        tensors.append(decode_images(column, settings, root=data.parent, offset=0))
        out[f"decode_images {size}x{size}"] = time.perf_counter() - start
    for name, model, x in (("teacher", teacher, tensors[0]), ("student", student, tensors[1])):
        s = session(model, True)
        start = time.perf_counter()
        s.run(None, {"pixel_values": x})
        out[f"onnxruntime {name}"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--student", choices=sorted(STUDENTS), default="pruned")
    args = parser.parse_args()
    student_file, size = STUDENTS[args.student]
    teacher, student = EXAMPLE / "teacher.onnx", EXAMPLE / student_file
    print(f"cores (nproc): {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}; "
          f"onnxruntime {ort.__version__}, Pillow {Image.__version__}")
    with tempfile.TemporaryDirectory(prefix="fairgate-bench-images-") as tmp:
        start = time.perf_counter()
        data = generate(Path(tmp), args.images)
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY.format(s=size))
        print(f"{args.images:,} PNG images 32x32 generated in {time.perf_counter() - start:.1f} s; "
              f"teacher.onnx + {student_file} ({size}x{size})")
        fairgate_check(policy, data, teacher, student)  # warm-up: imports, file cache
        floors: dict[str, Callable[[], float]] = {
            f"floor {'pool of 4' if pooled else 'one thread'}, "
            f"{'fairgate' if opts else 'default'} sessions":
                (lambda pooled=pooled, opts=opts: floor(data, teacher, student, size, pooled, opts))
            for pooled in (True, False) for opts in (True, False)}
        times: dict[str, list[float]] = {"fairgate.check": [], **{k: [] for k in floors}}
        for _ in range(args.rounds):
            times["fairgate.check"].append(fairgate_check(policy, data, teacher, student))
            for name, run in floors.items():
                times[name].append(run())
        print(f"\n{'wall seconds':46s} {'min':>7s} {'median':>7s}  (rounds: {args.rounds})")
        for name, ts in times.items():
            print(f"{name:46s} {min(ts):7.2f} {statistics.median(ts):7.2f}")
        best = min((k for k in floors), key=lambda k: min(times[k]))
        ratio = min(times["fairgate.check"]) / min(times[best])
        print(f"\nfloor = {best}")
        print(f"ratio fairgate.check / floor: {ratio:.2f}x (min of rounds; target <= 1.3x), "
              f"median {statistics.median(times['fairgate.check']) / statistics.median(times[best]):.2f}x")
        print("\nbreakdown (one run each):")
        for name, t in breakdown(data, teacher, student, size).items():
            print(f"  {name:30s} {t:6.2f} s")


if __name__ == "__main__":
    main()
