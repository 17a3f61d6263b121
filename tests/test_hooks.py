"""Hooks: exact equalities on tiny models (zero vectors, removal, residual reads, KV cache, padding)."""

from __future__ import annotations

import pytest
import torch

from conftest import encode
from valuemech import hooks
from valuemech.errors import ValuemechError


def logits(lm, ids, mask=None):
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask).logits


def test_zero_vector_leaves_logits_bit_identical(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["What should I do this weekend?", "Hi"])
    base = logits(lm, ids, mask)
    zero = {l: torch.zeros(lm.hidden_size) for l in range(lm.n_layers)}
    with hooks.add_vectors(lm, zero, alpha=3.0):
        steered = logits(lm, ids, mask)
    with hooks.add_vectors(lm, {0: torch.randn(lm.hidden_size)}, alpha=0.0):
        alpha0 = logits(lm, ids, mask)
    assert torch.equal(base, steered)
    assert torch.equal(base, alpha0)


def test_hooks_are_removed_on_exit_and_on_error(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["Should I move to a new city?"])
    base = logits(lm, ids, mask)
    vec = {0: torch.randn(lm.hidden_size) * 5}
    with hooks.add_vectors(lm, vec):
        assert not torch.equal(logits(lm, ids, mask), base)
    assert torch.equal(logits(lm, ids, mask), base)
    with pytest.raises(RuntimeError):
        with hooks.add_vectors(lm, vec), hooks.scale_neurons(lm, {0: [1, 2]}, 3.0), hooks.read_residuals(lm):
            raise RuntimeError("boom")
    assert torch.equal(logits(lm, ids, mask), base)
    assert all(not layer._forward_hooks for layer in lm.arch.layers)
    assert all(not d._forward_pre_hooks for d in lm.arch.down_projs)
    assert not lm.arch.decoder._forward_pre_hooks


def test_residual_read_equals_hidden_states_of_next_index(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["Tell me about saving money.", "A"])
    with torch.no_grad(), hooks.read_residuals(lm) as res:
        out = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    last = lm.n_layers - 1
    for layer in range(last):
        assert torch.equal(res[layer], out.hidden_states[layer + 1]), layer
    # transformers applies the final norm to the last entry; the hook reads the block's raw output
    assert torch.equal(lm.arch.decoder.norm(res[last]), out.hidden_states[last + 1])


def test_read_residuals_positions(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["abc", "abcdef"])
    with torch.no_grad(), hooks.read_residuals(lm, [1], positions=-1) as last, \
            hooks.read_residuals(lm, [1]) as full:
        lm.model(input_ids=ids, attention_mask=mask)
    assert last[1].shape == (2, lm.hidden_size)
    assert torch.equal(last[1], full[1][:, -1])


def test_neuron_read_feeds_down_proj(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["Is tradition important?"])
    captured = {}
    mlp = lm.arch.layers[0].mlp
    h = mlp.register_forward_hook(lambda m, i, o: captured.setdefault("out", o.detach()))
    try:
        with torch.no_grad(), hooks.read_neurons(lm, [0]) as acts:
            lm.model(input_ids=ids, attention_mask=mask)
    finally:
        h.remove()
    assert acts[0].shape[-1] == lm.arch.d_mlp
    assert torch.equal(lm.arch.down_projs[0](acts[0]), captured["out"])


def test_scale_neurons_beta_one_is_identity_and_beta_zero_ablates(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["Should I take the job?"])
    base = logits(lm, ids, mask)
    everything = {l: list(range(lm.arch.d_mlp)) for l in range(lm.n_layers)}
    with hooks.scale_neurons(lm, everything, 1.0):
        assert torch.equal(logits(lm, ids, mask), base)
    with hooks.scale_neurons(lm, {0: list(range(lm.arch.d_mlp))}, 0.0):
        ablated = logits(lm, ids, mask)
    w = lm.arch.down_projs[0].weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.zero_()
    try:
        zeroed = logits(lm, ids, mask)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.equal(ablated, zeroed)
    assert torch.equal(logits(lm, ids, mask), base)


