"""Value-expression judges behind one protocol: lexicon, embedding, llm, self, ensemble, random."""

from __future__ import annotations

from typing import Any

from valuemech.errors import ValuemechError
from valuemech.judges.base import Judge, JudgeResult

from valuemech.judges.names import JUDGES


def get_judge(name: str, options: dict[str, Any] | None = None, lm=None) -> Judge:
    """Build a judge by name. ``self`` judges with ``lm`` (or loads ``options["model"]``)."""
    options = dict(options or {})
    try:
        if name == "lexicon":
            from valuemech.judges.lexicon import LexiconJudge
            return LexiconJudge(**options)
        if name == "random":
            from valuemech.judges.random_judge import RandomJudge
            return RandomJudge(**options)
        if name == "embedding":
            from valuemech.judges.embedding import EmbeddingJudge
            return EmbeddingJudge(**options)
        if name == "llm":
            from valuemech.judges.llm import LLMJudge
            return LLMJudge(**options)
        if name == "self":
            from valuemech.judges.self_judge import SelfJudge
            if lm is None:
                from valuemech.models.loading import load_model
                lm = load_model(options.pop("model", "smollm2-135m"))
            else:
                options.pop("model", None)
            return SelfJudge(lm, **options)
        if name == "ensemble":
            from valuemech.judges.ensemble import build_ensemble
            return build_ensemble(options, lambda n, o: get_judge(n, o, lm))
    except TypeError as exc:
        raise ValuemechError(f"bad options for judge {name!r}: {exc}") from None
    raise ValuemechError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")


__all__ = ["JUDGES", "Judge", "JudgeResult", "get_judge"]
