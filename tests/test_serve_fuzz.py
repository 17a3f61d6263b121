"""The server never answers 500: request bodies fuzzed with hypothesis against the app in-process.

Bodies are drawn as arbitrary bytes, arbitrary JSON, and almost-valid chat requests whose every field
is sometimes out of range or of the wrong type (NaN, infinities, huge integers, unknown vectors and
neuron sets, bad roles, empty and oversized choices). Every answer must be a 200 or a 4xx with an
``error.message``; the server must still answer a well-formed request afterwards.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from valuemech.cli import app as cli_app
from valuemech.values import VALUES

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(list("\n\r\t{}[]<>|/\\\"'")), max_size=40)
NUMBER = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0, -1, 1, 0.5, 1e308, -0.0, 2 ** 63, 2 ** 64]))
JUNK = st.recursive(st.one_of(st.none(), st.booleans(), NUMBER, TEXT),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)


def maybe(good: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a plausible value, sometimes anything."""
    return st.one_of(good, good, good, JUNK)


MESSAGE = st.fixed_dictionaries({"role": maybe(st.sampled_from(["system", "user", "assistant", "wizard", ""])),
                                 "content": maybe(TEXT)})
VECTOR = st.sampled_from([f"{k}.{v}" for k in ("shared", "intrinsic", "prompted", "prompted_unique")
                          for v in VALUES[:3]] + ["mean_delta", "shared.honour", "", "mean_delta.power"])
STEERING = st.fixed_dictionaries({}, optional={
    "vector": maybe(VECTOR), "layer": maybe(st.integers(-4, 4) | st.integers()), "alpha": maybe(NUMBER),
    "relative": maybe(st.booleans()), "positions": maybe(st.sampled_from(["all", "prompt", "generated", "none"])),
    "neurons": maybe(st.sampled_from(["shared.power", "prompted.benevolence", "all.power", "shared.honour"])),
    "beta": maybe(NUMBER)})
REQUEST = st.fixed_dictionaries({"messages": maybe(st.lists(MESSAGE, max_size=3))}, optional={
    "model": maybe(TEXT), "max_tokens": maybe(st.integers(1, 6) | st.integers(-3, 5000)),
    "temperature": maybe(NUMBER), "top_p": maybe(NUMBER), "seed": maybe(NUMBER), "stream": maybe(st.booleans()),
    "guided_choice": maybe(st.lists(TEXT, max_size=4) | st.lists(st.text(min_size=2000, max_size=3000), max_size=1)),
    "steering": maybe(STEERING)})


def encoded(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


BODY = st.one_of(REQUEST.map(encoded), REQUEST.map(encoded), REQUEST.map(encoded), JUNK.map(encoded),
                 st.binary(max_size=64), REQUEST.map(lambda r: encoded(r).decode().encode("utf-16")))


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_llama):
    from fastapi.testclient import TestClient

    from valuemech.serve import create_app

    run = tmp_path_factory.mktemp("fuzz") / "run"
    result = CliRunner().invoke(cli_app, ["run", "--preset", "smoke", "--out", str(run), "--quiet", "--evals", "none"])
    assert result.exit_code == 0, result.output
    with TestClient(create_app(tiny_llama, run_dir=run), raise_server_exceptions=False) as c:
        yield c


WELL_FORMED = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3,
               "steering": {"vector": "shared.power", "layer": 1, "alpha": 2.0}}


@FUZZ
@given(body=BODY)
def test_no_request_body_gets_a_500(client, body):
    r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, body[:300], r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"]["message"], r.text


def test_the_server_still_answers_after_the_fuzzing(client):
    r = client.post("/v1/chat/completions", json=WELL_FORMED)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
