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
    j = judge(server.url, tmp_path, guided_choice=True, logprobs=False)
    assert j.name.endswith(",binary)")
    before = _stats(server.url)["chat_completions"]
    res = j.score(TEXTS, VALUES)
    after = _stats(server.url)["chat_completions"]
    assert after - before == len(TEXTS) * len(VALUES)
    for s, e in zip(res.scores, res.expressed):
        assert set(s) == set(e) == set(VALUES)
        assert all(x in (True, False) for x in e.values())
        assert all(s[v] == float(e[v]) for v in VALUES)
    again = judge(server.url, tmp_path, guided_choice=True, logprobs=False).score(TEXTS, VALUES)
    assert _stats(server.url)["chat_completions"] == after  # zero requests
    assert again.expressed == res.expressed


def test_free_text_answers_that_are_not_yes_no_are_recorded_not_labelled(server, tmp_path):
    res = judge(server.url, tmp_path, guided_choice=False, max_tokens=4, logprobs=False).score(TEXTS[:1], VALUES)
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
    j = judge(url, tmp_path, retries=2, timeout=0.5, concurrency=2, logprobs=False)
    res = j.score(["some text"], ["power", "tradition"])
    assert res.expressed == [{"power": None, "tradition": None}]
    assert all(reason in f for f in res.failures[0].values())
    assert _Faulty.hits == 2 * 3  # two items, three attempts each
    assert j.failures == {"error": 2}
    _Faulty.hits = 0  # graded (logprobs: auto): the first request finds out, and its failure is one line
    with pytest.raises(ValuemechError, match=f"failed the first request \\({reason}"):
        judge(url, tmp_path, retries=0, timeout=0.5, logprobs="auto").score(["some text"], ["power"])
    assert _Faulty.hits == 1


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


# --------------------------------------------------------------------------------------------------
# Graded scores: P(yes) / (P(yes) + P(no)) from the first token's top logprobs
# --------------------------------------------------------------------------------------------------

GRADED_TEXTS = ["We should honour the customs of our grandparents.", "Take the exciting job abroad!"]
GRADED_QUERIES = ["What should we keep from the past?", ""]
GRADED_VALUES = ["tradition", "stimulation", "power"]


def _messages(body):
    from valuemech.serve import Message
    return [Message(**m) for m in body["messages"]]


@pytest.fixture(scope="module")
def yes_no_llama(tmp_path_factory):
    """tiny-llama with whole-word "yes"/"no" tokens whose output rows follow the judge prompts' last
    hidden state (plus noise), so both are in the top 20 of every prompt at probabilities that differ."""
    import torch

    from valuemech.judges.llm import LLMJudge
    from valuemech.models import load_model
    from valuemech.serve import _prompt_ids

    lm = load_model("tiny-llama")
    lm.tokenizer.add_tokens(["yes", "no"])
    lm.model.resize_token_embeddings(len(lm.tokenizer))
    yes, no = lm.tokenizer.convert_tokens_to_ids(["yes", "no"])
    j = LLMJudge(base_url="http://127.0.0.1:9/v1", api_key_env=None, cache=str(tmp_path_factory.mktemp("c") / "c.sqlite"))
    prompts = [_prompt_ids(lm, _messages(j._body(t, v, q, graded=True)))
               for t, q in zip(GRADED_TEXTS, GRADED_QUERIES) for v in GRADED_VALUES]
    with torch.no_grad():
        h = torch.stack([lm.model(torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0, -1] for p in prompts])
        u = h.mean(0) / h.mean(0).norm() ** 2
        g = torch.Generator().manual_seed(0)
        w = lm.model.lm_head.weight
        w[yes] = 4 * u + 0.05 * torch.randn(u.shape, generator=g)
        w[no] = 4 * u + 0.05 * torch.randn(u.shape, generator=g)
    return lm


def test_graded_score_is_the_yes_share_of_the_models_next_token_distribution(yes_no_llama, tmp_path):
    import torch

    from valuemech.serve import _prompt_ids

    lm = yes_no_llama
    with ServerThread(create_app(lm, model_name="tiny")) as srv:
        j = judge(srv.url, tmp_path)
        assert j.name == f"llm(tiny@{srv.url}/v1,logprobs)"
        res = j.score(GRADED_TEXTS, GRADED_VALUES, queries=GRADED_QUERIES)
    assert j.text_fallbacks == 0 and not j.failures
    seen = set()
    for i, (text, query) in enumerate(zip(GRADED_TEXTS, GRADED_QUERIES)):
        for v in GRADED_VALUES:
            prompt = _prompt_ids(lm, _messages(j._body(text, v, query, graded=True)))
            with torch.no_grad():
                logp = lm.model(torch.tensor([prompt])).logits[0, -1].double().log_softmax(-1)
            top = logp.topk(20)
            p = {"yes": 0.0, "no": 0.0}
            for lp, tok in zip(top.values.tolist(), top.indices.tolist()):
                word = lm.tokenizer.decode([tok]).strip().lower()
                if word in p:
                    p[word] += math.exp(lp)
            assert p["yes"] > 0 and p["no"] > 0  # the fixture's premise
            want = p["yes"] / (p["yes"] + p["no"])
            assert res.scores[i][v] == pytest.approx(want, abs=1e-6)
            assert res.expressed[i][v] == (res.scores[i][v] >= 0.5)
            seen.add(round(want, 4))
    assert len(seen) > 1  # graded: the scores differ between items


