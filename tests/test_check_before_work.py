"""Class 1, check before work: every name, number and path of a configuration is checked before the
first artifact is written (and before a model loads), and a run directory that holds no artifact
yet takes a corrected configuration instead of refusing it.

Each case of the tables ends in exit 2, one ``error:`` line naming the option or file and the cause,
no traceback, no model loaded (the ``no_model`` fixture fails the test if one is), and nothing
written (the run directory does not exist afterwards, or its file hashes are unchanged).
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_cli_error, cli, tree_hashes
from valuemech.errors import ValuemechError
from valuemech.judges import check_judge, get_judge

# (case id, extra `valuemech run --preset smoke` arguments, what the error line must hold)
RUN_ARGS = [
    ("unknown judge", ["--judge", "bogus"], "unknown judge 'bogus'"),
    ("judge option out of range", ["--judge", "random", "--judge-options", '{"rate": 2}'],
     "judge random option rate must be in (0, 1), not 2"),
    ("judge option NaN", ["--judge", "random", "--judge-options", '{"rate": NaN}'], "option rate must be in (0, 1), not nan"),
    ("unknown judge option", ["--judge", "lexicon", "--judge-options", '{"min_hits": 2, "treshold": 1}'],
     "judge lexicon: unknown option 'treshold'"),
    ("judge option of the wrong type", ["--judge", "lexicon", "--judge-options", '{"min_hits": "2"}'],
     "judge lexicon option min_hits must be int"),
    ("judge choice", ["--judge", "lexicon", "--judge-options", '{"on_unsupported": "ignore"}'],
     "option on_unsupported must be one of error, skip, not 'ignore'"),
    ("llm judge without its key", ["--judge", "llm", "--judge-options", '{"api_key_env": "VM_TEST_UNSET_KEY"}'],
     "VM_TEST_UNSET_KEY is not set"),
    ("llm judge URL", ["--judge", "llm", "--judge-options", '{"api_key_env": null, "base_url": "localhost:8000"}'],
     "option base_url must be an http:// or https:// URL"),
    ("llm judge timeout", ["--judge", "llm", "--judge-options", '{"api_key_env": null, "timeout": 0}'],
     "option timeout must be greater than 0, not 0"),
    ("ensemble member", ["--judge", "ensemble", "--judge-options", '{"members": ["lexicon", "oracle"]}'],
     "unknown judge 'oracle'"),
    ("ensemble member option", ["--judge", "ensemble", "--judge-options",
                                '{"members": ["lexicon", {"name": "random", "options": {"rate": 0}}]}'],
     "judge ensemble member random option rate must be in (0, 1), not 0"),
    ("self judge model", ["--judge", "self", "--judge-options", '{"model": "gpt5"}'], "unknown model 'gpt5'"),
    ("unknown tiny model", ["--model", "tiny-nope"], "unknown tiny model 'tiny-nope'"),
    ("model not in the offline cache", ["--model", "valuemech-test/no-such-model"],
     "'valuemech-test/no-such-model': HF_HUB_OFFLINE=1 and it is not in the local cache"),
    ("endpoint URL", ["--endpoint", "ftp://example.org/v1"], "generation.endpoint.base_url must be an http:// or https:// URL"),
    ("endpoint key", ["--endpoint", "http://127.0.0.1:9/v1", "--endpoint-key-env", "VM_TEST_UNSET_KEY"],
     "generation endpoint: environment variable VM_TEST_UNSET_KEY is not set"),
    ("query file", ["--queries", "/nonexistent/queries.jsonl"], "/nonexistent/queries.jsonl"),
    ("unknown evaluation", ["--evals", "sweep,bogus"], "unknown evaluation 'bogus'"),
    ("unknown stage", ["--stages", "generate,bogus"], "unknown stage 'bogus'"),
    ("more queries than the pool", ["--n-queries", "100000"],
     "data.n_queries is 100000, but builtin holds 344 queries (give --n-queries 344 or fewer)"),
    ("dtype", ["--dtype", "float8"], "model.dtype must be one of float32"),
    ("device", ["--device", "gpu"], "model.device must be cpu, cuda, cuda:N, mps or xpu, not 'gpu'"),
]

# (case id, YAML config given with --config, what the error line must hold)
CONFIGS = [
    ("evaluation dataset", {"evaluate": {"evals": ["dilemmas"], "per_eval": {"dilemmas": {"items": "/nonexistent/d.csv"}}}},
     "dilemma file /nonexistent/d.csv does not exist"),
    ("evaluation option range", {"evaluate": {"evals": ["dilemmas"], "options": {"max_new_tokens": 0}}},
     "evaluation option max_new_tokens (--max-new-tokens) must be at least 1, not 0"),
    ("evaluation judge", {"evaluate": {"evals": ["freeform"], "per_eval": {"freeform": {"judge": "oracle"}}}},
     "unknown judge 'oracle'"),
    ("evaluation judge option", {"evaluate": {"evals": ["freeform"], "per_eval": {"freeform": {
        "judge": "random", "judge_options": {"rate": 3}}}}}, "freeform judge random option rate must be in (0, 1)"),
    ("refusal judge option", {"evaluate": {"evals": ["jailbreak"], "per_eval": {"jailbreak": {
        "judge": "llm", "judge_options": {"api_key_env": None, "retries": -1}}}}},
     "llm refusal judge option retries must be in [0, 100], not -1"),
    ("refusal judge column", {"evaluate": {"evals": ["jailbreak"], "per_eval": {"jailbreak": {"column": "goal"}}}},
     "needs a dataset file"),
    ("sweep MMLU path", {"evaluate": {"evals": ["sweep"], "per_eval": {"sweep": {"mmlu": "/nonexistent/mmlu"}}}},
     "/nonexistent/mmlu"),
    ("unknown component", {"evaluate": {"evals": ["dilemmas"], "options": {"components": ["sideways"]}}},
     "unknown component 'sideways'"),
    ("endpoint key unknown", {"generation": {"backend": "endpoint", "endpoint": {"base_url": "http://x/v1", "modle": "m"}}},
     "unknown config key generation.endpoint.'modle'"),
    ("endpoint retries", {"generation": {"backend": "endpoint", "endpoint": {"base_url": "http://x/v1", "retries": -1}}},
     "generation.endpoint.retries must be in [0, 100], not -1"),
    ("endpoint concurrency type", {"generation": {"backend": "endpoint", "endpoint": {"base_url": "http://x/v1",
                                                                                     "concurrency": "8"}}},
     "generation.endpoint.concurrency must be int"),
    ("template file", {"data": {"templates": "/nonexistent/templates.json"}}, "/nonexistent/templates.json"),
    ("backend", {"generation": {"backend": "vllm"}}, "generation.backend must be one of local, endpoint, not 'vllm'"),
]


@pytest.mark.parametrize("case,args,needle", RUN_ARGS, ids=[c[0] for c in RUN_ARGS])
def test_run_refuses_a_bad_setting_before_anything_is_written(case, args, needle, tmp_path, no_model, monkeypatch):
    monkeypatch.delenv("VM_TEST_UNSET_KEY", raising=False)
    out = tmp_path / "run"
    evals = [] if "--evals" in args else ["--evals", "none"]
    assert_cli_error(cli("run", "--preset", "smoke", "--out", out, "--quiet", *evals, *args), needle)
    assert not out.exists()


@pytest.mark.parametrize("model", [[], ["--model", "tiny-llama"]], ids=["paper model", "tiny model"])
def test_paper_preset_without_its_api_key_fails_before_work(model, tmp_path, no_model, monkeypatch):
    """The paper preset labels with GPT-4o-mini: no OPENAI_API_KEY is one line, before any model or file."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    assert_cli_error(cli("run", "--preset", "paper", "--out", out, "--quiet", *model),
                     "judge llm: environment variable OPENAI_API_KEY is not set")
    assert not out.exists()


