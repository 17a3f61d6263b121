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


def test_scale_per_row_each_row_as_if_alone(tiny_llama):
    """hooks.scale_per_row: row i's neurons scaled by its own factors, equal to scale_neurons on that row
    alone; factors of 1 (and rows without factors) leave the logits bit-identical."""
    lm = tiny_llama
    ids = torch.tensor([[5, 9, 13, 17, 21]])
    a = hooks.neuron_factors(lm, {1: [0, 3, 7]}, 4.0)
    b = hooks.neuron_factors(lm, {0: [2], 1: [3]}, -2.5)
    assert a[1].dtype == torch.float64 and a[1][3] == 4.0 and a[1].sum() == lm.arch.d_mlp - 3 + 12.0
    rows = [None, a, b, {1: torch.ones(lm.arch.d_mlp)}]
    with torch.no_grad():
        with hooks.scale_per_row(lm, rows):
            batch = lm.model(ids.repeat(4, 1)).logits
        alone = [lm.model(ids).logits[0]]
        with hooks.scale_neurons(lm, {1: [0, 3, 7]}, 4.0):
            alone.append(lm.model(ids).logits[0])
        with hooks.scale_neurons(lm, {0: [2], 1: [3]}, -2.5):
            alone.append(lm.model(ids).logits[0])
        after = lm.model(ids).logits[0]
    for k in range(3):
        torch.testing.assert_close(batch[k], alone[k], rtol=0, atol=0)  # float32, same length: exact
    torch.testing.assert_close(batch[3], alone[0], rtol=0, atol=0)  # factors of one change nothing
    assert not torch.allclose(alone[0], alone[1]) and not torch.allclose(alone[1], alone[2])
    torch.testing.assert_close(after, alone[0], rtol=0, atol=0)  # nothing left behind
    with torch.no_grad(), hooks.scale_per_row(lm, [a]):
        try:
            lm.model(ids.repeat(2, 1))
        except ValueError as exc:
            assert "1 rows of factors for a batch of 2" in str(exc)
        else:
            raise AssertionError("a batch of the wrong size must fail")
