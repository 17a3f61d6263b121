"""Value neurons (valuemech.neurons): classification by angle, per-model search and top activations."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_source as _source

from valuemech.neurons import classify_layer, counts_per_layer, find_value_neurons


def test_neuron_along_u_shared_is_classified_shared():
    g = torch.Generator().manual_seed(0)
    d, m = 16, 40
    u_s = torch.randn(d, generator=g, dtype=torch.float64)
    u_s /= u_s.norm()
    u_i = torch.randn(d, generator=g, dtype=torch.float64)
    u_i -= (u_i @ u_s) * u_s
    u_i /= u_i.norm()
    w = torch.randn(d, m, generator=g, dtype=torch.float64) * 0.01
    w[:, 7] = 5 * u_s          # exactly along u_shared
    w[:, 8] = 4 * u_i          # along u_int
    w[:, 9] = -3 * u_i         # along u_prompt
    w[:, 10] = 2 * (u_s + u_i) / math.sqrt(2)  # 45 degrees: no class
    kept = {n.neuron: n for n in classify_layer(w, u_s, u_i, layer=3, k_percent=10, max_angle=30)}
    assert kept[7].cls == "shared" and kept[7].angle_shared == pytest.approx(0, abs=1e-6)
    assert kept[8].cls == "intrinsic" and kept[9].cls == "prompted" and kept[10].cls == "none"
    assert kept[7].proj_norm == pytest.approx(5)
    assert set(kept) == {7, 8, 9, 10}  # top 10% of 40 by projection norm
    assert counts_per_layer(list(kept.values()), 5)["shared"] == [0, 0, 0, 1, 0]
    # by cosine, a small weight lying in the plane outranks a big one mostly outside it
    w[:, 11] = 0.5 * u_s
    w[:, 12] = 10 * torch.randn(d, generator=g, dtype=torch.float64)
    by_cos = {n.neuron for n in classify_layer(w, u_s, u_i, 3, k_percent=12.5, rank_by="cosine")}
    assert 11 in by_cos and 12 not in by_cos


def test_find_value_neurons_on_a_tiny_model(tiny_llama):
    src = _source(tiny_llama)
    found = find_value_neurons(tiny_llama, src.components, ["power"], k_percent=5)
    assert len(found["power"]) == tiny_llama.n_layers * math.ceil(tiny_llama.arch.d_mlp * 0.05)
    assert {n.cls for n in found["power"]} <= {"shared", "intrinsic", "prompted", "none"}


def test_top_activations_match_a_direct_read(tiny_llama):
    from valuemech import hooks
    from valuemech.neurons import top_activations

    lm = tiny_llama
    recs = [{"id": f"r{i}", "prompt_token_ids": lm.prompt_ids(f"question {i}", None),
             "response_token_ids": list(f"answer {i * 7}".encode())} for i in range(5)]
    got = top_activations(lm, recs, [(1, 5), (0, 17)], top_n=3, batch_size=2, progress=False)
    for (layer, neuron), rows in got.items():
        best = []
        for r in recs:
            with torch.no_grad(), hooks.read_neurons(lm, [layer]) as acts:
                lm.model(torch.tensor([r["prompt_token_ids"] + r["response_token_ids"]]))
            a = acts[layer][0, -len(r["response_token_ids"]):, neuron]
            best.append((float(a.max()), r["id"]))
        best.sort(reverse=True)
        assert [row["response_id"] for row in rows] == [rid for _, rid in best[:3]]
        assert rows[0]["activation"] == pytest.approx(best[0][0], abs=1e-4)
