"""Generation speed, side by side in one process on one model, runs interleaved, min of the repeats.

1. Steered generation (``--steer``): tokens/s of plain greedy generation (``sample_batch``), the
   same inside ``valuemech.hooks.add_vectors`` and inside steering-vectors'
   ``SteeringVector.apply``, one vector at the middle block, batch sizes 1 and 16. The vector is
   added with alpha / multiplier 0, so all three produce the same tokens and do the same steps
   (the hooks still do all their work).
2. Generation stage (``--stage``): the pipeline's ``generate_responses`` (the quick preset's
   sampling settings, batch size, JSONL records) on the first ``--jobs`` jobs of the quick plan
   against a plain batched loop on the same prompts: chat template, tokenizer with left padding,
   ``model.generate`` with the same sampling settings, decode. Tokens/s counts the generated
   tokens up to EOS.
3. ``--profile FILE``: a pyinstrument profile of ``generate_responses`` on those jobs; writes the
   top of the call tree and the functions with the most own time to FILE.

Wall time and this process's CPU time are both reported (the CPU time is the steadier on a
shared machine); the process's peak RSS is printed last.

Usage (the commands of docs/benchmarks.md):
  python bench/bench_generate.py --steer --repeats 6 --new-tokens 16
  python bench/bench_generate.py --dtype bfloat16 --steer --repeats 4 --new-tokens 16
  python bench/bench_generate.py --stage --jobs 32 --repeats 3
  python bench/bench_generate.py --stage --jobs 96 --repeats 2 --threads 2   (the quick preset's threads)
  python bench/bench_generate.py --profile FILE --jobs 32
  python bench/bench_generate.py --ops --jobs 128 --threads 2   (decode batch sizes; torch.profiler operators)
Needs the bench extra (``make bench-env``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread: no tokenizer thread pool

import torch  # noqa: E402

from _common import flops_per_token, linear_gflops, load_avg, machine  # noqa: E402
from valuemech import hooks
from valuemech.config import GenerationConfig, ModelConfig, make_config
from valuemech.data import builtin_queries, load_templates, select_queries
from valuemech.batching import left_pad
from valuemech.generate import cut_at_eos, generate_responses, plan_jobs, sample_batch
from valuemech.io import read_jsonl
from valuemech.models.chat import format_chat
from valuemech.models.loading import LoadedModel, load_model


def steering(lm: LoadedModel, args) -> None:
    from steering_vectors import SteeringVector

    queries = [q.text for q in builtin_queries()[:16]]
    layer = lm.n_layers // 2
    vec = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0)).to(lm.model.dtype)
    sv = SteeringVector({layer: vec}, "decoder_block")
    cfg = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0.0, batch_size=16)
    print(f"\nsteered generation: greedy, {args.new_tokens} new tokens, vector at block {layer}, "
          f"alpha/multiplier 0 (same tokens)")
    for bs in (1, 16):
        prompts = [lm.prompt_ids(q, None) for q in queries[:bs]]
        runs = {
            "plain": lambda: sample_batch(lm, prompts, cfg, 0),
            "valuemech": lambda: _in(hooks.add_vectors(lm, {layer: vec}, alpha=0.0), sample_batch, lm, prompts, cfg, 0),
            "steering-vectors": lambda: _in(sv.apply(lm.model, multiplier=0.0), sample_batch, lm, prompts, cfg, 0),
        }
        times = {k: [] for k in runs}  # wall
        cpu = {k: [] for k in runs}
        outs = {}
        for rep in range(args.repeats):
            for k, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                outs[k] = fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
            print(f"  batch {bs} repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                  + f" ({load_avg()})", flush=True)
        same = outs["plain"] == outs["valuemech"] == outs["steering-vectors"]
        toks = sum(len(ids) for ids, _ in outs["plain"])
        best = {k: min(v) for k, v in times.items()}
        print(f"  batch {bs}: {toks} tokens, identical outputs: {same}; min of {args.repeats}: "
              + ", ".join(f"{k} {toks / v:.1f} tok/s" for k, v in best.items()))
        print(f"  batch {bs}: overhead valuemech {100 * (best['valuemech'] / best['plain'] - 1):+.1f}% "
              f"(target <= 5%), steering-vectors {100 * (best['steering-vectors'] / best['plain'] - 1):+.1f}%")
        best = {k: min(v) for k, v in cpu.items()}
        print(f"  batch {bs}, CPU time: " + ", ".join(f"{k} {toks / v:.1f} tok/s" for k, v in best.items())
              + f"; overhead valuemech {100 * (best['valuemech'] / best['plain'] - 1):+.1f}%, "
              f"steering-vectors {100 * (best['steering-vectors'] / best['plain'] - 1):+.1f}%")


def _in(ctx, fn, *args):
    with ctx:
        return fn(*args)


def quick_jobs(n: int, batch_size: int | None = None):
    cfg = make_config("quick", {"generation": {"batch_size": batch_size}} if batch_size else None)
    queries = select_queries(cfg.data.queries, cfg.data.n_queries, cfg.seed, cfg.data.text_field)
    templates = load_templates(cfg.data.templates, cfg.generation.values)
    return cfg, plan_jobs(queries, templates, cfg.generation, cfg.seed)[:n]


def stage_run(lm: LoadedModel, cfg, jobs, seed: int) -> tuple[float, int]:
    """The pipeline's generate stage into a fresh temporary JSONL: (seconds, generated tokens);
    ``stage_run.prompt_tokens`` keeps the prompt tokens of the last call (for model FLOPs)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "responses.jsonl"
        t0 = time.perf_counter()
        generate_responses(lm, jobs, cfg.generation, seed, out, progress=False,
                           extra={"model_sha256": lm.weights_sha256})
        dt = time.perf_counter() - t0
        records = read_jsonl(out)
        stage_run.prompt_tokens = sum(len(r["prompt_token_ids"]) for r in records)
        return dt, sum(len(r["response_token_ids"]) for r in records)


