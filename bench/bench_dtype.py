"""float32 vs bfloat16 on this CPU, side by side in one run: matmul peak, forward pass, generation.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_dtype.py [--model smollm2-135m] [--threads 1]

Prints the CPU model and its bfloat16 flags, then a Markdown table per dtype: GFLOP/s of
``F.linear`` on 2048x576 . 576x1536 (the matmul peak of this shape), the model's forward pass on
8x128 tokens without lm_head, and greedy generation (batch 1 and 16, 32 new tokens) in tokens/s and
in model GFLOP/s (2 x the multiply-adds of every Linear layer and lm_head per token, attention
scores left out) with its share of the same dtype's matmul peak. ``auto`` resolves to the last column.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import best_of, flops_per_token, linear_gflops, load_avg, machine
from valuemech.config import GenerationConfig, ModelConfig
from valuemech.data import builtin_queries
from valuemech.generate import sample_batch
from valuemech.hardware import auto_dtype, describe
from valuemech.models.loading import load_model


def measure(model_name: str, dtype: str, threads: int, queries: list[str]) -> dict:
    torch.set_num_threads(threads)
    lm = load_model(ModelConfig(name=model_name, dtype=dtype, threads=threads))
    out = {"peak": linear_gflops(torch.float32 if dtype == "float32" else torch.bfloat16)}
    x = torch.randint(100, 1000, (8, 128))
    with torch.no_grad():
        out["forward"] = best_of(lambda: lm.arch.decoder(input_ids=x), reps=3)
    fpt = flops_per_token(lm.model)
    for bs in (1, 16):
        prompts = [lm.prompt_ids(q, None) for q in queries[:bs]]
        cfg = GenerationConfig(max_new_tokens=32, temperature=0.0, batch_size=bs)
        t0 = time.perf_counter()
        gen = sample_batch(lm, prompts, cfg, 0)
        dt = time.perf_counter() - t0
        n_tok = bs * 32  # greedy runs all 32 steps for the batch (rows that stop early still cost)
        prefill = sum(len(p) for p in prompts)
        out[f"gen{bs}_tps"] = n_tok / dt
        out[f"gen{bs}_gflops"] = (n_tok + prefill) * fpt / dt / 1e9
        assert len(gen) == bs
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    queries = [q.text for q in builtin_queries()[:16]]
    print(f"{machine()}; {load_avg()}")
    print(f"CPU: {describe()}; auto -> {auto_dtype('cpu')}")
    res = {d: measure(args.model, d, args.threads, queries) for d in ("float32", "bfloat16")}
    print(f"\n{args.model}, {args.threads} thread(s)\n")
    print("| | float32 | bfloat16 | bf16 / fp32 |")
    print("|---|---|---|---|")
    f, b = res["float32"], res["bfloat16"]
    print(f"| `F.linear` 2048×576 · 576×1536 | {f['peak']:.0f} GFLOP/s | {b['peak']:.0f} GFLOP/s | "
          f"{b['peak'] / f['peak']:.2f}× |")
    print(f"| forward 8×128 tokens, no lm_head | {f['forward']:.2f} s | {b['forward']:.2f} s | "
          f"{f['forward'] / b['forward']:.2f}× faster |")
    for bs in (1, 16):
        print(f"| greedy generation, batch {bs}, 32 new tokens | {f[f'gen{bs}_tps']:.0f} tok/s | "
              f"{b[f'gen{bs}_tps']:.0f} tok/s | {b[f'gen{bs}_tps'] / f[f'gen{bs}_tps']:.2f}× |")
        print(f"| — in model GFLOP/s (share of the dtype's `F.linear` peak) | {f[f'gen{bs}_gflops']:.0f} "
              f"({f[f'gen{bs}_gflops'] / f['peak']:.0%}) | {b[f'gen{bs}_gflops']:.0f} "
              f"({b[f'gen{bs}_gflops'] / b['peak']:.0%}) | |")
    print(f"\n{load_avg()}")


if __name__ == "__main__":
    main()
