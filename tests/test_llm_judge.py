"""The llm judge against a live `valuemech serve` on loopback, its cache, and misbehaving servers."""

from __future__ import annotations

import http.server
import math
import threading
import time

import pytest

from conftest import ServerThread
from valuemech.errors import ValuemechError
from valuemech.judges import get_judge
from valuemech.judges.llm import parse_answer
from valuemech.serve import create_app
from valuemech.values import VALUES

TEXTS = ["We should honour the customs of our grandparents.", "", "Take the exciting job abroad!"]


@pytest.fixture(scope="module")
def server(tiny_llama):
    with ServerThread(create_app(tiny_llama, model_name="tiny")) as srv:
        yield srv


def _stats(url):
    import httpx
    return httpx.get(f"{url}/v1/stats").json()


def judge(url, tmp_path, **kw):
    opts = {"base_url": f"{url}/v1", "model": "tiny", "api_key_env": None, "cache": str(tmp_path / "c.sqlite"),
            "retries": 1, "backoff": 0.01, "timeout": 5}
    opts.update(kw)
    return get_judge("llm", opts)


def test_guided_answers_label_every_value_and_cache_makes_rerun_free(server, tmp_path):
    j = judge(server.url, tmp_path, guided_choice=True)
    before = _stats(server.url)["chat_completions"]
    res = j.score(TEXTS, VALUES)
    after = _stats(server.url)["chat_completions"]
    assert after - before == len(TEXTS) * len(VALUES)
    for s, e in zip(res.scores, res.expressed):
        assert set(s) == set(e) == set(VALUES)
        assert all(x in (True, False) for x in e.values())
        assert all(s[v] == float(e[v]) for v in VALUES)
    again = judge(server.url, tmp_path, guided_choice=True).score(TEXTS, VALUES)
    assert _stats(server.url)["chat_completions"] == after  # zero requests
    assert again.expressed == res.expressed


def test_free_text_answers_that_are_not_yes_no_are_recorded_not_labelled(server, tmp_path):
    res = judge(server.url, tmp_path, guided_choice=False, max_tokens=4).score(TEXTS[:1], VALUES)
    for v in VALUES:
        label, fail = res.expressed[0][v], (res.failures or [{}])[0].get(v)
        if label is None:
            assert fail in ("malformed", "refused") and math.isnan(res.scores[0][v])
        else:
            assert fail is None


def test_parse_answer():
    assert parse_answer("Yes.") == (True, "ok")
    assert parse_answer(" no, because") == (False, "ok")
    assert parse_answer("I cannot judge that") == (None, "refused")
    assert parse_answer("maybe") == (None, "malformed")
    assert parse_answer("") == (None, "malformed")


class _Faulty(http.server.BaseHTTPRequestHandler):
    mode = "500"
    hits = 0

    def do_POST(self):  # noqa: N802
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.mode == "sleep":
            time.sleep(1.5)
        code, body = {"500": (500, b"oops"), "garbage": (200, b"<html>not json"),
                      "sleep": (200, b"{}"), "400": (400, b"bad model")}[self.mode]
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


@pytest.mark.parametrize("mode,reason", [("500", "HTTP 500"), ("garbage", "unparseable"), ("sleep", "timed out")])
def test_failing_server_is_retried_then_recorded(faulty, tmp_path, mode, reason):
    _Faulty.mode, _Faulty.hits = mode, 0
    url = f"http://127.0.0.1:{faulty.server_address[1]}"
    j = judge(url, tmp_path, retries=2, timeout=0.5, concurrency=2)
    res = j.score(["some text"], ["power", "tradition"])
    assert res.expressed == [{"power": None, "tradition": None}]
    assert all(reason in f for f in res.failures[0].values())
    assert _Faulty.hits == 2 * 3  # two items, three attempts each
    assert j.failures == {"error": 2}


def test_client_errors_unreachable_and_missing_key(faulty, tmp_path, monkeypatch):
    _Faulty.mode = "400"
    url = f"http://127.0.0.1:{faulty.server_address[1]}"
    with pytest.raises(ValuemechError, match="HTTP 400: bad model"):
        judge(url, tmp_path).score(["x"], ["power"])
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(ValuemechError, match="cannot reach"):
        judge(f"http://127.0.0.1:{dead}", tmp_path, retries=0).score(["x"], ["power"])
    monkeypatch.delenv("VALUEMECH_TEST_KEY", raising=False)
    with pytest.raises(ValuemechError, match="VALUEMECH_TEST_KEY is not set"):
        get_judge("llm", {"base_url": url, "api_key_env": "VALUEMECH_TEST_KEY"})


def test_endpoint_generation_backend_matches_contract_and_resumes(server, tiny_llama, tmp_path):
    from valuemech.config import GenerationConfig
    from valuemech.data import Query
    from valuemech.data.templates import builtin_templates
    from valuemech.generate import generate_responses, plan_jobs
    from valuemech.io import read_jsonl

    cfg = GenerationConfig(intrinsic_samples=1, prompted_samples=1, max_new_tokens=5, batch_size=2,
                           temperature=0.8, backend="endpoint",
                           endpoint={"base_url": f"{server.url}/v1", "model": "tiny", "api_key_env": None})
    jobs = plan_jobs([Query("a", "Is saving money wise?"), Query("b", "Should I go to the festival?")],
                     builtin_templates(), cfg, seed=0)
    out = tmp_path / "responses.jsonl"
    assert generate_responses(tiny_llama, jobs[:2], cfg, 0, out, progress=False) == 2
    assert generate_responses(tiny_llama, jobs, cfg, 0, out, progress=False) == len(jobs) - 2
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == sorted(j.id for j in jobs)
    assert all(r["backend"] == "endpoint" and r["prompt_token_ids"] for r in recs)
    # per-job seeds: the same job asked again returns the same text
    again = tmp_path / "again.jsonl"
    generate_responses(tiny_llama, jobs, cfg, 0, again, progress=False)
    assert {r["id"]: r["response"] for r in read_jsonl(again)} == {r["id"]: r["response"] for r in recs}
