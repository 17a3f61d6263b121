"""Steering (valuemech.steering): components, alpha scaling and random controls."""

from __future__ import annotations

import pytest
import torch
from conftest import make_source as _source

from valuemech.errors import ValuemechError
from valuemech.steering import random_like, scaled, steer


def test_alpha_zero_and_components(tiny_llama):
    from conftest import encode

    lm = tiny_llama
    src = _source(lm)
    ids, mask = encode(lm, ["Should I ask for a raise?"])
    with torch.no_grad():
        base = lm.model(input_ids=ids, attention_mask=mask).logits
        for comp in ("intrinsic", "prompted", "intrinsic_orth", "prompted_orth", "shared",
                     "intrinsic_unique", "prompted_unique", "mean_delta"):
            with steer(lm, src, comp, "power", [0, 1], alpha=0.0):
                assert torch.equal(lm.model(input_ids=ids, attention_mask=mask).logits, base), comp
            with steer(lm, src, comp, "power", 1, alpha=0.5) as added:
                assert not torch.equal(lm.model(input_ids=ids, attention_mask=mask).logits, base), comp
            # relative alpha: c * R_l * unit(v)
            assert float(added[1].norm()) == pytest.approx(0.5 * 10.0)
    with pytest.raises(ValuemechError, match="unknown component"):
        src.component("orthogonal", "power")
    with pytest.raises(ValuemechError, match="out of range"):
        with steer(lm, src, "shared", "power", 5, alpha=1.0):
            pass


def test_random_control_has_same_norm_and_scaling_rules():
    v = torch.tensor([3.0, 4.0])
    r = random_like(v, seed=1)
    assert float(r.norm()) == pytest.approx(5.0) and not torch.allclose(r, v.double())
    assert torch.equal(scaled(v, 2.0, relative=False), torch.tensor([6.0, 8.0], dtype=torch.float64))
    assert torch.allclose(scaled(v, 0.1, relative=True, residual_norm=50.0), torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert torch.equal(scaled(torch.zeros(2), 1.0, True, 9.0), torch.zeros(2, dtype=torch.float64))
