"""Forward-pass and sampling speed of the embedded model by dtype and batch size (CPU).

Usage: python bench/bench_dtype.py [--model smollm2-135m] [--threads 1]
Why it exists: on CPUs without native bfloat16 (no AVX512-BF16 / AMX) bfloat16 is emulated and
slower than float32; the quick preset's dtype follows this measurement.
"""

from __future__ import annotations

import argparse
import time

import torch

from valuemech.config import GenerationConfig, ModelConfig
from valuemech.data import builtin_queries
from valuemech.generate import sample_batch
from valuemech.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    queries = [q.text for q in builtin_queries()[:32]]
    for dtype in ("float32", "bfloat16"):
        lm = load_model(ModelConfig(name=args.model, dtype=dtype, threads=args.threads))
        x = torch.randint(100, 1000, (8, 128))
        with torch.no_grad():
            lm.arch.decoder(input_ids=x)
            t0 = time.perf_counter()
            lm.arch.decoder(input_ids=x)
            fwd = time.perf_counter() - t0
        line = [f"{dtype}: forward 8x128 tokens {fwd:.2f} s"]
        for bs in (1, 16, 32):
            prompts = [lm.prompt_ids(q, None) for q in queries[:bs]]
            cfg = GenerationConfig(max_new_tokens=32, temperature=0.7, top_p=0.9, batch_size=bs)
            t0 = time.perf_counter()
            sample_batch(lm, prompts, cfg, 0)
            line.append(f"sampling batch {bs}: {bs * 32 / (time.perf_counter() - t0):.0f} tok/s")
        print(f"{args.model}, threads {args.threads}: " + "; ".join(line))


if __name__ == "__main__":
    main()
