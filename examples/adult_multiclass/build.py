"""Build the multi-class UCI Adult example: audit.parquet, classes.txt and four ONNX models.

Run from the repository root (needs torch, scikit-learn, skl2onnx, onnx, onnxruntime,
pandas and pyarrow; none of these except the runtime ones are needed to *use* the
committed files)::

    python examples/adult_multiclass/build.py --adult-dir /work/shared/data/adult

The label is ``occupation`` (14 classes); ``sex`` and ``race`` are the sensitive
attributes. What it does, deterministically (fixed seeds, ``torch.manual_seed``, one
thread):

1. Reads ``adult.data`` (train, 32,561 rows) and ``adult.test`` (test, 16,281 rows; first
   line skipped, trailing "." stripped from the income labels), drops every row with a
   missing value ("?"): 30,162 train rows and 15,060 test rows remain. Column names get
   underscores instead of hyphens. This is the cleaning of examples/adult/build.py.
2. Writes the TEST split as ``audit.parquet`` (numeric columns int64, the rest string,
   zstd compressed; the same rows and columns as examples/adult/audit.parquet, which is
   checked). The models never see these rows during training.
3. Writes ``classes.txt``: the 14 occupation labels of the train split, sorted, one per
   line. Column k of every model's output is the k-th line.
4. Fits a scikit-learn ``ColumnTransformer`` on the TRAIN split: ``StandardScaler`` on
   age, education_num, capital_gain, capital_loss, hours_per_week and
   ``OneHotEncoder(handle_unknown="ignore")`` on workclass, marital_status, relationship,
   race, sex, native_country, income (every audit column except the label occupation,
   fnlwgt, and education, whose information education_num carries). It is exported with
   skl2onnx with one input per column (float [N, 1] for numerics, string [N, 1] for
   categoricals).
5. Trains torch MLPs on the transformed train matrix and exports each with
   ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch axis, softmax
   output). Each MLP graph is joined behind the preprocessing graph with
   ``onnx.compose.merge_models``, so every shipped model takes the twelve named per-column
   inputs and has ONE output, ``probabilities`` float [N, 14] (columns in classes.txt
   order).

   * ``teacher.onnx``: 2 hidden layers of 256 units, ReLU; cross-entropy, Adam
     (lr 1e-3), batch 256, 6 epochs.
   * ``student_distilled_T4.onnx``: 1 hidden layer of 32 units, ReLU; knowledge
     distillation from the teacher at temperature T = 4 with
     ``loss = alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T))
     + (1 - alpha) * CE(student, hard label)``, alpha = 0.7; Adam (lr 3e-3), batch 256,
     12 epochs.
   * ``student_nds.onnx``: the non-distilled student (NDS): the same 1x32 architecture,
     the same initial weights and the same batch order as the distilled student, trained
     on the hard labels only (cross-entropy, Adam lr 3e-3, batch 256, 12 epochs).
   * ``student_int8.onnx``: ``teacher.onnx`` with its Gemm layers rewritten as MatMul + Add
     (``quantize_dynamic`` quantizes MatMul, not Gemm), passed through
     ``quant_pre_process`` (shape inference only) and
     ``onnxruntime.quantization.quantize_dynamic(weight_type=QuantType.QInt8)``.

6. Checks the ONNX files against scikit-learn / torch (max abs difference < 1e-5 on the
   audit rows), then prints, for every model on audit.parquet: top-1 accuracy, top-1
   accuracy by sex (and by race), recall of each of the 14 classes, and the share of rows
   whose top-1 class differs from the teacher's. Those numbers are the ones in README.md.

Data: UCI Machine Learning Repository, "Adult" (Becker & Kohavi, 1996; Dua & Graff),
CC BY 4.0. See README.md for the attribution.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import os
import random
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import onnx
import onnx.compose
import onnx.numpy_helper
import onnx.version_converter
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from torch import nn

SEED = 0
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; loadable by onnxruntime >= 1.13

RAW_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip
COLUMNS = [c.replace("-", "_") for c in RAW_COLUMNS]
INT_COLUMNS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
LABEL = "occupation"
NUMERIC_FEATURES = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL_FEATURES = [
    "workclass", "marital_status", "relationship", "race", "sex", "native_country", "income",
]  # fmt: skip
INCOME_LABELS = {">50K", "<=50K"}
N_CLASSES = 14
OUTPUT_NAME = "probabilities"
MLP_INPUT_NAME = "features"
PRODUCER = "fairgate examples/adult_multiclass/build.py"

TEMPERATURE = 4.0
ALPHA = 0.7
ATOL = 1e-5

HERE = Path(__file__).resolve().parent
BINARY_AUDIT = HERE.parent / "adult" / "audit.parquet"


# --------------------------------------------------------------------------- data


def read_split(path: Path, *, test: bool) -> pd.DataFrame:
    df = pd.read_csv(
        path,
        header=None,
        names=RAW_COLUMNS,
        sep=",",
        skipinitialspace=True,
        na_values=["?"],
        keep_default_na=False,
        skiprows=1 if test else 0,
        skip_blank_lines=True,
        dtype=str,
    )
    df.columns = COLUMNS
    df = df.dropna(how="any").reset_index(drop=True)
    df["income"] = df["income"].str.rstrip(".")
    bad = set(df["income"].unique()) - INCOME_LABELS
    if bad:
        raise ValueError(f"unexpected income labels in {path}: {sorted(bad)}")
    for col in INT_COLUMNS:
        df[col] = df[col].astype("int64")
    for col in COLUMNS:
        if col not in INT_COLUMNS:
            df[col] = df[col].astype(object)
    return df


def write_audit(df: pd.DataFrame, path: Path) -> None:
    schema = pa.schema(
        [pa.field(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in COLUMNS]
    )
    table = pa.Table.from_pandas(df[COLUMNS], schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)  # no pandas/pyarrow version stamps
    pq.write_table(table, path, compression="zstd", compression_level=9)


def labels(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return df[LABEL].map(index).to_numpy(np.int64)


def ort_feed(df: pd.DataFrame) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {}
    for col in NUMERIC_FEATURES:
        feed[col] = df[col].to_numpy(np.float32).reshape(-1, 1)
    for col in CATEGORICAL_FEATURES:
        feed[col] = df[col].to_numpy(object).reshape(-1, 1)
    return feed


# --------------------------------------------------------------------------- preprocessing


def fit_preprocessor(train: pd.DataFrame) -> ColumnTransformer:
    ct = ColumnTransformer(
        [
            ("num", StandardScaler(), NUMERIC_FEATURES),
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
                CATEGORICAL_FEATURES,
            ),
        ],
        sparse_threshold=0.0,
    )
    ct.fit(train[NUMERIC_FEATURES + CATEGORICAL_FEATURES])
    return ct


def transform(ct: ColumnTransformer, df: pd.DataFrame) -> np.ndarray:
    return np.asarray(ct.transform(df[NUMERIC_FEATURES + CATEGORICAL_FEATURES]), dtype=np.float32)


def export_preprocessor(ct: ColumnTransformer) -> onnx.ModelProto:
    initial_types = [(c, FloatTensorType([None, 1])) for c in NUMERIC_FEATURES] + [
        (c, StringTensorType([None, 1])) for c in CATEGORICAL_FEATURES
    ]
    model = convert_sklearn(
        ct, initial_types=initial_types, target_opset={"": OPSET, "ai.onnx.ml": 1}
    )
    # skl2onnx emits the lowest opset its operators need; lift it to the MLPs' opset so
    # that the two graphs can be merged.
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version != OPSET:
            model = onnx.version_converter.convert_version(model, OPSET)
            break
    model.ir_version = IR_VERSION
    return model


# --------------------------------------------------------------------------- torch models


class MLP(nn.Module):
    def __init__(self, n_in: int, hidden: list[int], n_out: int = N_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # logits


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def train_ce(model, X, y, *, epochs, lr, gen, batch_size=256) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in batches(len(X), batch_size, gen):
            opt.zero_grad()
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()


def train_distilled(student, teacher_logits, X, y, *, epochs, lr, gen, batch_size=256) -> None:
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    T = TEMPERATURE
    for _ in range(epochs):
        for idx in batches(len(X), batch_size, gen):
            opt.zero_grad()
            s = student(X[idx])
            soft_t = F.softmax(teacher_logits[idx] / T, dim=1)
            kl = F.kl_div(F.log_softmax(s / T, dim=1), soft_t, reduction="batchmean")
            ce = F.cross_entropy(s, y[idx])
            loss = ALPHA * T * T * kl + (1.0 - ALPHA) * ce
            loss.backward()
            opt.step()
    student.eval()


def export_mlp(model: nn.Module, n_in: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is legacy; the torch.export-based
        # one needs onnxscript, which this build does not depend on.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            WithSoftmax(model).eval(),
            (torch.zeros(2, n_in),),
            buf,
            input_names=[MLP_INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={MLP_INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = IR_VERSION
    return proto


def merge(pre: onnx.ModelProto, mlp: onnx.ModelProto, doc: str) -> onnx.ModelProto:
    pre_out = pre.graph.output[0].name
    overlap = onnx.compose.check_overlapping_names(pre.graph, mlp.graph)
    prefix2 = "mlp/" if overlap else None
    merged = onnx.compose.merge_models(
        pre,
        mlp,
        io_map=[(pre_out, MLP_INPUT_NAME)],  # merge_models applies the prefixes itself
        prefix2=prefix2,
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=doc,
    )
    if prefix2:  # keep the public output name
        for node in merged.graph.node:
            for i, name in enumerate(node.output):
                if name == prefix2 + OUTPUT_NAME:
                    node.output[i] = OUTPUT_NAME
        merged.graph.output[0].name = OUTPUT_NAME
    # the default domain can come out twice (once spelled "ai.onnx"/unset); keep one entry
    opsets: dict[str, int] = {}
    for imp in merged.opset_import:
        dom = "" if imp.domain in ("", "ai.onnx") else imp.domain
        opsets[dom] = max(opsets.get(dom, 0), imp.version)
    del merged.opset_import[:]
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    merged.graph.name = "adult_multiclass_" + doc.split(":")[0].strip().replace(" ", "_")
    merged.doc_string = doc
    onnx.checker.check_model(merged, full_check=True)
    return merged


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, B, C; transB=1) with constant B, C as MatMul(A, B^T) + C."""
    model = copy.deepcopy(model)
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and attrs.get("transA", 0) == 0
            and node.input[1] in inits
            and len(node.input) == 3
            and node.input[2] in inits
        ):
            w = onnx.numpy_helper.to_array(inits[node.input[1]])
            if attrs.get("transB", 0):
                w = w.T
            w_name = node.input[1] + "_T" if attrs.get("transB", 0) else node.input[1]
            if w_name != node.input[1]:
                model.graph.initializer.append(
                    onnx.numpy_helper.from_array(np.ascontiguousarray(w), w_name)
                )
            mm_out = node.output[0] + "_matmul"
            new_nodes.append(
                onnx.helper.make_node(
                    "MatMul", [node.input[0], w_name], [mm_out], name=node.name + "_MatMul"
                )
            )
            new_nodes.append(
                onnx.helper.make_node(
                    "Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_Add"
                )
            )
        else:
            new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return model


