"""Counterfactual text probes: the substitution rules, the flip rates against a hand count,
and the policy keys that declare them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fairgate.core.individual import text_counterfactual_flips
from fairgate.errors import PolicyError
from fairgate.inputs.text_swap import substitutions, term_errors
from fairgate.policy import load_policy


def swap(text: str, a: str, b: str) -> str:
    (sub,) = [s for s in substitutions({a: b}) if s.source == a]
    return sub.apply(text)


@pytest.mark.parametrize("text, want", [
    ("he said", "she said"),
    ("the hello he", "the hello she"),  # not inside "the" or "hello"
    ("He said (he) and HE", "She said (she) and SHE"),
    ("he's here; he-man", "she's here; she-man"),  # any non-word character bounds a word
    ("shed heat", "shed heat"),
    ("héhe he_ he1 he", "héhe he_ he1 she"),  # Unicode letters, _ and digits are word chars
])
def test_whole_words_any_case(text: str, want: str) -> None:
    assert swap(text, "he", "she") == want


def test_multi_word_terms() -> None:
    assert swap("a young man, a Young Man, a YOUNG MAN, a young\tman", "young man",
                "young woman") == "a young woman, a Young Woman, a YOUNG WOMAN, a young woman"
    assert swap("a young mankind", "young man", "young woman") == "a young mankind"


def test_unicode_terms() -> None:
    decomposed = "Jose\u0301 arrived"  # José written with a combining accent (NFD)
    assert swap("José arrived, JOSÉ too", "José", "Zoë") == "Zoë arrived, ZOË too"
    assert swap(decomposed, "José", "Zoë") == "Zoë arrived"
    assert swap("Josély", "José", "Zoë") == "Josély"


def test_pairs_go_both_ways_and_groups_to_every_other_group() -> None:
    assert [(s.source, s.target) for s in substitutions({"he": "she", "his": "her"})] == [
        ("he", "she"), ("she", "he"), ("his", "her"), ("her", "his")]
    got = [(s.source, s.target) for s in substitutions(
        groups={"f": ["Mary", "Anna"], "m": ["John"], "x": ["Sam"]})]
    assert sorted(got) == sorted([("Mary", "John"), ("Mary", "Sam"), ("Anna", "John"),
                                  ("Anna", "Sam"), ("John", "Mary"), ("John", "Anna"),
                                  ("John", "Sam"), ("Sam", "Mary"), ("Sam", "Anna"),
                                  ("Sam", "John")])


def test_term_errors() -> None:
    assert term_errors("swap", {"he": "she", "She": "they"}) == [
        (("She",), "term 'She' is listed twice (also at he)")]
    assert term_errors("groups", {"f": ["Mary"]}) == [((), "give at least two groups of terms")]
    assert term_errors("groups", {"f": ["Mary"], "m": []}) == [
        (("m",), "give a list of at least one term")]


def test_flip_rates_against_a_hand_count() -> None:
    texts = ["he is good", "she is good", "He and she", "nothing here", "the hello",
             "he he he", "SHE rocks"]
    batch = pa.RecordBatch.from_pydict({"comment": texts})

    def teacher(b: pa.RecordBatch) -> np.ndarray:  # positive when the text says "she"
        return np.array(["she" in t.lower().split() for t in b.column("comment").to_pylist()])

    def student(b: pa.RecordBatch) -> np.ndarray:  # positive when the text is long
        return np.array([len(t) > 9 for t in b.column("comment").to_pylist()])

    subs = substitutions({"he": "she"})
    flips = text_counterfactual_flips(batch, "comment", subs, teacher, student)
    # hand count, row by row: (holds he, holds she), teacher and student flips per substitution
    # "he is good"   he→she: "she is good": teacher F→T flips; student 10 chars→11: T→T no
    # "she is good"  she→he: "he is good": teacher T→F flips; student 11→10 T→T no
    # "He and she"   he→she: "She and she": teacher T→T no; student 10→11 T→T no
    #                she→he: "He and he": teacher T→F flips; student 10→9 T→F flips
    # "nothing here", "the hello": no term
    # "he he he"     he→she: "she she she": teacher F→T flips; student 8→11 F→T flips
    # "SHE rocks"    she→he: "HE rocks": teacher T→F flips; student 9→8 F→F no
    assert flips.rows == 7 and flips.rows_with_terms == 5
    he, she = flips.by_substitution["he → she"], flips.by_substitution["she → he"]
    assert he[0] == 3 and she[0] == 3
    assert he[1].teacher.value == pytest.approx(2 / 3)
    assert he[1].student.value == pytest.approx(1 / 3)
    assert she[1].teacher.value == pytest.approx(3 / 3)
    assert she[1].student.value == pytest.approx(1 / 3)
    # overall, over the 5 rows holding a term: a row flips if any substitution flips it
    assert flips.overall.teacher.value == pytest.approx(5 / 5)
    assert flips.overall.student.value == pytest.approx(2 / 5)


def test_no_row_with_a_term_is_undefined() -> None:
    batch = pa.RecordBatch.from_pydict({"comment": ["nothing", "here"]})
    flips = text_counterfactual_flips(batch, "comment", substitutions({"he": "she"}),
                                      lambda b: np.zeros(b.num_rows, dtype=bool))
    assert np.isnan(flips.overall.teacher.value)
    assert "holds a term to swap" in (flips.overall.teacher.reason or "")


BASE = """\
version: 1
audit: {label: y, positive_label: 1, sensitive: [sex]}
model:
  positive_column: 1
  inputs:
    text: {column: comment, tokenizer: tok.json, max_length: 16}
