"""Class 3, accepted but not honoured: every numeric option of the CLI, the config and the server has a
range checked at the boundary, with a one-line error naming the option.

The ranges are declared once: ``metadata["allowed"]`` of the config's and the evaluations' dataclass
fields (checked by ``config.validate`` and ``registry.make_options``; the evaluations' CLI flags come
from those fields), ``ranged(...)`` parsers for the CLI-only numbers, pydantic ``Field`` bounds for
the server. The tables give each case exit 2, one ``error:`` line, no model loaded and the run
directory unchanged; the property tests check that a value is accepted exactly when it is in range.
"""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_cli_error, cli, tree_hashes
from valuemech.config import RunConfig, make_config
from valuemech.errors import ValuemechError
from valuemech.evals.common import EvalOptions

RUN = "RUN"  # replaced by a copy of the smoke run

# (case id, arguments, what the error line must hold)
CLI_CASES = [
    ("steer alpha nan", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "nan"],
     "Invalid value for '--alpha': must be a finite number, not nan"),
    ("steer alpha inf", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "inf"], "'--alpha': must be a finite"),
    ("steer alpha -inf", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "-inf"], "'--alpha': must be a finite"),
    ("steer max tokens 0", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "1", "--max-tokens", "0"],
     "Invalid value for '--max-tokens': must be at least 1, not 0"),
    ("steer max tokens -5", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "1", "--max-tokens", "-5"],
     "'--max-tokens': must be at least 1, not -5"),
    ("steer max tokens 1.5", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "1", "--max-tokens", "1.5"],
     "'--max-tokens': '1.5' is not an integer"),
    ("steer layer", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "1", "--layer", "7"],
     "--layer (blocks out of range: this model has 0..1) must be in [-2, 1], not 7"),
    ("steer seed", ["steer", "hi", "--run", RUN, "--value", "power", "--alpha", "1", "--seed", "-1"],
     "'--seed': must be in [0, 9223372036854775807], not -1"),
    ("report n-boot", ["report", RUN, "--n-boot", "0"], "'--n-boot': must be in [1, 1000000], not 0"),
    ("compare n-boot", ["compare", RUN, RUN, "--n-boot", "-1"], "'--n-boot': must be in [1, 1000000], not -1"),
    ("judges n-boot", ["judges", "evaluate", "--judge", "lexicon", "--n-boot", "0"], "'--n-boot': must be in [1, 1000000]"),
    ("serve port 0", ["serve", "--port", "0"], "'--port': must be in [1, 65535], not 0"),
    ("serve port 70000", ["serve", "--port", "70000"], "'--port': must be in [1, 65535], not 70000"),
    ("serve threads", ["serve", "--threads", "0"], "--threads must be at least 1, not 0"),
    ("serve dtype", ["serve", "--dtype", "float8"], "--dtype must be one of float32"),
    ("run n-queries", ["run", "--preset", "smoke", "--out", "NEW", "--n-queries", "0"],
     "config key data.n_queries must be at least 1, not 0"),
    ("run batch size", ["run", "--preset", "smoke", "--out", "NEW", "--batch-size", "0"],
     "config key generation.batch_size must be at least 1, not 0"),
    ("run seed", ["run", "--preset", "smoke", "--out", "NEW", "--seed", "-1"], "config key seed must be in [0, "),
    ("run threads", ["run", "--preset", "smoke", "--out", "NEW", "--threads", "0"],
     "config key model.threads must be at least 1, not 0"),
    ("eval temperature", ["eval", "dilemmas", "--run", RUN, "--temperature", "-1"],
     "evaluation option temperature (--temperature) must be at least 0, not -1.0"),
    ("eval top-p 0", ["eval", "dilemmas", "--run", RUN, "--top-p", "0"], "(--top-p) must be in (0, 1], not 0.0"),
    ("eval top-p 1.5", ["eval", "freeform", "--run", RUN, "--top-p", "1.5"], "(--top-p) must be in (0, 1], not 1.5"),
    ("eval n-boot", ["eval", "value_portrait", "--run", RUN, "--n-boot", "0"], "(--n-boot) must be in [1, 1000000], not 0"),
    ("eval limit", ["eval", "instruct", "--run", RUN, "--limit", "0"], "(--limit) must be at least 1, not 0"),
    ("eval samples", ["eval", "diversity", "--run", RUN, "--samples", "0"], "(--samples) must be at least 1, not 0"),
    ("eval alpha nan", ["eval", "dilemmas", "--run", RUN, "--alpha", "nan"], "(--alpha) must be a finite number, not nan"),
    ("eval alphas with nan", ["eval", "instruct", "--run", RUN, "--alphas", "0.1,nan"],
     "(--alphas) must be a finite number, not nan"),
    ("eval beta inf", ["eval", "dilemmas", "--run", RUN, "--beta", "inf"], "(--beta) must be a finite number, not inf"),
    ("eval batch size", ["eval", "jailbreak", "--run", RUN, "--batch-size", "0"], "(--batch-size) must be at least 1, not 0"),
    ("eval max new tokens", ["eval", "freeform", "--run", RUN, "--max-new-tokens", "0"],
     "(--max-new-tokens) must be at least 1, not 0"),
    ("eval seed", ["eval", "dilemmas", "--run", RUN, "--seed", "-3"], "(--seed) must be in [0, "),
    ("sweep items", ["sweep", "--run", RUN, "--n-items", "0"], "(--n-items) must be at least 1, not 0"),
    ("sweep max drop", ["sweep", "--run", RUN, "--max-drop", "-1"], "(--max-drop) must be in [0, 100], not -1.0"),
    ("sweep max kl", ["sweep", "--run", RUN, "--max-kl", "nan"], "(--max-kl) must be at least 0, not nan"),
    ("sweep alphas", ["sweep", "--run", RUN, "--alphas", "0.1,inf"], "(--alphas) must be a finite number, not inf"),
    ("circumplex permutations", ["eval", "circumplex", "--run", RUN, "--n-permutations", "0"],
     "(--n-permutations) must be in [1, 1000000], not 0"),
    ("pvq alpha grid", ["eval", "pvq", "--run", RUN, "--alphas", "nan"], "alpha_grid (--alphas) must be a finite number"),
]


