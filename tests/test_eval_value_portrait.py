"""Value Portrait: loader, both-order ratings and value scores against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import valuemech.evals.value_portrait as vp
from valuemech.errors import ValuemechError
from valuemech.evals.common import EvalOptions
from valuemech.scoring import OptionScores
from valuemech.values import VALUES

FIXTURE = Path(__file__).parent / "fixtures" / "value_portrait_tagged.json"


def test_loader_reads_the_published_format():
    rs = vp.load_value_portrait(FIXTURE)
    assert len(rs) == 6
    assert rs[0].id == "fx_vp_1/1" and rs[0].query == "How should I spend my free Saturday?"
    assert rs[3].correlations["power"] == pytest.approx(0.29)
    assert set(rs[0].correlations) == set(VALUES)


def test_builtin_set_covers_every_value():
    rs = vp.builtin_portrait()
    assert len(rs) == 200
    for v in VALUES:
        assert sum(r.correlations[v] >= 0.3 for r in rs) >= 14, v


@pytest.mark.parametrize("raw, message", [
    ("[", "not valid JSON"),
    ("{}", "expected a JSON list"),
    ("[]", "no items"),
    ('[{"content": {"text": "q"}, "outputs": [{"content": "r", "correlations": [["Kindness", 0.5]]}]}]',
     "unknown value name 'Kindness'"),
    ('[{"content": {"text": "q"}, "outputs": []}]', "item 1 has no outputs"),
    ('[{"content": {"text": "q"}, "outputs": [{"content": "r", "correlations": [["Power", "high"]]}]}]',
     "is not a number"),
])
def test_loader_errors_are_one_line_and_name_the_file(tmp_path, raw, message):
    p = tmp_path / "vp.json"
    p.write_text(raw)
    with pytest.raises(ValuemechError) as exc:
        vp.load_value_portrait(p)
    assert message in str(exc.value) and str(p) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValuemechError, match="does not exist"):
        vp.load_value_portrait(tmp_path / "missing.json")


def test_scores_equal_a_hand_computation_including_the_reversed_order(monkeypatch, tiny_llama):
    ratings = [6, 2, 4, 3, 5, 1]
    calls = []

    def fake(lm, prompts, options, batch_size=16):
        reverse = len(calls) % 2 == 1  # rate() scores the original order, then the reversed one
        calls.append(reverse)
        probs = torch.zeros(len(prompts), 6, dtype=torch.float64)
        for i, r in enumerate(ratings):
            probs[i, (7 - r if reverse else r) - 1] = 1.0  # a consistent rater: reversed k means 7 - k
        return OptionScores(probs, torch.full((len(prompts),), 0.8, dtype=torch.float64))

    monkeypatch.setattr(vp, "option_probabilities", fake)
    rs = vp.load_value_portrait(FIXTURE)
    got, mass = vp.rate(tiny_llama, rs)
    assert got.tolist() == [float(r) for r in ratings] and calls == [False, True]
    assert float(mass.mean()) == pytest.approx(0.8)
    s = vp.value_scores(rs, got)
    overall = sum(ratings) / 6  # 3.5
    assert s["self_direction"] == pytest.approx(6 - overall)
    assert s["power"] == pytest.approx(2 - overall)  # 0.3 counts, 0.29 does not
    assert s["conformity"] == pytest.approx((3 + 1) / 2 - overall)
    assert s["stimulation"] == pytest.approx((6 + 5) / 2 - overall)
    assert vp.value_scores(rs, got, threshold=0.6)["power"] is None
    # an inconsistent order (no flip) would average 6 with 1: check the flip is applied
    fwd = torch.eye(6, dtype=torch.float64)[[5]]
    rev = torch.eye(6, dtype=torch.float64)[[0]]
    assert vp.ratings_from_probs(fwd, rev).item() == 6.0


def test_evaluate_end_to_end_alpha_zero_changes_nothing(tiny_llama):
    from conftest import make_source as _source

    opts = EvalOptions(components=["prompted", "shared"], alpha=0.0, values=["power", "benevolence"],
                       items=str(FIXTURE), progress=False, n_boot=20)
    res = vp.evaluate(tiny_llama, _source(tiny_llama), opts)
    json.dumps(res)
    rows = res["aggregates"]["rows"]
    assert set(rows) == {"prompted", "shared", "random control"}
    for row in rows.values():
        for p in row["per_value"].values():
            assert p["gain"] == 0.0
    assert res["settings"]["n_responses"] == 6
    base = res["aggregates"]["baseline_profile"]
    assert base["power"] is not None and base["universalism"] is not None