@torch.no_grad()
def plain_run(lm: LoadedModel, cfg, jobs, seed: int) -> tuple[float, int]:
    """A plain batched loop over the same prompts, in plan order: (seconds, generated tokens)."""
    g, tok = cfg.generation, lm.tokenizer
    t0 = time.perf_counter()
    texts, n = [], 0
    for s in range(0, len(jobs), g.batch_size):
        batch = jobs[s: s + g.batch_size]
        prompts = [format_chat(tok, j.query, j.system_prompt, lm.system_ok) for j in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + s)
        out = lm.model.generate(**enc, do_sample=True, temperature=g.temperature, top_p=g.top_p, top_k=0,
                                max_new_tokens=g.max_new_tokens, pad_token_id=tok.pad_token_id,
                                eos_token_id=lm.eos_ids)
        gen = out[:, enc["input_ids"].shape[1]:]
        for row in gen.tolist():
            k = next((i for i, t in enumerate(row) if t in lm.eos_ids), len(row))
            n += k
            texts.append(tok.decode(row[:k], skip_special_tokens=True))
    return time.perf_counter() - t0, n


@torch.no_grad()
def same_as_transformers(lm: LoadedModel, cfg, jobs) -> bool:
    """sample_batch (valuemech's temperature/top-p processor) against generate with transformers'
    own warpers, same prompts and seed: identical token ids?"""
    g = cfg.generation
    prompts = [lm.prompt_ids(j.query, j.system_prompt) for j in jobs]
    ids, mask = left_pad(prompts, lm.tokenizer.pad_token_id)
    torch.manual_seed(7)
    out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=g.temperature,
                            top_p=g.top_p, top_k=0, max_new_tokens=g.max_new_tokens,
                            pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=lm.eos_ids)
    ref = [cut_at_eos(row, lm.eos_ids) for row in out[:, ids.shape[1]:].tolist()]
    return sample_batch(lm, prompts, g, 7) == ref


