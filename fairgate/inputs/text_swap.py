"""Counterfactual text probes: swap sensitive terms in a text column (pure functions).

A *substitution* ``a → b`` replaces every occurrence of the term ``a`` in a row by ``b``:

- whole words only: ``he`` is found in "he said" and "(he)", not in "the" or "hello"; a term
  is bounded by anything that is not a Unicode letter, digit or underscore, so "José" and
  "Zoë" are words, and a term may itself end in punctuation ("Mr.");
- case-insensitively, keeping the case of what was found: ``he → she`` makes "He" "She" and
  "HE" "SHE"; a multi-word term keeps each capitalized word capitalized ("Young Man" →
  "Young Woman");
- multi-word terms match across any run of whitespace ("young  man");
- Unicode: a term matches both its composed (NFC) and decomposed (NFD) spelling.

``swap: {he: she}`` gives ``he → she`` and ``she → he``; ``groups: {female: [Mary, Anna],
male: [John]}`` gives every term to every term of every other group (Mary → John, Anna →
John, John → Mary, John → Anna).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Where = tuple[Any, ...]


@dataclass(frozen=True)
class Substitution:
    """``source → target``; ``pattern`` finds ``source`` as a whole word, any case."""

    source: str
    target: str
    pattern: re.Pattern[str]

    @property
    def label(self) -> str:
        return f"{self.source} → {self.target}"

    def apply(self, text: str) -> str:
        return self.pattern.sub(lambda m: cased(m.group(0), self.target), text)

    def found(self, text: str) -> bool:
        return self.pattern.search(text) is not None


def word_pattern(term: str) -> re.Pattern[str]:
    """A whole-word, case-insensitive pattern for ``term`` (NFC and NFD spellings)."""
    spellings = dict.fromkeys(unicodedata.normalize(f, term.strip()) for f in ("NFC", "NFD"))
    parts = [r"\s+".join(re.escape(w) for w in s.split()) for s in spellings]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def cased(found: str, target: str) -> str:
    """``target`` in the case of ``found``: UPPER, Each Word Capitalized, Capitalized, or as
    the policy spells it."""
    letters = [c for c in found if c.isalpha()]
    if not letters:
        return target
    if all(c.isupper() for c in letters) and (len(letters) > 1 or len(target) == 1):
        return target.upper()
    words = found.split()
    if len(words) > 1 and all(w[:1].isupper() for w in words):
        return " ".join(w[:1].upper() + w[1:] for w in target.split())
    if letters[0].isupper() and found.lstrip()[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def substitutions(swap: Mapping[str, str] | None = None,
                  groups: Mapping[str, Sequence[str]] | None = None) -> list[Substitution]:
    """Every substitution a policy's terms give, in the order it lists them."""
    pairs: list[tuple[str, str]] = []
    if swap:
        for a, b in swap.items():
            pairs += [(a, b), (b, a)]
    if groups:
        names = list(groups)
        for g in names:
            for a in groups[g]:
                pairs += [(a, b) for other in names if other != g for b in groups[other]]
    return [Substitution(a, b, word_pattern(a)) for a, b in dict.fromkeys(pairs)]


def term_errors(kind: str, terms: Any) -> list[tuple[Where, str]]:
    """Problems of a policy's ``swap`` or ``groups`` (key path below it, message)."""
    errs: list[tuple[Where, str]] = []
    seen: dict[str, Where] = {}

    def term(where: Where, t: Any) -> None:
        if not isinstance(t, str) or not t.strip():
            errs.append((where, "a term must be non-empty text"))
            return
        key = _key(t)
        if key in seen:
            errs.append((where, f"term {t!r} is listed twice (also at "
                         f"{'.'.join(str(x) for x in seen[key])})"))
        seen[key] = where

    if kind == "swap":
        for a, b in terms.items():
            term((a,), a)
            term((a,), b)
        if not terms:
            errs.append(((), "give at least one pair of terms"))
    else:
        if len(terms) < 2:
            errs.append(((), "give at least two groups of terms"))
        for g, listed in terms.items():
            if not isinstance(listed, list) or not listed:
                errs.append(((g,), "give a list of at least one term"))
                continue
            for i, t in enumerate(listed):
                term((g, i), t)
    return errs


def _key(term: str) -> str:
    return " ".join(unicodedata.normalize("NFC", term).casefold().split())
