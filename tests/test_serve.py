"""valuemech serve over HTTP on loopback: chat, guided choice, steering without leaks, 4xx on bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import ServerThread
from valuemech.cli import app as cli_app
from valuemech.serve import create_app


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("serve") / "run"
    res = CliRunner().invoke(cli_app, ["run", "--preset", "smoke", "--out", str(out), "--quiet", "--evals", "none"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def server(tiny_llama, smoke_dir):
    with ServerThread(create_app(tiny_llama, run_dir=smoke_dir, model_name="tiny", max_body=20_000)) as srv:
        yield srv


def chat(url, **body):
    body.setdefault("messages", [{"role": "user", "content": "Should I move abroad?"}])
    body.setdefault("max_tokens", 8)
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_models_and_plain_completion(server):
    r = httpx.get(f"{server.url}/v1/models")
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny"
    r = chat(server.url, messages=[{"role": "system", "content": "Value tradition."},
                                   {"role": "user", "content": "Plan my weekend"}])
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] <= 8
    # greedy is deterministic
    assert chat(server.url).json()["choices"][0]["message"] == chat(server.url).json()["choices"][0]["message"]


def test_guided_choice_returns_the_best_choice(server, tiny_llama):
    from valuemech.serve import Message, _prompt_ids, choice_logprobs

    msgs = [{"role": "user", "content": "Is this kind? Answer yes or no."}]
    r = chat(server.url, messages=msgs, guided_choice=["yes", "no"])
    answer = r.json()["choices"][0]["message"]["content"]
    lp = choice_logprobs(tiny_llama, _prompt_ids(tiny_llama, [Message(**m) for m in msgs]), ["yes", "no"])
    assert answer == ["yes", "no"][int(lp[1] > lp[0])]


def test_steering_applies_per_request_only(server):
    steer = {"vector": "intrinsic.power", "layer": 1, "alpha": 50.0}
    plain = chat(server.url).json()["choices"][0]["message"]["content"]
    steered = chat(server.url, steering=steer).json()["choices"][0]["message"]["content"]
    assert steered != plain
    # interleaved requests give what each gives alone
    assert chat(server.url).json()["choices"][0]["message"]["content"] == plain
    assert chat(server.url, steering=steer).json()["choices"][0]["message"]["content"] == steered
    rel = chat(server.url, steering={**steer, "vector": "shared.power", "relative": True, "alpha": 0.0})
    assert rel.json()["choices"][0]["message"]["content"] == plain  # alpha 0: no change


def test_neuron_class_steering_per_request(server, smoke_dir):
    neurons = json.loads((smoke_dir / "neurons.json").read_text())
    value = next(v for v, d in neurons["per_value"].items() if any(n["class"] == "shared" for n in d["neurons"]))
    plain = chat(server.url).json()["choices"][0]["message"]["content"]
    same = chat(server.url, steering={"neurons": f"shared.{value}", "beta": 1.0})
    assert same.status_code == 200 and same.json()["choices"][0]["message"]["content"] == plain  # β = 1
    big = chat(server.url, steering={"neurons": f"shared.{value}", "beta": 500.0}).json()
    assert big["choices"][0]["message"]["content"] != plain
    assert chat(server.url).json()["choices"][0]["message"]["content"] == plain  # nothing leaks


def test_ablation_and_vector_lists_per_request(server, tiny_llama, smoke_dir):
    from valuemech import hooks
    from valuemech.config import GenerationConfig
    from valuemech.generate import sample_batch
    from valuemech.rundir import RunDir
    from valuemech.serve import Message, _prompt_ids

    plain = chat(server.url).json()["choices"][0]["message"]["content"]
    r = chat(server.url, steering={"vector": "shared.power", "layer": 1, "operator": "ablate"})  # no alpha needed
    assert r.status_code == 200
    u = RunDir(smoke_dir).load_components().get("shared", "power")[1]
    prompt = _prompt_ids(tiny_llama, [Message(role="user", content="Should I move abroad?")])
    with hooks.ablate_vectors(tiny_llama, {1: u}):
        ids, _ = sample_batch(tiny_llama, [prompt], GenerationConfig(max_new_tokens=8, temperature=0.0, top_p=1.0,
                                                                      batch_size=1), 0)[0]
    assert r.json()["choices"][0]["message"]["content"] == tiny_llama.tokenizer.decode(ids, skip_special_tokens=True)
    assert chat(server.url).json()["choices"][0]["message"]["content"] == plain  # nothing leaks
    # a list is applied together: twice the vector at α = 25 is the vector at α = 50
    two = chat(server.url, steering={"vector": ["intrinsic.power", "intrinsic.power"], "layer": 1, "alpha": 25.0})
    one = chat(server.url, steering={"vector": "intrinsic.power", "layer": 1, "alpha": 50.0})
    assert two.json()["choices"][0]["message"]["content"] == one.json()["choices"][0]["message"]["content"] != plain
    both = chat(server.url, steering={"vector": ["shared.power", "shared.benevolence"], "layer": 1, "alpha": 0.3,
                                      "relative": True, "operator": "ablate_add"})
    assert both.status_code == 200


@pytest.mark.parametrize("kwargs,status,needle", [
    ({"steering": {"vector": "shared.power", "layer": 1, "alpha": 1.0, "operator": "subtract"}}, 400, "operator"),
    ({"steering": {"vector": "shared.power", "layer": 1, "operator": "ablate_add"}}, 400, "alpha"),
    ({"steering": {"vector": [], "layer": 1, "alpha": 1.0}}, 400, "1 to 32"),
    ({"steering": {"vector": ["shared.power", "nope"], "layer": 1, "alpha": 1.0}}, 400, "unknown steering vector"),
    ({"steering": {"neurons": "loud.power", "beta": 2.0}}, 400, "unknown neuron set"),
    ({"steering": {"neurons": "shared.power"}}, 400, "beta"),
    ({"steering": {"vector": "intrinsic.power", "neurons": "shared.power", "beta": 2.0}}, 400, "exactly one"),
    ({"steering": {"vector": "intrinsic.power", "alpha": 1.0}}, 400, "layer"),
    ({"steering": {"vector": "nope.power", "layer": 0, "alpha": 1.0}}, 400, "unknown steering vector"),
    ({"steering": {"vector": "intrinsic.power", "layer": 99, "alpha": 1.0}}, 400, "out of range"),
    ({"steering": {"vector": "intrinsic.power", "layer": 0, "alpha": "lots"}}, 400, "alpha"),
    ({"messages": []}, 400, "messages"),
    ({"max_tokens": -1}, 400, "max_tokens"),
])
def test_bad_requests_get_4xx_with_a_message(server, kwargs, status, needle):
    r = chat(server.url, **kwargs)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_malformed_json_and_oversize_body(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    big = {"messages": [{"role": "user", "content": "x" * 30_000}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=big)
    assert r.status_code == 413 and "over" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/health").status_code == 200  # still running


def test_streaming_sends_content_then_done(server):
    with httpx.stream("POST", f"{server.url}/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}) as r:
        lines = [l for l in r.iter_lines() if l.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunk = json.loads(lines[0][6:])
    assert chunk["object"] == "chat.completion.chunk" and "content" in chunk["choices"][0]["delta"]


def test_vectors_from_another_model_are_refused(smoke_dir):
    from valuemech.errors import ValuemechError
    from valuemech.models import load_model

    with pytest.raises(ValuemechError, match="not from the loaded model"):
        create_app(load_model("tiny-qwen2"), run_dir=smoke_dir)
