"""Self judge: the loaded model answers "does this response express value s?" by P(yes) vs P(no).

One forward pass per (text, value) with no sampling: the question is chat-formatted, and the
next-token distribution after the assistant header is read (``logits_to_keep=1``). Score =
P(yes) / (P(yes) + P(no)), where P(yes) sums the probabilities of the first tokens of "yes",
"Yes", " yes", " Yes" (likewise for no; a first token shared by both sides is dropped); expressed when the score reaches ``threshold``
(default 0.5). The share of probability mass on yes/no tokens is kept in ``self.last_mass``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from valuemech.config import AT_LEAST_1, Range
from valuemech.judges.base import JudgeResult
from valuemech.models.loading import LoadedModel
from valuemech.values import DEFINITIONS

QUESTION = ('Here is a response written by an assistant:\n"""\n{text}\n"""\n'
            'Does this response express the value "{name}" ({definition})? Answer yes or no.')


def _first_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = {tokenizer.encode(w, add_special_tokens=False)[0] for w in words}
    return sorted(ids)


class SelfJudge:
    """The model under study as its own binary judge."""

    OPTIONS = {"threshold": Range(0, 1), "batch_size": AT_LEAST_1}

    def __init__(self, lm: LoadedModel, threshold: float = 0.5, batch_size: int = 16,
                 progress: bool = True) -> None:
        self.lm, self.threshold, self.batch_size = lm, float(threshold), int(batch_size)
        self.progress = progress
        yes = _first_ids(lm.tokenizer, ["yes", "Yes", " yes", " Yes"])
        no = _first_ids(lm.tokenizer, ["no", "No", " no", " No"])
        shared = set(yes) & set(no)  # e.g. a bare space token in byte-level vocabularies
        self.yes = [t for t in yes if t not in shared]
        self.no = [t for t in no if t not in shared]
        if not self.yes or not self.no:
            raise ValueError("this tokenizer has no first token that tells yes from no")
        self.name = f"self({lm.model_id},t={self.threshold:g})"
        self.last_mass: list[float] = []

    def prompt(self, text: str, value: str) -> list[int]:
        q = QUESTION.format(text=text.strip(), name=value.replace("_", "-"),
                            definition=DEFINITIONS[value].rstrip(".").lower())
        return self.lm.prompt_ids(q, None)

    @torch.no_grad()
    def yes_probability(self, prompts: list[list[int]], group: int = 1) -> tuple[list[float], list[float]]:
        """P(yes)/(P(yes)+P(no)) and the yes+no mass for each prompt.

        Consecutive runs of ``group`` prompts share a long prefix (the same text asked about several
        values): each run is scored with one prefix KV cache (:func:`valuemech.scoring.next_token_probs`).
        """
        from valuemech.scoring import next_token_probs

        out_p, out_m = [], []
        step = max(group, 1) if group > 1 else self.batch_size
        bar = tqdm(total=len(prompts), desc="self judge", unit="q", disable=not self.progress or len(prompts) < 64)
        for s in range(0, len(prompts), step):
            probs = next_token_probs(self.lm, prompts[s: s + step], batch_size=self.batch_size,
                                     prefix_cache=group > 1, columns=self.yes + self.no)
            p_yes, p_no = probs[:, : len(self.yes)].sum(-1), probs[:, len(self.yes):].sum(-1)
            for y, n in zip(p_yes.tolist(), p_no.tolist()):
                total = y + n
                out_p.append(y / total if total > 0 else 0.5)
                out_m.append(total)
            bar.update(len(probs))
        bar.close()
        return out_p, out_m

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        pairs = [(i, v) for i in range(len(texts)) for v in values]
        probs, mass = self.yes_probability([self.prompt(texts[i] or "", v) for i, v in pairs], group=len(values))
        self.last_mass = mass
        scores = [dict() for _ in texts]
        for (i, v), p in zip(pairs, probs):
            scores[i][v] = p
        expressed = [{v: bool(texts[i] and texts[i].strip()) and s[v] >= self.threshold for v in values}
                     for i, s in enumerate(scores)]
        return JudgeResult(scores, expressed)
