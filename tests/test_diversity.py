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
