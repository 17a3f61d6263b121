"""The ``lm`` judge: scores equal a hand computation from logits, cache or not; in a run it keeps to its own model."""

import shutil

import pytest
import torch

from valuemech.errors import ValuemechError
from valuemech.judges import check_judge, get_judge
from valuemech.scoring import next_token_probs, tree_next_token_probs

TEXTS = ["Family first, always.", "", "Take the risk and start the company."]
QUERIES = ["What matters most?", "", "Should I quit my job?"]
VALS = ["benevolence", "power", "stimulation"]


def _hand_score(lm, ids: list[int], yes: list[int], no: list[int]) -> float:
    """P(yes)/(P(yes)+P(no)) from one plain forward over the whole sequence (no cache, no padding)."""
    with torch.no_grad():
        probs = lm.model(torch.tensor([ids])).logits[0, -1].double().softmax(-1)
    p_yes, p_no = float(probs[yes].sum()), float(probs[no].sum())
    return p_yes / (p_yes + p_no)


@pytest.mark.parametrize("prompt", ["shared", "per-value", "name-only", "prefill", "endorse"])
def test_lm_judge_equals_hand_computation_with_and_without_cache(tiny_llama, prompt):
    j = get_judge("lm", {"prompt": prompt}, lm=tiny_llama)
    res = j.score(TEXTS, VALS, queries=QUERIES)
    head, bodies, tails = j.segments(TEXTS, VALS, QUERIES)
    for i, text in enumerate(TEXTS):
        for k, v in enumerate(VALS):
            hand = _hand_score(tiny_llama, head + [t for seg in bodies[i] for t in seg] + tails[k], j.yes, j.no)
            assert res.scores[i][v] == pytest.approx(hand, rel=1e-5, abs=1e-7)
            assert res.expressed[i][v] == (bool(text) and res.scores[i][v] >= 0.5)
    assert res.expressed[1] == {v: False for v in VALS}  # an empty text expresses nothing
    assert len(j.last_mass) == len(TEXTS) * len(VALS) and all(0 < m <= 1 for m in j.last_mass)


def test_tree_probs_equal_whole_sequences(tiny_any):
    """The head/body/tail cache gives what whole sequences give (sliding-window models: the fallback)."""
    head, tails = [5, 6, 7, 8, 9, 10, 11, 12, 13], [[40], [41, 42, 43]]
    bodies = [[[20, 21], [22]], [[20, 21], [23, 24]], [[], []], [[30], [31]], [[30], []]]  # shared first segments
    cols = [1, 2, 3, 50]
    tree = tree_next_token_probs(tiny_any, head, bodies, tails, cols, batch_size=1)
    whole = [head + [t for seg in b for t in seg] + tail for b in bodies for tail in tails]
    flat = next_token_probs(tiny_any, whole, prefix_cache=False, columns=cols)
    assert torch.allclose(tree.reshape(-1, len(cols)), flat, rtol=1e-5, atol=1e-9)


def test_query_reaches_the_question(tiny_llama):
    j = get_judge("lm", {}, lm=tiny_llama)
    _, with_q, _ = j.segments(["Yes."], ["power"], ["Is money everything?"])
    _, without, _ = j.segments(["Yes."], ["power"], [""])
    assert "Is money everything?" in tiny_llama.tokenizer.decode(with_q[0][0])
    assert without[0][0] == [] and with_q[0][1] == without[0][1]
    no_query = get_judge("lm", {"use_query": False}, lm=tiny_llama)
    assert no_query.segments(["Yes."], ["power"], ["Is money everything?"])[1] == without
    assert "no-query" in no_query.name and "no-query" not in j.name


def test_lm_judge_loads_its_own_model_and_self_uses_the_given_one(tiny_llama):
    own = get_judge("lm", {"model": "tiny-qwen2"}, lm=tiny_llama)
    assert own.lm is not tiny_llama and "tiny-qwen2" in own.name
    assert get_judge("self", {"model": "tiny-qwen2"}, lm=tiny_llama).lm is tiny_llama
    assert get_judge("lm", {}, lm=tiny_llama).lm is tiny_llama


@pytest.mark.parametrize("options, message", [
    ({"model": "no-such-model"}, "unknown model"),
    ({"model": 3}, "option model must be a model name"),
    ({"model": "tiny-llama", "dtype": "float8"}, "dtype must be one of"),
    ({"model": "tiny-llama", "prompt": "poem"}, "prompt must be one of"),
    ({"model": "tiny-llama", "threshold": 2}, "threshold"),
    ({"model": "tiny-llama", "temperature": 1}, "temperature"),
])
def test_bad_lm_judge_options_are_one_line_errors(options, message):
    with pytest.raises(ValuemechError, match=message):
        check_judge("lm", options)


def test_lm_judge_without_a_model_outside_a_run_is_an_error():
    with pytest.raises(ValuemechError, match="needs option model"):
        get_judge("lm", {})


def test_in_a_run_lm_with_another_model_never_loads_the_runs_model(smoke_dir, tmp_path, monkeypatch):
    from valuemech.config import make_config
    from valuemech.models import loading
    from valuemech.pipeline import Pipeline
    from valuemech.rundir import RunDir

    run = tmp_path / "run"
    shutil.copytree(smoke_dir, run)
    (run / "labels.jsonl").unlink()
    cfg = make_config("smoke", {"judge": {"name": "lm", "options": {"model": "tiny-qwen2"}}})
    loaded = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda c: loaded.append(getattr(c, "name", c)) or real(c))
    pipe = Pipeline(RunDir(run), cfg, log=lambda s: None, progress=False)
    pipe.label()
    assert loaded == ["tiny-qwen2"] and pipe.lm is None
    rows = [line for line in (run / "labels.jsonl").read_text().splitlines() if line]
    assert rows and all("tiny-qwen2" in line for line in rows)


def test_label_input_passes_each_texts_query_to_the_judge(tmp_path, tiny_llama):
    import json

    from tests.conftest import cli
    from valuemech.values import VALUES

    rows = [{"id": "a", "text": "Family first.", "query": "What matters?"}, {"id": "b", "text": "Win."}]
    src, out = tmp_path / "in.jsonl", tmp_path / "labels.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cli("label", "--judge", "lm", "--model", "tiny-llama", "--input", src, "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    got = {json.loads(line)["response_id"]: json.loads(line)["scores"] for line in out.read_text().splitlines()}
    j = get_judge("lm", {}, lm=tiny_llama)
    want = j.score([r["text"] for r in rows], VALUES, queries=["What matters?", ""]).scores
    without = j.score([r["text"] for r in rows], VALUES, queries=["", ""]).scores
    assert got["a"] == pytest.approx(want[0], rel=1e-5) and got["b"] == pytest.approx(want[1], rel=1e-5)
    assert got["a"] != pytest.approx(without[0], rel=1e-5)  # the query changed the score
