"""Scoring by option probabilities: the next-token distribution after a prefilled answer stem.

For a chat prompt, the answer stem (e.g. "Answer:") is appended after the assistant header and
the next-token distribution is read in one forward pass (``logits_to_keep=1``). Option k's
probability sums the first tokens of its spellings (``"3"`` and ``" 3"``); a first token that two
options share is dropped from both. ``mass`` is the total probability on the options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from valuemech.batching import common_prefix_len, padded_forward, prefix_forward, returned_cache
from valuemech.models.loading import LoadedModel


def option_token_ids(tokenizer, options: list[str]) -> list[list[int]]:
    """Per option, the distinct first-token ids of its spellings with and without a leading space."""
    raw = [{tokenizer.encode(s, add_special_tokens=False)[0] for s in (o, " " + o)} for o in options]
    counts: dict[int, int] = {}
    for ids in raw:
        for t in ids:
            counts[t] = counts.get(t, 0) + 1
    out = [sorted(t for t in ids if counts[t] == 1) for ids in raw]
    if any(not ids for ids in out):
        raise ValueError(f"options {options} cannot be told apart by their first token")
    return out


def fit_stem(tokenizer, stem: str, options: list[str]) -> str:
    """``stem`` as is when every option has a one-token spelling with a leading space (" 6"),
    else ``stem + " "`` (tokenizers such as SmolLM2's emit the space as its own token first)."""
    if not stem or stem.endswith(" "):
        return stem
    if all(len(tokenizer.encode(" " + o, add_special_tokens=False)) == 1 for o in options):
        return stem
    return stem + " "


def answer_prompt(lm: LoadedModel, user: str, stem: str, system_prompt: str | None = None,
                  options: list[str] | None = None) -> list[int]:
    """Chat prompt ids for ``user`` with ``stem`` prefilled as the start of the assistant's answer.

    With ``options``, the stem is fitted to the tokenizer (:func:`fit_stem`).
    """
    if options is not None:
        stem = fit_stem(lm.tokenizer, stem, options)
    ids = lm.prompt_ids(user, system_prompt)
    return ids + list(lm.tokenizer(stem, add_special_tokens=False)["input_ids"]) if stem else ids


@dataclass
class OptionScores:
    probs: torch.Tensor  # [n, k] normalised over the options
    mass: torch.Tensor  # [n] total probability on the options before normalising


@torch.no_grad()
def next_token_probs(lm: LoadedModel, prompts: list[list[int]], batch_size: int = 16,
                     prefix_cache: bool = True, columns: list[int] | None = None) -> torch.Tensor:
    """Next-token probabilities ``[n, vocab]`` (float64) after each prompt; with ``columns``, only
    those token ids' probabilities ``[n, len(columns)]`` are kept (the softmax is over the full vocabulary).

    With ``prefix_cache``, the prompts' common prefix (chat header, default system prompt,
    instructions) is run once and its KV cache reused for every batch; the result equals the plain
    computation up to float rounding (tested), and models whose cache has sliding-window layers
    fall back to the plain path. Hooks active around the call apply to both passes.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    plen = common_prefix_len(prompts) if prefix_cache and len(prompts) > 1 else 0
    plen = min(plen, min(len(p) for p in prompts) - 1) if plen else 0
    cache = prefix_forward(lm, prompts[0][:plen])[0] if plen >= 8 else None
    if cache is None:
        plen = 0
    width = len(columns) if columns is not None else lm.model.get_output_embeddings().weight.shape[0]
    out = torch.zeros(len(prompts), width, dtype=torch.float64)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        logits = padded_forward(lm, [prompts[i][plen:] for i in idx], cache, plen, logits_to_keep=1).logits[:, -1]
        probs = logits.double().softmax(-1).cpu()
        out[idx] = probs if columns is None else probs[:, columns]
    return out


def option_probabilities(lm: LoadedModel, prompts: list[list[int]], options: list[str],
                         batch_size: int = 16, prefix_cache: bool = True) -> OptionScores:
    """Normalised option probabilities and option mass for each prompt (batched, left-padded)."""
    opt_ids = option_token_ids(lm.tokenizer, options)
    flat = [t for ids in opt_ids for t in ids]
    p = next_token_probs(lm, prompts, batch_size, prefix_cache, columns=flat)
    spans, start = [], 0
    for ids in opt_ids:
        spans.append(list(range(start, start + len(ids))))
        start += len(ids)
    per_opt = torch.stack([p[:, span].sum(-1) for span in spans], dim=-1)  # [n, k]
    mass = per_opt.sum(-1)
    safe = torch.where(mass[:, None] > 0, per_opt / mass.clamp_min(1e-300)[:, None],
                       torch.full_like(per_opt, 1.0 / len(options)))
    return OptionScores(safe, mass)


@torch.no_grad()
def tree_next_token_probs(lm: LoadedModel, head: list[int], bodies: list[list[list[int]]], tails: list[list[int]],
                          columns: list[int], batch_size: int = 16, on_body=None) -> torch.Tensor:
    """P(next token | head + body_i + tail_j) for the token ids ``columns`` (softmax over the whole
    vocabulary), float64 ``[len(bodies), len(tails), len(columns)]``. Each body is a list of segments
    (e.g. ``[query, response]``); body i is their concatenation.

    The head runs once and its KV cache is kept; each body extends it segment by segment, reusing the
    caches of the segments it shares with the previous body (five responses to one query: the query
    runs once); the tails of a body run in batches of ``batch_size`` on the body's cache, so a
    (body, tail) pair costs only its tail's tokens. Equal to scoring every whole sequence up to float
    rounding (tested); models whose cache cannot be shared (sliding-window layers) score whole
    sequences. ``on_body()`` is called after each body (a progress bar).
    """
    if not tails or not head:
        raise ValueError("tree_next_token_probs needs a head and at least one tail")
    if any(not t for t in tails):
        raise ValueError("every tail needs at least one token")
    out = torch.zeros(len(bodies), len(tails), len(columns), dtype=torch.float64)
    head_cache, _ = prefix_forward(lm, head)
    stack: list[tuple[tuple[int, ...], object, int]] = []  # the previous body's (segment, cache after it, length)
    for i, body in enumerate(bodies):
        if head_cache is None:
            seqs = [head + [t for seg in body for t in seg] + tail for tail in tails]
            out[i] = next_token_probs(lm, seqs, batch_size, prefix_cache=True, columns=columns)
        else:
            k = 0
            while k < min(len(stack), len(body)) and stack[k][0] == tuple(body[k]):
                k += 1
            del stack[k:]
            cache, length = (stack[-1][1], stack[-1][2]) if stack else (head_cache, len(head))
            for seg in body[k:]:
                if seg:
                    res = padded_forward(lm, [seg], cache, length, logits_to_keep=1)
                    cache, length = returned_cache(res), length + len(seg)
                stack.append((tuple(seg), cache, length))
            for s in range(0, len(tails), batch_size):
                logits = padded_forward(lm, tails[s: s + batch_size], cache, length, logits_to_keep=1).logits[:, -1]
                out[i, s: s + batch_size] = logits.double().softmax(-1).cpu()[:, columns]
        if on_body is not None:
            on_body()
    return out
