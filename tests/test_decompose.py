"""Decomposition: SVD axes, sign rules, orthogonalisation and mean-delta against hand computations."""

from __future__ import annotations

import pytest
import torch

from valuemech.decompose import cosine, decompose, mean_delta, orthogonalize, svd_axes
from valuemech.errors import ValuemechError
from valuemech.values import VALUES
from valuemech.vectors import ValueVectors


def _pair(seed: int, layers: int = 4, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(layers, d, generator=g, dtype=torch.float64), torch.randn(layers, d, generator=g, dtype=torch.float64)


def test_svd_axes_orthonormal_signed_and_spanning():
    for seed in range(5):
        a, b = _pair(seed)
        us, ui, s = svd_axes(a, b)
        ones = torch.ones(a.shape[0], dtype=torch.float64)
        torch.testing.assert_close((us * us).sum(-1), ones)
        torch.testing.assert_close((ui * ui).sum(-1), ones)
        torch.testing.assert_close((us * ui).sum(-1), torch.zeros_like(ones), atol=1e-12, rtol=0)
        assert ((us * (a + b)).sum(-1) > 0).all()
        assert ((ui * (a - b)).sum(-1) >= 0).all()
        # the two axes reconstruct both vectors (they span the pair)
        for v in (a, b):
            recon = (v * us).sum(-1, keepdim=True) * us + (v * ui).sum(-1, keepdim=True) * ui
            torch.testing.assert_close(recon, v)
        assert (s[:, 0] >= s[:, 1]).all()


def test_orthogonalisation_is_orthogonal_and_hand_computed():
    a, b = _pair(7)
    ap, bp = orthogonalize(a, b), orthogonalize(b, a)
    torch.testing.assert_close((ap * b).sum(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((bp * a).sum(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    x, y = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    assert torch.equal(orthogonalize(x, y), torch.tensor([[0.0, 4.0]], dtype=torch.float64))
    assert torch.equal(orthogonalize(x, torch.zeros(1, 2)), x.double())  # zero partner: unchanged


def test_cosine_and_mean_delta_hand_computation():
    assert cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])).item() == pytest.approx(2 ** -0.5)
    assert cosine(torch.zeros(1, 2), torch.ones(1, 2)).item() == 0.0
    deltas = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])  # 3 values, 1 layer
    md = mean_delta(deltas)
    torch.testing.assert_close(md.direction, torch.tensor([[2 / 3, 2 / 3]], dtype=torch.float64))
    # unit = (1,1)/sqrt2: projections 1/sqrt2, 1/sqrt2, sqrt2 -> squares 0.5+0.5+2 = 3; total 1+1+2 = 4
    assert md.explained.item() == pytest.approx(0.75)
    # pairwise cosines: 0, 1/sqrt2, 1/sqrt2
    assert md.mean_pairwise_cosine.item() == pytest.approx((2 * 2 ** -0.5) / 3)


def test_decompose_writes_every_component():
    vecs = {}
    for i, v in enumerate(VALUES[:3]):
        a, b = _pair(i)
        vecs[f"intrinsic.{v}"], vecs[f"prompted.{v}"] = a, b
    vecs["intrinsic.power"] = _pair(9)[0]  # only one condition: left out
    meta = {"n_layers": "4", "hidden_size": "16", "model_id": "m", "weights_sha256": "x"}
    comps, summary = decompose(ValueVectors(vecs, meta))
    assert summary["values"] == list(VALUES[:3])
    for v in VALUES[:3]:
        for c in ("shared", "intrinsic_unique", "prompted_unique", "intrinsic_orth", "prompted_orth"):
            assert comps.get(c, v).shape == (4, 16)
        assert torch.equal(comps.get("prompted_unique", v), -comps.get("intrinsic_unique", v))
    assert comps.get("mean_delta").shape == (4, 16)
    assert len(summary["mean_delta"]["explained"]) == 4
    with pytest.raises(ValuemechError):
        comps.get("shared", "power")
    with pytest.raises(ValuemechError, match="no value has both"):
        decompose(ValueVectors({"intrinsic.power": _pair(1)[0]}, meta))
