"""Option scoring (valuemech.scoring): probabilities equal a hand computation, with and without the prefix cache."""

from __future__ import annotations

import pytest
import torch
from conftest import make_source as _source

from valuemech.steering import steer


def test_option_probabilities_equal_hand_computation_from_logits(tiny_llama):
    from valuemech.evals.pvq import OPTIONS, PVQItem, likert_prompts, likert_scores
    from valuemech.scoring import option_probabilities, option_token_ids

    lm = tiny_llama
    items = [PVQItem("a", "power", "They like to be in charge."), PVQItem("b", "tradition", "They keep old customs.")]
    prompts = likert_prompts(lm, items, reverse=False)
    got = option_probabilities(lm, prompts, OPTIONS)
    opt_ids = option_token_ids(lm.tokenizer, OPTIONS)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            probs = lm.model(torch.tensor([p])).logits[0, -1].double().softmax(-1)
        per = torch.stack([probs[t].sum() for t in opt_ids])
        torch.testing.assert_close(got.probs[i], per / per.sum(), rtol=1e-6, atol=1e-9)
        assert float(got.mass[i]) == pytest.approx(float(per.sum()), rel=1e-6)
    res = likert_scores(lm, items)
    rev = option_probabilities(lm, likert_prompts(lm, items, reverse=True), OPTIONS).probs
    dist = (got.probs + rev.flip(-1)) / 2
    torch.testing.assert_close(res.expected, dist @ torch.arange(1, 7, dtype=torch.float64))
    assert set(res.centred()) == {"power", "tradition"}
    assert abs(sum(res.centred().values())) < 1e-9


def test_prefix_cached_option_probabilities_equal_the_plain_ones(tiny_any):
    from valuemech.evals.pvq import OPTIONS, builtin_items, likert_prompts
    from valuemech.batching import common_prefix_len as _common_prefix_len
    from valuemech.scoring import option_probabilities

    lm = tiny_any
    prompts = likert_prompts(lm, builtin_items(["en"])[:7], reverse=False)
    assert _common_prefix_len(prompts) >= 8
    src = _source(lm)
    for ctx in (None, "steer"):
        with (steer(lm, src, "shared", "power", 1, 0.5) if ctx else torch.no_grad()):
            plain = option_probabilities(lm, prompts, OPTIONS, batch_size=3, prefix_cache=False)
            cached = option_probabilities(lm, prompts, OPTIONS, batch_size=3, prefix_cache=True)
        torch.testing.assert_close(cached.probs, plain.probs, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(cached.mass, plain.mass, rtol=1e-4, atol=1e-9)
