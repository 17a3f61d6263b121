"""Difference-in-means extraction at every layer: valuemech vs. steering-vectors vs. a plain loop.

All three run side by side in one process on the same model and the same responses of a finished
run (``responses.jsonl``: stored prompt and response token ids), interleaved chunk by chunk
(``--chunk`` responses, consecutive in length order; the three in rotating order on each chunk).
The reported time is the sum over chunks of each chunk's minimum over the repeats, as wall time
and as this process's CPU time (the steadier of the two on a shared machine). The vector is
``mean(prompted) - mean(intrinsic)`` at every block, from ``n/2`` responses of each condition:

- valuemech: ``response_means`` (mean over response tokens, float64, decoder without ``lm_head``)
  over length-sorted batches, streamed into ``DiffMeansAccumulator`` (as ``extract_vectors`` does);
- plain: the decoder with ``output_hidden_states=True`` on the same batches, the same mean
  reduced from the returned hidden states;
- steering-vectors: ``train_steering_vector(..., aggregator=mean_aggregator())`` on (prompted,
  intrinsic) text pairs at all layers; it reads the last token. Its batch size is the best of a
  sweep on a subset (or ``--sv-batch-size``). Pairs are sorted by length on both sides (its best
  case for padding).

Where the methods coincide the vectors are compared (cosine per block): the last-token reading
(valuemech's ``response_means`` with the last token as the "response", on the ids
steering-vectors' tokenizer gives the same text) against steering-vectors; the response-mean
reading against the plain loop, whose last entry has the final norm applied (transformers'
convention), so its last block is left out. ``--check-only`` runs only the last-token checks,
also with valuemech reading in steering-vectors' own batches.

``--memory`` runs ``extract_vectors`` (all 20 condition x value vectors, the run's labels) in one
subprocess per size and reports each one's peak RSS (``ru_maxrss``); sizes above 256 repeat the
256 responses. ``--max-len K`` cuts every sequence to K tokens (the prompt's last, the response's
first K/2) to keep the large size affordable on a small CPU.

Usage (the commands of docs/benchmarks.md):
  python bench/bench_extract.py --dtype float32 --n 256 --repeats 2 --sv-batch-size 16 --chunk 32 --verbose
  python bench/bench_extract.py --dtype float32 --n 256 --sweep 1 4 16 32 --sweep-pairs 16   # sweep first
  python bench/bench_extract.py --dtype bfloat16 --n 32 --chunk 16 --repeats 2 --sv-batch-size 16 --verbose
  python bench/bench_extract.py --dtype bfloat16 --n 32 --chunk 16 --sv-batch-size 16 --check-only
  python bench/bench_extract.py --memory 256 2048 --max-len 32
Needs the bench extra (``make bench-env``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread: no tokenizer thread pool

import torch  # noqa: E402

from _common import load_avg, machine  # noqa: E402
from valuemech.config import ModelConfig
from valuemech.batching import left_pad, padded_positions
from valuemech.models.loading import LoadedModel, load_model
from valuemech.vectors import DiffMeansAccumulator, extract_vectors, response_means

RUN = Path("runs/quick-smollm2-135m")


def load(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


def pick(run: Path, n: int) -> tuple[list[dict], list[dict]]:
    """The first n/2 prompted and n/2 intrinsic non-empty responses of the run, in file order."""
    rs = [r for r in load(run, "responses.jsonl") if r["response_token_ids"]]
    pos = [r for r in rs if r["condition"] == "prompted"][: n // 2]
    neg = [r for r in rs if r["condition"] == "intrinsic"][: n // 2]
    if len(pos) < n // 2 or len(neg) < n // 2:
        raise SystemExit(f"{run} has fewer than {n // 2} responses per condition")
    return pos, neg


def seqlen(r: dict) -> int:
    return len(r["prompt_token_ids"]) + len(r["response_token_ids"])


def sorted_batches(items: list, key, size: int) -> list[list]:
    items = sorted(items, key=key)
    return [items[i: i + size] for i in range(0, len(items), size)]


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


# --- the three methods ----------------------------------------------------------------------

def valuemech_add(lm: LoadedModel, acc: DiffMeansAccumulator, pos: list[dict], neg: list[dict], bs: int) -> None:
    """response_means over length-sorted batches, streamed into the accumulator (as extract_vectors does)."""
    tagged = [(r, True) for r in pos] + [(r, False) for r in neg]
    for batch in sorted_batches(tagged, lambda x: seqlen(x[0]), bs):
        means, _ = response_means(lm, [r["prompt_token_ids"] for r, _ in batch],
                                  [r["response_token_ids"] for r, _ in batch])
        for i, (_, side) in enumerate(batch):
            acc.add("prompted", means[i], {"prompted": side})


@torch.no_grad()
def plain_add(lm: LoadedModel, sums: dict[bool, torch.Tensor], pos: list[dict], neg: list[dict], bs: int) -> None:
    """A plain loop: decoder(output_hidden_states=True) on the same batches, response means summed per side."""
    tagged = [(r, True) for r in pos] + [(r, False) for r in neg]
    for batch in sorted_batches(tagged, lambda x: seqlen(x[0]), bs):
        ids, attn = left_pad([r["prompt_token_ids"] + r["response_token_ids"] for r, _ in batch],
                             lm.tokenizer.pad_token_id)
        out = lm.arch.decoder(input_ids=ids, attention_mask=attn, position_ids=padded_positions(attn),
                              output_hidden_states=True, use_cache=False)
        hs = torch.stack(out.hidden_states[1:], 1).double()  # [b, L, t, d]
        width = ids.shape[1]
        for i, (r, side) in enumerate(batch):
            sums[side] += hs[i, :, width - len(r["response_token_ids"]):].mean(1)


def texts(lm: LoadedModel, rs: list[dict]) -> list[str]:
    return [lm.tokenizer.decode(r["prompt_token_ids"] + r["response_token_ids"]) for r in rs]


def sv_pairs(lm: LoadedModel, pos: list[dict], neg: list[dict]) -> list[tuple[str, str]]:
    """(prompted, intrinsic) text pairs, each side sorted by length (mean of differences = difference of means)."""
    p = sorted(texts(lm, pos), key=len)
    n = sorted(texts(lm, neg), key=len)
    return list(zip(p, n))


def sv_diff(lm: LoadedModel, pairs: list[tuple[str, str]], bs: int) -> torch.Tensor:
    from steering_vectors import train_steering_vector
    from steering_vectors.aggregators import mean_aggregator

    sv = train_steering_vector(lm.model, lm.tokenizer, pairs, layers=None, aggregator=mean_aggregator(),
                               batch_size=bs)
    return torch.stack([sv.layer_activations[l] for l in range(lm.n_layers)]).double().cpu()


def valuemech_last(lm: LoadedModel, pairs: list[tuple[str, str]], bs: int) -> torch.Tensor:
    """Last-token reading with response_means on the ids steering-vectors' tokenizer gives the text."""
    def side(txts: list[str]) -> torch.Tensor:
        ids = [lm.tokenizer(t)["input_ids"] for t in txts]
        total = torch.zeros(lm.n_layers, lm.hidden_size, dtype=torch.float64)
        for batch in sorted_batches(ids, len, bs):
            means, _ = response_means(lm, [x[:-1] for x in batch], [x[-1:] for x in batch])
            total += means.sum(0)
        return total / len(txts)
    return side([p for p, _ in pairs]) - side([n for _, n in pairs])