@pytest.mark.parametrize("case,config,needle", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_run_refuses_a_bad_config_before_anything_is_written(case, config, needle, tmp_path, no_model):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"preset": "smoke", **config}))
    out = tmp_path / "run"
    assert_cli_error(cli("run", "--config", path, "--out", out, "--quiet"), needle)
    assert not out.exists()


# (case id, `valuemech eval ...` arguments after --run DIR, what the error line must hold)
EVAL_ARGS = [
    ("dataset file", ["dilemmas", "--items", "/nonexistent/d.csv"], "dilemma file /nonexistent/d.csv does not exist"),
    ("pvq items", ["pvq", "--items", "/nonexistent/p.json"], "/nonexistent/p.json"),
    ("value portrait items", ["value_portrait", "--items", "/nonexistent/vp.json"], "/nonexistent/vp.json"),
    ("instruct prompts", ["instruct", "--items", "/nonexistent/if.jsonl"], "/nonexistent/if.jsonl"),
    ("jailbreak requests", ["jailbreak", "--items", "/nonexistent/jb.csv"], "/nonexistent/jb.csv"),
    ("diversity queries", ["diversity", "--items", "/nonexistent/q.jsonl"], "/nonexistent/q.jsonl"),
    ("freeform judge", ["freeform", "--judge", "oracle"], "unknown judge 'oracle'"),
    ("jailbreak judge", ["jailbreak", "--judge", "gpt"], "jailbreak judges: the refusal matcher (always) and 'llm'"),
    ("component", ["diversity", "--components", "sideways"], "unknown component 'sideways'"),
    ("sweep scoring", ["sweep", "--mc-scoring", "vibes"], "--mc-scoring must be one of cloze"),
    ("sweep block", ["sweep", "--layers", "0,9"], "(--layers) (blocks out of range: this model has 0..1) must be in [-2, 1]"),
    ("pvq block", ["pvq", "--layer", "-3"], "(--layer) (blocks out of range: this model has 0..1) must be in [-2, 1], not -3"),
]


