"""Cost of the lm judge per prompt layout, against scoring every (text, value) question as a whole sequence.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lm_judge.py [--model smollm2-135m] [--texts 20] [--threads 1]

Texts: the first ``--texts`` responses of the built-in Value Portrait set (written for valuemech),
each with its query, asked about all ten values. For each prompt (shared, per-value, name-only,
prefill) it prints the tokens the model runs per question with the head/query/response/tail cache
(:func:`valuemech.scoring.tree_next_token_probs`) and without any cache (whole sequences), the
wall time per 1,000 questions of the cached judge, and, for ``--baseline`` prompts, of the whole
sequences scored in batches (``next_token_probs(prefix_cache=False)``) measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import load_avg, machine
from valuemech.config import ModelConfig
from valuemech.evals.value_portrait import builtin_portrait
from valuemech.judges.lm_judge import PROMPTS, LMJudge
from valuemech.models.loading import load_model
from valuemech.scoring import next_token_probs
from valuemech.values import VALUES


def token_counts(head: list[int], bodies: list[list[list[int]]], tails: list[list[int]]) -> tuple[float, float]:
    """Tokens run per question: with the tree cache (head once, each distinct query once) and without."""
    n_q = len(bodies) * len(tails)
    queries = {tuple(b[0]) for b in bodies}
    cached = len(head) + sum(len(q) for q in queries) + sum(len(b[1]) for b in bodies) + len(bodies) * sum(map(len, tails))
    whole = sum((len(head) + len(b[0]) + len(b[1])) * len(tails) + sum(map(len, tails)) for b in bodies)
    return cached / n_q, whole / n_q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", nargs="*", default=["per-value", "prefill"],
                    help="Prompts whose whole-sequence cost is timed too.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(ModelConfig(name=args.model, dtype="float32", threads=args.threads))
    rs = builtin_portrait()[: args.texts]
    texts, queries = [r.text for r in rs], [r.query for r in rs]
    print(f"# lm judge cost: {args.model} float32, {len(texts)} texts x 10 values; {machine()}; {load_avg()}\n")
    print("| prompt | tokens/question cached | tokens/question whole | s per 1,000 questions cached | "
          "s per 1,000 whole | speed-up |")
    print("|---|---|---|---|---|---|")
    n_q = len(texts) * len(VALUES)
    for prompt in PROMPTS:
        judge = LMJudge(lm, prompt=prompt, progress=False)
        head, bodies, tails = judge.segments(texts, VALUES, queries)
        cached_tok, whole_tok = token_counts(head, bodies, tails)
        judge.score(texts[:2], VALUES, queries=queries[:2])  # warm-up
        t0 = time.perf_counter()
        judge.score(texts, VALUES, queries=queries)
        cached_s = (time.perf_counter() - t0) * 1000 / n_q
        whole_cell, ratio = "", ""
        if prompt in args.baseline:
            seqs = [head + b[0] + b[1] + t for b in bodies for t in tails]
            t0 = time.perf_counter()
            next_token_probs(lm, seqs, batch_size=16, prefix_cache=False, columns=judge.yes + judge.no)
            whole_s = (time.perf_counter() - t0) * 1000 / n_q
            whole_cell, ratio = f"{whole_s:.0f}", f"{whole_s / cached_s:.1f}×"
        print(f"| {prompt} | {cached_tok:.0f} | {whole_tok:.0f} | {cached_s:.0f} | {whole_cell} | {ratio} |")


if __name__ == "__main__":
    main()
