"""Judges: the lexicon rule on known sentences, every value for every text, the random control."""

from __future__ import annotations

import pytest

from valuemech.errors import ValuemechError
from valuemech.judges import get_judge
from valuemech.judges.lexicon import count_hits
from valuemech.labels import label_records, load_labels
from valuemech.values import VALUES


def test_lexicon_counts_and_rule():
    hits, n = count_hits("We pray at church and honour our ancestors; the ceremony matters.")
    assert n == 11 and hits["tradition"] >= 3
    judge = get_judge("lexicon", {"min_hits": 2})
    res = judge.score(["We pray at church and honour our ancestors.", "", "The cat sat."], VALUES)
    assert all(set(s) == set(VALUES) for s in res.scores)
    assert res.expressed[0]["tradition"] is True
    assert not any(res.expressed[1].values()) and not any(res.expressed[2].values())
    assert res.scores[0]["tradition"] == pytest.approx(100 * count_hits("We pray at church and honour our ancestors.")[0]["tradition"] / 8)


def test_lexicon_french_elision_and_unknown_language():
    judge = get_judge("lexicon")
    hits, _ = count_hits("l'égalité et la justice", "fr")
    assert hits, "French dictionary words after an elision must match"
    with pytest.raises(ValuemechError, match="language 'ko'"):
        judge.score(["안녕하세요"], VALUES, ["ko"])


def test_random_judge_is_deterministic_and_unknown_judge_errors():
    j = get_judge("random", {"rate": 0.5, "seed": 3})
    a = j.score(["x", "y", ""], VALUES)
    assert a.expressed == j.score(["x", "y", ""], VALUES).expressed
    with pytest.raises(ValuemechError, match="unknown judge 'gpt'"):
        get_judge("gpt")
    with pytest.raises(ValuemechError, match="judge lexicon: unknown option 'threshold'"):
        get_judge("lexicon", {"threshold": 3})


def test_label_records_resume_and_judge_mismatch(tmp_path):
    recs = [{"id": f"r{i}", "response": "family and friends and kindness" if i % 2 else "", "lang": "en"}
            for i in range(5)]
    out = tmp_path / "labels.jsonl"
    judge = get_judge("lexicon")
    assert label_records(judge, recs[:3], out, progress=False) == 3
    assert label_records(judge, recs, out, progress=False) == 2
    labels, name = load_labels(out)
    assert set(labels) == {f"r{i}" for i in range(5)} and name == judge.name
    assert labels["r1"]["benevolence"] is True
    with pytest.raises(ValuemechError, match="holds labels from judge"):
        label_records(get_judge("random"), recs, out, progress=False)


def _all_values_for_every_text(res, n):
    assert len(res.scores) == len(res.expressed) == n
    for s, e in zip(res.scores, res.expressed):
        assert set(s) == set(e) == set(VALUES)


def test_embedding_judge_scores_every_value_and_ranks_obvious_texts():
    j = get_judge("embedding")
    texts = ["Honour the customs and religious rituals your family has kept for generations.",
             "Go skydiving, try something thrilling and new!", ""]
    res = j.score(texts, VALUES)
    _all_values_for_every_text(res, 3)
    assert max(res.scores[0], key=res.scores[0].get) == "tradition"
    assert max(res.scores[1], key=res.scores[1].get) == "stimulation"
    assert not any(res.expressed[2].values())  # empty text expresses nothing
    fixed = get_judge("embedding", {"threshold": -1.0}).score(texts[:1], VALUES)
    assert all(fixed.expressed[0].values())


def test_self_judge_equals_hand_computation_from_logits(tiny_llama):
    import torch

    j = get_judge("self", {"threshold": 0.5}, lm=tiny_llama)
    res = j.score(["Family first.", ""], ["benevolence", "power"])
    ids = torch.tensor([j.prompt("Family first.", "power")])
    with torch.no_grad():
        probs = tiny_llama.model(ids).logits[0, -1].softmax(-1)
    p_yes, p_no = float(probs[j.yes].sum()), float(probs[j.no].sum())
    assert res.scores[0]["power"] == pytest.approx(p_yes / (p_yes + p_no), rel=1e-5)
    assert res.expressed[0]["power"] == (res.scores[0]["power"] >= 0.5)
    assert res.expressed[1] == {"benevolence": False, "power": False}


def test_ensemble_rules_and_abstentions():
    from valuemech.judges.base import JudgeResult
    from valuemech.judges.ensemble import EnsembleJudge

    class Fixed:
        def __init__(self, name, labels):
            self.name, self.labels = name, labels

        def score(self, texts, values, langs=None, queries=None):
            return JudgeResult([{v: 0.0 for v in values}] * len(texts), [dict(self.labels) for _ in texts])

    a = Fixed("a", {"power": True, "security": None, "tradition": None})
    b = Fixed("b", {"power": False, "security": True, "tradition": None})
    c = Fixed("c", {"power": True, "security": False, "tradition": None})
    vals = ["power", "security", "tradition"]
    maj = EnsembleJudge([a, b, c]).score(["t"], vals)
    assert maj.expressed[0] == {"power": True, "security": False, "tradition": None}
    assert maj.scores[0]["power"] == pytest.approx(2 / 3)
    assert EnsembleJudge([a, b, c], "any").score(["t"], vals).expressed[0]["security"] is True
    assert EnsembleJudge([a, b, c], "all").score(["t"], vals).expressed[0]["power"] is False
    ens = get_judge("ensemble", {"members": ["lexicon", "random"], "rule": "any"})
    _all_values_for_every_text(ens.score(["", "kindness"], VALUES), 2)
    with pytest.raises(ValuemechError, match="at least two"):
        get_judge("ensemble", {"members": ["lexicon"]})


def test_agreement_metrics_hand_computed():
    import numpy as np

    from valuemech.judges.evaluate import agreement, calibrate_thresholds, prf, roc_auc

    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.3])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert prf(np.array([True, True, False]), np.array([True, False, True])) == (0.5, 0.5, 0.5)
    gold = [{"labels": {"power": 1}}, {"labels": {"power": 0}}, {"labels": {"power": 1}}]
    rep = agreement(gold, [{"power": True}, {"power": True}, {"power": None}],
                    [{"power": 1.0}, {"power": 1.0}, {"power": float("nan")}], n_boot=50, values=["power"])
    pv = rep["per_value"]["power"]
    assert (pv["precision"], pv["recall"], pv["n"], pv["undecided"]) == (0.5, 1.0, 2, 1)
    t = calibrate_thresholds([{"power": 0.2}, {"power": 0.7}, {"power": 0.9}], gold, ["power"])
    assert t == {"power": 0.2}  # F1: 0.8 at 0.2, 0.5 at 0.7, 0.67 at 0.9


def test_following_rates_hand_computed():
    from valuemech.labels import following_rates

    recs = [{"id": "a", "condition": "prompted", "prompted_value": "power"},
            {"id": "b", "condition": "prompted", "prompted_value": "power"},
            {"id": "c", "condition": "prompted", "prompted_value": "tradition"},
            {"id": "d", "condition": "intrinsic", "prompted_value": None}]
    labels = {"a": {"power": True}, "b": {"power": None}, "c": {"power": False}, "d": {"power": True}}
    r = following_rates(recs, labels)["power"]
    assert r == {"n_prompted_with": 2, "prompted_with": 1.0, "prompted_other": 0.0, "intrinsic": 1.0}
