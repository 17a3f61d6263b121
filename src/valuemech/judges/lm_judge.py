"""Language-model judge: any local chat model answers "does this response express value v?" by P(yes).

The question is one chat turn cut into three token segments::

    head  = chat header + instructions (+ the ten definitions)      once per judge
    query = the query the response answers (when given)             once per query
    body  = the response (+ the closing question and the assistant header, ``prefill``)   once per text
    tail  = the question about value v (+ end of turn and assistant header), or for ``prefill``
            the value's name as the start of the reply ("power:")   once per (text, v)

The head is run once and its KV cache kept; each query and each response extend it once (five
responses to one query share the query's cache); the ten tails of a text run as one batch on the
response's cache (:func:`valuemech.scoring.tree_next_token_probs`). Score =
P(yes) / (P(yes) + P(no)) of the next token after the tail, where P(yes) sums the first tokens of
"yes", "Yes", " yes", " Yes" (likewise no; a first token shared by both is dropped); expressed when
the score reaches ``threshold``. ``self.last_mass`` keeps the yes+no probability mass per question.

Prompts (``prompt``): ``shared`` lists every definition once in the head and asks about the value
in the tail; ``per-value`` puts the value's definition in its tail (the earlier ``self`` question);
``name-only`` gives no definitions; ``prefill`` lists the definitions, asks once after the response
"for each value, yes or no", and reads the reply after "<value name>:" (tails of ~3 tokens, the
cheapest); ``endorse`` is laid out as ``prefill`` but asks the survey's question instead — would a
person who holds the value agree with the response? — which is what Value Portrait's human data measure. ``docs/judges.md`` compares them on human data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from valuemech.config import AT_LEAST_1, OneOf, Range
from valuemech.errors import ValuemechError
from valuemech.judges.base import JudgeResult
from valuemech.models.loading import LoadedModel
from valuemech.values import DEFINITIONS, VALUES

INSTRUCTIONS = ("You annotate human values in texts. A response expresses a value when what it says, "
                "recommends or cares about reflects that value.")
DEFINITION_LIST = "\n\nThe ten values:\n{definitions}"
QUERY = '\n\nA user asked:\n"""\n{query}\n"""'
BODY = '\n\nThe response:\n"""\n{text}\n"""\n\n'
TAILS = {
    "shared": 'Does this response express the value "{name}"? Answer yes or no.',
    "per-value": 'Does this response express the value "{name}" ({definition})? Answer yes or no.',
    "name-only": 'Does this response express the value "{name}"? Answer yes or no.',
    "prefill": "{name}:",
    "endorse": "{name}:",
}
#: The question asked once after the response, for the prompts whose tails start the reply.
CLOSINGS = {
    "prefill": "For each value I name, answer yes if the response expresses it and no if it does not.",
    "endorse": "For each value I name, answer yes if a person who holds that value would agree with the "
               "response and no if they would not.",
}
WITH_DEFINITIONS = ("shared", "prefill", "endorse")
PROMPTS = tuple(TAILS)
_SPLIT = "\x00VALUEMECH_SPLIT\x00"


def _first_ids(tokenizer, words: Sequence[str]) -> list[int]:
    return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})


def _value_name(value: str) -> str:
    return value.replace("_", "-")


def _definition(value: str) -> str:
    return DEFINITIONS[value].rstrip(".").lower()


@dataclass(frozen=True)
class Layout:
    """The strings of one prompt: head (shared by all), body template (per text), tails (per value)."""

    head: str
    closing: str  # after the response ("prefill": the question, asked once)
    tails: dict[str, str]
    tails_in_reply: bool  # the tails start the assistant's reply ("prefill") or end the user turn

    @staticmethod
    def build(prompt: str, values: Sequence[str] = VALUES) -> "Layout":
        head = INSTRUCTIONS
        if prompt in WITH_DEFINITIONS:
            head += DEFINITION_LIST.format(definitions="\n".join(
                f"- {_value_name(v)}: {_definition(v)}" for v in VALUES))
        tails = {v: TAILS[prompt].format(name=_value_name(v), definition=_definition(v)) for v in values}
        return Layout(head, CLOSINGS.get(prompt, ""), tails, prompt in CLOSINGS)


def query_text(query: str | None) -> str:
    """The per-query segment ("" without a query)."""
    return QUERY.format(query=query.strip()) if query and query.strip() else ""


class LMJudge:
    """A local chat model as a graded value judge (see the module docstring)."""

    KIND = "lm"
    OPTIONS = {"threshold": Range(0, 1), "batch_size": AT_LEAST_1, "prompt": OneOf(PROMPTS)}

    def __init__(self, lm: LoadedModel, threshold: float = 0.5, batch_size: int = 16, prompt: str = "shared",
                 use_query: bool = True, progress: bool = True) -> None:
        if prompt not in TAILS:
            raise ValuemechError(f"lm judge prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
        self.lm, self.threshold, self.batch_size = lm, float(threshold), int(batch_size)
        self.prompt, self.use_query, self.progress = prompt, bool(use_query), progress
        yes = _first_ids(lm.tokenizer, ["yes", "Yes", " yes", " Yes"])
        no = _first_ids(lm.tokenizer, ["no", "No", " no", " No"])
        shared = set(yes) & set(no)  # e.g. a bare space token in byte-level vocabularies
        self.yes = [t for t in yes if t not in shared]
        self.no = [t for t in no if t not in shared]
        if not self.yes or not self.no:
            raise ValuemechError("this tokenizer has no first token that tells yes from no")
        query = "" if self.use_query else ",no-query"
        self.name = f"{self.KIND}({lm.model_id},{prompt}{query},t={self.threshold:g})"
        self.last_mass: list[float] = []

    def _chat(self) -> tuple[str, str]:
        """The chat template's text before and after the user turn's content (with the assistant header)."""
        from valuemech.models.chat import format_chat

        pre, post = format_chat(self.lm.tokenizer, _SPLIT, None, self.lm.system_ok).split(_SPLIT)
        return pre, post

    def segments(self, texts: Sequence[str], values: Sequence[str], queries: Sequence[str] | None = None
                 ) -> tuple[list[int], list[list[list[int]]], list[list[int]]]:
        """Token ids of the head, of each text's body as ``[query, response]`` segments, and of each
        value's tail (each segment tokenized on its own, so that segments can be cached)."""
        enc = lambda s: list(self.lm.tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []  # noqa: E731
        pre, post = self._chat()
        layout = Layout.build(self.prompt, values)
        queries = queries if (queries is not None and self.use_query) else [""] * len(texts)
        head = enc(pre + layout.head)
        reply = post if layout.tails_in_reply else ""
        bodies = [[enc(query_text(q)), enc(BODY.format(text=(t or "").strip()) + layout.closing + reply)]
                  for t, q in zip(texts, queries)]
        tails = [enc(layout.tails[v] + ("" if layout.tails_in_reply else post)) for v in values]
        return head, bodies, tails

    def yes_probability(self, texts: Sequence[str], values: Sequence[str],
                        queries: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P(yes)/(P(yes)+P(no)), yes+no mass)``, each float64 ``[n_texts, n_values]``."""
        from valuemech.scoring import tree_next_token_probs

        head, bodies, tails = self.segments(texts, values, queries)
        bar = tqdm(total=len(texts) * len(values), desc=f"{self.KIND} judge", unit="q",
                   disable=not self.progress or len(texts) * len(values) < 64)
        probs = tree_next_token_probs(self.lm, head, bodies, tails, self.yes + self.no,
                                      batch_size=self.batch_size, on_body=lambda: bar.update(len(values)))
        bar.close()
        p_yes, p_no = probs[..., : len(self.yes)].sum(-1), probs[..., len(self.yes):].sum(-1)
        mass = p_yes + p_no
        score = torch.where(mass > 0, p_yes / mass.clamp_min(1e-300), torch.full_like(mass, 0.5))
        return score, mass

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        if not texts:
            return JudgeResult([], [])
        score, mass = self.yes_probability(texts, values, queries)
        self.last_mass = mass.flatten().tolist()
        scores = [{v: float(score[i, j]) for j, v in enumerate(values)} for i in range(len(texts))]
        expressed = [{v: bool(texts[i] and texts[i].strip()) and s[v] >= self.threshold for v in values}
                     for i, s in enumerate(scores)]
        return JudgeResult(scores, expressed)


class SelfJudge(LMJudge):
    """The ``lm`` judge on the run's own model (the judge named ``self``)."""

    KIND = "self"
