"""Agreement with human data (Value Portrait): hand-computed AUC and Spearman, the CLI, the learned judge."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli
from valuemech.data.value_portrait import load_value_portrait
from valuemech.errors import ValuemechError
from valuemech.judges.human import portrait_agreement, spearman
from valuemech.values import VALUES

FIXTURE = Path(__file__).parent / "fixtures" / "value_portrait_tagged.json"


def test_portrait_agreement_equals_a_hand_computation():
    rs = load_value_portrait(FIXTURE)  # power r: 0, .3, -.3, .29, 0, 0 -> tied (r >= .3): only response 2
    power = [0.1, 0.2, 0.9, 0.4, 0.1, None]  # the last is undecided: left out
    scores = [{v: 0.5 for v in VALUES} | {"power": p} for p in power]
    rep = portrait_agreement(rs, scores, threshold=0.3, n_boot=20)
    pv = rep["per_value"]["power"]
    # tied score 0.2 against untied 0.1, 0.9, 0.4, 0.1: beats two, loses two -> AUC 2/4
    assert pv["auc"] == pytest.approx(0.5)
    assert (pv["n"], pv["tied"], pv["undecided"]) == (5, 1, 1)
    # Spearman on the five decided: ranks of r (0, .3, -.3, .29, 0) = (2.5, 5, 1, 4, 2.5),
    # ranks of s (.1, .2, .9, .4, .1) = (1.5, 3, 5, 4, 1.5)
    rx, ry = np.array([2.5, 5, 1, 4, 2.5]), np.array([1.5, 3, 5, 4, 1.5])
    assert pv["rho"] == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))
    nothing_tied = portrait_agreement(rs, scores, threshold=0.6, n_boot=5)  # no r reaches 0.6: no AUC anywhere
    assert all(np.isnan(m["auc"]) for m in nothing_tied["per_value"].values()) and np.isnan(nothing_tied["macro"]["auc"])
    sd = rep["per_value"]["self_direction"]  # constant scores: every pair tied
    assert sd["auc"] == 0.5 and np.isnan(sd["rho"])
    assert rep["queries"] == 2 and rep["n"] == 6


def test_spearman_is_pearson_on_ranks():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_portrait_agreement_rejects_mismatched_scores():
    rs = load_value_portrait(FIXTURE)
    with pytest.raises(ValuemechError, match="5 scores for 6 responses"):
        portrait_agreement(rs, [{}] * 5)


def test_judges_evaluate_value_portrait_cli(tmp_path):
    out = tmp_path / "rep.json"
    res = cli("judges", "evaluate", "--judge", "random", "--value-portrait", FIXTURE, "--no-builtin",
              "--n-boot", "20", "--out", out)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())["value_portrait"]
    assert rep["n"] == 6 and set(rep["per_value"]) == set(VALUES) and "auc_ci" in rep["macro"]
    assert "Value Portrait" in res.output and len(rep["scores"]) == 6
    res = cli("judges", "evaluate", "--judge", "random", "--value-portrait", FIXTURE, "--no-builtin",
              "--n-boot", "20", "--queries", "1", "--out", out)
    rep = json.loads(out.read_text())["value_portrait"]
    assert res.exit_code == 0 and rep["n"] == 3 and rep["queries"] == 1


@pytest.mark.parametrize("content, message", [
    ([{"content": {"text": "q"}, "outputs": [{"content": "a"}]}], "has no correlations"),
    ({"not": "a list"}, "expected a JSON list"),
])
def test_a_value_portrait_file_without_correlations_is_a_one_line_error(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    res = cli("judges", "evaluate", "--judge", "random", "--value-portrait", bad, "--no-builtin")
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output


def test_ridge_equals_the_normal_equations():
    from valuemech.judges.learned import Ridge

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    m = Ridge.fit(x, y, alpha=0.5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.inv(xc.T @ xc + 0.5 * np.eye(4)) @ xc.T @ yc
    assert np.allclose(m.w, w) and np.allclose(m.predict(x.mean(0, keepdims=True)), y.mean(0))


def test_group_folds_keep_a_query_in_one_fold():
    from valuemech.judges.learned import group_folds

    groups = ["a", "a", "b", "c", "c", "c", "d"]
    folds = group_folds(groups, 3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(7))
    for f in folds:
        for g in {groups[i] for i in f}:
            assert {i for i, h in enumerate(groups) if h == g} <= set(f.tolist())


def test_learned_judge_needs_an_existing_training_file(tmp_path):
    from valuemech.judges import check_judge

    with pytest.raises(ValuemechError, match="is not a file"):
        check_judge("learned", {"train": str(tmp_path / "missing.json")})


def test_judges_table_prints_value_portrait_reports(tmp_path):
    out = tmp_path / "rep.json"
    assert cli("judges", "evaluate", "--judge", "random", "--value-portrait", FIXTURE, "--no-builtin",
               "--n-boot", "10", "--out", out).exit_code == 0
    res = cli("judges", "table", out)
    assert res.exit_code == 0 and "mean AUC" in res.output and "| power |" in res.output


def test_short_name_of_model_judges():
    from valuemech.judges.human import short_name

    assert short_name("lm(Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF x.gguf),prefill,no-query,t=0.5)") == \
        "lm Qwen2.5-Coder-1.5B-Instruct prefill no-query"
    assert short_name("lexicon(pyvalues,min_hits=1)") == "lexicon"
