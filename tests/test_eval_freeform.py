"""Free-form PVQ: judge choice (never silently circular), 0-10 scores, and α = 0 changing nothing."""

from __future__ import annotations

import json

import pytest

from valuemech.rundir import RunDir
from valuemech.evals import freeform
from valuemech.evals.common import EvalOptions


def test_the_labelling_judge_is_avoided_by_default():
    assert freeform.pick_judge(None, "lexicon") == ("embedding", False)
    assert freeform.pick_judge(None, "embedding") == ("lexicon", False)
    assert freeform.pick_judge(None, None) == ("lexicon", False)
    assert freeform.pick_judge("lexicon", "lexicon") == ("lexicon", True)


def test_summary_is_ten_times_the_expressed_share():
    scored = [{"score": 2.0, "expressed": True}, {"score": 0.0, "expressed": False},
              {"score": 4.0, "expressed": True}, {"score": None, "expressed": None}]
    s = freeform._summary(scored)
    assert s["score_0_10"] == pytest.approx(10 * 2 / 3) and s["native"] == pytest.approx(2.0)
    assert s["n"] == 4 and s["n_decided"] == 3


def test_evaluate_on_a_tiny_model(tiny_llama, tmp_path):
    from conftest import make_source as _source

    (tmp_path / "config.yaml").write_text("preset: smoke\njudge: {name: random, options: {rate: 0.5}}\n")
    opts = EvalOptions(components=["prompted"], alpha=0.0, values=["power", "tradition"], limit=2,
                       max_new_tokens=6, progress=False, n_boot=20, judge="random", judge_options={"rate": 0.5})
    res = freeform.evaluate(tiny_llama, _source(tiny_llama), opts, run=RunDir(tmp_path))
    json.dumps(res)
    st = res["settings"]
    assert st["judge"] == "random" and st["labelling_judge"] == "random" and st["circular"] is True
    base = [r["answer"] for r in res["items"] if r["condition"] == "baseline"]
    steered = [r["answer"] for r in res["items"] if r["condition"] == "prompted"]
    assert len(base) == 4 and base == steered
    assert "CIRCULAR" in freeform.markdown(res)