@pytest.mark.parametrize("case,args,needle", EVAL_ARGS, ids=[c[0] for c in EVAL_ARGS])
def test_eval_refuses_bad_options_before_the_model_loads(case, args, needle, smoke_dir, tmp_path, no_model):
    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    before = tree_hashes(root)
    name, *rest = args
    assert_cli_error(cli("eval", name, "--run", root, "--quiet", *rest), needle)
    assert tree_hashes(root) == before


def test_a_run_directory_without_artifacts_takes_a_corrected_configuration(tmp_path):
    """A config.yaml left with a bad judge (by an older valuemech) and no artifact: the corrected run is taken."""
    from valuemech.config import make_config

    out = tmp_path / "run"
    out.mkdir()
    bad = make_config("smoke").to_dict()
    bad["judge"] = {"name": "bogus", "options": {}}
    (out / "config.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    (out / "stages.json").write_text("{}")  # bookkeeping, not an artifact
    result = cli("run", "--preset", "smoke", "--out", out, "--quiet", "--evals", "none", "--n-queries", "2",
                 "--stages", "generate,label")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["judge"]["name"] == "random"
    assert len((out / "labels.jsonl").read_text().splitlines()) == 2 * 4
    # with an artifact in it, a changed configuration is refused, and nothing changes
    before = tree_hashes(out)
    assert_cli_error(cli("run", "--preset", "smoke", "--out", out, "--quiet", "--evals", "none", "--n-queries", "3"),
                     "has a different configuration (data.n_queries)")
    assert tree_hashes(out) == before
    # a corrected configuration is checked like a new one: a bad one is refused and the stored one kept
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    assert_cli_error(cli("run", "--preset", "smoke", "--out", empty, "--quiet", "--judge", "oracle"), "unknown judge 'oracle'")
    assert yaml.safe_load((empty / "config.yaml").read_text())["judge"]["name"] == "bogus"


# --------------------------------------------------------------------------------------------------
# Judge options as data: what check_judge accepts, the judge accepts too; what it refuses is one line
# --------------------------------------------------------------------------------------------------

OPTION_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from(["error", "skip", "", "majority", "any", "lexicon", "random"]),
                         st.lists(st.sampled_from(["lexicon", "random", "ensemble", "oracle"]), max_size=3),
                         st.dictionaries(st.sampled_from(["power", "x"]), st.floats(-2, 2), max_size=2))
OPTIONS = st.dictionaries(st.sampled_from(["min_hits", "min_rate", "on_unsupported", "rate", "seed", "members",
                                           "rule", "threshold", "bogus"]), OPTION_VALUE, max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.sampled_from(["lexicon", "random", "ensemble"]), options=OPTIONS)
def test_check_judge_accepts_exactly_what_builds(name, options):
    try:
        check_judge(name, options)
    except ValuemechError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    get_judge(name, options)  # accepted options build the judge (no TypeError, no ValueError)