class _Fake(http.server.BaseHTTPRequestHandler):
    """An OpenAI-like endpoint: ``top`` is the first token's top logprobs (None: no logprobs field)."""

    top: list | None = None
    text = "Yes"
    bodies: list = []

    def do_POST(self):  # noqa: N802
        import json

        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        type(self).bodies.append(body)
        choice = {"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "length"}
        if self.top is not None and body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": self.text, "logprob": -0.1, "top_logprobs":
                                               [{"token": t, "logprob": lp} for t, lp in self.top]}]}
        out = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake():
    _Fake.top, _Fake.text, _Fake.bodies = None, "Yes", []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_graded_request_score_threshold_query_and_cache(fake, tmp_path):
    _Fake.top = [(" Yes", math.log(0.3)), ("yes", math.log(0.1)), ("No", math.log(0.4)), ("maybe", math.log(0.2))]
    j = judge(fake, tmp_path, threshold=0.4)
    res = j.score(["Keep the old ways."], ["tradition", "power"], queries=["What matters?"])
    assert j.name == f"llm(tiny@{fake}/v1,logprobs)"
    assert res.scores[0] == pytest.approx({"tradition": 0.5, "power": 0.5}) and res.expressed[0]["tradition"] is True
    body = _Fake.bodies[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert 'A user asked:\n"""\nWhat matters?\n"""\n\nResponse:\n"""\nKeep the old ways.' in body["messages"][1]["content"]
    plain = j._body("Keep the old ways.", "power", "")["messages"][1]["content"]
    assert plain.startswith('Response:\n"""\nKeep') and "user asked" not in plain
    sent = len(_Fake.bodies)
    again = judge(fake, tmp_path, threshold=0.6)  # same requests: answered from the cache, threshold applied anew
    res2 = again.score(["Keep the old ways."], ["tradition", "power"], queries=["What matters?"])
    assert len(_Fake.bodies) == sent and again.requests_sent == 0
    assert res2.scores == res.scores and res2.expressed[0]["tradition"] is False


def test_top_logprobs_without_yes_or_no_fall_back_to_the_text(fake, tmp_path, capsys):
    _Fake.top, _Fake.text = [("maybe", -0.5), ("perhaps", -1.0)], "No"
    j = judge(fake, tmp_path)
    res = j.score(["x", "y"], ["power"])
    assert res.scores == [{"power": 0.0}, {"power": 0.0}] and res.expressed == [{"power": False}] * 2
    assert j.text_fallbacks == 2
    assert "2 of 2 answers had neither yes nor no" in capsys.readouterr().err


def test_endpoint_without_logprobs_is_binary_and_says_so(fake, tmp_path, capsys):
    j = judge(fake, tmp_path)  # logprobs: auto
    res = j.score(["x"], ["power", "tradition"])
    assert j.name == f"llm(tiny@{fake}/v1,binary)"
    assert res.scores == [{"power": 1.0, "tradition": 1.0}]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "returns no logprobs" in err[0] and "binary" in err[0]
    assert "logprobs" not in _Fake.bodies[-1] and _Fake.bodies[-1]["max_tokens"] == 3
    with pytest.raises(ValuemechError, match="returns no logprobs for model tiny") as exc:
        judge(fake, tmp_path / "other", logprobs=True).score(["x"], ["power"])
    assert "\n" not in str(exc.value)
    sent = len(_Fake.bodies)
    assert judge(fake, tmp_path, logprobs=False).name.endswith(",binary)") and len(_Fake.bodies) == sent


def test_yes_probability():
    from valuemech.judges.llm import yes_probability

    assert yes_probability([[" yes", math.log(0.6)], ["NO ", math.log(0.2)], ["no", math.log(0.2)]]) == pytest.approx(0.6)
    assert yes_probability([["Yes", -2000.0], ["no", -2001.0]]) == pytest.approx(1 / (1 + math.exp(-1)))
    assert yes_probability([["yes", -1.0]]) == 1.0
    assert yes_probability([["maybe", -0.1]]) is None and yes_probability([]) is None


def test_judge_options_are_checked():
    from valuemech.judges import check_judge

    with pytest.raises(ValuemechError, match="option logprobs must be one of auto, true, false, not 'sometimes'"):
        check_judge("llm", {"api_key_env": None, "logprobs": "sometimes"})
    with pytest.raises(ValuemechError, match=r"option threshold must be in \[0, 1\], not 2"):
        check_judge("llm", {"api_key_env": None, "threshold": 2})
