"""Situational dilemmas: built-in data, swap symmetry, both-order averaging, aggregation, loader, evaluate."""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch

from valuemech.errors import ValuemechError
from valuemech.evals import dilemmas as dm
from valuemech.evals.common import EvalOptions
from valuemech.scoring import OptionScores
from valuemech.values import VALUES


def _d(id_, a, b, va, vb, text="You have a free evening."):
    return dm.Dilemma(id_, text, a, b, va, vb)


def test_builtin_dilemmas_cover_the_circumplex():
    items = dm.builtin_dilemmas()
    assert len(items) >= 100
    assert len({d.id for d in items}) == len(items)
    assert all(d.lang == "en" and d.value_a != d.value_b and d.value_a in VALUES and d.value_b in VALUES
               for d in items)
    as_a = collections.Counter(d.value_a for d in items)
    as_b = collections.Counter(d.value_b for d in items)
    for v in VALUES:
        total = as_a[v] + as_b[v]
        assert total >= 15, v
        assert 0.3 <= as_a[v] / total <= 0.7, v  # a value is not always action A
    # mostly across the circumplex: circular distance of at least 3 of 5 steps
    idx = {v: i for i, v in enumerate(VALUES)}
    far = [min(abs(idx[d.value_a] - idx[d.value_b]), 10 - abs(idx[d.value_a] - idx[d.value_b])) >= 3 for d in items]
    assert sum(far) / len(far) > 0.9


def test_scorer_is_symmetric_under_swapping_a_and_b(tiny_llama):
    items = dm.builtin_dilemmas()[:6]
    p = dm.choice_probs(tiny_llama, items, batch_size=4)
    p_swapped = dm.choice_probs(tiny_llama, [d.swapped() for d in items], batch_size=4)
    assert p.dtype == torch.float64 and p.shape == (6,)
    assert torch.allclose(p_swapped, 1 - p, rtol=0, atol=1e-12)
    assert not torch.allclose(p, torch.full_like(p, 0.5))  # a real reading, not a constant
    # the value's view: P(v's action) does not depend on which action is called A
    v = items[0].value_a
    assert float(dm.target_probs(tiny_llama, items[:1], v)[0]) == pytest.approx(
        float(dm.target_probs(tiny_llama, [items[0].swapped()], v)[0]), abs=1e-12)


def _fake_scores(table):
    """option_probabilities replacement: p_A looked up by the text of the action shown as A."""
    def fake(lm, prompts, options, batch_size=16, prefix_cache=True):
        assert options == ["A", "B"]
        rows = []
        for ids in prompts:
            text = lm.tokenizer.decode(ids)
            shown_a = text.split("\nA: ")[1].split("\n")[0]
            rows.append([table[shown_a], 1 - table[shown_a]])
        probs = torch.tensor(rows, dtype=torch.float64)
        return OptionScores(probs, torch.ones(len(prompts), dtype=torch.float64))
    return fake


def test_both_orders_averaged_by_hand(tiny_llama, monkeypatch):
    # shown first: "Read a book" gets p_A = 0.7; "Go dancing" shown first gets p_A = 0.4 (so p_B = 0.6)
    monkeypatch.setattr(dm, "option_probabilities", _fake_scores({"Read a book": 0.7, "Go dancing": 0.4,
                                                                  "Call a friend": 0.9, "Watch a film": 0.9}))
    items = [_d("x", "Read a book", "Go dancing", "tradition", "stimulation"),
             _d("y", "Call a friend", "Watch a film", "benevolence", "hedonism")]
    p = dm.choice_probs(tiny_llama, items)
    assert float(p[0]) == pytest.approx((0.7 + 0.6) / 2, abs=1e-15)
    assert float(p[1]) == pytest.approx((0.9 + 0.1) / 2, abs=1e-15)  # pure position bias reads as indifference
    t = dm.target_probs(tiny_llama, items, "stimulation")
    assert float(t[0]) == pytest.approx(1 - 0.65, abs=1e-15)


def test_win_rate_and_mean_shift_by_hand():
    s = dm.value_summary([0.2, -0.1, 0.0, 0.3], n_boot=200)
    assert s["win_rate"]["mean"] == 0.5  # a zero shift is not a win
    assert s["mean_shift"]["mean"] == pytest.approx(0.1)
    assert s["n"] == 4 and s["win_rate"]["n"] == 4
    lo, hi = s["mean_shift"]["ci"]
    assert -0.1 <= lo <= 0.1 <= hi <= 0.3
    c = dm.condition_summary({"power": s, "benevolence": dm.value_summary([0.1, 0.2], n_boot=200)}, n_boot=200)
    assert c["mean"]["win_rate"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert c["mean"]["mean_shift"]["mean"] == pytest.approx((0.1 + 0.15) / 2)
    assert c["mean"]["n"] == 6 and c["mean"]["n_values"] == 2
    one = dm.value_summary([0.4])
    assert one["win_rate"]["mean"] == 1.0 and all(math.isnan(x) for x in one["win_rate"]["ci"])


def test_loader_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("dilemma,action_a,action_b,value_a,value_b,lang\n"
                        'A friend needs help.,"Help them, now",Go out,Benevolence,Self-Direction,en\n'
                        "Rain today.,Stay in,Go out,security,stimulation,\n", encoding="utf-8")
    items = dm.load_dilemmas(csv_path)
    assert [(d.id, d.value_a, d.value_b, d.lang) for d in items] == [
        ("row-1", "benevolence", "self_direction", "en"), ("row-2", "security", "stimulation", "en")]
    assert items[0].action_a == "Help them, now"
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"id": f"k{i}", "dilemma": "S.", "action_a": "x", "action_b": "y",
                                        "value_a": "power", "value_b": "universal"}) for i in range(3)))
    assert [d.value_b for d in dm.load_dilemmas(jl)] == ["universalism"] * 3


