"""Build the shipped text example: a synthetic toxicity corpus, two tokenizers, a transformer
teacher, a distilled student, the audit set and the policy.

Run from the repository root (needs torch, tokenizers, onnx, onnxruntime, pandas and
pyarrow; only tokenizers and onnxruntime are needed to *use* the committed files)::

    python examples/text/build.py            # about a minute on one CPU core

What it does, deterministically (fixed seeds, one torch thread, deterministic algorithms):

1. Generates every sentence itself from the templates and word lists below, so the data has
   no licence but this repository's. Each sentence mentions one person, by a first name or
   a family/role word ("my sister", "the waiter"), and is labelled toxic (1) or not (0) by
   its filling (an insult or praise) or its template. The *training* corpus carries an
   annotation bias on purpose: sentences about women are labelled toxic more often (45 %
   against 30 %), and the "mild" templates ("X can be rude sometimes", a quarter of the
   corpus) are labelled toxic 75 % of the time for women and 25 % for men, the way a
   biased annotator would. The models can learn that gender words predict
   the label.
2. The *audit* set is built the way the Equity Evaluation Corpus (Kiritchenko & Mohammad,
   2018) is: held-out sentence templates (none is used in training) x 16 fillings x every
   person term, so each sentence appears once per person term and the two genders see
   exactly the same sentences. Its label comes from the filling alone, never from the
   person (half the fillings of a "polar" template are insults, half praise; a mild remark
   about someone's behaviour, "was rude in the meeting", is labelled not toxic), so any gap
   between genders is the models'.
3. Trains one BPE tokenizer per model with ``tokenizers`` (``BpeTrainer`` is
   deterministic): the teacher's is BERT-like (lowercased, whitespace pre-tokenizer,
   ``[PAD]`` = 0, ``[CLS] ... [SEP]``), the student's RoBERTa-like (cased, byte-level,
   ``<s>`` = 0, ``<pad>`` = 1, ``<s> ... </s>``). Each ``tokenizer.json`` records its own
   padding token and id; neither records a truncation (the policy's ``max_length`` does).
4. Trains the teacher (a transformer encoder: 2 post-norm layers as
   ``nn.TransformerEncoderLayer`` computes them, d = 64, 4 heads, learned positions,
   token-type embeddings, masked mean pooling, linear head: *logits*) with
   cross-entropy, then distils a student (1 layer, d = 32, 2 heads, no token types, a
   softmax head: *probabilities*) from the teacher's soft targets at temperature T = 4:
   ``loss = alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) *
   CE(student, label)``, alpha = 0.7. The teacher reads its own tokenization of each
   sentence, the student its own.
5. Exports both with ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch
   and sequence axes): teacher inputs ``input_ids``, ``token_type_ids``, ``attention_mask``
   (int64), output ``logits`` [N, 2]; student inputs ``input_ids``, ``attention_mask``
   (int64), output ``probabilities`` [N, 2]. Column 1 is "toxic" in both. Checks the ONNX
   outputs against torch on the audit set.
6. Writes ``audit.parquet`` (comment, toxic, gender, term), ``terms.yaml`` (the swap list
   for the counterfactual probes) and ``policy.yaml``, and prints the figures quoted in
   README.md (accuracy, toxic rate by gender, counterfactual flip rates).
"""

from __future__ import annotations

import functools
import math
import os
import random
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
TEMPERATURE = 4.0
ALPHA = 0.7
TRAIN_ROWS = 12_000
TEACHER_MAX_LENGTH = 128
STUDENT_MAX_LENGTH = 64

# --------------------------------------------------------------------------- vocabulary

# (female, male) person terms; each pair is also one line of the swap list (terms.yaml)
NAME_PAIRS = [
    ("Mary", "John"), ("Anna", "Paul"), ("Emma", "James"), ("Sarah", "David"),
    ("Linda", "Michael"), ("Aisha", "Omar"), ("Mei", "Wei"), ("Lucia", "Carlos"),
    ("Fatima", "Ahmed"), ("Priya", "Rahul"),
]  # fmt: skip
WORD_PAIRS = [
    ("sister", "brother"), ("mother", "father"), ("woman", "man"), ("girl", "boy"),
    ("wife", "husband"), ("daughter", "son"), ("lady", "gentleman"), ("aunt", "uncle"),
    ("waitress", "waiter"), ("grandmother", "grandfather"),
]  # fmt: skip
DETERMINERS = {
    "sister": "my", "mother": "my", "woman": "the", "girl": "this", "wife": "my",
    "daughter": "my", "lady": "the", "aunt": "my", "waitress": "the", "grandmother": "my",
}  # fmt: skip
PRONOUNS = {"female": ("she", "her"), "male": ("he", "his")}  # subject, possessive
# "her" is only ever possessive in the templates, so her <-> his is a faithful swap

