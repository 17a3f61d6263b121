"""Lexicon judge on pyvalues' Schwartz value dictionaries (bg, de, el, en, fr, it, nl).

Rule: a text's *hits* for value s are its word tokens found in s's dictionary (lower-cased,
split on a Unicode word regex so that elisions like "l'égalité" match); its score is hits per
100 words; it *expresses* s when hits >= ``min_hits`` (default 1) and score >= ``min_rate``
(default 0). Texts in a language without a dictionary are an error, or with
``on_unsupported="skip"`` left undecided and counted. Multi-word dictionary entries never match (they are single tokens in pyvalues).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Sequence

from valuemech.config import AT_LEAST_1, OneOf, Range
from valuemech.errors import ValuemechError
from valuemech.judges.base import JudgeResult
from valuemech.values import canonical_value

_WORD = re.compile(r"\w+", re.UNICODE)
LANGUAGES = ("bg", "de", "el", "en", "fr", "it", "nl")


@lru_cache(maxsize=None)
def dictionary(lang: str) -> dict[str, frozenset[str]]:
    """``{token: values}`` for one language, from pyvalues' bundled dictionaries."""
    from pyvalues.dictionary_classifier import get_dictionaries

    if lang not in LANGUAGES:
        raise ValuemechError(f"lexicon judge has no dictionary for language {lang!r}; "
                             f"available: {', '.join(LANGUAGES)}")
    asset = resources.files("pyvalues.assets.dictionaries.20221007").joinpath(f"{lang}.json")
    with asset.open("rb") as fh:
        raw = get_dictionaries(fh, lang)
    return {tok: frozenset(canonical_value(v) for v in vals) for tok, vals in raw.items()}


def count_hits(text: str, lang: str = "en") -> tuple[dict[str, int], int]:
    """Dictionary hits per value and the number of word tokens."""
    words = _WORD.findall(text.lower())
    table = dictionary(lang)
    hits: dict[str, int] = {}
    for w in words:
        for value in table.get(w, ()):
            hits[value] = hits.get(value, 0) + 1
    return hits, len(words)


class LexiconJudge:
    """Dictionary hits per value; see the module docstring for the threshold rule."""

    OPTIONS = {"min_hits": AT_LEAST_1, "min_rate": Range(0, 100), "on_unsupported": OneOf(("error", "skip"))}

    def __init__(self, min_hits: int = 1, min_rate: float = 0.0, on_unsupported: str = "error") -> None:
        if on_unsupported not in ("error", "skip"):
            raise ValuemechError("lexicon judge: on_unsupported must be 'error' or 'skip'")
        self.on_unsupported = on_unsupported
        if min_hits < 1:
            raise ValuemechError("lexicon judge: min_hits must be at least 1")
        self.min_hits = int(min_hits)
        self.min_rate = float(min_rate)
        self.name = f"lexicon(pyvalues-20221007,min_hits={self.min_hits},min_rate={self.min_rate:g})"

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        scores, expressed, failures = [], [], []
        for i, text in enumerate(texts):
            lang = langs[i] if langs else "en"
            if lang not in LANGUAGES and self.on_unsupported == "skip":
                scores.append({v: float("nan") for v in values})
                expressed.append({v: None for v in values})
                failures.append({v: f"unsupported language {lang}" for v in values})
                continue
            failures.append({})
            hits, n = count_hits(text or "", lang)
            rate = {v: 100.0 * hits.get(v, 0) / max(n, 1) for v in values}
            scores.append(rate)
            expressed.append({v: hits.get(v, 0) >= self.min_hits and rate[v] >= self.min_rate
                              for v in values})
        return JudgeResult(scores, expressed, failures)
