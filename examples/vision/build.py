"""Build the shipped vision example: synthetic 32x32 images, a CNN teacher, two students.

Run from the repository root (needs torch, numpy, pillow, pyarrow, onnx and onnxruntime; only
the runtime ones are needed to *use* the committed files)::

    python examples/vision/build.py     # about 75 s of CPU on one torch thread

What it does, deterministically (fixed seeds, ``torch.manual_seed``, one torch thread; a
rebuild gives byte-identical files):

1. Draws synthetic pictures of one filled shape (circle, square or triangle, random colour,
   size, position and rotation) on a plain or striped background, taken by one of two
   simulated cameras: ``daylight`` (75 %: normal exposure, little sensor noise) or
   ``lowlight`` (25 %: 30 to 45 % of the exposure, a blue cast, more noise). The task: is the
   shape a circle (``is_circle`` = 1)? The camera and the background are the subgroup
   attributes the gate audits. These are drawings, not people: the groups stand in for the
   kind of acquisition condition (a device, a site, the light) a real audit set records.
2. Trains on 6,000 such pictures (seed 1, in memory, not shipped) and writes 1,200 others
   (seed 2) as the audit set: ``images/00000.png`` ... (RGB PNG) and ``audit.parquet`` with
   the relative path in ``image`` and the columns ``is_circle``, ``shape``, ``camera``,
   ``background``.
3. Models, each exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, input
   ``pixel_values`` float32 [N, 3, H, W] with a dynamic batch axis, output ``probabilities``
   float32 [N, 2], a softmax; column 1 is P(circle)). Inputs are preprocessed exactly as
   fairgate's ``model.inputs.image`` does: uint8 -> ``(x / 255 - mean) / std`` per channel,
   with the MEAN and STD below (the training set's, rounded to 3 decimals).

   * ``teacher.onnx``: three blocks of 3x3 conv, batch norm, ReLU and 2x2 max pooling (16,
     32, 32 channels), a linear layer of 64 units (ReLU), a linear layer to 2; cross-entropy,
     Adam (lr 3e-3 decaying linearly to 0), batch 128, 10 epochs; 32x32 inputs.
   * ``student_pruned.onnx``: a copy of the teacher with 80 % of its conv and linear weights
     zeroed (``torch.nn.utils.prune.global_unstructured``, L1 magnitude), fine-tuned one epoch
     (Adam, lr 1e-3 decaying to 0) with the masks in place, masks made permanent. Same input
     as the teacher.
   * ``student_distilled.onnx``: a smaller CNN (three blocks of 12, 24, 24 channels, a linear
     layer to 2) on 24x24 inputs (Pillow bilinear resize of the 32x32 picture, as its policy
     says), distilled from the teacher at temperature T = 4:
     ``0.7 * T**2 * KL(teacher/T || student/T) + 0.3 * CE(student, label)``; Adam (lr 3e-3
     decaying to 0), batch 128, 12 epochs.

4. Checks each ONNX file against torch on the audit images, then prints accuracy and TPR/FPR
   per camera for every model at threshold 0.5 (the figures in README.md).
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils import prune

HERE = Path(__file__).resolve().parent
SIZE = 32  # pictures are SIZE x SIZE RGB
STUDENT_SIZE = 24  # the distilled student's input
N_TRAIN, N_AUDIT = 6000, 1200
SHAPES = ("circle", "square", "triangle")
LOWLIGHT_SHARE = 0.25
MEAN = (0.415, 0.419, 0.436)  # the training pictures' per-channel mean of x / 255, rounded
STD = (0.263, 0.258, 0.251)  # ... and standard deviation
INPUT, OUTPUT = "pixel_values", "probabilities"


# ----------------------------------------------------------------------------- the pictures


def draw(rng: np.random.Generator, shape: str, camera: str, background: str) -> np.ndarray:
    """One SIZE x SIZE RGB picture as uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    bg = rng.uniform(30, 225, 3)
    img = np.broadcast_to(bg, (SIZE, SIZE, 3)).copy()
    if background == "striped":
        other = rng.uniform(30, 225, 3)
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(3, 7)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        img[(np.floor(phase) % 2) == 1] = other
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - bg).mean() < 70:  # the shape must stand out from the background
        colour = rng.uniform(0, 255, 3)
    r = rng.uniform(7, 11)
    cy, cx = rng.uniform(r + 1, SIZE - r - 1, 2)
    theta = rng.uniform(0, 2 * math.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)  # rotated coordinates
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    if shape == "circle":
        mask = u**2 + v**2 <= r**2
    elif shape == "square":
        half = r * 0.8
        mask = (np.abs(u) <= half) & (np.abs(v) <= half)
    else:  # equilateral triangle inscribed in the circle of radius r
        mask = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = theta + k * 2 * math.pi / 3
            mask &= (dx * math.cos(a) + dy * math.sin(a)) <= r / 2
    img[mask] = colour
    if camera == "daylight":
        img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 6, img.shape)
    else:  # a third of the exposure, a blue cast, strong sensor noise
        img = img * rng.uniform(0.3, 0.45) * np.array([0.8, 0.9, 1.2]) + rng.normal(0, 10, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_set(n: int, seed: int) -> tuple[np.ndarray, dict[str, list]]:
    """n pictures and their columns (label, shape, camera, background)."""
    rng = np.random.default_rng(seed)
    shapes = rng.choice(SHAPES, n)
    cameras = np.where(rng.random(n) < LOWLIGHT_SHARE, "lowlight", "daylight")
    backgrounds = rng.choice(["plain", "striped"], n)
    pixels = np.stack([draw(rng, s, c, b) for s, c, b in zip(shapes, cameras, backgrounds, strict=True)])
    columns = {"is_circle": [int(s == "circle") for s in shapes], "shape": shapes.tolist(),
               "camera": cameras.tolist(), "background": backgrounds.tolist()}
    return pixels, columns


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pillow bilinear resize of each picture: what fairgate's image input does."""
    if size == pixels.shape[1]:
        return pixels
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR))
                     for p in pixels])


def tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], (x / 255 - mean) / std: the policy's pipeline."""
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- the models


class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *conv_block(3, 16), *conv_block(16, 32), *conv_block(32, 32), nn.Flatten(),
            nn.Linear(32 * (SIZE // 8) ** 2, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


class SmallStudent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *conv_block(3, 12), *conv_block(12, 24), *conv_block(24, 24), nn.Flatten(),
            nn.Linear(24 * (STUDENT_SIZE // 8) ** 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def batches(n: int, size: int, seed: int):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for i in range(0, n, size):
        yield order[i:i + size]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
          teacher: nn.Module | None = None, x_teacher: torch.Tensor | None = None,
          temperature: float = 4.0, alpha: float = 0.7) -> None:
    """Cross-entropy, or distillation from ``teacher`` (fed ``x_teacher``) when given."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / 128)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)  # linear to 0
    model.train()
    for epoch in range(epochs):
        for idx in batches(len(x), 128, seed * 100 + epoch):
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            if teacher is not None:
                assert x_teacher is not None
                with torch.no_grad():
                    soft = F.softmax(teacher(x_teacher[idx]) / temperature, dim=1)
                kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
                loss = alpha * temperature**2 * kl + (1 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    model.eval()


def pruned(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, amount: float) -> nn.Module:
    model = copy.deepcopy(teacher)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    train(model, x, y, epochs=1, lr=1e-3, seed=3)
    for m, name in params:
        prune.remove(m, name)
    return model


def export(model: nn.Module, size: int, path: Path) -> None:
    buf = io.BytesIO()
    torch.onnx.export(WithSoftmax(model).eval(), (torch.zeros(2, 3, size, size),), buf,
                      dynamo=False, opset_version=17, input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}})
    path.write_bytes(buf.getvalue())


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: x})[0]


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    args = parser.parse_args()
    out: Path = args.out
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()

    train_pixels, train_cols = make_set(N_TRAIN, seed=1)
    audit_pixels, audit_cols = make_set(N_AUDIT, seed=2)
    x01 = train_pixels.astype(np.float64) / 255
    print("training set mean", x01.mean(axis=(0, 1, 2)).round(3), "std", x01.std(axis=(0, 1, 2)).round(3))

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    paths = []
    for i, p in enumerate(audit_pixels):
        name = f"images/{i:05d}.png"
        Image.fromarray(p).save(out / name, "PNG", optimize=True)
        paths.append(name)
    table = pa.table({"image": paths, **{k: pa.array(v) for k, v in audit_cols.items()}})
    pq.write_table(table, out / "audit.parquet", compression="zstd")

    x, y = tensor(train_pixels), torch.tensor(train_cols["is_circle"])
    x_small = tensor(resized(train_pixels, STUDENT_SIZE))
    teacher = Teacher()
    train(teacher, x, y, epochs=10, lr=3e-3, seed=1)
    pruned_student = pruned(teacher, x, y, amount=0.8)
    torch.manual_seed(0)
    distilled = SmallStudent()
    train(distilled, x_small, y, epochs=12, lr=3e-3, seed=2, teacher=teacher, x_teacher=x)

    models = {"teacher.onnx": (teacher, SIZE), "student_pruned.onnx": (pruned_student, SIZE),
              "student_distilled.onnx": (distilled, STUDENT_SIZE)}
    label = np.asarray(audit_cols["is_circle"])
    camera = np.asarray(audit_cols["camera"])
    print(f"audit set: {N_AUDIT} rows, {int(label.sum())} circles, "
          f"{int((camera == 'lowlight').sum())} lowlight")
    for name, (model, size) in models.items():
        export(model, size, out / name)
        xa = tensor(resized(audit_pixels, size))
        with torch.no_grad():
            ref = torch.softmax(model(xa), dim=1).numpy()
        got = onnx_probabilities(out / name, xa.numpy())
        assert np.abs(got - ref).max() < 1e-4, f"{name}: ONNX differs from torch"
        decision = got[:, 1] >= 0.5
        line = [f"{name:24s} accuracy {np.mean(decision == label):.3f}"]
        for cam in ("daylight", "lowlight"):
            m = camera == cam
            tpr = decision[m & (label == 1)].mean()
            fpr = decision[m & (label == 0)].mean()
            line.append(f"{cam}: acc {np.mean(decision[m] == label[m]):.3f} TPR {tpr:.3f} FPR {fpr:.3f}")
        print("  ".join(line))
    print(f"built in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
