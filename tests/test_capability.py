"""Capability guard (valuemech.evals.capability): cloze scores, multiple-choice accuracy and built-in data."""

from __future__ import annotations

import pytest
import torch

from valuemech.errors import ValuemechError
from valuemech.values import VALUES


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
