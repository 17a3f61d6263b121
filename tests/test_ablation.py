"""Directional ablation and composition (hooks.ablate_vectors, steer's operator): exact checks on tiny models."""

from __future__ import annotations

import pytest
import torch

from conftest import encode, make_source
from valuemech import hooks
from valuemech.errors import ValuemechError
from valuemech.models import load_model
from valuemech.steering import scaled, steer


def logits(lm, ids, mask=None):
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask).logits


def randn(lm, seed: int) -> torch.Tensor:
    return torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(seed))


def projections(lm, ids, mask, layer: int, directions: list[torch.Tensor], ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """(projection of block ``layer``'s output on each unit direction ``[k, b, t]``, residual norms ``[b, t]``),
    read after ``ctx``'s hooks (a forward hook registered later sees the edited output)."""
    with torch.no_grad(), ctx, hooks.read_residuals(lm, [layer]) as res:
        lm.model(input_ids=ids, attention_mask=mask)
    h = res[layer].double()
    return torch.stack([h @ (d.double() / d.double().norm()) for d in directions]), h.norm(dim=-1)


def test_ablation_leaves_no_projection_at_any_position(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["Should I forgive my brother?", "Hi"])  # left-padded: pad positions too
    for layer in sorted({0, lm.n_layers // 2, lm.n_layers - 1}):
        u = randn(lm, layer)
        before, _ = projections(lm, ids, mask, layer, [u], hooks.combined())
        after, norms = projections(lm, ids, mask, layer, [u], hooks.ablate_vectors(lm, {layer: u}))
        assert before.abs().max() > 1e-3 * norms.max()  # there was something to remove
        assert (after.abs() <= 1e-6 * norms).all(), (layer, float(after.abs().max()))
        # several directions at once: the residual loses its projection on every one (their span)
        us = [u, randn(lm, 100 + layer), u + randn(lm, 200 + layer)]
        after, norms = projections(lm, ids, mask, layer, us, hooks.ablate_vectors(lm, {layer: us}))
        assert (after.abs() <= 1e-6 * norms).all(), layer


def test_ablate_add_removes_then_adds(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["Plan a fair budget"])
    u, layer = randn(lm, 3), 1
    proj, _ = projections(lm, ids, mask, layer, [u], hooks.ablate_vectors(lm, {layer: u}, add={layer: u}, alpha=2.5))
    assert torch.allclose(proj, torch.full_like(proj, 2.5 * float(u.double().norm())), rtol=1e-5)
    with hooks.ablate_vectors(lm, {layer: u}):
        ablated = logits(lm, ids, mask)
    src = make_source(lm)
    with steer(lm, src, "shared", "power", layer, alpha=0.0, operator="ablate_add") as added:
        zero_add = logits(lm, ids, mask)
    with steer(lm, src, "shared", "power", layer, alpha=0.7, operator="ablate"):
        ablate_only = logits(lm, ids, mask)
    with hooks.ablate_vectors(lm, {layer: src.component("shared", "power")[layer]}):
        direct = logits(lm, ids, mask)
    assert torch.equal(zero_add, direct) and torch.equal(ablate_only, direct)  # α = 0 adds nothing; ablate ignores α
    assert float(added[layer].norm()) == 0.0
    assert not torch.equal(ablated, logits(lm, ids, mask))


def _dead_dimension_model(family: str, dim: int):
    """A fresh tiny model whose residual stream never has anything in coordinate ``dim``: the embedding
    column and every attention/MLP output row of that coordinate are zero, so every block's output is 0
    there at every position, and the unit vector e_dim is orthogonal to every residual exactly."""
    lm = load_model(f"tiny-{family}")
    with torch.no_grad():
        lm.model.get_input_embeddings().weight[:, dim] = 0
        for block, down in zip(lm.arch.layers, lm.arch.down_projs):
            o_proj = block.self_attn.o_proj
            assert o_proj.bias is None and down.bias is None
            o_proj.weight[dim] = 0
            down.weight[dim] = 0
    return lm


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_ablating_a_direction_orthogonal_to_every_residual_changes_nothing(family):
    dim = 5
    lm = _dead_dimension_model(family, dim)
    ids, mask = encode(lm, ["What matters most in a friendship?", "Be brief"])
    e = torch.zeros(lm.hidden_size)
    e[dim] = 1.0
    every = {l: e for l in range(lm.n_layers)}
    with torch.no_grad(), hooks.read_residuals(lm) as res:
        base = lm.model(input_ids=ids, attention_mask=mask).logits
    assert all(bool((r[..., dim] == 0).all()) for r in res.values())  # the construction holds
    with hooks.ablate_vectors(lm, every):
        assert torch.equal(logits(lm, ids, mask), base)  # bit-identical
    # the same hooks are live: adding along e, or ablating a direction the residual has, changes the logits
    with hooks.ablate_vectors(lm, every, add=every, alpha=3.0):
        assert not torch.equal(logits(lm, ids, mask), base)
    with hooks.ablate_vectors(lm, {1: e + randn(lm, 7)}):
        assert not torch.equal(logits(lm, ids, mask), base)
    assert torch.equal(logits(lm, ids, mask), base)  # removed on exit


def test_removed_ablation_hook_restores_logits_also_on_error(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["Is ambition good?"])
    base = logits(lm, ids, mask)
    with hooks.ablate_vectors(lm, {0: randn(lm, 1)}, add={0: randn(lm, 2)}, positions="prompt"):
        assert not torch.equal(logits(lm, ids, mask), base)
    assert torch.equal(logits(lm, ids, mask), base)
    with pytest.raises(RuntimeError):
        with hooks.ablate_vectors(lm, {0: randn(lm, 1)}):
            raise RuntimeError("boom")
    assert torch.equal(logits(lm, ids, mask), base)
    assert all(not layer._forward_hooks for layer in lm.arch.layers)
    assert not lm.arch.decoder._forward_pre_hooks


def test_a_list_of_vectors_is_added_as_their_sum(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["Tell me about loyalty", "Why?"])
    v1, v2 = randn(lm, 11) * 3, randn(lm, 12) * 3
    with hooks.add_vectors(lm, {1: [v1, v2]}, alpha=0.5):
        listed = logits(lm, ids, mask)
    with hooks.add_vectors(lm, {1: v1.double() + v2.double()}, alpha=0.5):
        summed = logits(lm, ids, mask)
    assert torch.equal(listed, summed)
    # steering with two values: each scaled on its own (relative α), applied as the sum
    src = make_source(lm)
    with steer(lm, src, "shared", ["power", "benevolence"], 1, alpha=0.3) as added:
        both = logits(lm, ids, mask)
    expect = scaled(src.component("shared", "power")[1], 0.3, True, 10.0) + \
        scaled(src.component("shared", "benevolence")[1], 0.3, True, 10.0)
    assert torch.equal(added[1], expect)
    with hooks.add_vectors(lm, {1: expect}):
        assert torch.equal(logits(lm, ids, mask), both)
    # a value-agnostic component is applied once, whatever the values
    with steer(lm, src, "mean_delta", ["power", "benevolence"], 1, alpha=0.3) as md:
        pass
    assert torch.equal(md[1], scaled(src.component("mean_delta")[1], 0.3, True, 10.0))


def test_ablation_inside_generate_matches_without_kv_cache(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["Describe a good neighbour"])
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=None,
              temperature=None, top_p=None, top_k=None)
    with torch.no_grad(), hooks.ablate_vectors(lm, {1: randn(lm, 4)}, add={1: randn(lm, 5) * 4}):
        cached = lm.model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kw)
        uncached = lm.model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **kw)
    assert torch.equal(cached, uncached)


