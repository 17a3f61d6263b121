"""Load test of `valuemech serve`: a bounded burst of mixed, partly malformed requests on loopback.

1. Start ``valuemech serve --model tiny-llama --run RUN --port P`` (RUN: a smoke run directory;
   made with ``valuemech run --preset smoke --evals none`` when ``--run`` is not given) and wait for
   ``/health``.
2. Send each distinct well-formed request alone, one after another (temperature 0, or a fixed
   ``seed`` when sampling): these answers are the expected ones. The steered requests must change
   the answer of the same prompt unsteered (otherwise the leak check below would prove nothing).
3. Fire ``--requests`` requests (default 200) from ``--concurrency`` threads (default 16), seeded
   shuffle of well-formed requests (unsteered, vector-steered, neuron-steered, guided choice,
   streamed, seeded sampling) and malformed ones (bad JSON, unknown vector, α not a number, α NaN /
   infinite, layer out of range, oversize body, ...).
4. Check: every well-formed answer is 200 and equals its alone-answer (so no steering leaked from a
   concurrent request), every malformed one is a 4xx with a non-empty ``error.message``, the server
   is still healthy, and the alone-answers are unchanged after the burst.

Prints throughput and p50/p95 latency; writes JSON (default bench/results/load_serve.json); exits 1
on any failure. Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/load_serve.py [--run DIR]

``--throughput``: batching against the serial baseline instead. Two servers of ``--model`` (default
smollm2-135m) in turn, ``--max-batch 1`` (serial) and ``--max-batch 16``, each sent ``--requests``
greedy requests of ``--max-tokens`` tokens (half steered with random unit vectors of a run directory
written for the model, at two layers and signs; prompts of different lengths) from 1, 4, 8 and 16
concurrent clients: req/s, tokens/s and p50/p95 latency per level, the speed-up over serial, and the
share of completions identical to the same request sent alone (the 1-client answers of the same
server). Prints the CPU (``bench/_common.py machine()``) and the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("valuemech")
PROMPTS = ["What should I do this weekend?", "Give me advice about my career.", "Is honesty always best?"]
MAX_TOKENS = 8


@dataclass
class Req:
    """One request kind: a JSON body (or raw bytes) and whether the server should accept it."""

    name: str
    body: dict | None = None
    raw: bytes | None = None
    ok: bool = True
    headers: dict | None = None
    chunked: bool = False  # send ``raw`` with Transfer-Encoding: chunked (no Content-Length)

    def send(self, client: httpx.Client) -> tuple[int, dict | str, float]:
        t0 = time.perf_counter()
        if self.raw is not None and self.chunked:
            raw = self.raw
            r = client.post("/v1/chat/completions", content=(raw[i:i + 65536] for i in range(0, len(raw), 65536)),
                            headers={"content-type": "application/json"})
        elif self.raw is not None:
            r = client.post("/v1/chat/completions", content=self.raw,
                            headers=self.headers or {"content-type": "application/json"})
        else:
            r = client.post("/v1/chat/completions", json=self.body)
        dt = time.perf_counter() - t0
        return r.status_code, parse_answer(r), dt


def parse_answer(r: httpx.Response) -> dict | str:
    """The answer text of a 200 (JSON or server-sent events), else the parsed error body."""
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
        text = ""
        for line in r.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                text += json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        return text
    try:
        body = r.json()
    except ValueError:
        return {"unparsable": r.text[:200]}
    if r.status_code == 200:
        return body["choices"][0]["message"]["content"]
    return body


def chat(prompt: str, **extra) -> dict:
    return {"model": "tiny-llama", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS, "temperature": 0.0, **extra}


def neuron_set(run_dir: Path) -> str:
    """The ``<class>.<value>`` of ``neurons.json`` with the most neurons (so that scaling it shows)."""
    per_value = json.loads((run_dir / "neurons.json").read_text())["per_value"]
    counts = {f"{n['class']}.{v}": 0 for v, d in per_value.items() for n in d["neurons"]
              if n["class"] in ("shared", "intrinsic", "prompted")}
    for v, d in per_value.items():
        for n in d["neurons"]:
            if f"{n['class']}.{v}" in counts:
                counts[f"{n['class']}.{v}"] += 1
    return max(sorted(counts), key=counts.__getitem__)


def well_formed(neurons: str) -> list[Req]:
    out = []
    for i, p in enumerate(PROMPTS):
        out += [
            Req(f"plain/{i}", chat(p)),
            Req(f"vector-shared.power/{i}", chat(p, steering={"vector": "shared.power", "layer": 1, "alpha": 8.0})),
            Req(f"vector-prompted.benevolence-rel/{i}",
                chat(p, steering={"vector": "prompted.benevolence", "layer": 0, "alpha": 1.5, "relative": True})),
            Req(f"vector-mean_delta-generated/{i}",
                chat(p, steering={"vector": "mean_delta", "layer": 1, "alpha": -8.0, "positions": "generated"})),
            Req(f"neurons/{i}", chat(p, steering={"neurons": neurons, "beta": -30.0})),
        ]
    p = PROMPTS[0]
    out += [
        Req("system+plain", {**chat(p), "messages": [{"role": "system", "content": "You value tradition."},
                                                     {"role": "user", "content": p}]}),
        Req("sampled-seed7", chat(p, temperature=0.9, seed=7)),
        Req("sampled-seed7-steered", chat(p, temperature=0.9, seed=7,
                                          steering={"vector": "shared.power", "layer": 1, "alpha": 8.0})),
        Req("stream", chat(p, stream=True)),
        Req("guided", chat(p, guided_choice=["yes", "no", "maybe"])),
        Req("guided-steered", chat(p, guided_choice=["yes", "no", "maybe"],
                                   steering={"vector": "intrinsic.power", "layer": 1, "alpha": 32.0})),
    ]
    return out


def malformed() -> list[Req]:
    p = PROMPTS[0]
    big = json.dumps(chat("x" * 1_100_000)).encode()
    return [
        Req("bad-json", raw=b'{"messages": [{"role": "user", "content": "hi"}', ok=False),
        Req("not-an-object", raw=b'[1, 2, 3]', ok=False),
        Req("empty-body", raw=b"", ok=False),
        Req("unknown-vector", chat(p, steering={"vector": "shared.honour", "layer": 1, "alpha": 1.0}), ok=False),
        Req("alpha-string", chat(p, steering={"vector": "shared.power", "layer": 1, "alpha": "strong"}), ok=False),
        Req("alpha-NaN", raw=json.dumps(chat(p, steering={"vector": "shared.power", "layer": 1,
                                                          "alpha": float("nan")})).encode(), ok=False),
        Req("alpha-Infinity", raw=json.dumps(chat(p, steering={"vector": "shared.power", "layer": 1,
                                                               "alpha": float("inf")})).encode(), ok=False),
        Req("layer-out-of-range", chat(p, steering={"vector": "shared.power", "layer": 99, "alpha": 1.0}), ok=False),
        Req("vector-and-neurons", chat(p, steering={"vector": "shared.power", "layer": 1, "alpha": 1.0,
                                                    "neurons": "shared.power", "beta": 2.0}), ok=False),
        Req("unknown-neuron-class", chat(p, steering={"neurons": "all.power", "beta": 2.0}), ok=False),
        Req("no-messages", {"model": "tiny-llama", "messages": []}, ok=False),
        Req("bad-role", {"messages": [{"role": "wizard", "content": p}]}, ok=False),
        Req("max-tokens-0", chat(p, max_tokens=0), ok=False),
        Req("beta-NaN", raw=json.dumps(chat(p, steering={"neurons": "shared.power", "beta": float("nan")})).encode(),
            ok=False),
        Req("prompt-over-context", chat("x" * 100_000), ok=False),
        Req("max-tokens-over-context", chat(p, max_tokens=4096), ok=False),
        Req("oversize-body", raw=big, ok=False),
        Req("oversize-body-chunked", raw=big, ok=False, chunked=True),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


THROUGHPUT_PROMPTS = ["Hi.", "What should I do this weekend?", "Give me advice about my career, please.",
                      "Is honesty always the best policy, even when it hurts someone you love?",
                      "Describe a good day.", "My neighbour is loud at night and I cannot sleep. What can I do about it?",
                      "Should I move abroad for a better job?", "Tell me about tradition."]


def steers(n_layers: int) -> list[dict | None]:
    """Every other request steered: a vector at a third of the depth, another at two thirds, negated."""
    return [None, {"vector": "intrinsic.power", "layer": n_layers // 3, "alpha": 12.0},
            None, {"vector": "prompted.benevolence", "layer": 2 * n_layers // 3, "alpha": -12.0}]


def steering_run(model: str, root: Path) -> tuple[Path, int]:
    """A run directory holding random unit steering vectors made for ``model`` (config + vectors), and
    the model's number of layers."""
    import torch

    from valuemech.artifacts import model_metadata
    from valuemech.config import ModelConfig, RunConfig
    from valuemech.models.loading import load_model
    from valuemech.rundir import RunDir
    from valuemech.vectors import ValueVectors

    lm = load_model(ModelConfig(name=model, threads=1))
    g = torch.Generator().manual_seed(0)
    vecs = {k: torch.nn.functional.normalize(torch.randn(lm.n_layers, lm.hidden_size, generator=g), dim=-1)
            for k in ("intrinsic.power", "prompted.benevolence")}
    run = RunDir(root)
    root.mkdir(parents=True, exist_ok=True)
    run.write_config(RunConfig(model=ModelConfig(name=model)))
    ValueVectors(vecs, model_metadata(lm)).save(run.vectors)
    return root, lm.n_layers


