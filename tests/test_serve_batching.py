"""valuemech serve batches concurrent requests, each row as if it were alone (tiny model in float64).

The worker is held busy while the requests queue up, so they are gathered into one batch for sure;
every greedy (and seeded sampled) reply then equals the same request sent alone, steered rows stay
steered, unsteered rows stay unsteered, and a stop string ends its own row only.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ServerThread, cli
from valuemech.errors import ValuemechError
from valuemech.models.arch import discover
from valuemech.serve import Job, check_max_batch, create_app

STEER = {"vector": "intrinsic.power", "layer": 1, "alpha": 50.0}


@pytest.fixture(scope="module")
def lm64(tiny_llama):
    model = copy.deepcopy(tiny_llama.model).double()
    return dataclasses.replace(tiny_llama, model=model, arch=discover(model))


@pytest.fixture(scope="module")
def app(lm64, smoke_dir):
    return create_app(lm64, run_dir=smoke_dir, model_name="tiny")


@pytest.fixture(scope="module")
def server(app):
    with ServerThread(app) as srv:
        yield srv


def body(content: str, max_tokens: int, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


def post(url: str, b: dict) -> dict:
    r = httpx.post(f"{url}/v1/chat/completions", json=b, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def reply(r: dict) -> list[tuple[str, str]]:
    return [(c["message"]["content"], c["finish_reason"]) for c in r["choices"]]


def stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/stats").json()


def together(server, app, bodies: list[dict]) -> list[dict]:
    """Send ``bodies`` concurrently while the worker is held busy, so that it gathers them at once."""
    batcher, busy, release = app.state.batcher, threading.Event(), threading.Event()
    batcher.submit(Job(alone=lambda: (busy.set(), release.wait(60))))
    assert busy.wait(60)
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(post, server.url, b) for b in bodies]
        deadline = time.monotonic() + 60
        while batcher.queue.qsize() < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        return [f.result() for f in futures]


def test_a_batch_equals_each_request_alone(server, app):
    bodies = [
        body("Should I move abroad?", 8),
        body("Hi", 5, steering=STEER),
        body("What is a good life? Tell me about duty and family.", 12),
        body("Should I move abroad?", 8, steering=STEER),
        body("Describe power.", 6, n=2),
        body("Describe power.", 7, temperature=1.0, seed=11),
        body("Should I move abroad?", 9, steering={**STEER, "relative": True, "alpha": 2.0}),
    ]
    alone = [reply(post(server.url, b)) for b in bodies]
    assert alone[0] != alone[3]  # the steering changes the reply (so a leak would show)
    before = stats(server.url)
    batched = [reply(r) for r in together(server, app, bodies)]
    after = stats(server.url)
    assert after["largest_batch"] == sum(b.get("n", 1) for b in bodies)  # one batch of every row
    assert after["batches"] == before["batches"] + 1
    assert batched == alone


def test_neuron_rows_and_logprobs_share_a_batch_and_equal_alone(server, app, lm64, smoke_dir):
    """Neuron steering with β (hooks.scale_per_row) and logprobs (recorded while generating) ride in
    the batch; each equals the request alone, which equals scale_neuron_class in process."""
    import json

    import torch

    from valuemech.config import GenerationConfig
    from valuemech.generate import sample_batch
    from valuemech.serve import Message, _prompt_ids
    from valuemech.steering import scale_neuron_class

    neurons = json.loads((smoke_dir / "neurons.json").read_text())
    value, cls = next((v, n["class"]) for v, d in neurons["per_value"].items() for n in d["neurons"]
                      if n["class"] in ("shared", "intrinsic", "prompted"))
    nsteer = {"neurons": f"{cls}.{value}", "beta": 40.0}
    bodies = [body("Should I move abroad?", 8), body("Should I move abroad?", 8, steering=nsteer),
              body("Describe power.", 6, logprobs=True, top_logprobs=3),
              body("Describe power.", 6, logprobs=True, steering=nsteer),
              body("Hi", 5, steering=STEER, logprobs=True, top_logprobs=2, n=2)]
    alone = [post(server.url, b) for b in bodies]
    assert reply(alone[0]) != reply(alone[1])  # the neurons change the reply (so a leak would show)
    prompt = _prompt_ids(lm64, [Message(role="user", content="Should I move abroad?")])
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.0, top_p=1.0, batch_size=1)
    with scale_neuron_class(lm64, neurons, value, cls, 40.0):
        ids, _ = sample_batch(lm64, [prompt], cfg, 0)[0]
    assert reply(alone[1])[0][0] == lm64.tokenizer.decode(ids, skip_special_tokens=True)
    before = stats(server.url)
    batched = together(server, app, bodies)
    after = stats(server.url)
    assert after["batches"] == before["batches"] + 1  # one batch of all six rows
    assert after["batched_rows"] == before["batched_rows"] + 6
    for a, b in zip(alone, batched):
        assert reply(a) == reply(b)
        for ca, cb in zip(a["choices"], b["choices"]):
            la, lb = ca["logprobs"], cb["logprobs"]
            assert (la is None) == (lb is None)
            if la is not None:
                assert [t["token"] for t in la["content"]] == [t["token"] for t in lb["content"]]
                for ta, tb in zip(la["content"], lb["content"]):
                    assert ta["logprob"] == pytest.approx(tb["logprob"], abs=1e-9)
                    assert [t["token"] for t in ta["top_logprobs"]] == [t["token"] for t in tb["top_logprobs"]]
    assert len(batched[2]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 3
    assert batched[3]["choices"][0]["logprobs"] != batched[2]["choices"][0]["logprobs"]  # steered distribution


def test_neuron_steering_honours_positions_and_refuses_vector_keys(server, lm64, smoke_dir):
    """A neuron request with positions other than all runs alone under scale_neurons at those positions
    (it was silently steered at every position); operator, layer, alpha or relative beside neurons is a 400."""
    import json

    import httpx

    from valuemech.config import GenerationConfig
    from valuemech.generate import sample_batch
    from valuemech.serve import Message, _prompt_ids
    from valuemech.steering import scale_neuron_class

    neurons = json.loads((smoke_dir / "neurons.json").read_text())
    value, cls = next((v, n["class"]) for v, d in neurons["per_value"].items() for n in d["neurons"]
                      if n["class"] in ("shared", "intrinsic", "prompted"))
    prompt = _prompt_ids(lm64, [Message(role="user", content="Should I move abroad?")])
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.0, top_p=1.0, batch_size=1)
    seen = set()
    for positions in ("all", "prompt", "generated"):
        got = reply(post(server.url, body("Should I move abroad?", 8,
                                          steering={"neurons": f"{cls}.{value}", "beta": 40.0, "positions": positions})))
        with scale_neuron_class(lm64, neurons, value, cls, 40.0, positions=positions):
            ids, _ = sample_batch(lm64, [prompt], cfg, 0)[0]
        assert got[0][0] == lm64.tokenizer.decode(ids, skip_special_tokens=True)
        seen.add(got[0][0])
    assert len(seen) > 1  # the positions change the reply, so ignoring them would show
    for extra in ({"operator": "ablate"}, {"layer": 1}, {"alpha": 2.0}, {"relative": True}):
        r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json=body(
            "Hi", 4, steering={"neurons": f"{cls}.{value}", "beta": 2.0, **extra}))
        assert r.status_code == 400 and "not operator, layer, alpha or relative" in r.text


def test_unsteered_requests_with_one_system_prompt_share_its_head(server, app, monkeypatch):
    """The ten questions of an llm judge about one text share their head: the batch runs it once and
    every reply (and its logprobs) equals the request alone."""
    from valuemech import generate

    system = {"role": "system", "content": "You annotate values. Answer with one word: yes or no. " * 2}
    bodies = [{"messages": [system, {"role": "user", "content": f"Does this express {v}?"}], "max_tokens": 3,
               "logprobs": True, "top_logprobs": 2} for v in ("power", "security", "tradition", "hedonism")]
    alone = [post(server.url, b) for b in bodies]
    heads = []
    real = generate._shared_prefix
    def spy(lm, rows, n):
        out = real(lm, rows, n)
        heads.append((len(rows), out is not None and out[2].get_seq_length()))
        return out

    monkeypatch.setattr(generate, "_shared_prefix", spy)
    batched = together(server, app, bodies)
    assert len(heads) == 1 and heads[0][0] == 4 and heads[0][1] > 30  # one batch of four rows, one shared head
    for a, b in zip(alone, batched):
        assert reply(a) == reply(b)
        lps = [(t["token"], round(t["logprob"], 9)) for t in a["choices"][0]["logprobs"]["content"]]
        assert lps == [(t["token"], round(t["logprob"], 9)) for t in b["choices"][0]["logprobs"]["content"]]


def test_rows_a_batch_cannot_carry_run_alone_and_equal(server, app):
    bodies = [body("Should I move abroad?", 8), body("Should I move abroad?", 8, steering=STEER),
              body("Should I move abroad?", 8, steering={**STEER, "operator": "ablate_add", "alpha": 3.0}),
              body("Should I move abroad?", 8, steering={**STEER, "positions": "generated"})]
    alone = [reply(post(server.url, b)) for b in bodies]
    assert len({a[0][0] for a in alone}) > 1
    assert [reply(r) for r in together(server, app, bodies)] == alone


def test_a_stop_string_ends_its_own_row_only(server, app):
    full = post(server.url, body("Should I move abroad?", 12))
    text = full["choices"][0]["message"]["content"]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    stopped, plain = together(server, app, [body("Should I move abroad?", 12, stop=[stop]),
                                            body("Should I move abroad?", 12)])
    assert reply(stopped) == [(text[:text.find(stop)], "stop")]
    assert reply(plain) == reply(full) and plain["usage"] == full["usage"]
    assert stopped["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]  # that row stopped early


def test_max_batch_one_serves_one_request_at_a_time(lm64):
    app = create_app(lm64, model_name="tiny", max_batch=1)
    with ServerThread(app) as srv:
        bodies = [body("Hi", 4), body("Should I move abroad?", 6, n=3)]
        alone = [reply(post(srv.url, b)) for b in bodies]
        assert [reply(r) for r in together(srv, app, bodies)] == alone
        assert stats(srv.url)["largest_batch"] == 1


@pytest.mark.parametrize("bad", [0, 257, -3, 2.5, True])
def test_max_batch_is_range_checked(lm64, bad):
    with pytest.raises(ValuemechError, match="max_batch must be an integer from 1 to 256"):
        check_max_batch(bad)


@pytest.mark.parametrize("bad", ["0", "300", "many"])
def test_max_batch_option_is_a_one_line_error(bad):
    res = cli("serve", "--max-batch", bad)
    assert res.exit_code != 0 and "--max-batch" in res.output


@pytest.mark.parametrize("last_rows,arriving,want", [(0, 0, 1), (1, 0, 2), (0, 1, 2)])
def test_gather_waits_for_the_rows_in_flight(last_rows, arriving, want):
    """With one row queued after a batch of ``last_rows``, the worker waits (up to max_wait_s) until
    ``last_rows + 1`` rows have come (the answered client comes back late here) and no request is still
    arriving, and no longer."""
    from valuemech.generate import Row
    from valuemech.serve import Batcher

    batcher = Batcher(None, max_batch=8, wait_s=0.001, max_wait_s=5.0)
    batcher.last_rows, batcher.waiting_rows, batcher.arriving = last_rows, 1, arriving
    batcher.queue.put(Job(rows=[Row([1], 1)]))

    def come() -> None:
        batcher.queue.put(Job(rows=[Row([1], 1)]))
        batcher.arriving = 0

    late = threading.Timer(0.3, come)
    late.start()
    assert sum(len(j.rows) for j in batcher.gather()) == want
    late.join()


def test_a_shared_prompt_prefix_runs_once_and_changes_nothing(tiny_any):
    """sample_rows(share_prefix=...): rows whose prompts share a head run it once (its KV cache repeated);
    ids, finish reasons and log-probabilities equal the unshared batch (float64; greedy and seeded
    sampling); models whose cache cannot be shared fall back."""
    import torch

    from valuemech.generate import Row, _shared_prefix, sample_rows

    if tiny_any.model.config.model_type == "gemma2":
        pytest.skip("transformers' eager gemma2 attention gives NaN for left-padded rows in float64 (float32 is fine)")
    model = copy.deepcopy(tiny_any.model).double()
    lm = dataclasses.replace(tiny_any, model=model, arch=discover(model))
    head = [1] + list(range(40, 70))  # 31 tokens: under the tiny gemmas' sliding window of 64
    rows = [Row(head + [11, 12, 13], 6, logprobs=3), Row(head + [14], 4, temperature=1.0, seed=3),
            Row(head + [15, 16], 6, logprobs=0, stop=["zz"]), Row(head[:-2] + [17, 18, 19, 20, 21], 5)]
    plain = sample_rows(lm, rows)
    shared = sample_rows(lm, rows, share_prefix=8)
    assert [(i, w) for i, w, _ in shared] == [(i, w) for i, w, _ in plain]
    for (_, _, a), (_, _, b) in zip(plain, shared):
        assert (a is None) == (b is None)
        for (la, ta), (lb, tb) in zip(a or [], b or []):
            assert la == pytest.approx(lb, abs=1e-9) and [t for t, _ in ta] == [t for t, _ in tb]
    if _shared_prefix(lm, rows, 8) is None:  # sliding-window caches cannot be repeated: nothing shared
        assert lm.model.config.model_type in ("gemma2", "gemma3_text", "mistral")
        return
    ids, mask, _ = _shared_prefix(lm, rows, 8)
    n = len(head) - 2
    assert torch.equal(mask[:, :n], torch.ones(4, n, dtype=torch.long)) and bool((mask[:, n:] == 0).any())
    assert _shared_prefix(lm, rows, len(head)) is None  # the common head is shorter than asked
    steered = [dataclasses.replace(r, add={0: torch.ones(lm.hidden_size)}) for r in rows]
    assert _shared_prefix(lm, steered, 8) is None  # steered rows see their own prefix