checks:
  - {id: cf, metric: counterfactual_flip_rate, max_increase: 0.05}
individual:
  counterfactual:
"""


def write(tmp_path: Path, counterfactual: str, model: str | None = None) -> Path:
    (tmp_path / "tok.json").write_text("{}")
    text = BASE + "".join(f"    {line}\n" for line in counterfactual.splitlines())
    if model is not None:
        text = text.replace("""model:
  positive_column: 1
  inputs:
    text: {column: comment, tokenizer: tok.json, max_length: 16}
""", model)
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_terms_file_is_read_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "terms.yaml").write_text("groups:\n  f: [Mary, Zoë]\n  m: [John]\n")
    policy = load_policy(write(tmp_path, "text: comment\nfile: terms.yaml")).policy
    cf = policy.individual.counterfactual  # type: ignore[union-attr]
    assert cf.groups == {"f": ["Mary", "Zoë"], "m": ["John"]}


@pytest.mark.parametrize("counterfactual, message", [
    ("text: comment", r"policy.yaml:\d+: individual.counterfactual.text: give the terms to swap"),
    ("text: comment\nswap: {he: she}\ngroups: {a: [x], b: [y]}",
     r"give one of swap, groups or file, not swap and groups"),
    ("text: comment\nswap: {he: she}\ncolumn: sex",
     r"individual.counterfactual.column: is for a column's values"),
    ("column: sex\nswap: {he: she}", r"individual.counterfactual.swap: is for text probes"),
    ("text: comment\nswap: {he: she, his: He}", r"swap.his: term 'He' is listed twice"),
    ("text: comment\nfile: missing.yaml", r"individual.counterfactual.file: .*missing.yaml: terms "
                                          r"file not found"),
])
def test_counterfactual_policy_errors(tmp_path: Path, counterfactual: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(write(tmp_path, counterfactual))


@pytest.mark.parametrize("model, message", [
    ("model:\n  inputs: {text: {column: c, tokenizer: tok.json, max_length: 8}, tensor: "
     "{column: e}}\n", r"model.inputs: give one kind of input, not text and tensor"),
    ("model:\n  inputs: {}\n", r"model.inputs: give exactly one of text, image or tensor"),
    ("model:\n  inputs: {text: {column: c, tokenizer: tok.json}}\n",
     r"model.inputs.text.max_length"),
    ("model:\n  inputs: {text: {column: c, tokenizer: tok.json, max_length: 0}}\n",
     r"model.inputs.text.max_length"),
    ("model:\n  inputs: {text: {column: c, tokenizer: tok.json, max_length: 8, padding: right}}\n",
     r"model.inputs.text.padding"),
    ("model:\n  features: [a]\n  inputs: {tensor: {column: e}}\n",
     r"model.features: give inputs or features, not both"),
    ("model:\n  features: [a]\n  student:\n    inputs: {tensor: {column: e}}\n",
     r"model.student.inputs: model.features applies to this model too"),
    ("model:\n  inputs: {tensor: {column: e}}\n  teacher: {features: [a]}\n",
     r"model.teacher.features: model.inputs applies to this model too"),
    ("model:\n  inputs: {image: {column: p, size: [8, 8], mean: [0.5], std: [0.5, 0.5, 0.5]}}\n",
     r"model.inputs.image.mean: needs 3 value\(s\), one per channel of RGB, got 1"),
    ("model:\n  inputs: {image: {column: p, size: [8, 8], mean: [0.5], std: [0], channels: L}}\n",
     r"model.inputs.image.std\[0\]: must be greater than 0"),
    ("model:\n  inputs: {image: {column: p, size: [8], mean: [0.5], std: [1], channels: L}}\n",
     r"model.inputs.image.size"),
    ("model:\n  inputs: {text: {column: c, tokenizer: gone.json, max_length: 8}}\n",
     r"model.inputs.text.tokenizer: .*gone.json: tokenizer not found"),
])
def test_inputs_policy_errors(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(write(tmp_path, "text: c\nswap: {he: she}", model))


def test_own_inputs_replace_the_shared_ones(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "text: comment\nswap: {he: she}", (
        "model:\n  inputs: {text: {column: comment, tokenizer: tok.json, max_length: 16}}\n"
        "  student:\n    inputs: {text: {column: comment, tokenizer: tok.json, max_length: 8, "
        "padding: max_length}}\n"))).policy
    teacher, student = policy.model.for_role("teacher"), policy.model.for_role("student")
    assert teacher.inputs.text.max_length == 16 and teacher.inputs.text.padding == "longest"  # type: ignore[union-attr]
    assert student.inputs.text.max_length == 8 and student.inputs.text.padding == "max_length"  # type: ignore[union-attr]
