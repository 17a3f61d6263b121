"""Per-row steered generation and extraction on a randomly initialised model of a real size (no weights travel).

For a GPU machine without a model hub: builds Qwen2.5-7B-Instruct's architecture from its published config
(written out below) with random weights in bfloat16, wraps it with valuemech's tiny byte-level tokenizer
(only token ids matter here), and measures
1. greedy generation through ``generate.sample_rows`` at batch 1, 8 and 32: unsteered rows, and rows each
   steered with its own random vector at the middle block (``hooks.add_per_row``); tokens/s;
2. extraction (``vectors.response_means``, every block) on 32 sequences: tokens/s.
``--tiny`` runs the same on a scaled-down config on the CPU (to try the script before spending device time).

Usage: python bench/gpu_rows.py [--device cuda] [--new-tokens 64] [--prompt-tokens 128]
       python bench/gpu_rows.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from _common import load_avg, machine
from valuemech.generate import Row, sample_rows
from valuemech.models import loading
from valuemech.models.tiny import tiny_tokenizer
from valuemech.vectors import response_means

# Qwen/Qwen2.5-7B-Instruct config.json (the architecture; weights are random here)
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu")
TINY = dict(QWEN25_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)


def timed(fn, device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    args = ap.parse_args()
    dtype = torch.float32 if args.tiny else torch.bfloat16
    config = Qwen2Config(**(TINY if args.tiny else QWEN25_7B))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    loading._params_sha256 = lambda m: "random-weights"  # hashing 15 GB of random weights measures nothing
    lm = loading.wrap_model(model, tiny_tokenizer(), name="qwen2.5-7b-architecture")
    lm.eos_ids = []  # random weights: never stop early, so every row makes --new-tokens tokens
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else machine()
    print(f"# {where}; {dtype}; {config.num_hidden_layers} blocks, hidden {config.hidden_size}; built in "
          f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}; {load_avg()}")
    g = torch.Generator().manual_seed(1)
    layer = config.num_hidden_layers // 2
    print("| batch | unsteered tok/s | steered tok/s (own vector per row) | steered / unsteered |")
    print("|---|---|---|---|")
    for bs in (1, 8, 32):
        prompts = [torch.randint(3, 255, (args.prompt_tokens,), generator=g).tolist() for _ in range(bs)]
        vecs = [torch.randn(config.hidden_size, generator=g).to(args.device, dtype) for _ in range(bs)]
        rates = []
        for steer in (False, True):
            rows = [Row(p, args.new_tokens, add={layer: v} if steer else None) for p, v in zip(prompts, vecs)]
            sample_rows(lm, [Row(prompts[0], 2)])  # warm-up
            dt, out = timed(lambda: sample_rows(lm, rows), args.device)
            rates.append(sum(len(ids) for ids, _, _ in out) / dt)
        print(f"| {bs} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f} |", flush=True)
    seqs = [torch.randint(3, 255, (256,), generator=g).tolist() for _ in range(32)]
    response_means(lm, [s[:128] for s in seqs[:2]], [s[128:] for s in seqs[:2]])  # warm-up
    dt, _ = timed(lambda: response_means(lm, [s[:128] for s in seqs], [s[128:] for s in seqs]), args.device)
    print(f"extraction (response_means, all {config.num_hidden_layers} blocks, 32 x 256 tokens): "
          f"{32 * 256 / dt:.0f} tok/s")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB")


if __name__ == "__main__":
    main()
