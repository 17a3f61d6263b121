"""Learned judge: ridge regression from sentence embeddings to human survey correlations.

Fit on a Value Portrait file the user supplies (option ``train``; nothing learned ships with
valuemech): features are the all-MiniLM-L6-v2 embedding of the response, or of the query and the
response (``features``); targets are the response's ten survey correlations r_v. The score for
value v is the predicted r_v, and the response is tied to v (``expressed``) when it reaches
``threshold`` (default 0.3, the tie threshold of :mod:`valuemech.judges.human`).

This judge measures the survey's construct (would people who hold v endorse this response?), not
whether the text *expresses* v; ``docs/judges.md`` says where the two differ. Its agreement on the
file it was fit to is meaningless: :func:`cross_validated` gives nested cross-validation grouped by
query (the ridge penalty chosen by an inner grouped CV on each outer training part), which is what
``valuemech judges cross-validate`` reports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from valuemech.config import OneOf, Range
from valuemech.data.value_portrait import PortraitResponse, load_value_portrait
from valuemech.judges.base import JudgeResult
from valuemech.values import VALUES

ALPHAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
FEATURES = ("response", "query+response")


@dataclass
class Ridge:
    """``y = x @ w + b`` fit by ridge regression (closed form, float64)."""

    w: np.ndarray  # [d, k]
    b: np.ndarray  # [k]

    @staticmethod
    def fit(x: np.ndarray, y: np.ndarray, alpha: float) -> "Ridge":
        mx, my = x.mean(0), y.mean(0)
        xc = x - mx
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
        return Ridge(w, my - mx @ w)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b


def feature_texts(texts: Sequence[str], queries: Sequence[str] | None, features: str) -> list[str]:
    """What is embedded per response: the response, or ``"<query>\\n\\n<response>"``."""
    if features == "response" or queries is None:
        return [t or "" for t in texts]
    return [f"{q.strip()}\n\n{(t or '').strip()}" if q else (t or "") for t, q in zip(texts, queries)]


def embed_texts(texts: list[str]) -> np.ndarray:
    """float64 sentence embeddings (all-MiniLM-L6-v2, the embedding judge's encoder)."""
    from valuemech.judges.embedding import embed

    return np.asarray(embed(texts), dtype=np.float64)


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` folds of indices, each group (query) wholly in one fold (groups shuffled by ``seed``)."""
    keys = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(keys))
    fold_of = {keys[j]: n % k for n, j in enumerate(order)}
    return [np.array([i for i, g in enumerate(groups) if fold_of[g] == f]) for f in range(k)]


def _cv_error(x: np.ndarray, y: np.ndarray, groups: Sequence[str], alpha: float, k: int) -> float:
    err = 0.0
    for test in group_folds(groups, k):
        train = np.setdiff1d(np.arange(len(x)), test)
        err += float(((Ridge.fit(x[train], y[train], alpha).predict(x[test]) - y[test]) ** 2).sum())
    return err


def choose_alpha(x: np.ndarray, y: np.ndarray, groups: Sequence[str], k: int = 5) -> float:
    """The ridge penalty of :data:`ALPHAS` with the least grouped-CV squared error."""
    k = min(k, len(set(groups)))
    return min(ALPHAS, key=lambda a: _cv_error(x, y, groups, a, k))


def targets(responses: Sequence[PortraitResponse]) -> np.ndarray:
    return np.array([[r.correlations[v] for v in VALUES] for r in responses], dtype=np.float64)


def query_groups(responses: Sequence[PortraitResponse]) -> list[str]:
    return [r.query_id for r in responses]


def cross_validated(responses: Sequence[PortraitResponse], features: str = "query+response",
                    folds: int = 5, x: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions ``[n, 10]`` by nested grouped CV, and the penalty chosen per outer fold."""
    if x is None:
        x = embed_texts(feature_texts([r.text for r in responses], [r.query for r in responses], features))
    y, groups = targets(responses), query_groups(responses)
    pred, alphas = np.zeros_like(y), []
    for test in group_folds(groups, folds):
        train = np.setdiff1d(np.arange(len(x)), test)
        alpha = choose_alpha(x[train], y[train], [groups[i] for i in train])
        pred[test] = Ridge.fit(x[train], y[train], alpha).predict(x[test])
        alphas.append(alpha)
    return pred, alphas


class LearnedJudge:
    """Ridge on sentence embeddings fit to a Value Portrait file's survey correlations (see the module)."""

    OPTIONS = {"threshold": Range(-1, 1), "features": OneOf(FEATURES)}

    def __init__(self, train: str, features: str = "query+response", threshold: float = 0.3) -> None:
        path = Path(train).expanduser()
        responses = load_value_portrait(path)
        self.features, self.threshold = features, float(threshold)
        x = embed_texts(feature_texts([r.text for r in responses], [r.query for r in responses], features))
        y, groups = targets(responses), query_groups(responses)
        self.alpha = choose_alpha(x, y, groups)
        self.model = Ridge.fit(x, y, self.alpha)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.name = f"learned(ridge:minilm,{features},train={path.name}@{digest},alpha={self.alpha:g})"

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        if not texts:
            return JudgeResult([], [])
        pred = self.model.predict(embed_texts(feature_texts(texts, queries, self.features)))
        col = {v: VALUES.index(v) for v in values}
        scores = [{v: float(p[col[v]]) for v in values} for p in pred]
        expressed = [{v: bool(t and t.strip()) and s[v] >= self.threshold for v in values}
                     for t, s in zip(texts, scores)]
        return JudgeResult(scores, expressed)