@pytest.mark.parametrize("case,args,needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_number_out_of_range(case, args, needle, smoke_dir, tmp_path, no_model):
    root = tmp_path / "run"
    shutil.copytree(smoke_dir, root)
    before = tree_hashes(tmp_path)
    args = [root if a == RUN else tmp_path / "new" if a == "NEW" else a for a in args]
    assert_cli_error(cli(*args), needle)
    assert tree_hashes(tmp_path) == before


# (config key, value, what the error line must hold): given with `valuemech run --config`
CONFIG_CASES = [
    ("generation.temperature", -0.1, "config key generation.temperature must be at least 0, not -0.1"),
    ("generation.temperature", float("nan"), "generation.temperature must be at least 0, not nan"),
    ("generation.temperature", float("inf"), "generation.temperature must be at least 0, not inf"),
    ("generation.top_p", 0, "config key generation.top_p must be in (0, 1], not 0"),
    ("generation.top_p", 1.01, "generation.top_p must be in (0, 1], not 1.01"),
    ("generation.max_new_tokens", 0, "generation.max_new_tokens must be at least 1, not 0"),
    ("generation.batch_size", 0, "generation.batch_size must be at least 1, not 0"),
    ("generation.intrinsic_samples", -1, "generation.intrinsic_samples must be at least 0, not -1"),
    ("generation.prompted_samples", -1, "generation.prompted_samples must be at least 0, not -1"),
    ("extract.batch_size", 0, "extract.batch_size must be at least 1, not 0"),
    ("extract.min_group", 0, "extract.min_group must be at least 1, not 0"),
    ("neurons.k_percent", 0, "neurons.k_percent must be in (0, 100], not 0"),
    ("neurons.k_percent", 101, "neurons.k_percent must be in (0, 100], not 101"),
    ("neurons.max_angle", 91, "neurons.max_angle must be in (0, 90], not 91"),
    ("neurons.top_tokens", -1, "neurons.top_tokens must be at least 0, not -1"),
    ("neurons.top_responses", -1, "neurons.top_responses must be at least 0, not -1"),
    ("model.threads", 0, "model.threads must be at least 1, not 0"),
    ("seed", -1, "config key seed must be in [0, 9223372036854775807], not -1"),
    ("seed", 2 ** 64, "config key seed must be in [0, 9223372036854775807], not 18446744073709551616"),
    ("data.n_queries", 0, "data.n_queries must be at least 1, not 0"),
    ("evaluate.options.n_boot", 0, "evaluation option n_boot (--n-boot) must be in [1, 1000000], not 0"),
    ("evaluate.per_eval.sweep.max_drop", 101, "evaluation option max_drop (--max-drop) must be in [0, 100], not 101"),
    ("evaluate.per_eval.circumplex.n_permutations", 0, "evaluation option n_permutations (--n-permutations) must be"),
    ("evaluate.options.top_p", 2, "evaluation option top_p (--top-p) must be in (0, 1], not 2"),
]


def nested(key: str, value) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("key,value,needle", CONFIG_CASES, ids=[f"{k}={v}" for k, v, _ in CONFIG_CASES])
def test_config_number_out_of_range(key, value, needle, tmp_path, no_model):
    config = {"preset": "smoke", **nested(key, value)}
    if key.startswith("evaluate."):
        config["evaluate"]["evals"] = ["sweep", "dilemmas", "circumplex"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    where = "config section evaluate (" if key.startswith("evaluate.") else str(path)  # checked with the evaluations
    assert_cli_error(cli("run", "--config", path, "--out", tmp_path / "run", "--quiet"), where, needle)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# Property: a number is accepted exactly when it lies in its field's declared range
# --------------------------------------------------------------------------------------------------

def ranged_fields() -> list[tuple[str, str, dataclasses.Field]]:
    """(section, field name, field) of every config field that declares a numeric range."""
    from valuemech.config import Range

    out = []
    for section in dataclasses.fields(RunConfig):
        default = getattr(RunConfig(), section.name)
        fields = dataclasses.fields(default) if dataclasses.is_dataclass(default) else [section]
        for f in fields:
            if isinstance(f.metadata.get("allowed"), Range):
                out.append((section.name if dataclasses.is_dataclass(default) else "", f.name, f))
    return out


RANGED = ranged_fields()
NUMBERS = st.one_of(st.integers(-5, 200), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 0.0, 1.0, 100, 90, 2 ** 63 - 1, 2 ** 63, 1e-300]))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(which=st.integers(0, len(RANGED) - 1), value=NUMBERS)
def test_a_config_number_is_accepted_exactly_when_in_range(which, value):
    section, name, f = RANGED[which]
    kind = str(f.type)
    if isinstance(value, float) and "float" not in kind:
        value = int(value) if math.isfinite(value) else value  # an int field given a float is a type error
    overrides = {section: {name: value}} if section else {name: value}
    in_range = f.metadata["allowed"].holds(value)
    type_ok = "float" in kind or isinstance(value, int)
    try:
        make_config("smoke", overrides)
    except ValuemechError as exc:
        assert not (in_range and type_ok), f"{section}.{name}={value!r} refused: {exc}"
        assert "\n" not in str(exc) and name in str(exc)
        return
    assert in_range and type_ok, f"{section}.{name}={value!r} accepted"