@pytest.mark.parametrize("name, text, match", [
    ("none.csv", None, "does not exist"),
    ("empty.csv", "", "empty file"),
    ("header.csv", "dilemma,action_a,action_b,value_a,value_b\n", "no dilemmas"),
    ("cols.csv", "dilemma,action_a,value_a\nS,x,power\n", "missing column.*action_b, value_b"),
    ("bad.csv", "dilemma,action_a,action_b,value_a,value_b\nS,x,y,power,wealth\n", "row 1: unknown value_b 'wealth'"),
    ("same.csv", "dilemma,action_a,action_b,value_a,value_b\nS,x,y,power,Power\n", "row 1: value_a and value_b are both"),
    ("blank.csv", "dilemma,action_a,action_b,value_a,value_b\nS,x,,power,security\n", "row 1 lacks action_b"),
    ("bad.jsonl", '{"dilemma": "S"\n', "line 1 is not valid JSON"),
    ("lang.jsonl", '{"dilemma":"S","action_a":"x","action_b":"y","value_a":"power","value_b":"security","lang":"xx"}',
     "no prompt for language 'xx'"),
])
def test_loader_errors(tmp_path, name, text, match):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ValuemechError, match=match) as exc:
        dm.load_dilemmas(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_evaluate_end_to_end_alpha_zero(tiny_llama, tmp_path):
    from conftest import make_source as _source

    path = tmp_path / "few.jsonl"
    rows = [("power", "benevolence"), ("universalism", "power"), ("benevolence", "hedonism"), ("security", "stimulation")]
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "dilemma": f"Situation {i}.", "action_a": f"do {a}",
                                          "action_b": f"do {b}", "value_a": a, "value_b": b})
                              for i, (a, b) in enumerate(rows)))
    opts = EvalOptions(components=["prompted", "intrinsic_orth"], layer=1, alpha=0.0, values=["power", "benevolence"],
                       items=str(path), batch_size=4, n_boot=100, progress=False)
    res = dm.evaluate(tiny_llama, _source(tiny_llama), opts)
    json.dumps(res)
    assert res["eval"] == "dilemmas" and res["settings"]["n"] == 4
    assert set(res["aggregates"]) == {"prompted", "intrinsic_orth", "random control"}
    assert res["settings"]["conditions"]["prompted"] == {"layer": 1, "alpha": 0.0, "relative": True}
    # 2 dilemmas involve power, 2 involve benevolence: 4 records per condition
    assert len(res["items"]) == 3 * 4
    assert all(it["shift"] == 0.0 and it["win"] is False for it in res["items"])
    for agg in res["aggregates"].values():
        assert agg["mean"]["win_rate"]["mean"] == 0.0 and agg["mean"]["mean_shift"]["mean"] == 0.0
        assert agg["per_value"]["power"]["n"] == 2 and agg["mean"]["n"] == 4
    power_b = next(it for it in res["items"] if it["id"] == "q1" and it["value"] == "power")
    assert power_b["action"] == "b" and power_b["other_value"] == "universalism"
    assert res["baseline"]["power"]["n"] == 2
    md = dm.markdown(res)
    assert "Dilemma win rates" in md and "| prompted | 0.00 (+0.000) | 0.00 (+0.000) |" in md
    assert "Baseline preference" in md

    # a real push moves the probabilities, and limit keeps the first n dilemmas of each target value
    opts.alpha, opts.limit, opts.control = 4.0, 1, False
    res = dm.evaluate(tiny_llama, _source(tiny_llama), opts)
    assert res["settings"]["n"] == 1 and len(res["items"]) == 2 * 2  # q0 serves power and benevolence
    opts.limit = 2
    assert dm.dataset(opts)[0] and [d.id for d in dm.dataset(opts)[0]] == ["q0", "q1", "q2"]
    assert any(abs(it["shift"]) > 1e-6 for it in res["items"])


def test_evaluate_rejects_values_without_dilemmas(tiny_llama, tmp_path):
    from conftest import make_source as _source

    path = tmp_path / "one.csv"
    path.write_text("dilemma,action_a,action_b,value_a,value_b\nS,x,y,power,security\n")
    opts = EvalOptions(components=["prompted"], layer=1, alpha=0.1, values=["tradition"], items=str(path),
                       progress=False)
    with pytest.raises(ValuemechError, match="no dilemma .* involves"):
        dm.evaluate(tiny_llama, _source(tiny_llama), opts)
