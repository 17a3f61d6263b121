"""The judge protocol: per text and value, a score and a binary "expresses this value" label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass
class JudgeResult:
    """Scores and labels for a list of texts, one dict per text keyed by value id.

    ``expressed[i][v]`` is None when the judge could not decide (``failures[i][v]`` says why);
    such items are left out of both groups of that value's difference in means.
    """

    scores: list[dict[str, float]]
    expressed: list[dict[str, bool | None]]
    failures: list[dict[str, str]] | None = None


class Judge(Protocol):
    """Anything that labels value expression. ``name`` is recorded in ``labels.jsonl``."""

    name: str

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        """Score every text for every value (empty texts included). ``queries[i]`` is what text ``i``
        answers (a judge that reads context uses it; the others ignore it)."""
        ...
