"""Text and tensor model inputs (policy model.inputs): tokenization as the tokenizers library
does it, inputs fed by name and type, wrong inputs refused naming the input, and the whole
gate on real ONNX text models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto
from tokenizers import Tokenizer

from fairgate.errors import DataError, ModelError
from fairgate.inputs.model import OnnxPredictor
from fairgate.inputs.outputs import ReadSettings
from fairgate.inputs.text import TensorSettings, TextEncoder, TextSettings, embedding_rows
from tests.text_fixtures import comments, tensor_model, text_model, train_tokenizer

READ = ReadSettings(positive_column=1, positive_label=1)


@pytest.fixture(scope="module")
def audit() -> pd.DataFrame:
    return comments(1200, seed=3)


@pytest.fixture(scope="module", params=[0, 1], ids=["pad id 0", "pad id 1"])
def tok(request: pytest.FixtureRequest, audit: pd.DataFrame) -> Tokenizer:
    return train_tokenizer(audit.comment.tolist(), pad_id=request.param)


def settings(tok: Tokenizer, max_length: int = 8, padding: str = "longest") -> TextSettings:
    return TextSettings("comment", "tok.json", tok.to_str(), max_length, padding)  # type: ignore[arg-type]


def reference(tok: Tokenizer, texts: list[str], max_length: int, padding: str) -> tuple[list, list]:
    """The tokenizers library called directly, configured as its documentation says."""
    t = Tokenizer.from_str(tok.to_str())
    t.enable_truncation(max_length)
    pad_token = "[PAD]" if t.token_to_id("[PAD]") is not None else "<pad>"
    t.enable_padding(pad_id=t.token_to_id(pad_token), pad_token=pad_token,
                     length=max_length if padding == "max_length" else None)
    enc = t.encode_batch(texts)
    return [e.ids for e in enc], [e.attention_mask for e in enc]


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_ids_and_masks_are_the_tokenizers_own(tok: Tokenizer, audit: pd.DataFrame,
                                              padding: str) -> None:
    texts = [*audit.comment.tolist()[:50], "good",
             "excellent great good fine poor awful late the work was report said young hello other"]
    enc = TextEncoder(settings(tok, 8, padding), "teacher").encode(pa.array(texts), 0)
    ids, mask = reference(tok, texts, 8, padding)
    assert enc["input_ids"].tolist() == ids
    assert enc["attention_mask"].tolist() == mask
    pad = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else tok.token_to_id("<pad>")
    short = texts.index("good")
    assert enc["input_ids"][short, -1] == pad and enc["attention_mask"][short, -1] == 0
    # truncation is the tokenizer's: the last kept token is the closing special token
    long = len(texts) - 1
    assert enc["input_ids"].shape[1] == 8
    closing = tok.token_to_id("[SEP]") if tok.token_to_id("[SEP]") is not None else tok.token_to_id("</s>")
    assert enc["input_ids"][long, 7] == closing
    assert enc["attention_mask"][long].sum() == 8


def test_the_tokenizers_padding_section_wins(audit: pd.DataFrame) -> None:
    tok = train_tokenizer(audit.comment.tolist(), pad_id=0)
    tok.enable_padding(pad_id=3, pad_token="[SEP]")  # an odd choice, but the tokenizer's own
    enc = TextEncoder(settings(tok), "teacher").encode(pa.array(["good", "good good good"]), 0)
    assert enc["input_ids"][0, -1] == 3 and enc["attention_mask"][0, -1] == 0


def test_a_tokenizer_without_a_pad_token_is_refused(audit: pd.DataFrame) -> None:
    from tokenizers import models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(audit.comment.tolist(), trainers.BpeTrainer(
        vocab_size=200, special_tokens=["[UNK]"], show_progress=False))
    with pytest.raises(DataError, match=r"tokenizer tok\.json: has no padding section and no "
                                        r"\[PAD\] or <pad> special token"):
        TextEncoder(settings(tok), "teacher model t.onnx")


def test_null_text_names_the_row(tok: Tokenizer) -> None:
    with pytest.raises(DataError, match=r"text column 'comment' has 1 missing value\(s\), first "
                                        r"at row 11"):
        TextEncoder(settings(tok), "t").encode(pa.array(["good", None]), 10)


def predictor(path: Path, s: TextSettings | TensorSettings) -> OnnxPredictor:
    return OnnxPredictor("teacher", path, None, READ, "refuse", s)


def test_predictor_decides_as_the_model_run_directly(tmp_path: Path, tok: Tokenizer,
                                                     audit: pd.DataFrame) -> None:
    path = text_model(tmp_path / "t.onnx", tok, id_type=TensorProto.INT32,
                      mask_type=TensorProto.INT32)
    p = predictor(path, settings(tok, 12))
    batch = pa.RecordBatch.from_pandas(audit.head(200), preserve_index=False)
    scores, decisions = p.predict(batch, 0)
    ids, mask = reference(tok, audit.comment.tolist()[:200], 12, "longest")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input_ids": np.array(ids, dtype=np.int32),
                           "attention_mask": np.array(mask, dtype=np.int32)})[0][:, 1]
    np.testing.assert_array_equal(scores, want)
    np.testing.assert_array_equal(decisions, want >= 0.5)


def test_token_type_ids_only_when_declared(tmp_path: Path, tok: Tokenizer) -> None:
    with_types = predictor(text_model(tmp_path / "a.onnx", tok,
                                      inputs=("input_ids", "attention_mask", "token_type_ids")),
                           settings(tok))
    without = predictor(text_model(tmp_path / "b.onnx", tok), settings(tok))
    batch = pa.RecordBatch.from_pydict({"comment": ["good work", "poor"]})
    assert set(with_types._feeds(batch, 0)) == {"input_ids", "attention_mask", "token_type_ids"}
    assert set(without._feeds(batch, 0)) == {"input_ids", "attention_mask"}


def _renamed_input(path: Path, old: str, new: str) -> Path:
    model = onnx.load(path)
    for i in model.graph.input:
        if i.name == old:
            i.name = new
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
    onnx.save(model, path)
    return path


def test_an_input_nothing_feeds_is_refused(tmp_path: Path, tok: Tokenizer) -> None:
    path = _renamed_input(text_model(tmp_path / "t.onnx", tok), "attention_mask", "pixel_mask")
    with pytest.raises(ModelError, match=r"graph input 'pixel_mask' is fed by nothing"):
        predictor(path, settings(tok))


def test_a_float_id_input_is_refused(tmp_path: Path, tok: Tokenizer) -> None:
    path = text_model(tmp_path / "t.onnx", tok, mask_type=TensorProto.FLOAT)
    with pytest.raises(ModelError, match=r"graph input 'attention_mask' is tensor\(float\), but "
                                         r"text gives integer"):
        predictor(path, settings(tok))


def test_a_vocabulary_larger_than_the_embedding_table_is_refused(tmp_path: Path,
                                                                 tok: Tokenizer) -> None:
    size = tok.get_vocab_size(with_added_tokens=True)
    path = text_model(tmp_path / "t.onnx", tok, vocab_rows=size - 5)
    assert embedding_rows(onnx.load(path), "input_ids") == size - 5  # the graph's own table
    with pytest.raises(ModelError, match=rf"has {size:,} tokens but the embedding table that "
                                         rf"graph input 'input_ids' indexes has {size - 5:,} rows"):
        predictor(path, settings(tok))


def test_a_fixed_sequence_length_needs_max_length_padding(tmp_path: Path, tok: Tokenizer) -> None:
    path = text_model(tmp_path / "t.onnx", tok)
    model = onnx.load(path)
    for i in model.graph.input:
        i.type.tensor_type.shape.dim[1].dim_value = 16
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"graph input 'input_ids' has a fixed sequence length "
                                         r"16; set model.inputs.text.max_length: 16 and padding"):
        predictor(path, settings(tok, 8))
    p = predictor(path, settings(tok, 16, "max_length"))
    assert p._feeds(pa.RecordBatch.from_pydict({"comment": ["good"]}), 0)["input_ids"].shape == (1, 16)


# ----------------------------------------------------------------------------- tensors


def test_tensor_column_is_fed_as_a_matrix(tmp_path: Path) -> None:
    path = tensor_model(tmp_path / "m.onnx", 3, elem=TensorProto.DOUBLE)
    p = predictor(path, TensorSettings("emb"))
    rows = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]
    for col in (pa.array(rows), pa.array(rows, pa.list_(pa.float32(), 3))):
        feeds = p._feeds(pa.RecordBatch.from_pydict({"emb": col}), 0)
        assert feeds["x"].dtype == np.float64
        np.testing.assert_array_equal(feeds["x"], np.array(rows, dtype=col.type.value_type.to_pandas_dtype()))


@pytest.mark.parametrize("rows, message", [
    ([[1.0, 2.0, 3.0], [1.0, 2.0]], r"row 8 has 2 values, the graph's width is 3"),
    ([[1.0, 2.0, 3.0], None], r"row 8 is missing"),
    ([[1.0, 2.0, 3.0], [1.0, None, 3.0]], r"row 8 has a missing value"),
    ([[1.0, 2.0, 3.0], [1.0, float("nan"), 3.0]], r"row 8 has a NaN value"),
])
def test_bad_tensor_rows_are_refused_naming_the_row(tmp_path: Path, rows: list,
                                                    message: str) -> None:
    p = predictor(tensor_model(tmp_path / "m.onnx", 3), TensorSettings("emb"))
    with pytest.raises(DataError, match=rf"tensor column 'emb': {message}"):
        p._feeds(pa.RecordBatch.from_pydict({"emb": pa.array(rows)}), 7)


def test_tensor_input_must_name_a_graph_input(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model.inputs.tensor.input 'y' is not a graph input"):
        predictor(tensor_model(tmp_path / "m.onnx", 3), TensorSettings("emb", "y"))


# ----------------------------------------------------------------------------- the gate


POLICY = """\
version: 1
audit: {{label: y, positive_label: 1, sensitive: [sex]}}
model:
  positive_column: 1
  inputs:
    text: {{column: comment, tokenizer: tok.json, max_length: {max_length}{padding}}}
