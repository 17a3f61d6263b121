"""Capability guard: multiple-choice accuracy by option probabilities, and KL on neutral text.

The built-in set (``data/builtin/general_knowledge_mc.jsonl``, 205 items written for valuemech)
is MMLU-style: a question and four options. By default (``cloze``) the model's answer is the
option whose text is most likely after the question and the prefilled stem "Answer:" (log-likelihood
per character, as lm-evaluation-harness's ``acc_norm``); ``letter`` lists the options and reads the
most probable letter, which small models answer with one letter throughout. ``load_mmlu_csv`` reads MMLU's CSV files
(no header: question, A, B, C, D, answer letter). The KL term is the mean over neutral passages
and positions of KL(base || steered) of next-token distributions.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from valuemech.errors import ValuemechError
from valuemech.batching import cached_continuation_logliks, continuation_logliks, padded_forward
from valuemech.io import read_text
from valuemech.models.loading import LoadedModel
from valuemech.scoring import answer_prompt, option_probabilities

LETTERS = ["A", "B", "C", "D"]
SCORINGS = ("cloze", "letter")


@dataclass(frozen=True)
class MCItem:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""


def builtin_mc(limit: int | None = None) -> list[MCItem]:
    raw = resources.files("valuemech.data").joinpath("builtin/general_knowledge_mc.jsonl").read_text("utf-8")
    items = [json.loads(l) for l in raw.splitlines() if l.strip()]
    out = [MCItem(r["id"], r["question"], tuple(r["choices"]), int(r["answer"]), r.get("subject", ""))
           for r in items]
    return out[:limit] if limit else out


def load_mmlu_csv(path: str | Path) -> list[MCItem]:
    """MMLU's CSV format: rows of question, A, B, C, D, answer letter (no header)."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"MMLU file {path} does not exist")
    text = read_text(path, encoding="utf-8-sig", newline="")
    items = []
    try:
        for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
            if len(row) != 6 or row[5].strip().upper() not in LETTERS:
                raise ValuemechError(f"{path}: row {i} is not question,A,B,C,D,answer-letter")
            items.append(MCItem(f"{path.stem}-{i}", row[0], tuple(row[1:5]),
                                LETTERS.index(row[5].strip().upper()), path.stem))
    except csv.Error as exc:
        raise ValuemechError(f"{path}: not a valid CSV ({exc})") from None
    if not items:
        raise ValuemechError(f"{path}: no items")
    return items


def neutral_texts() -> list[str]:
    return json.loads(resources.files("valuemech.data").joinpath("builtin/neutral_text.json").read_text("utf-8"))


def mc_prompt(lm: LoadedModel, item: MCItem) -> list[int]:
    """The lettered prompt of the ``letter`` scoring: question, options A-D, "Answer:" prefilled."""
    body = item.question + "\n" + "\n".join(f"{l}. {c}" for l, c in zip(LETTERS, item.choices))
    return answer_prompt(lm, body + "\nReply with the letter of the correct answer.", "Answer:", options=LETTERS)


@torch.no_grad()
def cloze_scores(lm: LoadedModel, items: list[MCItem], batch_size: int = 16) -> torch.Tensor:
    """``[n, 4]`` log-likelihood of each option's text (" " + option) after the question with
    "Answer:" prefilled (the options are not shown), divided by the option's length in characters.

    Each item's prompt is run once and its KV cache shared by its four options (models whose cache
    has sliding-window layers run prompt + option as whole sequences, ``batch_size`` at a time).
    """
    prompts = [answer_prompt(lm, it.question, "Answer:") for it in items]
    conts = [[lm.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in it.choices] for it in items]
    chars = torch.tensor([[len(" " + c) for c in it.choices] for it in items], dtype=torch.float64)
    if not items:
        return torch.zeros(0, len(LETTERS), dtype=torch.float64)
    logliks = _cached_logliks(lm, prompts, conts)
    if logliks is None:
        flat = [(p, c) for p, cs in zip(prompts, conts) for c in cs]
        logliks = torch.cat([continuation_logliks(lm, flat[s: s + batch_size]) for s in range(0, len(flat), batch_size)])
    return logliks.view(len(items), len(LETTERS)) / chars


def _cached_logliks(lm: LoadedModel, prompts: list[list[int]], conts: list[list[list[int]]]) -> torch.Tensor | None:
    """Sum log p(option | prompt) per (item, option), each prompt run once (None: no usable cache)."""
    out = []
    for prompt, options in zip(prompts, conts):
        ll = cached_continuation_logliks(lm, prompt, options)
        if ll is None:
            return None
        out.append(ll)
    return torch.cat(out)


def mc_accuracy(lm: LoadedModel, items: list[MCItem], batch_size: int = 16,
                scoring: str = "cloze") -> tuple[float, list[int]]:
    """Accuracy and the chosen option index per item.

    ``cloze`` (default): the option whose text is most likely after the question
    (:func:`cloze_scores`). ``letter``: the most probable letter after a prompt listing the options
    (MMLU-style); small models answer one letter for almost every item there (SmolLM2-135M says
    "C" for 190 of the 205 built-in items), which leaves the guard at chance.
    """
    if scoring == "cloze":
        chosen = cloze_scores(lm, items, batch_size).argmax(-1).tolist()
    elif scoring == "letter":
        res = option_probabilities(lm, [mc_prompt(lm, it) for it in items], LETTERS, batch_size)
        chosen = res.probs.argmax(-1).tolist()
    else:
        raise ValuemechError(f"unknown multiple-choice scoring {scoring!r}; use one of {', '.join(SCORINGS)}")
    return sum(c == it.answer for c, it in zip(chosen, items)) / len(items), chosen


@torch.no_grad()
def next_token_logprobs(lm: LoadedModel, texts: list[str], batch_size: int = 8) -> list[torch.Tensor]:
    """Per text, log-probabilities ``[t, vocab]`` at every position (plain text, no chat template)."""
    out = []
    for s in range(0, len(texts), batch_size):
        seqs = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[s: s + batch_size]]
        logp = padded_forward(lm, seqs).logits.double().log_softmax(-1).cpu()
        for i, seq in enumerate(seqs):
            out.append(logp[i, logp.shape[1] - len(seq):])
    return out


def mean_kl(base: list[torch.Tensor], steered: list[torch.Tensor]) -> float:
    """Mean over texts and positions of KL(base || steered)."""
    kls = [(b.exp() * (b - s)).sum(-1).mean() for b, s in zip(base, steered)]
    return float(torch.stack(kls).mean())


@dataclass
class GuardPoint:
    accuracy: float
    accuracy_drop: float  # baseline accuracy minus this accuracy, in points (0-100)
    kl: float


def guard(lm: LoadedModel, items: list[MCItem], texts: list[str], base_acc: float,
          base_logprobs: list[torch.Tensor], ctx=None, scoring: str = "cloze") -> GuardPoint:
    """Accuracy drop and KL under the steering context ``ctx`` (a context manager)."""
    with ctx if ctx is not None else nullcontext():
        acc, _ = mc_accuracy(lm, items, scoring=scoring)
        kl = mean_kl(base_logprobs, next_token_logprobs(lm, texts))
    return GuardPoint(acc, 100.0 * (base_acc - acc), kl)