def _greedy(lm, ids, mask, n, use_cache=True):
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                use_cache=use_cache, pad_token_id=lm.tokenizer.pad_token_id,
                                eos_token_id=None, temperature=None, top_p=None, top_k=None)
    return out[:, ids.shape[1]:]


def test_steering_inside_generate_matches_without_kv_cache(tiny_any):
    lm = tiny_any
    ids, mask = encode(lm, ["How do I stay safe while travelling?"])
    vec = {lm.n_layers // 2: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0)) * 4}
    with hooks.add_vectors(lm, vec):
        cached = _greedy(lm, ids, mask, 8, use_cache=True)
        uncached = _greedy(lm, ids, mask, 8, use_cache=False)
    plain = _greedy(lm, ids, mask, 8)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)


def test_prompt_and_generated_positions(tiny_llama):
    lm = tiny_llama
    ids, mask = encode(lm, ["Plan my holiday"])
    vec = {0: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(1)) * 6}
    plain = _greedy(lm, ids, mask, 6)
    with hooks.add_vectors(lm, vec, positions="prompt"):
        prompt_only = _greedy(lm, ids, mask, 6)
    with hooks.add_vectors(lm, vec, positions="generated"):
        gen_only = _greedy(lm, ids, mask, 6)
    with hooks.add_vectors(lm, vec, positions="all"):
        everywhere = _greedy(lm, ids, mask, 6)
    # the first new token depends only on the prefill pass
    assert prompt_only[0, 0] == everywhere[0, 0]
    assert gen_only[0, 0] == plain[0, 0]
    # prompt-only steering == steering a teacher-forced mask over the prompt, step by step
    full = torch.cat([ids, prompt_only], dim=1)
    m = torch.zeros_like(full, dtype=torch.bool)
    m[:, : ids.shape[1]] = True
    with torch.no_grad(), hooks.add_vectors(lm, vec, positions=m):
        tf = lm.model(input_ids=full).logits[:, ids.shape[1] - 1: -1].argmax(-1)
    assert torch.equal(tf, prompt_only)


def test_left_padded_batch_generates_like_each_prompt_alone(tiny_llama):
    lm = tiny_llama
    texts = ["Hi", "What is the best way to make friends in a new town?"]
    vec = {1: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(2)) * 3}
    with hooks.add_vectors(lm, vec):
        ids, mask = encode(lm, texts)
        batch = _greedy(lm, ids, mask, 6)
        for i, t in enumerate(texts):
            ids1, mask1 = encode(lm, [t])
            assert torch.equal(_greedy(lm, ids1, mask1, 6)[0], batch[i]), t


def test_bad_vector_shape_and_layer_are_one_line_errors(tiny_llama):
    lm = tiny_llama
    with pytest.raises(ValuemechError, match="hidden size"):
        with hooks.add_vectors(lm, {0: torch.zeros(lm.hidden_size + 1)}):
            pass
    with pytest.raises(ValuemechError, match="out of range"):
        with hooks.add_vectors(lm, {lm.n_layers: torch.zeros(lm.hidden_size)}):
            pass
    with pytest.raises(ValuemechError, match="positions"):
        with hooks.add_vectors(lm, {0: torch.zeros(lm.hidden_size)}, positions="middle"):
            pass
    assert all(not layer._forward_hooks for layer in lm.arch.layers)


def test_failed_registration_leaves_no_hooks(tiny_llama):
    lm = tiny_llama
    with pytest.raises(ValuemechError, match="hidden size"):
        with hooks.add_vectors(lm, {0: torch.zeros(lm.hidden_size), 1: torch.zeros(3)}, positions="prompt"):
            pass
    with pytest.raises(ValuemechError, match="neuron index"):
        with hooks.scale_neurons(lm, {0: [1], 1: [10_000]}, 2.0):
            pass
    assert all(not layer._forward_hooks for layer in lm.arch.layers)
    assert all(not d._forward_pre_hooks for d in lm.arch.down_projs)
    assert not lm.arch.decoder._forward_pre_hooks
