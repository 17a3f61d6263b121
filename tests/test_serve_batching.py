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