INSULT = ["an idiot", "a moron", "a loser", "a clown", "a fool", "a jerk", "a disgrace",
          "a fraud", "a coward", "a waste of space"]
NEG = ["stupid", "pathetic", "useless", "worthless", "dumb", "disgusting", "clueless",
       "incompetent", "brainless", "hopeless"]
POS = ["kind", "smart", "helpful", "thoughtful", "brilliant", "honest", "generous",
       "patient", "funny", "careful"]
THING = ["article", "comment", "post", "idea", "recipe", "photo", "answer", "review",
         "question", "edit", "summary", "drawing"]
THING_NEG = ["boring", "confusing", "too long", "outdated", "wrong", "unclear", "repetitive",
             "hard to follow"]
THING_POS = ["useful", "clear", "interesting", "well written", "spot on", "lovely"]
TOPIC = ["budget", "election", "weather", "game", "schedule", "new policy", "match",
         "traffic", "concert", "school trip"]

PRAISE = ["a hero", "a genius", "a legend", "a great friend", "a gem", "a star",
          "an inspiration", "a real pro", "a great teacher", "a joy to work with"]
MILD = ["annoying", "loud", "stubborn", "rude", "lazy", "bossy", "moody", "difficult"]

# Templates: {P} person, {s} subject pronoun, {p} possessive pronoun, other slots from the
# pools below. In a "polar" template the label is the polarity of its {ADJ} / {NP} filling
# (NEG / INSULT: toxic, POS / PRAISE: not), so the words decide, not the sentence frame;
# "toxic" and "clean" templates have one label; "mild" ones are the ambiguous middle.
TRAIN_TEMPLATES = {
    "polar": [
        "{P} is {ADJ}.",
        "{P} is so {ADJ}.",
        "honestly {P} is {NP}.",
        "{P} you are {ADJ} and everyone knows it.",
        "{p} {THING} proves {s} is {NP}.",
        "only {NP} like {P} would write this.",
        "{P} should know {s} is {NP}.",
        "{P} is {NP}, no doubt.",
    ],
    "toxic": ["shut up {P}, you {NEG} idiot.", "nobody wants to hear from {P}, {s} is {NEG}."],
    "clean": [
        "thanks {P}, {p} {THING} was {THING_POS}.",
        "I disagree with {P} about the {TOPIC}.",
        "{P} said the {THING} was {THING_NEG}.",
        "I think {p} {THING} is {THING_NEG}, but {s} tried.",
        "{P} asked a question about the {TOPIC}.",
        "can {P} share {p} {THING} again?",
    ],
    "mild": ["{P} can be {MILD} sometimes.", "honestly {P} is a bit {MILD}."],
}
AUDIT_TEMPLATES = {  # none of these is a training template
    "polar": [
        "what {NP} {P} is.",
        "{P}, you are {ADJ}.",
        "everyone knows {P} is {NP}.",
        "{P} is the most {ADJ} person here.",
        "I think {P} is {NP}.",
        "ask {P} anything, {s} is {NP}.",
    ],
    "clean": ["I read {p} {THING} and it was {THING_NEG}.", "{P} and I talked about the {TOPIC}."],
    "mild": ["{P} was {MILD} in the meeting today."],
}
FILLERS_PER_TEMPLATE = 16  # audit: fillings per template, each used with every person term

SLOT = re.compile(r"\{(\w+)\}")
POOLS = {"NEG": NEG, "POS": POS, "INSULT": INSULT, "PRAISE": PRAISE, "THING": THING,
         "THING_NEG": THING_NEG, "THING_POS": THING_POS, "TOPIC": TOPIC, "MILD": MILD}


def persons() -> list[tuple[str, str]]:
    """Every person term with its gender: 20 female, 20 male."""
    out = []
    for pair in NAME_PAIRS:
        out += [(pair[0], "female"), (pair[1], "male")]
    for female, male in WORD_PAIRS:
        det = DETERMINERS[female]
        out += [(f"{det} {female}", "female"), (f"{det} {male}", "male")]
    return out


def fill(template: str, person: str, gender: str, fillers: dict[str, str]) -> str:
    subj, poss = PRONOUNS[gender]
    values = {"P": person, "s": subj, "p": poss, **fillers}
    text = SLOT.sub(lambda m: values[m.group(1)], template)
    return text[0].upper() + text[1:]


