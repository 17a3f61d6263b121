"""valuemech serve refuses requests that would poison or stall the model (found by bench/load_serve.py).

- a NaN / infinite steering α or β (JSON ``NaN`` / ``Infinity``, which Python's json accepts): 400;
- a body without Content-Length (chunked), which would slip past the body-size limit: 411;
- a prompt (+ max_tokens) beyond the model's context: 400, before the model lock is taken (a
  prompt just under the 1 MB body limit is ~10^6 tokens, hours of attention on the lock).
"""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import ServerThread
from valuemech.serve import create_app


@pytest.fixture(scope="module")
def server(tiny_llama):
    with ServerThread(create_app(tiny_llama, model_name="tiny")) as srv:
        yield srv


def _post(url: str, raw: bytes | None = None, **body) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    body.setdefault("max_tokens", 4)
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/chat/completions", content=content,
                      headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize("steering, field", [
    ({"vector": "shared.power", "layer": 1, "alpha": float("nan")}, "alpha"),
    ({"vector": "shared.power", "layer": 1, "alpha": float("inf")}, "alpha"),
    ({"vector": "shared.power", "layer": 1, "alpha": float("-inf")}, "alpha"),
    ({"neurons": "shared.power", "beta": float("nan")}, "beta"),
])
def test_non_finite_alpha_beta_rejected(server, steering, field):
    r = _post(server.url, steering=steering)  # json.dumps writes NaN / Infinity literals
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert f"steering.{field}" in msg and "finite" in msg


def test_chunked_body_rejected(server):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    r = httpx.post(f"{server.url}/v1/chat/completions", content=iter([body[:10], body[10:]]),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 411 and "Content-Length" in r.json()["error"]["message"]


def test_prompt_beyond_context_rejected(server, tiny_llama):
    ctx = tiny_llama.model.config.max_position_embeddings
    r = _post(server.url, messages=[{"role": "user", "content": "x" * (2 * ctx)}])
    assert r.status_code == 400 and f"context of {ctx} tokens" in r.json()["error"]["message"]
    r = _post(server.url, max_tokens=ctx)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = _post(server.url)  # a short request still works, and the server is fine
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def test_bad_requests_answered_while_the_model_is_busy(server, monkeypatch):
    """Invalid steering or choices are refused before waiting for the model lock."""
    import threading

    from valuemech import serve

    release, entered = threading.Event(), threading.Event()
    real = serve.sample_rows

    def slow(*args, **kwargs):
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "sample_rows", slow)
    busy = threading.Thread(target=_post, args=(server.url,))
    busy.start()
    try:
        assert entered.wait(30)  # the lock is held
        r = httpx.post(f"{server.url}/v1/chat/completions", timeout=5, json={
            "messages": [{"role": "user", "content": "hi"}],
            "steering": {"vector": "shared.nothing", "layer": 1, "alpha": 0.1}})
        assert r.status_code == 400 and "unknown steering vector" in r.json()["error"]["message"]
        r = httpx.post(f"{server.url}/v1/chat/completions", timeout=5, json={
            "messages": [{"role": "user", "content": "hi"}], "guided_choice": ["yes", ""]})
        assert r.status_code == 400 and "non-empty" in r.json()["error"]["message"]
    finally:
        release.set()
        busy.join(60)
