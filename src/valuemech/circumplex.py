"""The Schwartz circumplex in a model's value axes: PCA, Procrustes fit to the circle, permutation test.

For one block, the 10 unit ``u_shared`` axes (rows) are centred and projected on their first two
principal components. The 2-D points are fitted to the theoretical circle (values evenly spaced in
circumplex order, :data:`valuemech.values.ANGLES`) by orthogonal Procrustes with uniform scaling
(rotation/reflection, scale and translation); R^2 = 1 - SS_res / SS_tot of the circle points.
The p-value is the share of random relabellings of the points (permutations) whose fit is at least
as good as the observed one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from valuemech.errors import ValuemechError
from valuemech.values import ANGLES, VALUES


@dataclass
class CircumplexFit:
    values: list[str]
    coords: np.ndarray  # [n, 2] PCA coordinates
    explained_2pc: float  # share of variance of the centred axes explained by 2 PCs
    r2: float
    p_value: float
    n_permutations: int


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Coordinates on the first two principal components and the variance share they explain."""
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    var = s ** 2
    return u[:, :2] * s[:2], float(var[:2].sum() / var.sum()) if var.sum() > 0 else 0.0


def procrustes_r2(points: np.ndarray, target: np.ndarray) -> float:
    """R^2 of the best similarity transform (rotation/reflection, scale, shift) of ``points`` onto ``target``."""
    p = points - points.mean(axis=0)
    t = target - target.mean(axis=0)
    ss_tot = float((t ** 2).sum())
    if ss_tot == 0 or float((p ** 2).sum()) == 0:
        return 0.0
    u, s, vt = np.linalg.svd(p.T @ t)
    rot = u @ vt
    scale = s.sum() / float((p ** 2).sum())
    resid = t - scale * p @ rot
    return 1.0 - float((resid ** 2).sum()) / ss_tot


def circle(values: list[str]) -> np.ndarray:
    return np.array([[math.cos(ANGLES[v]), math.sin(ANGLES[v])] for v in values])


def fit_circumplex(axes: dict[str, np.ndarray], n_permutations: int = 1000, seed: int = 0) -> CircumplexFit:
    """PCA + Procrustes fit of per-value axes (``{value: [d]}``) to the theoretical circle."""
    values = [v for v in VALUES if v in axes]
    if len(values) < 4:
        raise ValuemechError(f"the circumplex fit needs at least 4 values with axes, got {len(values)}")
    x = np.stack([np.asarray(axes[v], dtype=np.float64) for v in values])
    coords, explained = pca_2d(x)
    target = circle(values)
    r2 = procrustes_r2(coords, target)
    rng = np.random.default_rng(seed)
    hits = sum(procrustes_r2(coords[rng.permutation(len(values))], target) >= r2 - 1e-12
               for _ in range(n_permutations))
    return CircumplexFit(values, coords, explained, r2, (hits + 1) / (n_permutations + 1), n_permutations)


def cosine_matrix(axes: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Value-by-value cosine similarity of the axes."""
    values = [v for v in VALUES if v in axes]
    x = np.stack([np.asarray(axes[v], dtype=np.float64) for v in values])
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-300, None)
    return values, x @ x.T
