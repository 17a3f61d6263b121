"""hooks.add_per_row: each row of one batch its own addition, equal to that row steered alone."""

from __future__ import annotations

import torch

from valuemech import hooks


def test_each_row_as_if_alone(tiny_llama):
    torch.manual_seed(0)
    hidden = tiny_llama.model.config.hidden_size
    v, w = torch.randn(hidden) * 3, torch.randn(hidden) * 3
    ids = torch.tensor([[5, 9, 13, 17, 21]])
    rows = [None, {1: v}, {0: w, 1: v}]
    with torch.no_grad():
        with hooks.add_per_row(tiny_llama, rows):
            batch = tiny_llama.model(ids.repeat(3, 1)).logits
        alone = [tiny_llama.model(ids).logits[0]]
        with hooks.add_vectors(tiny_llama, {1: v}):
            alone.append(tiny_llama.model(ids).logits[0])
        with hooks.add_vectors(tiny_llama, {0: w, 1: v}):
            alone.append(tiny_llama.model(ids).logits[0])
        after = tiny_llama.model(ids).logits[0]
    for k in range(3):
        torch.testing.assert_close(batch[k], alone[k], rtol=0, atol=0)  # float32, same length: exact
    assert not torch.allclose(alone[0], alone[1])
    torch.testing.assert_close(after, alone[0], rtol=0, atol=0)  # nothing left behind
