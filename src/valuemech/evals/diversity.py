"""Lexical diversity of a set of responses: Distinct-n and EAD-n (groundwork for the diversity evaluation).

Texts are split into lower-cased word tokens (Unicode ``\\w+``); n-grams never cross texts.

- Distinct-n (Li et al., NAACL 2016): distinct n-grams / total n-grams, over the whole set.
- EAD-n, expectation-adjusted distinct (Liu et al., "Rethinking and Refining the Distinct Metric",
  ACL 2022): ``N / (V * (1 - ((V - 1) / V) ** C))`` with N distinct n-grams, C total n-grams and V the
  vocabulary size — the expected number of distinct items when C are drawn uniformly from V.
  It removes Distinct's bias against longer outputs. V is a parameter (``vocab_size``, default 50,000
  words); compare EAD values only at the same V.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_counts(texts: Sequence[str], n: int) -> Counter:
    """Counts of word n-grams over all texts (n-grams do not cross text boundaries)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    counts: Counter = Counter()
    for t in texts:
        w = tokens(t)
        counts.update(tuple(w[i: i + n]) for i in range(len(w) - n + 1))
    return counts


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over total n-grams (0 for no n-grams)."""
    counts = ngram_counts(texts, n)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def ead_n(texts: Sequence[str], n: int = 2, vocab_size: int = 50_000) -> float:
    """Expectation-adjusted Distinct-n (see the module docstring; 0 for no n-grams)."""
    if vocab_size < 2:
        raise ValueError("vocab_size must be at least 2")
    counts = ngram_counts(texts, n)
    total = sum(counts.values())
    if not total:
        return 0.0
    expected = vocab_size * (1.0 - ((vocab_size - 1) / vocab_size) ** total)
    return len(counts) / expected
