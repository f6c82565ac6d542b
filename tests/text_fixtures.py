"""Real tiny text models and tokenizers for the text-input tests.

Tokenizers are trained with ``tokenizers``' BpeTrainer (deterministic) on the audit texts;
models are ONNX graphs made with onnx.helper: token embeddings (a Gather on an initializer),
a mean over the attention mask, a linear layer and a softmax, as exported classifiers do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

WORDS = {  # word -> how much it pushes towards the positive class
    "excellent": 2.0, "great": 1.5, "good": 1.0, "fine": 0.3, "late": -1.0, "poor": -1.5,
    "awful": -2.0, "he": 0.4, "she": -0.4, "his": 0.3, "her": -0.3, "man": 0.5,
    "woman": -0.5, "josé": 0.6, "zoë": -0.6, "the": 0.0, "work": 0.0, "was": 0.0,
    "report": 0.0, "said": 0.0, "young": 0.1, "hello": 0.0, "other": 0.0,
}

#: Special tokens of the two pad conventions: [PAD] first (id 0), or <s> then <pad> (id 1).
CONVENTIONS = {0: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], 1: ["<s>", "<pad>", "</s>", "<unk>"]}


def comments(n: int, seed: int = 0) -> pd.DataFrame:
    """Audit rows: a comment, the label y and the sensitive attribute sex."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    plain = [w for w in WORDS if w not in ("he", "she", "his", "her", "man", "woman")]
    texts, labels = [], []
    for s in sex:
        k = int(rng.integers(2, 14))
        words = list(rng.choice(plain, k))
        pron = "she" if s == "F" else "he"
        if rng.random() < 0.7:
            words.insert(int(rng.integers(0, len(words) + 1)), pron)
        if rng.random() < 0.2:
            words.append("young woman" if s == "F" else "young man")
        text = " ".join(words)
        if rng.random() < 0.3:
            text = text[:1].upper() + text[1:]
        texts.append(text)
        score = sum(WORDS.get(w, 0.0) for w in text.lower().split()) + rng.normal(0, 0.8)
        labels.append(int(score > 0.3))
    return pd.DataFrame({"comment": texts, "y": labels, "sex": sex})


def train_tokenizer(texts: list[str], pad_id: int, vocab_size: int = 300,
                    padding: bool = False) -> Any:
    """A BPE tokenizer with [CLS]/[SEP]-style specials around each text; ``padding`` also
    writes a padding section (else the pad token is found among its special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    specials = CONVENTIONS[pad_id]
    unk = specials[3] if pad_id == 1 else specials[1]
    bos, eos = (specials[2], specials[3]) if pad_id == 0 else (specials[0], specials[2])
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)),
                                                  (eos, tok.token_to_id(eos))])
    if padding:
        tok.enable_padding(pad_id=pad_id, pad_token=specials[pad_id])
    return tok


def text_model(path: Path, tokenizer: Any, *, seed: int = 0, noise: float = 0.0,
               vocab_rows: int | None = None, dim: int = 8, id_type: int = TensorProto.INT64,
               inputs: tuple[str, ...] = ("input_ids", "attention_mask"),
               mask_type: int = TensorProto.INT64) -> Path:
    """Embedding (one row per token) → mean over the attention mask → MatMul → Softmax.

    The first embedding dimension carries each word's weight in WORDS (so decisions follow
    the words), the others seeded noise; ``noise`` perturbs the weights (a "student").
    """
    rng = np.random.default_rng(seed)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rows = vocab_rows if vocab_rows is not None else len(vocab)
    emb = rng.normal(0, 0.1, (rows, dim)).astype(np.float32)
    for token, i in vocab.items():
        if i < rows:
            emb[i, 0] = WORDS.get(token.lower(), 0.0) * 4
    emb += rng.normal(0, noise, emb.shape).astype(np.float32)
    w = np.zeros((dim, 2), dtype=np.float32)
    w[0, 1], w[0, 0] = 1.0, -1.0
    w[1:] = rng.normal(0, 0.05, (dim - 1, 2))
    nodes = [
        helper.make_node("Gather", ["emb", "ids64"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    if id_type == TensorProto.INT64:
        nodes.insert(0, helper.make_node("Identity", ["input_ids"], ["ids64"]))
    else:
        nodes.insert(0, helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64))
    graph_inputs = [helper.make_tensor_value_info("input_ids", id_type, ["N", "S"]),
                    helper.make_tensor_value_info("attention_mask", mask_type, ["N", "S"])]
    for extra in inputs:
        if extra not in ("input_ids", "attention_mask"):
            graph_inputs.append(helper.make_tensor_value_info(extra, TensorProto.INT64,
                                                              ["N", "S"]))
            nodes.append(helper.make_node("Cast", [extra], [f"{extra}_unused"],
                                          to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "text", graph_inputs,
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tensor_model(path: Path, width: int, *, seed: int = 0,
                 elem: int = TensorProto.FLOAT) -> Path:
    """x [N, width] → MatMul → Softmax: a classifier over an embedding column."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (width, 2)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "tensor", [helper.make_tensor_value_info("x", elem, ["N", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