def quantize_int8(teacher_onnx: onnx.ModelProto, out_path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "teacher_matmul.onnx"
        pre = Path(tmp) / "teacher_pre.onnx"
        onnx.save(gemm_to_matmul(teacher_onnx), src)
        # Shape inference only: the graph optimizer would fuse MatMul + Add back into Gemm,
        # and symbolic shape inference does not know the ai.onnx.ml operators.
        quant_pre_process(src, pre, skip_optimization=True, skip_symbolic_shape=True)
        quantize_dynamic(pre, out_path, weight_type=QuantType.QInt8)
    model = onnx.load(out_path)
    model.producer_name = PRODUCER + " (onnxruntime quantize_dynamic)"
    model.doc_string = "student_int8: teacher.onnx with dynamic int8 (QInt8) weight quantization"
    model.graph.name = "adult_multiclass_student_int8"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_path)


# --------------------------------------------------------------------------- evaluation


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def describe(path: Path) -> str:
    sess = session(path)
    lines = [f"{path.name} ({path.stat().st_size:,} bytes)"]
    for kind, items in (("in ", sess.get_inputs()), ("out", sess.get_outputs())):
        for a in items:
            lines.append(f"  {kind} {a.name}: {a.type} {a.shape}")
    return "\n".join(lines)


def evaluate(paths: dict[str, Path], audit: pd.DataFrame, classes: list[str]) -> str:
    y = labels(audit, classes)
    feed = ort_feed(audit)
    sex = audit["sex"].to_numpy(object)
    race = audit["race"].to_numpy(object)
    races = sorted(set(race))
    support = np.bincount(y, minlength=len(classes))
    top1: dict[str, np.ndarray] = {}
    for name, path in paths.items():
        (probs,) = session(path).run([OUTPUT_NAME], feed)
        if probs.shape != (len(audit), len(classes)) or not np.allclose(
            probs.sum(axis=1), 1, atol=1e-4
        ):
            raise AssertionError(f"{name}: bad probabilities {probs.shape}")
        top1[name] = probs.argmax(axis=1)

    def acc(name: str, mask: np.ndarray | None = None) -> float:
        hit = top1[name] == y
        return float(hit[mask].mean() if mask is not None else hit.mean())

    out = [
        f"audit rows: {len(audit)}; classes: {len(classes)}; "
        f"Female {int((sex == 'Female').sum())}, Male {int((sex == 'Male').sum())}",
        "majority-class accuracy (always "
        f"{classes[int(support.argmax())]}): {support.max() / len(audit):.4f}",
        "",
        "| model | top-1 accuracy | accuracy Female | accuracy Male | gap (M - F) "
        "| top-1 differs from teacher |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, path in paths.items():
        a_f, a_m = acc(name, sex == "Female"), acc(name, sex == "Male")
        differs = float((top1[name] != top1["teacher"]).mean())
        out.append(
            f"| `{path.name}` | {acc(name):.4f} | {a_f:.4f} | {a_m:.4f} | {a_m - a_f:+.4f} "
            f"| {differs:.4f} |"
        )
    out += [
        "",
        "| model | " + " | ".join(f"acc {r}" for r in races) + " |",
        "| --- | " + " | ".join("---:" for _ in races) + " |",
    ]
    for name, path in paths.items():
        cells = " | ".join(f"{acc(name, race == r):.4f}" for r in races)
        out.append(f"| `{path.name}` | {cells} |")
    out += [
        "",
        "race counts: " + ", ".join(f"{r} {int((race == r).sum())}" for r in races),
        "",
        "Recall per class (rows: classes in output order; audit support = true rows):",
        "",
        "| # | class | audit support | " + " | ".join(f"`{n}`" for n in paths) + " |",
        "| ---: | --- | ---: | " + " | ".join("---:" for _ in paths) + " |",
    ]
    for k, c in enumerate(classes):
        mask = y == k
        cells = " | ".join(
            f"{float((top1[n][mask] == k).mean()):.4f}" if mask.any() else "n/a" for n in paths
        )
        out.append(f"| {k} | {c} | {int(mask.sum())} | {cells} |")
    out += [
        "",
        "Predicted top-1 counts per class (same order):",
        "",
        "| model | " + " | ".join(str(k) for k in range(len(classes))) + " |",
        "| --- | " + " | ".join("---:" for _ in classes) + " |",
    ]
    for name, path in paths.items():
        counts = np.bincount(top1[name], minlength=len(classes))
        out.append(f"| `{path.name}` | " + " | ".join(str(int(c)) for c in counts) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def seed_everything() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--adult-dir", type=Path, required=True, help="folder with adult.data and adult.test"
    )
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=HERE,
        help="where to write the files (default: next to this script)",
    )
    args = ap.parse_args(argv)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seed_everything()

    train = read_split(args.adult_dir / "adult.data", test=False)
    test = read_split(args.adult_dir / "adult.test", test=True)
    print(f"train rows after dropping missing: {len(train)}; test rows: {len(test)}")
    write_audit(test, out / "audit.parquet")
    audit = pd.read_parquet(out / "audit.parquet")
    assert len(audit) == len(test)
    if BINARY_AUDIT.exists():  # the same rows as the binary example
        pd.testing.assert_frame_equal(audit, pd.read_parquet(BINARY_AUDIT))
        same = (out / "audit.parquet").read_bytes() == BINARY_AUDIT.read_bytes()
        print(f"audit.parquet equals examples/adult/audit.parquet (byte-identical: {same})")

    classes = sorted(train[LABEL].unique())
    assert len(classes) == N_CLASSES, classes
    unknown = set(audit[LABEL]) - set(classes)
    assert not unknown, f"audit labels not seen in training: {unknown}"
    (out / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")

    ct = fit_preprocessor(train)
    X_train = transform(ct, train)
    X_test = transform(ct, audit)
    n_in = X_train.shape[1]
    print(f"preprocessed feature width: {n_in}")
    pre_onnx = export_preprocessor(ct)
    pre_out = ort.InferenceSession(
        pre_onnx.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, ort_feed(audit))[0]
    err = float(np.abs(pre_out - X_test).max())
    assert err < ATOL, f"ONNX preprocessor differs from sklearn by {err}"

    Xt = torch.from_numpy(X_train)
    yt = torch.from_numpy(labels(train, classes))
    Xv = torch.from_numpy(X_test)

    torch.manual_seed(SEED)
    teacher = MLP(n_in, [256, 256])
    train_ce(teacher, Xt, yt, epochs=6, lr=1e-3, gen=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        teacher_logits = teacher(Xt)

    # The two students start from the same weights and see the same batches: only the
    # loss differs.
    torch.manual_seed(SEED + 1)
    student = MLP(n_in, [32])
    nds = copy.deepcopy(student)
    student_gen = torch.Generator().manual_seed(SEED + 1)
    train_distilled(student, teacher_logits, Xt, yt, epochs=12, lr=3e-3, gen=student_gen)
    nds_gen = torch.Generator().manual_seed(SEED + 1)
    train_ce(nds, Xt, yt, epochs=12, lr=3e-3, gen=nds_gen)

    models: dict[str, nn.Module] = {
        "teacher": teacher,
        "student_distilled_T4": student,
        "student_nds": nds,
    }
    docs = {
        "teacher": "teacher: MLP 2x256 ReLU, cross-entropy, UCI Adult train split, "
        "label occupation (14 classes)",
        "student_distilled_T4": "student_distilled_T4: MLP 1x32 ReLU distilled from the "
        f"teacher at T={TEMPERATURE:g}, alpha={ALPHA:g}",
        "student_nds": "student_nds: MLP 1x32 ReLU, cross-entropy on the hard labels only "
        "(non-distilled student)",
    }
    paths: dict[str, Path] = {}
    for name, model in models.items():
        merged = merge(pre_onnx, export_mlp(model, n_in), docs[name])
        path = out / f"{name}.onnx"
        onnx.save(merged, path)
        paths[name] = path
        # the merged graph must reproduce torch on the audit rows
        (probs,) = session(path).run([OUTPUT_NAME], ort_feed(audit))
        with torch.no_grad():
            ref = torch.softmax(model(Xv), dim=1).numpy()
        err = float(np.abs(probs - ref).max())
        assert err < ATOL, f"{name}: ONNX differs from torch by {err}"
        print(f"{name}: ONNX vs torch max abs difference {err:.2e}")

    quantize_int8(onnx.load(paths["teacher"]), out / "student_int8.onnx")
    paths["student_int8"] = out / "student_int8.onnx"
    ordered = ["teacher", "student_distilled_T4", "student_nds", "student_int8"]
    paths = {k: paths[k] for k in ordered}

    print()
    for path in [out / "audit.parquet", out / "classes.txt", *paths.values()]:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path.name:32s} {path.stat().st_size:>10,d} bytes  sha256 {digest}")
    print()
    for path in paths.values():
        print(describe(path))
    print()
    print("classes (output column order): " + ", ".join(classes))
    print()
    print(evaluate(paths, audit, classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
