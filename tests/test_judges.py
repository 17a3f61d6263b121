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
    with pytest.raises(ValuemechError, match="bad options"):
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
