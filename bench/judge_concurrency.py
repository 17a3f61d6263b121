"""The llm judge's concurrency against a running `valuemech serve`: questions per second at 1 and 8 concurrent requests.

Usage: start a server (`valuemech serve --model smollm2-135m --port 8765 --threads 2`), then
HF_HUB_OFFLINE=1 .venv/bin/python bench/judge_concurrency.py [--url http://127.0.0.1:8765/v1] [--texts 12]

Texts: the built-in Value Portrait set (written for valuemech), each with its query, asked about all
ten values; binary (``logprobs: false``) and graded (``logprobs: auto``) judges, each with a fresh
answer cache so that every question is sent.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import load_avg, machine
from valuemech.evals.value_portrait import builtin_portrait
from valuemech.judges.llm import LLMJudge
from valuemech.values import VALUES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8765/v1")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=12)
    args = ap.parse_args()
    rs = builtin_portrait()[: args.texts]
    print(f"# llm judge against {args.url}; {machine()}; {load_avg()}")
    for mode in ("false", "auto"):
        scores = {}
        for c in (1, 8):
            with tempfile.TemporaryDirectory() as d:
                j = LLMJudge(base_url=args.url, model=args.model, api_key_env=None, concurrency=c,
                             logprobs=mode, cache=f"{d}/cache.sqlite")
                _ = j.name  # the logprobs probe, before timing
                t0 = time.perf_counter()
                res = j.score([r.text for r in rs], VALUES, queries=[r.query for r in rs])
                dt = time.perf_counter() - t0
                scores[c] = [row[v] for row in res.scores for v in VALUES]
            n = len(rs) * len(VALUES)
            print(f"logprobs={mode} concurrency={c}: {n} questions in {dt:.1f} s = {n / dt:.2f} q/s")
        diff = max(abs(a - b) for a, b in zip(scores[1], scores[8]))
        same = sum(a == b for a, b in zip(scores[1], scores[8]))
        print(f"logprobs={mode}: scores at concurrency 8 vs 1: {same}/{len(scores[1])} identical, max |difference| "
              f"{diff:.2e} (batches compute with other shapes, and unsteered rows share their common head)")


if __name__ == "__main__":
    main()
