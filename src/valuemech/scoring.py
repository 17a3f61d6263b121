"""Scoring by option probabilities: the next-token distribution after a prefilled answer stem.

For a chat prompt, the answer stem (e.g. "Answer:") is appended after the assistant header and
the next-token distribution is read in one forward pass (``logits_to_keep=1``). Option k's
probability sums the first tokens of its spellings (``"3"`` and ``" 3"``); a first token that two
options share is dropped from both. ``mass`` is the total probability on the options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from valuemech.generate import left_pad
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
def option_probabilities(lm: LoadedModel, prompts: list[list[int]], options: list[str],
                         batch_size: int = 16) -> OptionScores:
    """Normalised option probabilities and option mass for each prompt (batched, left-padded)."""
    opt_ids = option_token_ids(lm.tokenizer, options)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    probs = torch.zeros(len(prompts), len(options), dtype=torch.float64)
    mass = torch.zeros(len(prompts), dtype=torch.float64)
    dev = lm.device
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], lm.tokenizer.pad_token_id)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                          logits_to_keep=1).logits[:, -1]
        p = logits.double().softmax(-1).cpu()
        per_opt = torch.stack([p[:, t].sum(-1) for t in opt_ids], dim=-1)  # [b, k]
        total = per_opt.sum(-1)
        for j, i in enumerate(idx):
            mass[i] = total[j]
            probs[i] = per_opt[j] / total[j] if total[j] > 0 else torch.full((len(options),), 1.0 / len(options))
    return OptionScores(probs, mass)
