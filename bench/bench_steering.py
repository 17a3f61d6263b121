"""Benchmarks for steering on one model, measured side by side in one process.

1. PVQ scoring: option probabilities (one forward pass per item) vs. generating an answer
   (greedy, up to 8 / 32 / 64 new tokens, with and without the answer stem prefilled) and parsing
   the first digit 1-6, on the same English items; the parse rate is printed beside each.
2. Steered generation: tokens/s of plain greedy generation vs. the same with a vector added at the
   middle block (valuemech.hooks.add_vectors), batch sizes 1 and 16, runs interleaved.

Usage: python bench/bench_steering.py [--model smollm2-135m] [--repeats 3]
Prints ratios; record them in docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from valuemech import hooks
from valuemech.config import GenerationConfig, ModelConfig
from valuemech.data import builtin_queries
from valuemech.evals.pvq import LIKERT, OPTIONS, builtin_items, likert_prompts
from valuemech.generate import sample_batch
from valuemech.models.loading import load_model
from valuemech.scoring import option_probabilities


def pvq_speed(lm, repeats: int, budgets: tuple[int, ...] = (8, 32, 64)) -> None:
    """Option probabilities vs. generate-and-parse, the latter at several answer budgets (new tokens)
    and with/without the answer stem prefilled, each with its parse rate: a budget that yields no
    parseable answer is not a working alternative, so the ratio is read at the budgets that do."""
    items = builtin_items(["en"])
    prompts = likert_prompts(lm, items, reverse=False)
    template, scales, stem = LIKERT["en"]
    plain = [lm.prompt_ids(template.format(text=it.text, scale=scales[0]), None) for it in items]
    variants = {"no stem": plain, "stem": prompts}
    t_opt = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        option_probabilities(lm, prompts, OPTIONS, batch_size=16)
        t_opt.append(time.perf_counter() - t0)
    o = min(t_opt)
    print(f"PVQ {len(items)} English items: option probabilities {o:.2f} s")
    for name, gen_prompts in variants.items():
        for budget in budgets:
            cfg = GenerationConfig(max_new_tokens=budget, temperature=0.0, batch_size=16)
            t_gen, parsed = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                parsed = 0
                for s in range(0, len(gen_prompts), 16):
                    for ids, _ in sample_batch(lm, gen_prompts[s: s + 16], cfg, 0):
                        parsed += bool(re.search(r"[1-6]", lm.tokenizer.decode(ids)))
                t_gen.append(time.perf_counter() - t0)
            g = min(t_gen)
            print(f"  generate+parse ({name}, <= {budget} new tokens): {g:.2f} s, {parsed}/{len(items)} answers "
                  f"parsed; option probabilities are {g / o:.1f}x faster")


def steering_overhead(lm, repeats: int, new_tokens: int = 32) -> None:
    queries = [q.text for q in builtin_queries()[:16]]
    layer = lm.n_layers // 2
    vec = {layer: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0))}
    cfg = GenerationConfig(max_new_tokens=new_tokens, temperature=0.0, batch_size=16)
    for bs in (1, 16):
        prompts = [lm.prompt_ids(q, None) for q in queries[:bs]]
        plain, steered = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sample_batch(lm, prompts, cfg, 0)
            plain.append(time.perf_counter() - t0)
            with hooks.add_vectors(lm, vec, alpha=0.0):  # alpha 0: same tokens, same lengths
                t0 = time.perf_counter()
                sample_batch(lm, prompts, cfg, 0)
                steered.append(time.perf_counter() - t0)
        p, s = min(plain), min(steered)
        toks = bs * new_tokens
        print(f"generation batch {bs}: plain {toks / p:.1f} tok/s, steered {toks / s:.1f} tok/s, "
              f"overhead {100 * (s / p - 1):+.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype, threads=args.threads))
    from _common import load_avg, machine

    print(f"{machine()}; {load_avg()}")
    print(f"model {lm.model_id}, dtype {args.dtype}, threads {args.threads}, repeats {args.repeats} (min taken)")
    pvq_speed(lm, args.repeats)
    steering_overhead(lm, args.repeats)


if __name__ == "__main__":
    main()
