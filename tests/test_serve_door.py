"""valuemech serve's door: API key on every route but /health, Host allow-list on loopback, warnings."""

from __future__ import annotations

import httpx
import pytest

from conftest import ServerThread
from valuemech.serve import LOOPBACK, create_app, host_name, is_loopback

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tiny_llama):
    with ServerThread(create_app(tiny_llama, model_name="tiny", api_key="s3cret", allowed_hosts=LOOPBACK)) as srv:
        yield srv


def test_api_key_checked_on_every_route_but_health(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    for key in (None, "wrong", "s3cre"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for method, path in (("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("GET", "/v1/stats"),
                             ("POST", "/v1/chat/completions")):
            r = httpx.request(method, f"{server.url}{path}", headers=headers, json={"messages": MSG, "max_tokens": 2})
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    ok = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{server.url}/v1/models", headers=ok).status_code == 200
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=ok, json={"messages": MSG, "max_tokens": 2})
    assert r.status_code == 200


def test_official_client_with_a_key(server):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope").models.list()
    assert openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret").models.retrieve("tiny").id == "tiny"


def test_foreign_host_is_refused(server):
    ok = {"Authorization": "Bearer s3cret"}
    r = httpx.get(f"{server.url}/v1/models", headers={**ok, "Host": "evil.example:8000"})
    assert r.status_code == 421 and "Host" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/health", headers={"Host": "evil.example"}).status_code == 421
    assert httpx.get(f"{server.url}/v1/models", headers={**ok, "Host": f"localhost:{server.port}"}).status_code == 200


def test_host_helpers():
    assert host_name("127.0.0.1:8000") == "127.0.0.1" and host_name("[::1]:80") == "::1" and host_name("x") == "x"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_wide_bind_without_key_warns(tiny_llama, monkeypatch):
    import uvicorn

    from valuemech import serve as serve_mod

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.delenv("VALUEMECH_API_KEY", raising=False)
    with pytest.warns(UserWarning, match="without an API key"):
        serve_mod.serve(tiny_llama, host="0.0.0.0")
    monkeypatch.setenv("VALUEMECH_API_KEY", "k")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serve_mod.serve(tiny_llama, host="0.0.0.0")
    assert seen["host"] == "0.0.0.0"


def test_guided_choice_bounded_by_memory(tiny_llama, monkeypatch):
    from valuemech import serve as serve_mod

    monkeypatch.setattr(serve_mod, "GUIDED_LOGITS_BYTES", 1000)
    with ServerThread(create_app(tiny_llama)) as srv:
        r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MSG, "guided_choice": ["yes", "no"]})
    assert r.status_code == 400 and "GiB of logits" in r.json()["error"]["message"]
