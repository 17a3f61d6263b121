"""valuemech serve speaks the OpenAI API: honoured parameters, refused ones (400), unknown models (404)."""

from __future__ import annotations

import httpx
import pytest

from conftest import ServerThread
from valuemech.serve import create_app

MSG = [{"role": "user", "content": "Should I move abroad?"}]


@pytest.fixture(scope="module")
def server(tiny_llama):
    with ServerThread(create_app(tiny_llama, model_name="tiny")) as srv:
        yield srv


def post(url, **body):
    body.setdefault("messages", MSG)
    body.setdefault("max_tokens", 8)
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def texts(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [c["message"]["content"] for c in r.json()["choices"]]


def test_n_seed_and_unseeded_sampling(server):
    greedy = texts(post(server.url, n=3))
    assert len(greedy) == 3 and len(set(greedy)) == 1
    a = texts(post(server.url, n=2, temperature=1.0, seed=7, max_tokens=12))
    assert a == texts(post(server.url, n=2, temperature=1.0, seed=7, max_tokens=12))
    unseeded = {tuple(texts(post(server.url, temperature=1.0, max_tokens=12))) for _ in range(4)}
    assert len(unseeded) > 1  # as OpenAI's: without a seed, sampling varies


def test_max_completion_tokens_and_stop(server):
    r = post(server.url, max_tokens=None, max_completion_tokens=3)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    full = texts(post(server.url, max_tokens=12))[0]
    assert len(full) > 2
    stop = full[len(full) // 2: len(full) // 2 + 2]
    r = post(server.url, max_tokens=12, stop=[stop])
    assert texts(r)[0] == full[:full.find(stop)] and r.json()["choices"][0]["finish_reason"] == "stop"


def test_model_routes(server):
    assert httpx.get(f"{server.url}/v1/models/tiny").json()["id"] == "tiny"
    r = httpx.get(f"{server.url}/v1/models/gpt-4o")
    assert r.status_code == 404 and "not served" in r.json()["error"]["message"]
    r = post(server.url, model="gpt-4o")
    assert r.status_code == 404 and "gpt-4o" in r.json()["error"]["message"]
    assert post(server.url, model="tiny").status_code == 200


@pytest.mark.parametrize("extra,needle", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"top_logprobs": 2}, "needs logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "guided_choice": ["yes", "no"]}, "guided_choice"),
    ({"made_up": 1}, "made_up"),
    ({"steering": {"vector": "x", "layer": 0, "alpha": 1.0, "relativ": True}}, "relativ"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "differ"),
    ({"stream_options": {"include_usage": True}}, "stream"),
    ({"guided_choice": ["yes", "no"], "n": 2}, "n must be 1"),
])
def test_unsupported_or_wrong_parameters_are_400(server, extra, needle):
    r = post(server.url, **extra)
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_stream_with_usage_concatenates_to_the_reply(server):
    import json

    body = {"messages": MSG, "max_tokens": 8, "temperature": 1.0, "seed": 3}
    whole = post(server.url, **body).json()
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        events = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert [c["choices"][0]["finish_reason"] for c in events if c["choices"]][-1] == whole["choices"][0]["finish_reason"]


def test_official_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    r = client.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=6, n=2, seed=1)
    assert len(r.choices) == 2 and r.usage.completion_tokens <= 12
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, presence_penalty=1.0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MSG, max_tokens=4)
    assert client.models.retrieve("tiny").id == "tiny"
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None


def test_logprobs_equal_an_in_process_forward(server, tiny_llama):
    import torch

    from valuemech.config import GenerationConfig
    from valuemech.generate import sample_batch
    from valuemech.serve import Message, _prompt_ids

    r = post(server.url, logprobs=True, top_logprobs=3, max_tokens=6)
    content = r.json()["choices"][0]["logprobs"]["content"]
    prompt = _prompt_ids(tiny_llama, [Message(**m) for m in MSG])
    ids, _ = sample_batch(tiny_llama, [prompt], GenerationConfig(max_new_tokens=6, temperature=0.0, top_p=1.0,
                                                                  batch_size=1), 0)[0]
    with torch.no_grad():
        logits = tiny_llama.model(torch.tensor([prompt + ids])).logits[0].double().log_softmax(-1)
    want = logits[len(prompt) - 1: -1]
    assert len(content) == len(ids)
    for k, (tok, c) in enumerate(zip(ids, content)):
        assert c["token"] == tiny_llama.tokenizer.decode([tok])
        assert c["logprob"] == pytest.approx(float(want[k, tok]), abs=1e-5)
        assert [t["logprob"] for t in c["top_logprobs"]] == pytest.approx(want[k].topk(3).values.tolist(), abs=1e-5)
        assert c["logprob"] == pytest.approx(c["top_logprobs"][0]["logprob"], abs=1e-5)  # greedy: the top token
    assert post(server.url).json()["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_token_streaming_concatenates_to_the_reply(server, temperature):
    import json

    body = {"messages": MSG, "max_tokens": 10, "temperature": temperature, "seed": 5}
    whole = post(server.url, **body).json()
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        events = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith("data: {")]
    pieces = [c["choices"][0]["delta"].get("content", "") for c in events if c["choices"]]
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert len([p for p in pieces if p]) > 1  # more than one chunk: token by token
    assert events[-1]["usage"] == whole["usage"]
    assert events[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
