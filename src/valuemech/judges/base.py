"""The judge protocol: per text and value, a score and a binary "expresses this value" label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass
class JudgeResult:
    """Scores and labels for a list of texts, one dict per text keyed by value id."""

    scores: list[dict[str, float]]
    expressed: list[dict[str, bool]]


class Judge(Protocol):
    """Anything that labels value expression. ``name`` is recorded in ``labels.jsonl``."""

    name: str

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None) -> JudgeResult:
        """Score every text for every value (empty texts included)."""
        ...