def last_token_check(lm: LoadedModel, args, chunks: list, sv_bs: int) -> None:
    """Last-token vectors only: steering-vectors (per chunk, as timed) against valuemech read in
    batches of ``--batch-size`` and in steering-vectors' own batches (each chunk's side, same
    sequences together), and the two valuemech readings against each other (the batching's noise)."""
    v_sv = torch.stack([sv_diff(lm, list(zip(texts(lm, p), texts(lm, q))), sv_bs) for p, q in chunks]).mean(0)
    pairs = list(zip(*[sum((texts(lm, x) for x in side), []) for side in zip(*chunks)]))
    v_a = valuemech_last(lm, pairs, args.batch_size)
    v_b = valuemech_last(lm, pairs, min(sv_bs, args.chunk // 2))
    for name, c in ((f"valuemech (batch {args.batch_size}) vs steering-vectors", cosines(v_a, v_sv)),
                    ("valuemech (steering-vectors' batches) vs steering-vectors", cosines(v_b, v_sv)),
                    (f"valuemech (batch {args.batch_size}) vs valuemech (steering-vectors' batches)", cosines(v_a, v_b))):
        low = ", ".join(f"{int(i)}: {float(c[i]):.6f}" for i in torch.argsort(c)[:3])
        print(f"  last token, {name}: min cosine {c.min():.6f}; lowest blocks {low}; "
              f"{'ok' if c.min() >= 0.9999 else 'BELOW 0.9999'}")


# --- reporting ------------------------------------------------------------------------------

def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def timed2(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``: on a shared machine the CPU time is
    the steadier of the two (it leaves out time spent waiting for a core)."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def speed(lm: LoadedModel, args) -> None:
    pos, neg = pick(args.run, args.n)
    n = len(pos) + len(neg)
    tokens = sum(seqlen(r) for r in pos + neg)
    print(f"{n} responses ({n // 2} pairs), {tokens} tokens (prompt + response), batch {args.batch_size}")
    sv_bs = args.sv_batch_size
    if sv_bs is None:  # steering-vectors' best batch size on a subset of pairs spread over lengths
        pairs = sv_pairs(lm, pos, neg)
        step = max(1, len(pairs) // args.sweep_pairs)
        sub = pairs[::step][: args.sweep_pairs]
        sv_diff(lm, sub[:1], 1)  # warm-up
        sweep = {}
        for b in args.sweep:
            sweep[b], _ = timed(sv_diff, lm, sub, b)
            print(f"  steering-vectors sweep, {len(sub)} pairs, batch {b}: {sweep[b]:.1f} s ({load_avg()})", flush=True)
        sv_bs = min(sweep, key=sweep.get)
        print(f"steering-vectors best batch size: {sv_bs}")
    # Chunks of --chunk responses (half from each side, consecutive in length order), each run by
    # all three methods in rotating order, so that load changes on a shared machine hit all three.
    pos_s, neg_s = sorted(pos, key=seqlen), sorted(neg, key=seqlen)
    half = args.chunk // 2
    chunks = [(pos_s[i: i + half], neg_s[i: i + half]) for i in range(0, len(pos_s), half)]
    names = ("valuemech", "plain", "steering-vectors")
    if args.check_only:
        return last_token_check(lm, args, chunks, sv_bs)
    t = {k: [[0.0] * args.repeats for _ in chunks] for k in names}  # wall
    cpu = {k: [[0.0] * args.repeats for _ in chunks] for k in names}
    for rep in range(args.repeats):
        print(f"repeat {rep + 1}: {load_avg()}", flush=True)
        acc = DiffMeansAccumulator(lm.n_layers, lm.hidden_size, values=("prompted",))
        sums = {s: torch.zeros(lm.n_layers, lm.hidden_size, dtype=torch.float64) for s in (True, False)}
        sv_parts = []
        for c, (p, q) in enumerate(chunks):
            run = {"valuemech": lambda: valuemech_add(lm, acc, p, q, args.batch_size),
                   "plain": lambda: plain_add(lm, sums, p, q, args.batch_size),
                   "steering-vectors": lambda: sv_parts.append(sv_diff(lm, list(zip(texts(lm, p), texts(lm, q))), sv_bs))}
            for k in names[c % 3:] + names[: c % 3]:
                t[k][c][rep], cpu[k][c][rep] = timed2(run[k])
            if args.verbose:
                print(f"    chunk {c}: " + ", ".join(f"{k} {t[k][c][rep]:.1f} s ({cpu[k][c][rep]:.1f} CPU)"
                                                       for k in names), flush=True)
        print("  " + ", ".join(f"{k} {sum(x[rep] for x in t[k]):.1f} s wall, {sum(x[rep] for x in cpu[k]):.1f} s CPU"
                               for k in names) + f" ({load_avg()})", flush=True)
    v_vm = acc.vector("prompted", "prompted")
    v_plain = sums[True] / len(pos) - sums[False] / len(neg)
    v_sv = torch.stack(sv_parts).mean(0)  # equal-sized chunks: the mean of all pairs' differences
    for label, tt in (("wall", t), ("CPU", cpu)):
        best = {k: sum(min(x) for x in tt[k]) for k in names}
        print(f"\n{label} time, per chunk min of {args.repeats}, summed over {len(chunks)} chunks ({load_avg()}):")
        for k, v in best.items():
            bsz = sv_bs if k == "steering-vectors" else args.batch_size
            print(f"  {k:17s} batch {bsz:3d}: {v:7.1f} s  {n / v:6.2f} responses/s  {tokens / v:7.0f} tok/s")
        print(f"  valuemech / steering-vectors throughput: {best['steering-vectors'] / best['valuemech']:.2f}x (target >= 2)")
        print(f"  valuemech / plain throughput:            {best['plain'] / best['valuemech']:.2f}x (target >= 0.9)")
    pairs = list(zip(*[sum((texts(lm, x) for x in side), []) for side in zip(*chunks)]))
    dt, v_last = timed(valuemech_last, lm, pairs, args.batch_size)
    print(f"\nvaluemech last-token reading (check only): {dt:.1f} s")
    L = lm.n_layers
    checks = {
        "last token: valuemech vs steering-vectors (all blocks)": cosines(v_last, v_sv),
        f"response mean: valuemech vs plain (blocks 0-{L - 2})": cosines(v_vm, v_plain)[: L - 1],
    }
    for name, c in checks.items():
        print(f"  {name}: min cosine {c.min():.6f} (block {int(c.argmin())}), "
              f"{'ok' if c.min() >= 0.9999 else 'BELOW 0.9999'}")
    rel = ((v_vm - v_plain).norm(dim=-1) / v_plain.norm(dim=-1))[: L - 1]
    print(f"  response mean: max relative difference valuemech vs plain {rel.max():.2e}")


def rss_child(args) -> None:
    """One extraction of ``args.rss_child`` responses (the run's repeated) with extract_vectors; print peak RSS."""
    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype, threads=1))
    pos, neg = pick(args.run, 256)
    rs = pos + neg
    labels = {r["response_id"]: r["expressed"] for r in load(args.run, "labels.jsonl")}
    big = []
    for i in range(args.rss_child):  # copy k of response j gets id "<id>#k" and the same labels
        src = rs[i % len(rs)]
        big.append(dict(src, id=f"{src['id']}#{i // len(rs)}"))
        if args.max_len:  # the response's first max_len/2 tokens after the prompt's last ones
            resp = src["response_token_ids"][: args.max_len // 2]
            big[-1].update(response_token_ids=resp,
                           prompt_token_ids=src["prompt_token_ids"][-(args.max_len - len(resp)):])
        labels[big[-1]["id"]] = labels[src["id"]]
    size = len(big)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    vv = extract_vectors(lm, big, labels, judge="lexicon", batch_size=args.batch_size, progress=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"responses": size, "peak_kib_before": before, "peak_kib": peak, "seconds": dt,
                      "vectors": len(vv.vectors), "load": os.getloadavg()[0]}))


def memory(args) -> None:
    print(f"extract_vectors, batch {args.batch_size}, {args.dtype}, sequences "
          + (f"cut to {args.max_len} tokens" if args.max_len else "at full length"))
    rows = []
    for size in args.memory:
        cmd = [sys.executable, __file__, "--rss-child", str(size), "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), "--run", str(args.run), "--model", args.model,
               "--max-len", str(args.max_len)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:5d} responses: peak RSS {row['peak_kib'] / 1024:.0f} MiB (after model load "
              f"{row['peak_kib_before'] / 1024:.0f} MiB), extraction {row['seconds']:.0f} s, "
              f"{row['vectors']} vectors ({load_avg()})", flush=True)
    a, b = rows[0], rows[-1]
    print(f"growth {a['responses']} -> {b['responses']} responses: "
          f"{100 * (b['peak_kib'] / a['peak_kib'] - 1):+.1f}% (target < 10%)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--run", type=Path, default=RUN)
    ap.add_argument("--n", type=int, default=256, help="responses (half prompted, half intrinsic)")
    ap.add_argument("--batch-size", type=int, default=16, help="valuemech and plain loop")
    ap.add_argument("--sv-batch-size", type=int, default=None, help="skip the sweep")
    ap.add_argument("--sweep", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--sweep-pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=32, help="responses per interleaving chunk")
    ap.add_argument("--verbose", action="store_true", help="print each chunk's times")
    ap.add_argument("--check-only", action="store_true", help="only the last-token vector comparisons")
    ap.add_argument("--memory", type=int, nargs="+", default=None, help="response counts for peak RSS")
    ap.add_argument("--max-len", type=int, default=0,
                    help="--memory: cut each sequence to this many tokens (0: full length)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.rss_child:
        return rss_child(args)
    print(f"python {' '.join(sys.argv)}\n{machine()}, {load_avg()}")
    if args.memory:
        return memory(args)
    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype, threads=1))
    print(f"model {lm.model_id}, dtype {args.dtype}")
    speed(lm, args)


if __name__ == "__main__":
    main()
