"""The shipped text example (examples/text) through the gate, against hand computations.

The oracle runs both ONNX models itself: ``tokenizers`` (each model's tokenizer.json, the
policy's max_length, one ``encode_batch`` over all rows, so padded otherwise than fairgate's
batches) and onnxruntime, inputs fed by the names the graph declares; the teacher's logits
through a numpy softmax. Per-group counts come from the parquet with pandas; the
counterfactual probes from its own substitution of the terms.yaml pairs (a row per pair
found, whole words, first letter's case kept), never from fairgate's.
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml
from tokenizers import Tokenizer

import fairgate
from tests.conftest import ROOT

TEXT = ROOT / "examples" / "text"
# (model, tokenizer, max_length) as examples/text/policy.yaml declares them
MODELS = {"teacher": ("teacher.onnx", "teacher-tokenizer.json", 128),
          "student": ("student.onnx", "student-tokenizer.json", 64)}


def p_toxic(role: str, texts: list[str]) -> np.ndarray:
    model, tokenizer, max_length = MODELS[role]
    tok = Tokenizer.from_file(str(TEXT / tokenizer))
    tok.enable_truncation(max_length)
    enc = tok.encode_batch(texts)
    arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
              "token_type_ids": [e.type_ids for e in enc]}
    session = ort.InferenceSession(str(TEXT / model), providers=["CPUExecutionProvider"])
    feed = {i.name: np.array(arrays[i.name], dtype=np.int64) for i in session.get_inputs()}
    (out,) = session.run(None, feed)
    if session.get_outputs()[0].name == "logits":
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out = out / out.sum(axis=1, keepdims=True)
    return np.asarray(out[:, 1], dtype=np.float64)


def decisions(role: str, texts: list[str]) -> np.ndarray:
    p = p_toxic(role, texts)
    # no decision may hang on rounding: the oracle and fairgate pad differently
    assert np.abs(p - 0.5).min() > 1e-5, role
    return p >= 0.5


def probes(texts: list[str]) -> list[tuple[str, np.ndarray, list[str]]]:
    """Per substitution a -> b (both directions of each terms.yaml pair): the rows holding
    ``a`` and their texts with ``a`` replaced."""
    pairs = yaml.safe_load((TEXT / "terms.yaml").read_text(encoding="utf-8"))["swap"]
    out = []
    for a, b in [p for x, y in pairs.items() for p in ((x, y), (y, x))]:
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(a)}(?![A-Za-z])", re.IGNORECASE)

        def repl(m: re.Match[str], b: str = b) -> str:
            return b[0].upper() + b[1:] if m.group(0)[0].isupper() else b

        rows = np.array([i for i, t in enumerate(texts) if pattern.search(t)], dtype=np.int64)
        out.append((f"{a} → {b}", rows, [pattern.sub(repl, texts[i]) for i in rows]))
    return out


@pytest.fixture(scope="module")
def gated() -> tuple[dict, pd.DataFrame]:
    report = fairgate.check(TEXT / "policy.yaml", TEXT / "audit.parquet",
                            teacher=TEXT / "teacher.onnx", student=TEXT / "student.onnx")
    return report.to_dict(), pd.read_parquet(TEXT / "audit.parquet")


def test_group_counts_match_a_hand_count(gated: tuple[dict, pd.DataFrame]) -> None:
    report, audit = gated
    texts = audit["comment"].tolist()
    y = audit["toxic"].to_numpy() == 1
    rows = {g["group"]["gender"]: g for g in report["groups"] if g["grouping"] == ["gender"]}
    assert sorted(rows) == sorted(audit["gender"].unique())
    for role in ("teacher", "student"):
        d = decisions(role, texts)
        for gender, row in rows.items():
            m = (audit["gender"] == gender).to_numpy()
            assert row["n"] == int(m.sum())
            want = {"tp": d & y, "fp": d & ~y, "tn": ~d & ~y, "fn": ~d & y}
            assert {k: row[role][k] for k in want} == {k: int((v & m).sum())
                                                       for k, v in want.items()}, (role, gender)
        rates = [float(d[(audit["gender"] == g).to_numpy()].mean()) for g in rows]
        dp = next(r for r in report["results"] if r["metric"] == "demographic_parity_difference")
        assert dp[role] == pytest.approx(max(rates) - min(rates), abs=1e-9)


def test_counterfactual_flip_rates_match_a_hand_computation(
        gated: tuple[dict, pd.DataFrame]) -> None:
    report, audit = gated
    texts = audit["comment"].tolist()
    subs = probes(texts)
    cf = report["individual"]["counterfactual"]
    assert cf["rows"] == len(texts)  # sample_rows covers the whole audit set
    holds = np.zeros(len(texts), dtype=bool)
    for _, rows, _ in subs:
        holds[rows] = True
    assert cf["rows_with_terms"] == int(holds.sum())
    by_label = {f"{s['from']} → {s['to']}": s for s in cf["substitutions"]}
    assert sorted(by_label) == sorted(label for label, _, _ in subs)
    result = next(r for r in report["results"] if r["metric"] == "counterfactual_flip_rate")
    for role in ("teacher", "student"):
        base = decisions(role, texts)
        every = decisions(role, [t for _, _, new in subs for t in new])  # one run, all probes
        ends = np.cumsum([len(rows) for _, rows, _ in subs])
        flipped = np.zeros(len(texts), dtype=bool)
        for (label, rows, _), new in zip(subs, np.split(every, ends[:-1]), strict=True):
            assert by_label[label]["rows"] == len(rows)
            if not len(rows):
                assert by_label[label][role] is None, label
                continue
            changed = new != base[rows]
            flipped[rows] |= changed
            assert by_label[label][role] == pytest.approx(changed.mean(), abs=1e-9), label
        assert result[role] == pytest.approx(flipped[holds].mean(), abs=1e-9)