def test_bad_operator_and_zero_direction_are_one_line_errors(tiny_llama):
    lm = tiny_llama
    src = make_source(lm)
    with pytest.raises(ValuemechError, match="operator must be one of add, ablate, ablate_add"):
        with steer(lm, src, "shared", "power", 1, alpha=0.1, operator="subtract"):
            pass
    with pytest.raises(ValuemechError, match="cannot ablate a zero vector at layer 1"):
        with hooks.ablate_vectors(lm, {1: torch.zeros(lm.hidden_size)}):
            pass
    with pytest.raises(ValuemechError, match="hidden size"):
        with hooks.ablate_vectors(lm, {0: torch.ones(lm.hidden_size), 1: [torch.ones(3)]}, positions="prompt"):
            pass
    assert all(not layer._forward_hooks for layer in lm.arch.layers)
    assert not lm.arch.decoder._forward_pre_hooks


def test_eval_conditions_honour_the_operator(tiny_llama):
    from valuemech.evals.common import build_conditions
    from valuemech.evals.registry import make_options

    lm = tiny_llama
    src = make_source(lm)
    ids, mask = encode(lm, ["Is tradition worth keeping?"])
    opts = make_options({"components": ["shared"], "layer": 1, "alpha": 0.4, "operator": "ablate"})
    conditions, settings = build_conditions(lm, src, opts)
    assert settings["shared"]["operator"] == "ablate" and settings["random control"]["operator"] == "ablate"
    u = src.component("shared", "power")[1]
    proj, norms = projections(lm, ids, mask, 1, [u], conditions["shared"]("power"))
    assert (proj.abs() <= 1e-6 * norms).all()
    plain, _ = build_conditions(lm, src, make_options({"components": ["shared"], "layer": 1, "alpha": 0.4}))
    assert "operator" not in _["shared"]  # plain additive settings are as they were
    with pytest.raises(ValuemechError, match="operator must be one of"):
        make_options({"operator": "sideways"})
    with pytest.raises(ValuemechError, match="operator must be one of"):
        make_options({"operator": "sideways"}, "pvq")