def start_server(model: str, run_dir: Path, max_batch: int, threads: int, env: dict, log_path: Path):
    """``valuemech serve`` in a subprocess, and its base URL once ``/health`` answers."""
    port = free_port()
    log = open(log_path, "w")
    server = subprocess.Popen([str(BIN), "serve", "--model", model, "--run", str(run_dir), "--port", str(port),
                               "--max-batch", str(max_batch), "--threads", str(threads)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base, t0 = f"http://127.0.0.1:{port}", time.perf_counter()
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.perf_counter() - t0 > 300:
            server.kill()
            raise SystemExit(f"server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)


def load_level(base: str, bodies: list[dict], clients: int) -> dict:
    """Send ``bodies`` from ``clients`` concurrent clients: req/s, tokens/s, p50/p95 latency, answers."""
    client = httpx.Client(base_url=base, timeout=600.0, limits=httpx.Limits(max_connections=clients))
    before = client.get("/v1/stats").json()
    answers, lat, tokens = [None] * len(bodies), [0.0] * len(bodies), [0] * len(bodies)

    def one(i: int) -> None:
        t = time.perf_counter()
        r = client.post("/v1/chat/completions", json=bodies[i])
        lat[i] = time.perf_counter() - t
        r.raise_for_status()
        answers[i] = r.json()["choices"][0]["message"]["content"]
        tokens[i] = r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(bodies))))
    wall = time.perf_counter() - t0
    stats = client.get("/v1/stats").json()
    client.close()
    return {"clients": clients, "seconds": round(wall, 2), "req_s": round(len(bodies) / wall, 2),
            "tokens_s": round(sum(tokens) / wall, 1), "p50_ms": round(1000 * percentile(lat, 0.5)),
            "p95_ms": round(1000 * percentile(lat, 0.95)),
            "rows_per_batch": round((stats["batched_rows"] - before["batched_rows"])
                                    / max(1, stats["batches"] - before["batches"]), 1),
            "answers": answers}


