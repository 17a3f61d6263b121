"""Distinct-n and EAD-n against hand computations on a fixed corpus."""

import pytest

from valuemech.evals.diversity import distinct_n, ead_n, ngram_counts

CORPUS = ["The cat sat on the mat.", "The cat ran.", ""]


def test_distinct_hand_computed():
    # unigrams: the cat sat on the mat the cat ran -> 9 tokens, 6 distinct (the, cat, sat, on, mat, ran)
    assert distinct_n(CORPUS, 1) == pytest.approx(6 / 9)
    # bigrams: (the cat)(cat sat)(sat on)(on the)(the mat) + (the cat)(cat ran) -> 7 total, 6 distinct
    assert distinct_n(CORPUS, 2) == pytest.approx(6 / 7)
    assert ngram_counts(CORPUS, 2)[("the", "cat")] == 2
    assert distinct_n([""], 2) == 0.0


def test_ead_hand_computed():
    v = 10
    expected = v * (1 - (9 / 10) ** 7)  # C = 7 bigrams
    assert ead_n(CORPUS, 2, vocab_size=v) == pytest.approx(6 / expected)
    # with a huge vocabulary the expectation tends to C, so EAD tends to Distinct
    assert ead_n(CORPUS, 2, vocab_size=10**9) == pytest.approx(distinct_n(CORPUS, 2), rel=1e-6)
    with pytest.raises(ValueError):
        ead_n(CORPUS, 2, vocab_size=1)


def test_package_metrics_on_hand_cases():
    from valuemech.evals.diversity import lexical_metrics, mtld, self_bleu, semantic_diversity

    same = ["the quick brown fox jumps over the lazy dog today"] * 3
    assert self_bleu(same) == pytest.approx(1.0)
    assert semantic_diversity(same) == pytest.approx(0.0, abs=1e-6)
    assert self_bleu(["alpha beta", ""]) is None  # fewer than two non-empty texts
    assert mtld(["too short"]) is None
    different = ["I love hiking in the mountains with my friends every summer.",
                 "Quarterly tax filings require careful bookkeeping and receipts."]
    assert semantic_diversity(different) > 0.5
    assert self_bleu(different) < 0.1
    m = lexical_metrics(different, semantic=False)
    assert m["distinct_2"] == 1.0 and "semantic" not in m and m["mean_words"] == pytest.approx(9.5)


def test_logit_lens_entropy_equals_a_hand_computation(tiny_llama):
    import math

    import torch

    from valuemech.evals.diversity import logit_lens_entropy

    g = torch.Generator().manual_seed(3)
    v = torch.randn(tiny_llama.hidden_size, generator=g, dtype=torch.float64) * 7
    w = tiny_llama.model.get_output_embeddings().weight.double()
    norm = tiny_llama.arch.decoder.norm
    with torch.no_grad():
        h = norm((v / v.norm()).float()[None])[0].double()
        p = torch.softmax(w @ h, -1)
    want = float(-(p * p.log()).sum())
    assert logit_lens_entropy(tiny_llama, v) == pytest.approx(want, rel=1e-5)
    assert logit_lens_entropy(tiny_llama, 2 * v) == pytest.approx(want, rel=1e-5)  # scale-free
    assert 0 < want <= math.log(w.shape[0])
    with pytest.raises(ValueError):
        logit_lens_entropy(tiny_llama, torch.zeros_like(v))


def test_diversity_evaluate_alpha_zero_reproduces_the_baseline(tiny_llama):
    import json

    from conftest import make_source as _source
    from valuemech.evals.common import EvalOptions
    from valuemech.evals.diversity import evaluate, markdown

    opts = EvalOptions(components=["intrinsic"], alpha=0.0, values=["power"], limit=3, samples=2,
                       max_new_tokens=6, progress=False, n_boot=20)
    res = evaluate(tiny_llama, _source(tiny_llama), opts)
    json.dumps(res)
    base = [i["response"] for i in res["items"] if i["condition"] == "baseline"]
    steered = [i["response"] for i in res["items"] if i["condition"] == "intrinsic"]
    assert len(base) == 6 and steered == base  # same prompts, same seeds, α = 0
    a = res["aggregates"]["rows"]["intrinsic"]["aggregate"]
    assert a["distinct_2"]["change"] == 0.0
    assert set(res["aggregates"]["logit_lens_entropy"]) == {"intrinsic", "mean_delta", "random"}
    assert "| intrinsic |" in markdown(res) and "0.362 (paper)" in markdown(res)