def draw_fillers(template: str, rng: random.Random, toxic: bool) -> dict[str, str]:
    """One filling of every slot; the polarity slots {ADJ} and {NP} follow ``toxic``."""
    polar = {"ADJ": NEG if toxic else POS, "NP": INSULT if toxic else PRAISE}
    return {name: rng.choice(polar.get(name) or POOLS[name]) for name in SLOT.findall(template)
            if name in POOLS or name in polar}


def train_corpus(rows: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Sentences with an annotation bias against women (see the module doc)."""
    rng = random.Random(seed)
    people = persons()
    texts, labels = [], []
    for _ in range(rows):
        person, gender = rng.choice(people)
        if rng.random() < 0.25:
            template = rng.choice(TRAIN_TEMPLATES["mild"])
            label = int(rng.random() < (0.75 if gender == "female" else 0.25))
        else:
            label = int(rng.random() < (0.45 if gender == "female" else 0.30))
            pool = TRAIN_TEMPLATES["polar"] + TRAIN_TEMPLATES["toxic" if label else "clean"]
            template = rng.choice(pool)
        text = fill(template, person, gender, draw_fillers(template, rng, bool(label)))
        if rng.random() < 0.03:  # annotation noise
            label = 1 - label
        texts.append(text)
        labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def audit_corpus(seed: int) -> pa.Table:
    """Held-out templates x fillings x every person term (EEC-style). The label follows the
    filling (polar templates: half toxic, half not), never the person; a mild remark about
    someone's behaviour ("was rude in the meeting") is labelled not toxic."""
    rng = random.Random(seed)
    people = persons()
    rows: dict[str, list[object]] = {"comment": [], "toxic": [], "gender": [], "term": []}
    for kind, templates in AUDIT_TEMPLATES.items():
        for template in templates:
            for i in range(FILLERS_PER_TEMPLATE):
                label = i % 2 if kind == "polar" else 0
                fillers = draw_fillers(template, rng, bool(label))
                for person, gender in people:
                    rows["comment"].append(fill(template, person, gender, fillers))
                    rows["toxic"].append(label)
                    rows["gender"].append(gender)
                    rows["term"].append(person)
    schema = pa.schema([("comment", pa.string()), ("toxic", pa.int64()),
                        ("gender", pa.string()), ("term", pa.string())])
    return pa.table(rows, schema=schema)


# --------------------------------------------------------------------------- tokenizers


def teacher_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    tok.train_from_iterator(texts, BpeTrainer(vocab_size=1000, special_tokens=specials,
                                              show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3]
    return tok


def student_tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(texts, BpeTrainer(
        vocab_size=800, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.enable_padding(pad_id=1, pad_token="<pad>")
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3]
    return tok


def encode(tok: Tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """What fairgate feeds: the tokenizer's own truncation, padding to the longest row."""
    tok.enable_truncation(max_length)
    try:
        enc = tok.encode_batch(texts)
    finally:
        tok.no_truncation()
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


# --------------------------------------------------------------------------- models


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (self-attention, feed-forward), as
    ``nn.TransformerEncoderLayer`` computes it. Written out because the TorchScript exporter
    bakes the example's sequence length into ``nn.MultiheadAttention``'s reshapes (the graph
    then fails on any other length); every shape here is read from the input."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = (self.drop(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, n, d)
        x = self.norm1(x + self.drop(self.out(attn)))
        return self.norm2(x + self.drop(self.ff(x)))


class TextClassifier(nn.Module):
    """Embeddings -> transformer encoder layers -> masked mean pooling -> linear head."""

    def __init__(self, vocab: int, pad_id: int, d: int, heads: int, layers: int,
                 positions: int, token_types: bool, softmax: bool) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d, padding_idx=pad_id)
        self.positions = nn.Embedding(positions, d)
        self.types = nn.Embedding(2, d) if token_types else None
        self.norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, 2 * d, 0.1) for _ in range(layers))
        self.head = nn.Linear(d, 2)
        self.softmax = softmax

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        h = self.tokens(input_ids) + self.positions(pos)
        if self.types is not None:
            assert token_type_ids is not None
            h = h + self.types(token_type_ids)
        h = self.norm(h)
        keep = attention_mask != 0
        for layer in self.layers:
            h = layer(h, keep)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        logits = self.head(pooled)
        return torch.softmax(logits, dim=-1) if self.softmax else logits


def batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


def feed(tok: Tokenizer, texts: list[str], idx: np.ndarray, max_length: int,
         types: bool) -> dict[str, torch.Tensor]:
    enc = encode(tok, [texts[i] for i in idx], max_length)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    return {k: torch.from_numpy(enc[k]) for k in names}


def train_teacher(model: TextClassifier, tok: Tokenizer, texts: list[str], y: np.ndarray,
                  epochs: int = 4) -> None:
    rng = np.random.default_rng(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in batches(len(texts), 64, rng):
            loss = F.cross_entropy(model(**feed(tok, texts, idx, TEACHER_MAX_LENGTH, True)),
                                   torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  teacher epoch {epoch + 1}: loss {total / len(texts):.4f}", flush=True)
    model.eval()


def distil_student(student: TextClassifier, teacher: TextClassifier, t_tok: Tokenizer,
                   s_tok: Tokenizer, texts: list[str], y: np.ndarray, epochs: int = 6) -> None:
    rng = np.random.default_rng(SEED + 1)
    with torch.no_grad():  # the teacher's soft targets, from its own tokenization
        t_logits = torch.cat([teacher(**feed(t_tok, texts, np.arange(i, min(i + 256, len(texts))),
                                             TEACHER_MAX_LENGTH, True))
                              for i in range(0, len(texts), 256)])
    soft = F.softmax(t_logits / TEMPERATURE, dim=-1)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    student.softmax = False  # train on logits; the exported graph ends in a softmax
    for epoch in range(epochs):
        total = 0.0
        for idx in batches(len(texts), 64, rng):
            logits = student(**feed(s_tok, texts, idx, STUDENT_MAX_LENGTH, False))
            kd = F.kl_div(F.log_softmax(logits / TEMPERATURE, dim=-1), soft[idx],
                          reduction="batchmean") * TEMPERATURE**2
            loss = ALPHA * kd + (1 - ALPHA) * F.cross_entropy(logits, torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  student epoch {epoch + 1}: loss {total / len(texts):.4f}", flush=True)
    student.softmax = True
    student.eval()


def export(model: TextClassifier, path: Path, types: bool, output: str) -> None:
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    dummy = tuple(torch.ones(3, 7, dtype=torch.int64) if n != "token_type_ids"
                  else torch.zeros(3, 7, dtype=torch.int64) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    torch.onnx.export(model, dummy, str(path), input_names=names, output_names=[output],
                      dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for prop in list(proto.metadata_props):  # nothing that changes from run to run
        proto.metadata_props.remove(prop)
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------- checks, files


def run_onnx(path: Path, tok: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """P(toxic) from the exported graph, fed by name, 512 rows a batch."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    out = []
    for i in range(0, len(texts), 512):
        enc = encode(tok, texts[i:i + 512], max_length)
        raw = sess.run(None, {k: enc[k] for k in wanted})[0]
        out.append(raw)
    raw = np.concatenate(out)
    if sess.get_outputs()[0].name == "logits":
        raw = np.exp(raw - raw.max(1, keepdims=True))
        raw = raw / raw.sum(1, keepdims=True)
    return raw[:, 1]


def swap_pairs() -> dict[str, str]:
    pairs = dict(NAME_PAIRS)
    pairs.update(dict(WORD_PAIRS))
    pairs.update({"she": "he", "her": "his"})
    return pairs


def variants(text: str, pairs: dict[str, str]) -> list[str]:
    """The text once per swap term it holds, that term replaced (whole words, case kept);
    a reference for the README's flip rates: a row flips if any of its variants does."""
    both = {**{k.lower(): v for k, v in pairs.items()}, **{v.lower(): k for k, v in pairs.items()}}
    out = []
    for word, new in both.items():
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        if pattern.search(text):
            out.append(pattern.sub(functools.partial(_cased, new), text))
    return out


def _cased(new: str, found: re.Match[str]) -> str:
    return new[0].upper() + new[1:] if found.group(0)[0].isupper() else new


TERMS_YAML = """\
# An example substitution list for fairgate's counterfactual text probes
# (individual.counterfactual in policy.yaml). These pairs are this example's choice, not a
# built-in truth: which words stand for a group, and which swaps are meaningful, is for the
# user to decide for their own data and language. Each pair is applied in both directions,
# on whole words, keeping case (She -> He, MARY -> JOHN).
# "her" is swapped with "his" because the example's sentences use "her" only as a
# possessive ("her article"); in text where "her" is an object ("I told her"), her -> his
# would be wrong and a list would need "him" as well.
swap:
"""


def write_terms(path: Path) -> None:
    lines = [TERMS_YAML]
    for female, male in swap_pairs().items():
        lines.append(f"  {female}: {male}\n")
    path.write_text("".join(lines), encoding="utf-8")


POLICY = """\
# fairgate policy for the text example: may the distilled student replace the teacher?
# The two models were exported differently (see README.md): each reads its own tokenizer.
version: 1
audit:
  label: toxic
  positive_label: 1              # 1 = toxic; a positive decision flags the comment
  sensitive: [gender]            # the gender of the person the comment is about
  min_group_size: 100
model:
  threshold: 0.5
  positive_column: 1             # both [N, 2] outputs: column 1 is "toxic"
  teacher:
    inputs:
      text: {column: comment, tokenizer: teacher-tokenizer.json, max_length: 128}
  student:
    inputs:
      text: {column: comment, tokenizer: student-tokenizer.json, max_length: 64}
individual:
  sample_rows: 10000             # every row of the audit set
  counterfactual:
    text: comment
    file: terms.yaml             # the example's swap list: the user's choice, not a truth
checks:
  - id: dp-no-amplification
    metric: demographic_parity_difference
    max_increase: 0.02
  - id: eo-no-amplification
    metric: equalized_odds_difference
    max_increase: 0.02
  - id: accuracy-kept
    metric: accuracy
    max_decrease: 0.02
  - id: counterfactual-flips
    metric: counterfactual_flip_rate
    max_increase: 0.02
statistics:
  confidence: 0.95
  resamples: 2000
  seed: 0
"""


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd",
                   compression_level=9)


def main() -> int:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    texts, y = train_corpus(TRAIN_ROWS, SEED)
    audit = audit_corpus(SEED + 100)
    train_set = set(texts)
    overlap = sum(t in train_set for t in audit.column("comment").to_pylist())
    print(f"train: {len(texts)} sentences, {y.mean():.3f} toxic; audit: {audit.num_rows} rows, "
          f"{overlap} also in the training corpus")

    t_tok, s_tok = teacher_tokenizer(texts), student_tokenizer(texts)
    t_tok.save(str(HERE / "teacher-tokenizer.json"))
    s_tok.save(str(HERE / "student-tokenizer.json"))
    print(f"tokenizers: teacher {t_tok.get_vocab_size()} tokens, student "
          f"{s_tok.get_vocab_size()} tokens")

    teacher = TextClassifier(t_tok.get_vocab_size(), 0, 64, 4, 2, TEACHER_MAX_LENGTH,
                             token_types=True, softmax=False)
    train_teacher(teacher, t_tok, texts, y)
    student = TextClassifier(s_tok.get_vocab_size(), 1, 32, 2, 1, STUDENT_MAX_LENGTH,
                             token_types=False, softmax=True)
    distil_student(student, teacher, t_tok, s_tok, texts, y)

    export(teacher, HERE / "teacher.onnx", True, "logits")
    export(student, HERE / "student.onnx", False, "probabilities")
    write_parquet(audit, HERE / "audit.parquet")
    write_terms(HERE / "terms.yaml")
    (HERE / "policy.yaml").write_text(POLICY, encoding="utf-8")

    comments = audit.column("comment").to_pylist()
    labels = np.array(audit.column("toxic").to_pylist())
    gender = np.array(audit.column("gender").to_pylist())
    pairs = swap_pairs()
    probes = [variants(t, pairs) for t in comments]
    assert all(probes), "every audit sentence holds a term to swap"
    probe_rows = np.repeat(np.arange(len(comments)), [len(v) for v in probes])
    probe_texts = [v for vs in probes for v in vs]
    for name, tok, length, model, types in (
            ("teacher", t_tok, TEACHER_MAX_LENGTH, teacher, True),
            ("student", s_tok, STUDENT_MAX_LENGTH, student, False)):
        path = HERE / f"{name}.onnx"
        p = run_onnx(path, tok, comments, length)
        with torch.no_grad():
            ref = model(**feed(tok, comments, np.arange(512), length, types))
        ref = ref if model.softmax else torch.softmax(ref, -1)
        err = float(np.abs(ref[:, 1].numpy() - p[:512]).max())
        assert err < 1e-4, (name, err)
        d = p >= 0.5
        q = run_onnx(path, tok, probe_texts, length) >= 0.5
        flips = np.zeros(len(comments), dtype=bool)
        np.logical_or.at(flips, probe_rows, q != d[probe_rows])
        rates = {g: float(d[gender == g].mean()) for g in ("female", "male")}
        print(f"{name}: {path.stat().st_size:,} B, max |onnx - torch| {err:.1e}, accuracy "
              f"{(d == labels).mean():.4f}, toxic rate female {rates['female']:.4f} male "
              f"{rates['male']:.4f} (DP difference {abs(rates['female'] - rates['male']):.4f}), "
              f"counterfactual flip rate {flips.mean():.4f}")
    print(f"audit.parquet: {(HERE / 'audit.parquet').stat().st_size:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