def throughput(args) -> int:
    """Batching vs serial at 1, 4, 8 and 16 clients (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import load_avg, machine

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="valuemech-tput-"))
    run_dir, n_layers = steering_run(args.model, tmp / "run")
    plan = steers(n_layers)
    bodies = [{"messages": [{"role": "user", "content": THROUGHPUT_PROMPTS[i % len(THROUGHPUT_PROMPTS)]}],
               "max_tokens": args.max_tokens, "temperature": 0.0,
               **({"steering": plan[i % len(plan)]} if plan[i % len(plan)] else {})}
              for i in range(args.requests)]
    print(f"machine: {machine()}\n{load_avg()} (before); model {args.model}, {args.requests} requests x "
          f"{args.max_tokens} tokens per level, half steered, greedy, server threads {args.threads}", flush=True)
    levels, rows = [int(x) for x in args.levels.split(",")], []
    for label, max_batch in (("serial", 1), ("batched", args.max_batch)):
        server, base = start_server(args.model, run_dir, max_batch, args.threads, env, tmp / f"{label}.log")
        try:
            load_level(base, bodies[:2], 1)  # warm-up
            for clients in levels:
                rows.append({"server": label, "max_batch": max_batch, **load_level(base, bodies, clients),
                             "load": load_avg()})
                r = rows[-1]
                print(f"{label:8s} clients {clients:2d}: {r['req_s']} req/s, {r['tokens_s']} tok/s, "
                      f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, rows per batch {r['rows_per_batch']}, "
                      f"{r['load']}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(rows, args)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(rows: list[dict], args) -> None:
    """The markdown table (speed-up over serial at the same clients, share identical to alone) and JSON."""
    from _common import load_avg, machine

    serial = {r["clients"]: r for r in rows if r["server"] == "serial"}
    alone = {r["server"]: r["answers"] for r in rows if r["clients"] == 1}
    print("\n| server | clients | req/s | tokens/s | p50 ms | p95 ms | rows per batch | tokens/s vs serial | "
          "identical to alone | load average |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = sum(a == b for a, b in zip(r["answers"], alone[r["server"]]))
        r["identical_to_alone"] = f"{same}/{len(r['answers'])}"
        r["speedup"] = round(r["tokens_s"] / serial[r["clients"]]["tokens_s"], 2)
        print(f"| {r['server']} | {r['clients']} | {r['req_s']} | {r['tokens_s']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['rows_per_batch']} | {r['speedup']}x | {r['identical_to_alone']} | {r['load'][5:]} |")
    cross = sum(a == b for a, b in zip(alone["serial"], alone["batched"]))
    print(f"\nbatched server alone vs serial server alone: {cross}/{len(alone['serial'])} identical; "
          f"{load_avg()} (after); {machine()}")
    out = {"command": ("HF_HUB_OFFLINE=1 .venv/bin/python bench/load_serve.py " + " ".join(sys.argv[1:])).strip(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "rows": rows}
    path = args.json.with_name("load_serve_throughput.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="Smoke run directory (default: made in a temp dir).")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--malformed-share", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "load_serve.json")
    ap.add_argument("--throughput", action="store_true", help="Batching vs serial throughput (see above).")
    ap.add_argument("--model", default="smollm2-135m", help="--throughput: the model served.")
    ap.add_argument("--max-tokens", type=int, default=32, help="--throughput: tokens per request.")
    ap.add_argument("--levels", default="1,4,8,16", help="--throughput: concurrent clients, comma-separated.")
    ap.add_argument("--max-batch", type=int, default=16, help="--throughput: the batching server's --max-batch.")
    ap.add_argument("--threads", type=int, default=1, help="--throughput: the server's torch threads.")
    args = ap.parse_args()
    if args.throughput:
        return throughput(args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="valuemech-load-"))
    failures: list[str] = []
    run_dir = args.run
    if run_dir is None:
        run_dir = tmp / "smoke"
        subprocess.run([str(BIN), "run", "--preset", "smoke", "--evals", "none", "--out", str(run_dir), "--quiet"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    log = open(tmp / "serve.log", "w")
    server = subprocess.Popen([str(BIN), "serve", "--model", "tiny-llama", "--run", str(run_dir), "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(base_url=base, timeout=120.0,
                              limits=httpx.Limits(max_connections=args.concurrency,
                                                  max_keepalive_connections=args.concurrency))
        t0 = time.perf_counter()
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 180:
                print((tmp / "serve.log").read_text()[-2000:])
                return 1
            time.sleep(0.2)
        from valuemech.hardware import describe

        print(f"server up in {time.perf_counter() - t0:.1f} s on {base}; CPU: {describe()}; load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

        good, bad = well_formed(neuron_set(run_dir)), malformed()
        alone = {}
        for r in good:
            status, ans, _ = r.send(client)
            if status != 200:
                failures.append(f"alone {r.name}: status {status} {ans}")
            alone[r.name] = ans
        pairs = [(f"{k}/{i}", f"plain/{i}") for i in range(len(PROMPTS))
                 for k in ("vector-shared.power", "vector-prompted.benevolence-rel",
                           "vector-mean_delta-generated", "neurons")]
        pairs += [("guided-steered", "guided"), ("sampled-seed7-steered", "sampled-seed7")]
        unchanged = [s for s, u in pairs if alone[s] == alone[u]]
        changed, n_steered = len(pairs) - len(unchanged), len(pairs)
        print(f"alone answers: {len(alone)} distinct well-formed requests; steering changed the answer in "
              f"{changed}/{n_steered} steered requests (unchanged: {', '.join(unchanged) or 'none'})", flush=True)
        if changed < n_steered // 2:
            failures.append(f"steering changed only {changed}/{n_steered} answers: the leak check is too weak")

        rng = random.Random(args.seed)
        n_bad = round(args.requests * args.malformed_share)
        plan = [rng.choice(good) for _ in range(args.requests - n_bad)]
        plan += [bad[i % len(bad)] for i in range(n_bad)]
        rng.shuffle(plan)
        results: list[tuple[Req, int, dict | str, float]] = [None] * len(plan)  # type: ignore[list-item]

        def fire(i: int) -> None:
            try:
                status, ans, dt = plan[i].send(client)
            except httpx.HTTPError as exc:
                status, ans, dt = -1, {"transport": repr(exc)}, float("nan")
            results[i] = (plan[i], status, ans, dt)

        t_burst = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(fire, range(len(plan))))
        burst_s = time.perf_counter() - t_burst

        per_kind: dict[str, dict] = {}
        for req, status, ans, dt in results:
            k = per_kind.setdefault(req.name, {"sent": 0, "ok": 0, "statuses": {}, "message": None})
            k["sent"] += 1
            k["statuses"][str(status)] = k["statuses"].get(str(status), 0) + 1
            if req.ok:
                good_ans = status == 200 and ans == alone[req.name]
                k["ok"] += good_ans
                if not good_ans:
                    failures.append(f"{req.name}: status {status}, answer {ans!r} != alone {alone[req.name]!r}")
            else:
                msg = ans.get("error", {}).get("message") if isinstance(ans, dict) else None
                k["message"] = msg
                good_rej = 400 <= status < 500 and isinstance(msg, str) and bool(msg.strip())
                k["ok"] += good_rej
                if not good_rej:
                    failures.append(f"{req.name}: expected a 4xx with a message, got {status} {str(ans)[:200]}")
        health = client.get("/health").status_code
        if health != 200 or server.poll() is not None:
            failures.append(f"server unhealthy after the burst (health {health}, exit {server.poll()})")
        after = {r.name: r.send(client)[1] for r in good}
        drift = [n for n in alone if after[n] != alone[n]]
        if drift:
            failures.append(f"alone-answers changed after the burst: {drift}")
        stats = client.get("/v1/stats").json()

        lat = [dt for _, _, _, dt in results if dt == dt]
        lat_good = [dt for r, _, _, dt in results if r.ok and dt == dt]
        lat_bad = [dt for r, _, _, dt in results if not r.ok and dt == dt]
        summary = {
            "requests": len(plan), "well_formed": len(plan) - n_bad, "malformed": n_bad,
            "concurrency": args.concurrency, "burst_s": round(burst_s, 2),
            "throughput_rps": round(len(plan) / burst_s, 1),
            "well_formed_rps": round((len(plan) - n_bad) / burst_s, 1),
            "latency_ms": {name: {"p50": round(1000 * percentile(xs, 0.5), 1),
                                  "p95": round(1000 * percentile(xs, 0.95), 1),
                                  "max": round(1000 * max(xs), 1) if xs else None}
                           for name, xs in (("all", lat), ("well_formed", lat_good), ("malformed", lat_bad))},
            "well_formed_correct": sum(1 for r, s, a, _ in results if r.ok and s == 200 and a == alone[r.name]),
            "malformed_rejected_4xx": sum(v["ok"] for k, v in per_kind.items() if k in {b.name for b in bad}),
            "steering_changed_answer": f"{changed}/{n_steered}", "steering_unchanged": unchanged, "healthy_after": health == 200,
            "alone_answers_unchanged_after": not drift, "server_stats": stats,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    print(f"\n{summary['requests']} requests ({summary['well_formed']} well-formed, {summary['malformed']} malformed), "
          f"{args.concurrency} concurrent: {summary['burst_s']} s, {summary['throughput_rps']} req/s")
    print("\n| requests | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
    for name, d in summary["latency_ms"].items():
        print(f"| {name} | {d['p50']} | {d['p95']} | {d['max']} |")
    print("\n| request kind | sent | correct | statuses | error message |\n|---|---|---|---|---|")
    for name, k in sorted(per_kind.items()):
        msg = (k["message"] or "")[:70].replace("|", "/")
        print(f"| {name} | {k['sent']} | {k['ok']} | {k['statuses']} | {msg} |")
    print(f"\nwell-formed answers equal to the alone-answer: {summary['well_formed_correct']}/{summary['well_formed']}; "
          f"malformed rejected with 4xx + message: {summary['malformed_rejected_4xx']}/{summary['malformed']}; "
          f"healthy after: {summary['healthy_after']}; failures: {len(failures)}")
    for f in failures[:20]:
        print("FAIL", f)
    result = {"command": ("HF_HUB_OFFLINE=1 .venv/bin/python bench/load_serve.py " + " ".join(sys.argv[1:])).strip(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
              "cpus": os.cpu_count(), **summary, "per_kind": per_kind, "failures": failures}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written: {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
