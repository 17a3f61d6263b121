"""Value-expression judges behind one protocol, and the ``label`` stage."""

from __future__ import annotations

from typing import Any

from valuemech.errors import ValuemechError
from valuemech.judges.base import Judge, JudgeResult
from valuemech.judges.lexicon import LexiconJudge
from valuemech.judges.random_judge import RandomJudge

JUDGES = {"lexicon": LexiconJudge, "random": RandomJudge}


def get_judge(name: str, options: dict[str, Any] | None = None) -> Judge:
    """Build a judge by name with its options."""
    if name not in JUDGES:
        raise ValuemechError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
    try:
        return JUDGES[name](**(options or {}))
    except TypeError as exc:
        raise ValuemechError(f"bad options for judge {name!r}: {exc}") from None


__all__ = ["JUDGES", "Judge", "JudgeResult", "LexiconJudge", "RandomJudge", "get_judge"]
