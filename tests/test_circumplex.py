"""The circumplex (valuemech.evals.circumplex): Procrustes fit, permutation test and cosine matrix."""

from __future__ import annotations

import numpy as np
import pytest

from valuemech.evals.circumplex import circle, cosine_matrix, fit_circumplex, procrustes_r2
from valuemech.values import VALUES


def test_procrustes_of_a_perfect_circle_is_one():
    pts = circle(list(VALUES))
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert procrustes_r2(3.0 * pts @ rot + 2.0, pts) == pytest.approx(1.0)
    assert procrustes_r2(pts[::-1] @ np.array([[1, 0], [0, -1.0]]), pts) == pytest.approx(1.0)  # reflection


def test_circumplex_fit_recovers_an_embedded_circle_and_rejects_noise():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(32, 2)))[0]
    axes = {v: basis @ p for v, p in zip(VALUES, circle(list(VALUES)))}
    fit = fit_circumplex(axes, n_permutations=200)
    assert fit.r2 == pytest.approx(1.0) and fit.explained_2pc == pytest.approx(1.0)
    assert fit.p_value < 0.05
    noise = {v: rng.normal(size=32) for v in VALUES}
    assert fit_circumplex(noise, n_permutations=200).p_value > 0.05
    values, cos = cosine_matrix(axes)
    assert values == list(VALUES) and np.allclose(np.diag(cos), 1.0)
