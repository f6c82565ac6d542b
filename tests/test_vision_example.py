"""The shipped vision example through the gate (policy model.inputs.image): exit code, and every
group's size and confusion counts in report.json against a hand count from audit.parquet with
decisions from onnxruntime fed by this test's own Pillow + NumPy preprocessing."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "vision"


def preprocess(paths: list[str], spec: dict) -> np.ndarray:
    """decode -> RGB -> resize (W, H) bilinear -> (x / 255 - mean) / std -> NCHW, for the example's
    settings (RGB, NCHW, bilinear, the default scale): asserted below so the test cannot drift."""
    assert (spec.get("channels", "RGB"), spec.get("layout", "NCHW"), spec.get("resample", "bilinear")) == (
        "RGB", "NCHW", "bilinear") and "scale" not in spec
    h, w = spec["size"]
    pixels = np.stack([
        np.asarray(Image.open(EXAMPLE / p).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        for p in paths])
    x = (pixels.astype(np.float64) / 255 - np.asarray(spec["mean"])) / np.asarray(spec["std"])
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def decisions(model: str, paths: list[str], spec: dict) -> np.ndarray:
    session = ort.InferenceSession(str(EXAMPLE / model), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"pixel_values": preprocess(paths, spec)})
    return probabilities[:, 1] >= 0.5  # the policies' threshold and positive_column


@pytest.mark.parametrize("policy, student, exit_code", [
    ("policy.yaml", "student_pruned.onnx", 1),  # lowlight TPR falls: equalized odds fails
    ("policy-distilled.yaml", "student_distilled.onnx", 0),  # nothing fails (the README says why)
])
def test_vision_example_through_the_gate(run_cli, tmp_path, policy: str, student: str,
                                         exit_code: int) -> None:
    out = tmp_path / "report"
    r = run_cli("check", "--policy", EXAMPLE / policy, "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / student,
                "--out", out, "--no-mlflow")
    assert r.exit_code == exit_code, r.stderr
    report = r.report
    assert report["exit_code"] == exit_code

    settings = yaml.safe_load((EXAMPLE / policy).read_text())["model"]
    shared = settings["inputs"]["image"]
    own = settings.get("student", {}).get("inputs", {}).get("image", shared)
    audit = pq.read_table(EXAMPLE / "audit.parquet").to_pandas()
    paths = audit["image"].tolist()
    label = audit["is_circle"].to_numpy() == 1
    predicted = {"teacher": decisions("teacher.onnx", paths, shared),
                 "student": decisions(student, paths, own)}

    groupings = [("camera",), ("background",), ("camera", "background")]
    expected = {}
    for grouping in groupings:
        for values in itertools.product(*(sorted(audit[c].unique()) for c in grouping)):
            mask = np.logical_and.reduce([audit[c].to_numpy() == v
                                          for c, v in zip(grouping, values, strict=True)])
            expected[grouping, values] = {"n": int(mask.sum()), **{
                role: {"tp": int((mask & label & d).sum()), "fp": int((mask & ~label & d).sum()),
                       "tn": int((mask & ~label & ~d).sum()), "fn": int((mask & label & ~d).sum())}
                for role, d in predicted.items()}}
    got = {}
    for g in report["groups"]:
        grouping = tuple(g["grouping"])
        got[grouping, tuple(g["group"][c] for c in grouping)] = {
            "n": g["n"], **{role: {k: g[role][k] for k in ("tp", "fp", "tn", "fn")}
                            for role in ("teacher", "student")}}
    assert got == expected
    assert sum(v["n"] for (grouping, _), v in expected.items() if grouping == ("camera",)) == len(audit)
    assert report["inputs"]["student"]["image"]["size"] == own["size"]


def test_without_pillow_an_image_policy_is_exit_2(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    out = tmp_path / "report"
    r = run_cli("check", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_pruned.onnx",
                "--out", out, "--no-mlflow")
    assert r.exit_code == 2
    assert r.stderr == ("fairgate: error: image inputs (model.inputs.image) need Pillow, which is not "
                        "installed here: pip install 'fairgate[image]'\n")
    assert not out.exists()


def _groups(report: dict) -> list[tuple]:
    return [(g["grouping"], g["group"], g["n"], g["teacher"], g["student"]) for g in report["groups"]]


def test_image_bytes_in_memory_give_the_same_report(run_cli, tmp_path) -> None:
    """The Python API with a pyarrow Table whose image column holds the PNG bytes: the same
    groups and counts as the file audit set with paths."""
    import fairgate

    r = run_cli("check", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_pruned.onnx",
                "--out", tmp_path / "files", "--no-mlflow")
    table = pq.read_table(EXAMPLE / "audit.parquet")
    blobs = pa.array([(EXAMPLE / p).read_bytes() for p in table.column("image").to_pylist()], pa.binary())
    in_memory = table.set_column(table.schema.get_field_index("image"), "image", blobs)
    report = fairgate.check(EXAMPLE / "policy.yaml", in_memory, teacher=EXAMPLE / "teacher.onnx",
                            student=EXAMPLE / "student_pruned.onnx")
    assert report.exit_code == r.exit_code == 1
    assert _groups(report.to_dict()) == _groups(r.report)


def test_image_paths_in_memory_are_refused() -> None:
    """An in-memory audit set has no folder: its paths cannot be resolved (exit 3, row named)."""
    import fairgate
    from fairgate.errors import DataError

    table = pq.read_table(EXAMPLE / "audit.parquet")
    with pytest.raises(DataError) as e:
        fairgate.check(EXAMPLE / "policy.yaml", table, teacher=EXAMPLE / "teacher.onnx",
                       student=EXAMPLE / "student_pruned.onnx")
    assert e.value.exit_code == 3
    assert "image column 'image' holds file paths, but this audit set has no folder" in str(e.value)


def test_a_size_the_graph_contradicts_is_exit_3(run_cli, tmp_path) -> None:
    """policy.yaml's shared 32x32 for the 24x24 distilled student: refused before any row."""
    out = tmp_path / "report"
    r = run_cli("check", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_distilled.onnx",
                "--out", out, "--no-mlflow")
    assert r.exit_code == 3
    assert r.stderr == ("fairgate: error: student model student_distilled.onnx: graph input 'pixel_values' "
                        "has shape [N, 3, 24, 24], but model.inputs.image gives NCHW [N, 3, 32, 32] "
                        "(axis 2: 24 vs 32)\n")
    assert not out.exists()