checks:
  - {{id: dp, metric: demographic_parity_difference, max_increase: 0.05}}
  - {{id: acc, metric: accuracy, max_decrease: 0.05}}
statistics: {{resamples: 50}}
"""


@pytest.fixture(scope="module")
def gate_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("text-gate")
    df = comments(1500, seed=5)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / "audit.parquet")
    tok = train_tokenizer(df.comment.tolist(), pad_id=1)
    tok.save(str(d / "tok.json"))
    text_model(d / "t.onnx", tok)
    text_model(d / "s.onnx", tok, seed=1, noise=0.3)
    (d / "policy.yaml").write_text(POLICY.format(max_length=32, padding=", padding: max_length"))
    return d


def _check(run_cli, d: Path, *extra: str):
    return run_cli("check", "--policy", d / "policy.yaml", "--data", d / "audit.parquet",
                   "--teacher", d / "t.onnx", "--student", d / "s.onnx", "--no-mlflow", *extra)


def test_gate_counts_what_the_models_decide(run_cli, gate_files: Path) -> None:
    d = gate_files
    r = _check(run_cli, d)
    assert r.exit_code in (0, 1), r.stderr
    report = r.report
    df = pd.read_parquet(d / "audit.parquet")
    tok = Tokenizer.from_file(str(d / "tok.json"))
    ids, mask = reference(tok, df.comment.tolist(), 32, "max_length")
    feeds = {"input_ids": np.array(ids, dtype=np.int64), "attention_mask": np.array(mask)}
    decisions = {m: ort.InferenceSession(str(d / f"{m}.onnx"), providers=[
        "CPUExecutionProvider"]).run(None, feeds)[0][:, 1] >= 0.5 for m in ("t", "s")}
    y = df.y.to_numpy() == 1
    acc = {m: float((decisions[m] == y).mean()) for m in decisions}
    kpi = next(k for k in report["kpis"] if k["metric"] == "accuracy" and k["grouping"] == [])
    assert kpi["teacher"] == pytest.approx(acc["t"], abs=1e-11)
    assert kpi["student"] == pytest.approx(acc["s"], abs=1e-11)
    text = report["inputs"]["teacher"]["text"]
    import hashlib

    assert text["tokenizer_sha256"] == hashlib.sha256((d / "tok.json").read_bytes()).hexdigest()
    assert text["truncation"]["max_length"] == 32
    assert text["padding"] == {"to": "max_length", "pad_id": 1, "pad_token": "<pad>",
                               "direction": "right"}
    assert "tok.json (sha256 " in r.stdout


@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_report_does_not_depend_on_the_batch_size(run_cli, gate_files: Path, tmp_path: Path,
                                                  padding: str) -> None:
    """Padding to the longest row changes a row's padding with its batch; the masked mean of
    these models ignores it, so the report is the same too."""
    (tmp_path / "tok.json").write_bytes((gate_files / "tok.json").read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(max_length=32, padding=f", padding: {padding}"))

    def body(out: str, batch: str) -> dict:
        r = run_cli("check", "--policy", policy, "--data", gate_files / "audit.parquet",
                    "--teacher", gate_files / "t.onnx", "--student", gate_files / "s.onnx",
                    "--no-mlflow", "--out", str(tmp_path / out), "--batch-size", batch)
        assert r.exit_code in (0, 1), r.stderr
        report = json.loads((tmp_path / out / "report.json").read_text())
        report.pop("run")
        return report

    assert body("a", "65536") == body("b", "97") == body("c", "1")


def test_python_api_runs_a_text_policy_on_a_dataframe(gate_files: Path) -> None:
    import fairgate

    df = pd.read_parquet(gate_files / "audit.parquet")
    api = fairgate.check(gate_files / "policy.yaml", df, teacher=gate_files / "t.onnx",
                         student=gate_files / "s.onnx")
    assert api.inputs["student"]["text"]["column"] == "comment"
    assert api.inputs["data"]["rows"] == len(df)


def test_missing_tokenizer_is_a_policy_error(run_cli, gate_files: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text((gate_files / "policy.yaml").read_text().replace("tok.json", "nope.json"))
    r = run_cli("check", "--policy", policy, "--data", gate_files / "audit.parquet",
                "--teacher", gate_files / "t.onnx", "--student", gate_files / "s.onnx")
    assert r.exit_code == 2
    assert "model.inputs.text.tokenizer" in r.stderr and "nope.json" in r.stderr
    assert "tokenizer not found" in r.stderr


def test_a_tokenizer_that_is_not_one_exits_3(run_cli, gate_files: Path, tmp_path: Path) -> None:
    (tmp_path / "tok.json").write_text('{"not": "a tokenizer"}')
    policy = tmp_path / "p.yaml"
    policy.write_text((gate_files / "policy.yaml").read_text())
    r = run_cli("check", "--policy", policy, "--data", gate_files / "audit.parquet",
                "--teacher", gate_files / "t.onnx", "--student", gate_files / "s.onnx")
    assert r.exit_code == 3
    assert "tokenizer tok.json: not a Hugging Face tokenizer.json" in r.stderr


def test_counterfactual_text_probe_flip_rates(run_cli, gate_files: Path, tmp_path: Path) -> None:
    """Every row is sampled (sample_rows > rows): each substitution's flip rates equal the
    models run directly on texts rewritten word by word (the fixture's texts are words
    separated by single spaces)."""
    d = gate_files
    policy = tmp_path / "policy.yaml"
    (tmp_path / "tok.json").write_bytes((d / "tok.json").read_bytes())
    policy.write_text((d / "policy.yaml").read_text().replace(
        "statistics:", "  - {id: cf, metric: counterfactual_flip_rate, max_increase: 0.05}\n"
        "individual:\n  sample_rows: 5000\n  counterfactual:\n    text: comment\n"
        "    swap: {he: she}\nstatistics:"))
    r = run_cli("check", "--policy", policy, "--data", d / "audit.parquet", "--teacher",
                d / "t.onnx", "--student", d / "s.onnx", "--no-mlflow")
    assert r.exit_code in (0, 1), r.stderr
    cf = r.report["individual"]["counterfactual"]
    df = pd.read_parquet(d / "audit.parquet")
    tok = Tokenizer.from_file(str(d / "tok.json"))

    def decide(model: str, texts: list[str]) -> np.ndarray:
        ids, mask = reference(tok, texts, 32, "max_length")
        sess = ort.InferenceSession(str(d / f"{model}.onnx"), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input_ids": np.array(ids, dtype=np.int64),
                               "attention_mask": np.array(mask, dtype=np.int64)})[0][:, 1] >= 0.5

    def rewrite(text: str, a: str, b: str) -> str:
        words = text.split(" ")
        return " ".join((b.capitalize() if w == a.capitalize() else b) if w.lower() == a else w
                        for w in words)

    texts = df.comment.tolist()
    by = {(s["from"], s["to"]): s for s in cf["substitutions"]}
    any_flip = {m: np.zeros(len(texts), dtype=bool) for m in ("t", "s")}
    holds_any = np.zeros(len(texts), dtype=bool)
    for a, b in (("he", "she"), ("she", "he")):
        rows = [i for i, t in enumerate(texts) if a in t.lower().split(" ")]
        holds_any[rows] = True
        assert by[(a, b)]["rows"] == len(rows)
        for m, key in (("t", "teacher"), ("s", "student")):
            flipped = decide(m, [texts[i] for i in rows]) != decide(m, [rewrite(texts[i], a, b)
                                                                        for i in rows])
            any_flip[m][np.array(rows)[flipped]] = True
            assert by[(a, b)][key] == pytest.approx(flipped.mean(), abs=1e-11)
    assert cf["rows_with_terms"] == int(holds_any.sum())
    value = next(x for x in r.report["results"] if x["check"] == "cf")
    assert value["teacher"] == pytest.approx(any_flip["t"][holds_any].mean(), abs=1e-11)
    assert value["student"] == pytest.approx(any_flip["s"][holds_any].mean(), abs=1e-11)
    assert "Counterfactual text probes on 'comment'" in r.stdout
    assert "he → she" in (r.out / "report.md").read_text()


def test_without_tokenizers_a_text_policy_is_a_usage_error(tok: Tokenizer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fairgate.errors import UsageError

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if it were not installed
    with pytest.raises(UsageError, match=r"pip install 'fairgate\[text\]'") as e:
        TextEncoder(settings(tok), "teacher")
    assert e.value.exit_code == 2


def test_wrong_tokenizer_for_the_model_exits_3(run_cli, gate_files: Path, tmp_path: Path) -> None:
    big = train_tokenizer([*comments(400, seed=9).comment.tolist(), "zzz yyy xxx www vvv"],
                          pad_id=1, vocab_size=400)
    big.save(str(tmp_path / "tok.json"))
    policy = tmp_path / "p.yaml"
    policy.write_text((gate_files / "policy.yaml").read_text())
    r = run_cli("check", "--policy", policy, "--data", gate_files / "audit.parquet",
                "--teacher", gate_files / "t.onnx", "--student", gate_files / "s.onnx",
                "--no-mlflow")
    rows = onnx.load(gate_files / "t.onnx").graph.initializer[0].dims[0]
    assert big.get_vocab_size(with_added_tokens=True) > rows
    assert r.exit_code == 3
    assert "rows; this tokenizer is not the model's" in r.stderr
    assert "graph input 'input_ids'" in r.stderr and "teacher model t.onnx" in r.stderr


def test_distance_metrics_need_features_with_text_models(run_cli, gate_files: Path,
                                                         tmp_path: Path) -> None:
    (tmp_path / "tok.json").write_bytes((gate_files / "tok.json").read_bytes())
    policy = tmp_path / "p.yaml"
    policy.write_text((gate_files / "policy.yaml").read_text().replace(
        "statistics:", "  - {id: lip, metric: individual_lipschitz, max_increase: 0.05}\n"
        "individual: {sample_rows: 100}\nstatistics:"))
    r = run_cli("check", "--policy", policy, "--data", gate_files / "audit.parquet",
                "--teacher", gate_files / "t.onnx", "--student", gate_files / "s.onnx",
                "--no-mlflow")
    assert r.exit_code == 2
    assert "check 'lip': the models read text" in r.stderr


def test_teacher_and_student_with_one_tokenizer_share_the_encoding(tmp_path: Path,
                                                                    tok: Tokenizer) -> None:
    from fairgate.engine.batch import _shared_matrix
    from fairgate.inputs.text import Encoded

    t = predictor(text_model(tmp_path / "t.onnx", tok), settings(tok, 12))
    s = predictor(text_model(tmp_path / "s.onnx", tok, seed=1), settings(tok, 12))
    other = predictor(tmp_path / "s.onnx", settings(tok, 10))
    batch = pa.RecordBatch.from_pydict({"comment": ["good work", "he was late"]})
    shared = _shared_matrix(s, t, batch, 0)
    assert isinstance(shared["matrix"], Encoded)
    assert _shared_matrix(other, t, batch, 0) == {}
    fed = t._feeds(batch, 0, shared["matrix"])
    own = t._feeds(batch, 0)
    assert {k: v.tolist() for k, v in fed.items()} == {k: v.tolist() for k, v in own.items()}