EVAL_RANGED = [f for f in dataclasses.fields(EvalOptions) if f.metadata.get("allowed") is not None or "float" in str(f.type)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(which=st.integers(0, len(EVAL_RANGED) - 1), value=NUMBERS)
def test_an_evaluation_number_is_accepted_exactly_when_in_range(which, value):
    from valuemech.config import FINITE
    from valuemech.evals.registry import make_options

    f = EVAL_RANGED[which]
    if "list" in str(f.type):
        value, item = [0.1, value], value
    else:
        item = value
    if "float" not in str(f.type) and isinstance(item, float):
        return  # a type error, checked elsewhere
    rule = f.metadata.get("allowed") or FINITE
    try:
        make_options({f.name: value}, "dilemmas")
    except ValuemechError as exc:
        assert not rule.holds(item), f"{f.name}={value!r} refused: {exc}"
        assert f"(--{f.name.replace('_', '-')})" in str(exc)
        return
    assert rule.holds(item), f"{f.name}={value!r} accepted"


# --------------------------------------------------------------------------------------------------
# The server: the same kinds of numbers in a request are a 400 naming the field
# --------------------------------------------------------------------------------------------------

SERVER_CASES = [
    ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
    ({"top_p": 0}, "top_p: Input should be greater than 0"),
    ({"top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 2 ** 64}, "seed: Input should be less than or equal to 9223372036854775807"),
    ({"steering": {"vector": "shared.power", "layer": 0, "alpha": float("nan")}}, "steering.alpha: Input should be a finite"),
    ({"steering": {"neurons": "shared.power", "beta": float("inf")}}, "steering.beta: Input should be a finite"),
    ({"steering": {"vector": "shared.power", "layer": 99, "alpha": 1}}, "steering layer 99 out of range"),
]


def test_server_numbers_out_of_range(smoke_dir, tiny_llama):
    import json

    from fastapi.testclient import TestClient

    from valuemech.serve import create_app

    client = TestClient(create_app(tiny_llama, run_dir=smoke_dir))
    for extra, needle in SERVER_CASES:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
        r = client.post("/v1/chat/completions", content=json.dumps(body).encode(),
                        headers={"content-type": "application/json"})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], (extra, r.text)
