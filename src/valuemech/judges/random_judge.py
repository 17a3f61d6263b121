"""A control judge: labels drawn at random (seeded by text and value), independent of content.

Vectors built from its labels estimate the noise floor of difference in means (the paper's
shuffled-label control); the ``smoke`` preset uses it on a random model.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from valuemech.config import SEED, Range
from valuemech.errors import ValuemechError
from valuemech.judges.base import JudgeResult


def _uniform(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class RandomJudge:
    """Each (text, value) is expressed with probability ``rate``."""

    OPTIONS = {"rate": Range(0, 1, lo_open=True, hi_open=True), "seed": SEED}

    def __init__(self, rate: float = 0.3, seed: int = 0) -> None:
        if not 0.0 < rate < 1.0:
            raise ValuemechError("random judge: rate must be in (0, 1)")
        self.rate, self.seed = float(rate), int(seed)
        self.name = f"random(rate={self.rate:g},seed={self.seed})"

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        scores = [{v: _uniform(str(self.seed), t or "", v) for v in values} for t in texts]
        return JudgeResult(scores, [{v: s[v] < self.rate for v in values} for s in scores])
