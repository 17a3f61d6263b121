"""Extraction: response-token means and difference in means against hand computations."""

from __future__ import annotations

import json

import pytest
import torch

from valuemech.errors import ValuemechError
from valuemech.batching import left_pad
from valuemech.values import VALUES
from valuemech.vectors import DiffMeansAccumulator, ValueVectors, extract_vectors, response_means


def _pairs(lm):
    prompts = [lm.prompt_ids("Hi", None), lm.prompt_ids("What matters most in a career?", "Value power.")]
    responses = [list(b"Sure thing"), list(b"Ok")]
    return prompts, responses


def test_response_means_equal_hand_computation_on_padded_batch(tiny_any):
    lm = tiny_any
    prompts, responses = _pairs(lm)
    means, norms = response_means(lm, prompts, responses)
    # hand computation: the same padded batch through the full model with output_hidden_states
    ids, attn = left_pad([p + r for p, r in zip(prompts, responses)], lm.tokenizer.pad_token_id)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hs = lm.model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True).hidden_states
    for layer in range(lm.n_layers - 1):
        for i, r in enumerate(responses):
            tokens = hs[layer + 1][i, -len(r):].to(torch.float64)
            # float64 sums of the same float32 values: equal up to summation order
            torch.testing.assert_close(means[i, layer], tokens.sum(0) / len(r), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(norms[i, layer], tokens.norm(dim=-1).sum(), rtol=1e-12, atol=1e-12)
    # and each sequence alone (no padding) agrees up to float32 rounding
    for i, (p, r) in enumerate(zip(prompts, responses)):
        with torch.no_grad():
            alone = lm.model(input_ids=torch.tensor([p + r]), output_hidden_states=True).hidden_states
        for layer in range(lm.n_layers - 1):
            ref = alone[layer + 1][0, -len(r):].double().mean(0)
            torch.testing.assert_close(means[i, layer], ref, atol=1e-4, rtol=1e-4)


def test_empty_response_is_rejected(tiny_llama):
    with pytest.raises(ValueError):
        response_means(tiny_llama, [[1, 2]], [[]])


def test_difference_in_means_equals_hand_computation():
    acc = DiffMeansAccumulator(n_layers=2, hidden=3)
    gen = torch.Generator().manual_seed(0)
    means = [torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(5)]
    flags = [True, False, True, False, False]
    for m, f in zip(means, flags):
        acc.add("intrinsic", m, {"power": f})
    pos = torch.stack([m for m, f in zip(means, flags) if f]).mean(0)
    neg = torch.stack([m for m, f in zip(means, flags) if not f]).mean(0)
    torch.testing.assert_close(acc.vector("intrinsic", "power"), pos - neg, rtol=0, atol=1e-15)
    assert acc.counts()["intrinsic"]["power"] == {"expressed": 2, "not": 3}
    assert acc.vector("intrinsic", "power", min_group=3) is None
    assert acc.vector("prompted", "power") is None  # no prompted responses at all


def _records(lm, n=8):
    recs = []
    for i in range(n):
        cond = "intrinsic" if i % 2 == 0 else "prompted"
        recs.append({"id": f"r{i}", "condition": cond,
                     "prompt_token_ids": lm.prompt_ids(f"query {i}", None if cond == "intrinsic" else "Be kind."),
                     "response_token_ids": list(f"answer number {i}".encode())})
    recs.append({"id": "empty", "condition": "intrinsic", "prompt_token_ids": [5, 6], "response_token_ids": []})
    return recs


def test_extract_vectors_batching_does_not_change_groups(tiny_llama):
    lm = tiny_llama
    recs = _records(lm)
    labels = {r["id"]: {v: (int(r["id"][-1]) % 4 < 2) if r["id"] != "empty" else False for v in VALUES}
              for r in recs}
    a = extract_vectors(lm, recs, labels, "test", batch_size=3, min_group=1, progress=False)
    b = extract_vectors(lm, recs, labels, "test", batch_size=8, min_group=1, progress=False)
    assert set(a.vectors) == {f"{c}.{v}" for c in ("intrinsic", "prompted") for v in VALUES}
    for k in a.vectors:
        torch.testing.assert_close(a.vectors[k], b.vectors[k], atol=1e-5, rtol=1e-4)
    assert a.metadata["empty_responses"] == "1"
    counts = json.loads(a.metadata["counts"])
    assert counts["intrinsic"]["power"] == {"expressed": 2, "not": 2}
    high = extract_vectors(lm, recs, labels, "test", batch_size=8, min_group=3, progress=False)
    assert not high.vectors and "intrinsic.power" in json.loads(high.metadata["skipped"])


def test_value_vectors_round_trip_and_model_check(tiny_llama, tmp_path):
    from valuemech.models import load_model, wrap_model
    from valuemech.models.tiny import tiny_model

    lm = tiny_llama
    recs = _records(lm)
    labels = {r["id"]: {v: r["id"] in ("r0", "r1", "r4", "r5") for v in VALUES} for r in recs}
    vv = extract_vectors(lm, recs, labels, "test", min_group=1, progress=False)
    vv.save(tmp_path / "vectors.safetensors")
    back = ValueVectors.load(tmp_path / "vectors.safetensors")
    assert back.metadata["weights_sha256"] == lm.weights_sha256
    assert torch.equal(back.get("intrinsic", "power"), vv.get("intrinsic", "power").float())
    assert back.residual_norm.shape == (lm.n_layers,)
    back.check_model(lm)
    with pytest.raises(ValuemechError, match="not from the loaded model"):
        back.check_model(load_model("tiny-qwen3"))  # same shapes, other weights
    deeper = wrap_model(*tiny_model("llama", n_layers=3))
    with pytest.raises(ValuemechError, match="3 x 64"):
        back.check_model(deeper)


def test_undecided_labels_leave_the_response_out_of_that_value():
    acc = DiffMeansAccumulator(n_layers=1, hidden=2)
    acc.add("prompted", torch.tensor([[1.0, 0.0]], dtype=torch.float64), {"power": True})
    acc.add("prompted", torch.tensor([[0.0, 1.0]], dtype=torch.float64), {"power": False})
    acc.add("prompted", torch.tensor([[9.0, 9.0]], dtype=torch.float64), {"power": None, "tradition": True})
    assert acc.counts()["prompted"]["power"] == {"expressed": 1, "not": 1}
    assert torch.equal(acc.vector("prompted", "power"), torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    assert acc.counts()["prompted"]["tradition"] == {"expressed": 1, "not": 2}
