"""Does bfloat16 change the science? The same responses read in float32 and in bfloat16, compared.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_dtype_science.py RUN [--threads 1] [--n-boot 1000]

RUN is a finished run (responses and labels; its model). For both dtypes this script runs the
extract stage's own function (``extract_vectors``) and ``decompose`` on the run's responses, the PVQ
Likert rater (built-in English portraits, unsteered) and the capability guard (cloze, 80 built-in
items), then prints Markdown tables:

1. per value: cos(v_fp32, v_bf16) of the intrinsic and prompted vectors and of the shared axis
   (minimum over blocks, and at the middle block);
2. cos(v_int, v_prompt) at the middle block under both dtypes, beside its 95% bootstrap interval in
   float32 (responses resampled within each condition): a dtype change that moves a cosine by less
   than its own interval changes nothing a reader of the summary table would conclude;
3. the PVQ rater (expected score per item; argmax agreement) and the guard's accuracy under both,
   each beside its float32 bootstrap interval over items;
4. PVQ target-value gains under steering (prompted, intrinsic and the random control at the middle
   block, relative α 0.2, float32 vectors of RUN; English, 10 values) under both dtypes, each beside
   its float32 interval over values.
The bootstrap interval of a cosine of two difference-in-means vectors is biased towards 0 (resampling
adds noise), so table 2 compares the dtype's change with the interval's half-width rather than asking
whether the bf16 value falls inside it.
The CPU model and bf16 flags are printed first.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import load_avg, machine
from valuemech.config import ModelConfig
from valuemech.decompose import cosine, decompose
from valuemech.evals.capability import builtin_mc, cloze_scores
from valuemech.evals.common import EvalOptions, build_conditions
from valuemech.evals.pvq import builtin_items, likert_scores, pvq_gains
from valuemech.steering import SteeringSource
from valuemech.hardware import describe
from valuemech.models.loading import load_model
from valuemech.rundir import RunDir
from valuemech.vectors import extract_vectors, response_means


def interval(xs: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = xs[rng.integers(0, len(xs), (n_boot, len(xs)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def cos_interval(means: torch.Tensor, records: list[dict], labels: dict, value: str, n_boot: int
                 ) -> tuple[float, float]:
    """95% bootstrap interval of cos(v_int, v_prompt) at one block, resampling responses per condition."""
    rng = np.random.default_rng(0)
    idx = {c: np.array([i for i, r in enumerate(records) if r["condition"] == c]) for c in ("intrinsic", "prompted")}
    lab = np.array([bool(labels[r["id"]].get(value)) for r in records])
    out = []
    for _ in range(n_boot):
        vec = {}
        for c, ix in idx.items():
            pick = ix[rng.integers(0, len(ix), len(ix))]
            yes, no = pick[lab[pick]], pick[~lab[pick]]
            if len(yes) == 0 or len(no) == 0:
                break
            vec[c] = means[yes].mean(0) - means[no].mean(0)
        if len(vec) == 2:
            out.append(float(cosine(vec["intrinsic"], vec["prompted"])))
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    run = RunDir(args.run)
    cfg = run.load_config()
    records = [r for r in run.load_responses() if r.get("response_token_ids")]
    labels, judge = run.load_labels_and_judge()
    print(f"{machine()}; {load_avg()}")
    print(f"CPU: {describe()}")
    items, mc = builtin_items(["en"]), builtin_mc(80)
    res = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(ModelConfig(name=cfg.model.name, dtype=dtype, threads=args.threads))
        vv = extract_vectors(lm, records, labels, judge or cfg.judge.name, cfg.extract.batch_size,
                             cfg.extract.min_group, progress=False)
        comps, summary = decompose(vv)
        mid = lm.n_layers // 2
        means = None
        if dtype == "float32":
            chunks = [response_means(lm, [r["prompt_token_ids"] for r in records[s: s + 16]],
                                     [r["response_token_ids"] for r in records[s: s + 16]], [mid])[0][:, 0]
                      for s in range(0, len(records), 16)]
            means = torch.cat(chunks)
        lik = likert_scores(lm, items)
        source = SteeringSource.from_run(run)  # float32 vectors for both dtypes: only the reading differs
        conds, _ = build_conditions(lm, source, EvalOptions(components=["prompted", "intrinsic"], layer=mid,
                                                             alpha=0.2), None)
        gains = pvq_gains(lm, conds, items, vv.values_with_both(), n_boot=args.n_boot,
                          progress=False)
        acc = (cloze_scores(lm, mc).argmax(-1) == torch.tensor([it.answer for it in mc])).double()
        res[dtype] = {"vv": vv, "comps": comps, "summary": summary, "mid": mid, "means": means,
                      "expected": lik.expected.double(), "argmax": lik.argmax, "correct": acc, "gains": gains}
        del lm
    f, b = res["float32"], res["bfloat16"]
    mid = f["mid"]
    print(f"\n{cfg.model.name}, judge {judge}, {len(records)} responses; middle block {mid}\n")
    print("| value | cos fp32·bf16: intrinsic (min over blocks / mid) | prompted (min / mid) | shared axis (min / mid) |")
    print("|---|---|---|---|")
    for v in f["summary"]["values"]:
        cells = []
        for key, src in (("intrinsic", "vv"), ("prompted", "vv"), ("shared", "comps")):
            a = f[src].get(key, v).double()
            c = cosine(a, b[src].get(key, v).double())
            cells.append(f"{float(c.min()):.4f} / {float(c[mid]):.4f}")
        print(f"| {v} | " + " | ".join(cells) + " |")
    print("\n| value | cos(v_int, v_prompt) fp32 [95% CI] | bf16 | bf16 − fp32 | |change| / half-width |")
    print("|---|---|---|---|---|")
    inside = []
    for v in f["summary"]["values"]:
        cf, cb = f["summary"]["per_value"][v]["cosine"][mid], b["summary"]["per_value"][v]["cosine"][mid]
        lo, hi = cos_interval(f["means"], records, labels, v, args.n_boot)
        ratio = abs(cb - cf) / ((hi - lo) / 2)
        inside.append(ratio < 1)
        print(f"| {v} | {cf:+.3f} [{lo:+.3f}, {hi:+.3f}] | {cb:+.3f} | {cb - cf:+.4f} | {ratio:.3f} |")
    ef, eb = f["expected"].numpy(), b["expected"].numpy()
    lo, hi = interval(ef, args.n_boot)
    print(f"\nPVQ rater, {len(items)} English portraits, unsteered: mean expected score fp32 {ef.mean():.3f} "
          f"[{lo:.3f}, {hi:.3f}], bf16 {eb.mean():.3f}; mean |bf16 − fp32| per item {np.abs(eb - ef).mean():.4f}; "
          f"argmax agreement {float((f['argmax'] == b['argmax']).double().mean()):.2%}")
    af, ab = f["correct"].numpy(), b["correct"].numpy()
    lo, hi = interval(af, args.n_boot)
    print(f"Guard (cloze, {len(mc)} items): accuracy fp32 {af.mean():.3f} [{lo:.3f}, {hi:.3f}], bf16 {ab.mean():.3f}; "
          f"same answer on {float((af == ab).mean()):.0%} of items")
    print("\n| PVQ gain, English, mean over values | fp32 [95% CI] | bf16 | bf16 − fp32 |")
    print("|---|---|---|---|")
    for name, row in f["gains"]["rows"].items():
        gf, gb = row["mean"], b["gains"]["rows"][name]["mean"]
        print(f"| {name} | {gf['gain']:+.4f} [{gf['gain_ci'][0]:+.4f}, {gf['gain_ci'][1]:+.4f}] | {gb['gain']:+.4f} | "
              f"{gb['gain'] - gf['gain']:+.4f} |")
    print(f"\ncos(v_int, v_prompt): the bf16 change is under the fp32 interval's half-width for {sum(inside)}/"
          f"{len(inside)} values; {load_avg()}")


if __name__ == "__main__":
    main()