def stage(lm: LoadedModel, args) -> None:
    cfg, jobs = quick_jobs(args.jobs, args.batch_size)
    g = cfg.generation
    print(f"\nsample_batch == generate with transformers' warpers on {min(8, len(jobs))} prompts: "
          f"{same_as_transformers(lm, cfg, jobs[:8])}")
    print(f"\ngenerate stage vs plain loop: {len(jobs)} jobs of the quick plan, batch {g.batch_size}, "
          f"<= {g.max_new_tokens} new tokens, temperature {g.temperature}, top-p {g.top_p}")
    res = {"valuemech stage": [], "plain loop": []}
    for rep in range(args.repeats):
        for k, fn in (("valuemech stage", stage_run), ("plain loop", plain_run)):
            c0 = time.process_time()
            dt, n = fn(lm, cfg, jobs, rep)
            c = time.process_time() - c0
            res[k].append((n / dt, dt, n, n / c))
        print(f"  repeat {rep + 1}: " + ", ".join(f"{k} {v[-1][2]} tokens in {v[-1][1]:.1f} s = {v[-1][0]:.1f} tok/s"
                                               for k, v in res.items()) + f" ({load_avg()})", flush=True)
    best = {k: max(v)[0] for k, v in res.items()}
    print(f"  best of {args.repeats}: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in best.items())
          + f"; ratio {best['valuemech stage'] / best['plain loop']:.2f}x (target >= 0.9)")
    # Model FLOPs of the useful work: every prompt token once and every kept response token once
    # (padding, and steps of rows that already ended, are work the stage does but not counted).
    peak = linear_gflops(lm.model.dtype)
    dt, n = min((x[1], x[2]) for x in res["valuemech stage"])
    useful = (stage_run.prompt_tokens + n) * flops_per_token(lm.model) / dt / 1e9
    print(f"  generate stage in model FLOPs: {useful:.1f} GFLOP/s = {100 * useful / peak:.0f}% of this machine's "
          f"F.linear peak at {torch.get_num_threads()} thread(s) ({peak:.1f} GFLOP/s, {lm.model.dtype}); "
          f"{stage_run.prompt_tokens} prompt + {n} response tokens in {dt:.1f} s")
    best = {k: max(x[3] for x in v) for k, v in res.items()}
    print(f"  best of {args.repeats}, tokens per CPU second: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
          + f"; ratio {best['valuemech stage'] / best['plain loop']:.2f}x")


def profile(lm: LoadedModel, args) -> None:
    from pyinstrument import Profiler

    cfg, jobs = quick_jobs(args.jobs)
    p = Profiler(interval=0.005)
    p.start()
    stage_run(lm, cfg, jobs, 0)
    p.stop()
    tree = p.output_text(show_all=False, short_mode=False).splitlines()
    flat = p.output_text(flat=True).splitlines()
    head = (f"# pyinstrument profile of valuemech.generate.generate_responses: {len(jobs)} jobs of the quick "
            f"plan, batch {cfg.generation.batch_size}, <= {cfg.generation.max_new_tokens} new tokens, "
            f"{lm.model.dtype}, 1 thread\n# command: python {' '.join(sys.argv)}\n# {machine()}, {load_avg()}\n")
    text = (head + "\n## call tree (top " + str(args.tree_lines) + " lines)\n" + "\n".join(tree[: args.tree_lines])
            + "\n\n## own time by function (top 25)\n" + "\n".join(flat[:25]) + "\n")
    Path(args.profile).write_text(text)
    print(text)


def ops(lm: LoadedModel, args) -> None:
    """torch.profiler's operator table for one batch of the quick plan (``--jobs`` prompts, shortest first,
    the quick preset's sampling), after tokens/s of the same prompts at batch sizes 32, 64 and 128."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    cfg, jobs = quick_jobs(args.jobs)
    prompts = sorted((lm.prompt_ids(j.query, j.system_prompt) for j in jobs), key=len)
    print(f"\ndecode batch size: {len(prompts)} prompts of the quick plan, shortest first, sampled as the quick preset")
    for bs in (32, 64, 128):
        best = float("inf")
        for rep in range(args.repeats):
            t0, n = time.perf_counter(), 0
            for i in range(0, len(prompts), bs):
                n += sum(len(ids) for ids, _ in sample_batch(lm, prompts[i:i + bs], cfg.generation, rep))
            best = min(best, time.perf_counter() - t0)
        print(f"  batch {bs}: {n} tokens, best of {args.repeats} {n / best:.1f} tok/s ({load_avg()})", flush=True)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        sample_batch(lm, prompts[:32], cfg.generation, 0)
    print("\noperators of one batch of 32 (torch.profiler, self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32, help="steered generation")
    ap.add_argument("--jobs", type=int, default=32, help="jobs of the quick plan for --stage / --profile")
    ap.add_argument("--steer", action="store_true")
    ap.add_argument("--stage", action="store_true")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--ops", action="store_true", help="decode batch sizes, then torch.profiler's operator table")
    ap.add_argument("--tree-lines", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="--stage: instead of the quick preset's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype, threads=args.threads))
    print(f"python {' '.join(sys.argv)}\n{machine()}, {load_avg()}\nmodel {lm.model_id}, dtype {args.dtype}")
    if args.profile:
        profile(lm, args)
    if args.steer:
        steering(lm, args)
    if args.stage:
        stage(lm, args)
    if args.ops:
        ops(lm, args)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
