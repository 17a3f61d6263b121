"""Value neurons, steering components, random controls and the circumplex: exact checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_source

from valuemech.circumplex import circle, cosine_matrix, fit_circumplex, procrustes_r2
from valuemech.errors import ValuemechError
from valuemech.neurons import classify_layer, counts_per_layer, find_value_neurons
from valuemech.steering import random_like, scaled, steer
from valuemech.values import VALUES


_source = make_source


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


def test_cloze_scores_equal_hand_computation_from_logits(tiny_any, monkeypatch):
    from valuemech.evals import capability
    from valuemech.evals.capability import builtin_mc, cloze_scores, mc_accuracy
    from valuemech.scoring import answer_prompt

    lm = tiny_any
    items = builtin_mc(3)
    got = cloze_scores(lm, items)  # one prompt pass per item, its cache shared by the options
    with monkeypatch.context() as m:  # the path of models without a reusable cache
        m.setattr(capability, "_cached_logliks", lambda *a: None)
        plain = cloze_scores(lm, items, batch_size=5)  # batches cut across items, left padding
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)
    for i, it in enumerate(items):
        prompt = answer_prompt(lm, it.question, "Answer:")
        for k, choice in enumerate(it.choices):
            cont = lm.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = lm.model(torch.tensor([prompt + cont])).logits[0].double().log_softmax(-1)
            want = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont)) / len(" " + choice)
            assert float(got[i, k]) == pytest.approx(want, abs=1e-5)
    acc, chosen = mc_accuracy(lm, items)
    assert chosen == got.argmax(-1).tolist() and acc == sum(c == it.answer for c, it in zip(chosen, items)) / 3
    assert len(mc_accuracy(lm, items, scoring="letter")[1]) == 3
    with pytest.raises(ValuemechError, match="unknown multiple-choice scoring 'vibes'"):
        mc_accuracy(lm, items, scoring="vibes")


def test_builtin_data_for_guard_and_pvq():
    from valuemech.evals.capability import builtin_mc, neutral_texts
    from valuemech.evals.pvq import LANGS, builtin_items

    mc = builtin_mc()
    assert len(mc) >= 150 and all(len(i.choices) == 4 and 0 <= i.answer < 4 for i in mc)
    assert len(neutral_texts()) >= 20
    items = builtin_items()
    for lang in LANGS:
        for v in VALUES:
            assert sum(i.lang == lang and i.value == v for i in items) >= 4, (lang, v)


def test_pvq_and_mmlu_loaders(tmp_path):
    from valuemech.evals.capability import load_mmlu_csv
    from valuemech.evals.pvq import load_items

    p = tmp_path / "pvq.csv"
    p.write_text("id,value,text\n1,Self-Direction,They think for themselves.\n2,UNIVERSALISM,They protect nature.\n")
    assert [i.value for i in load_items(p)] == ["self_direction", "universalism"]
    j = tmp_path / "pvq.json"
    j.write_text('[{"id": "x", "value": "Honour", "text": "t"}]')
    with pytest.raises(ValuemechError, match="unknown value 'Honour'"):
        load_items(j)
    m = tmp_path / "astronomy_test.csv"
    m.write_text('"What orbits Earth?",Moon,Sun,Mars,Venus,A\n')
    assert load_mmlu_csv(m)[0].answer == 0
    m.write_text("q,a,b,c\n")
    with pytest.raises(ValuemechError, match="row 1"):
        load_mmlu_csv(m)


def test_pvq_gains_zero_for_identity_conditions(tiny_llama):
    from contextlib import nullcontext

    from valuemech.evals.pvq import builtin_items, pvq_gains

    items = [it for it in builtin_items(["en", "fr"]) if it.value in ("power", "tradition", "security")]
    res = pvq_gains(tiny_llama, {"none": lambda v: nullcontext()}, items, ["power", "tradition"],
                    n_boot=20, progress=False)
    for lang in ("en", "fr"):
        # other batch composition: float32 rounding only
        assert res["rows"]["none"][lang]["gain"] == pytest.approx(0.0, abs=1e-6)
        assert set(res["rows"]["none"][lang]["per_value"]) == {"power", "tradition"}
    src = _source(tiny_llama)
    big = pvq_gains(tiny_llama, {"shared": lambda v: steer(tiny_llama, src, "shared", v, 1, 2.0)},
                    items[:15], ["power"], n_boot=20, progress=False)
    assert big["rows"]["shared"]["en"]["gain"] != 0.0


def test_merged_pvq_parts_equal_the_joint_computation(tiny_llama):
    """Languages and values split over separate runs, merged: the same cells, aggregates and intervals."""
    from valuemech.evals.pvq import builtin_items, merge_results, pvq_gains

    src = _source(tiny_llama)
    items = [it for it in builtin_items(["en", "ko"]) if it.value in ("power", "tradition", "security")]
    conds = {"shared": lambda v: steer(tiny_llama, src, "shared", v, 1, 2.0)}
    run = lambda its, vals: pvq_gains(tiny_llama, conds, its, vals, n_boot=50, progress=False)  # noqa: E731
    joint = run(items, ["power", "tradition"])
    en = [it for it in items if it.lang == "en"]
    ko = [it for it in items if it.lang == "ko"]
    parts = {"a.json": run(en, ["power", "tradition"]), "b.json": run(ko, ["tradition"]),
             "c.json": run(ko, ["power", "tradition"])}  # ko/tradition twice: must agree
    merged = merge_results(parts, n_boot=50)
    for lang in ("en", "ko", "mean"):
        j, m = joint["rows"]["shared"][lang], merged["rows"]["shared"][lang]
        assert m["gain"] == pytest.approx(j["gain"], abs=1e-9)
        assert m["gain_ci"] == pytest.approx(j["gain_ci"], abs=1e-9)
    assert merged["rows"]["shared"]["ko"]["specificity"] == pytest.approx(joint["rows"]["shared"]["ko"]["specificity"])
    assert list(merged["baseline"]) == ["en", "ko"] and merged["values"] == ["power", "tradition"]
    assert merged["merged_from"] == ["a.json", "b.json", "c.json"]
    bad = {**parts["c.json"], "rows": {"shared": {**parts["c.json"]["rows"]["shared"]}}}
    bad["rows"]["shared"]["ko"] = {**bad["rows"]["shared"]["ko"], "per_value": {
        **bad["rows"]["shared"]["ko"]["per_value"], "tradition": {"gain": 9.0, "specificity": 0.0}}}
    with pytest.raises(ValuemechError, match="differs from an earlier file"):
        merge_results({"a.json": parts["b.json"], "d.json": bad})
    with pytest.raises(ValuemechError, match="steer 'shared' differently"):
        merge_results({"a.json": {**parts["a.json"], "settings": {"shared": {"alpha": 0.1}}},
                       "b.json": {**parts["b.json"], "settings": {"shared": {"alpha": 0.2}}}})
    with pytest.raises(ValuemechError, match="has rows"):
        merge_results({"a.json": parts["a.json"], "b.json": {**parts["b.json"], "rows": {"other": {}}}})
    with pytest.raises(ValuemechError, match="at least two"):
        merge_results({"a.json": parts["a.json"]})


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


def test_prefix_cached_option_probabilities_equal_the_plain_ones(tiny_any):
    from valuemech.evals.pvq import OPTIONS, builtin_items, likert_prompts
    from valuemech.scoring import _common_prefix_len, option_probabilities

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


def test_forced_gains_zero_for_identity(tiny_llama):
    from contextlib import nullcontext

    from valuemech.evals.pvq import builtin_items, forced_gains

    items = [it for it in builtin_items(["en"]) if it.value in ("power", "tradition", "security")]
    res = forced_gains(tiny_llama, {"none": lambda v: nullcontext()}, items, ["power", "security"],
                       n_boot=20, progress=False)
    assert res["rows"]["none"]["en"]["gain"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < res["baseline"]["en.power"] < 1.0


def test_sweep_choice_is_strictly_under_the_drop_and_kl_limits():
    from valuemech.evals.sweep import choose

    def pt(alpha, base, acc, kl=0.0):
        return {"alpha": alpha, "accuracy": acc, "accuracy_drop": 100.0 * (base - acc), "kl": kl}

    # 100 * (0.3 - 0.25) is 4.999999999999999 in floats: exactly 5 points is not "under 5"
    curves = {"a": {"15": [pt(0.1, 0.3, 0.3), pt(0.2, 0.3, 0.25)]},
              "b": {"15": [pt(0.1, 0.7, 0.7), pt(0.2, 0.7, 0.6625)], "10": [pt(0.4, 0.7, 0.7, kl=2.0)]},
              "c": {"15": [pt(0.1, 0.7, 0.5)]}}
    got = choose(curves, max_drop=5.0, max_kl=1.0)
    assert got["a"]["alpha"] == 0.1 and got["b"] == {"layer": 15, **pt(0.2, 0.7, 0.6625)} and got["c"] is None
    assert choose(curves)["b"]["layer"] == 10  # without a KL limit the larger α at block 10 wins
