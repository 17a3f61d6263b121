"""Batched forward passes: left padding, explicit positions, prefix KV caches, continuation likelihoods.

Every batched pass of valuemech goes through here. Sequences are left-padded so that they end
together; ``position_ids`` are explicit (0 at each row's first real token), so padding never shifts
a position. A prompt shared by several continuations can be run once and its KV cache repeated
over them (:func:`prefix_forward`), which models whose cache has sliding-window layers cannot do:
the helpers return ``None`` there and callers fall back to whole sequences.
"""

from __future__ import annotations

import copy
import inspect

import torch

from valuemech.models.loading import LoadedModel


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into ``input_ids`` and ``attention_mask`` of shape ``[b, t]``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Explicit ``position_ids`` for a left-padded batch: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest prefix shared by every sequence."""
    first = seqs[0]
    n = min(len(q) for q in seqs)
    for i in range(n):
        if any(q[i] != first[i] for q in seqs):
            return i
    return n


def cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache ("cache" in transformers 5, else "past_key_values")."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward with ``use_cache=True`` returned ("cache" in transformers 5, else "past_key_values")."""
    return out.get("cache") if "cache" in out else out.get("past_key_values")


@torch.no_grad()
def prefix_forward(lm: LoadedModel, prefix: list[int]):
    """Run ``prefix``; return (its KV cache, or None when the model's cache has sliding-window
    layers or cannot be repeated over a batch; the logits ``[vocab]`` at its last position)."""
    out = lm.model(input_ids=torch.tensor([prefix], device=lm.device), use_cache=True, logits_to_keep=1)
    cache = returned_cache(out)
    if cache is None or any(getattr(cache, "is_sliding", [False])) or not hasattr(cache, "batch_repeat_interleave"):
        cache = None
    return cache, out.logits[0, -1]


@torch.no_grad()
def padded_forward(lm: LoadedModel, seqs: list[list[int]], cache=None, prefix_len: int = 0, **kwargs):
    """One forward over left-padded ``seqs`` (the model's output; hooks active around the call apply).

    With ``cache`` (a prefix's KV cache from :func:`prefix_forward`, ``prefix_len`` tokens long),
    the sequences continue that prefix: the cache is copied, repeated over the batch, and positions
    start at ``prefix_len``. ``kwargs`` go to the model (``logits_to_keep``, ...).
    """
    ids, mask = left_pad(seqs, lm.tokenizer.pad_token_id)
    pos = padded_positions(mask) + prefix_len
    if cache is not None:
        c = copy.deepcopy(cache)
        c.batch_repeat_interleave(len(seqs))
        mask = torch.cat([torch.ones(len(seqs), prefix_len, dtype=mask.dtype), mask], dim=1)
        kwargs = {cache_kwarg(lm.model): c, "use_cache": True, **kwargs}
    dev = lm.device
    return lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), **kwargs)


@torch.no_grad()
def continuation_logliks(lm: LoadedModel, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Sum of log p(continuation | prompt), float64 ``[n]``, for (prompt, continuation) pairs in one batch."""
    keep = max(len(c) for _, c in pairs) + 1  # the sequences end together: the last positions suffice
    logp = padded_forward(lm, [p + c for p, c in pairs], logits_to_keep=keep).logits.double().log_softmax(-1).cpu()
    out = torch.zeros(len(pairs), dtype=torch.float64)
    for i, (_, c) in enumerate(pairs):
        out[i] = logp[i, keep - len(c) - 1: keep - 1].gather(-1, torch.tensor(c)[:, None]).sum()
    return out


@torch.no_grad()
def cached_continuation_logliks(lm: LoadedModel, prompt: list[int], conts: list[list[int]]) -> torch.Tensor | None:
    """Sum of log p(continuation | prompt) per continuation, the prompt run once and its KV cache
    shared by all continuations; None where the model's cache cannot be shared (see :func:`prefix_forward`)."""
    cache, last = prefix_forward(lm, prompt)
    if cache is None:
        return None
    first = last.double().log_softmax(-1).cpu()  # the prompt's last position predicts each first token
    logp = padded_forward(lm, conts, cache, len(prompt)).logits.double().log_softmax(-1).cpu()
    w = max(len(c) for c in conts)
    out = []
    for k, opt in enumerate(conts):
        rest = logp[k, w - len(opt): w - 1].gather(-1, torch.tensor(opt[1:])[:, None]).sum() if len(opt) > 1 else 0.0
        out.append(float(first[opt[0]]) + float(rest))
    return torch.tensor(out, dtype=torch.float64)