def test_teacher_and_student_with_one_image_setting_decode_each_batch_once(
        run_cli, tmp_path, monkeypatch) -> None:
    import fairgate.inputs.image as image

    calls: list[int] = []
    real = image.decode_images

    def counting(values, *args, **kwargs):
        calls.append(len(values))
        return real(values, *args, **kwargs)

    monkeypatch.setattr(image, "decode_images", counting)
    r = run_cli("check", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
                "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_pruned.onnx",
                "--out", tmp_path / "r", "--no-mlflow", "--batch-size", "500")
    assert r.exit_code == 1, r.stderr
    rows = pq.read_metadata(EXAMPLE / "audit.parquet").num_rows
    assert sum(calls) == rows  # once per row, not once per model
    assert max(calls) <= 500


def test_image_batches_are_capped_by_decoded_bytes_and_the_report_does_not_change(
        run_cli, tmp_path, monkeypatch) -> None:
    import fairgate.inputs.image as image
    import fairgate.inputs.model as model

    spec = yaml.safe_load((EXAMPLE / "policy.yaml").read_text())["model"]["inputs"]["image"]
    h, w = spec["size"]
    per_row = 8 * h * w * 3  # float32 pixels and a cast copy, RGB
    args = ("check", "--policy", EXAMPLE / "policy.yaml", "--data", EXAMPLE / "audit.parquet",
            "--teacher", EXAMPLE / "teacher.onnx", "--student", EXAMPLE / "student_pruned.onnx",
            "--no-mlflow", "--format", "json")
    whole = run_cli(*args, "--out", tmp_path / "whole")
    calls: list[int] = []
    real = image.decode_images
    monkeypatch.setattr(image, "decode_images",
                        lambda values, *a, **k: calls.append(len(values)) or real(values, *a, **k))
    monkeypatch.setattr(model, "INPUT_BATCH_BYTES", 100 * per_row + per_row // 2)
    capped = run_cli(*args, "--out", tmp_path / "capped")
    assert (whole.exit_code, capped.exit_code) == (1, 1)
    assert max(calls) == 100 and len(calls) == -(-pq.read_metadata(EXAMPLE / "audit.parquet").num_rows // 100)
    for key in ("results", "groups", "verdict"):
        assert capped.report[key] == whole.report[key]
