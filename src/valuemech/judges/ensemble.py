"""Ensemble judge: members vote per (text, value).

Rule (``rule``): ``majority`` (default) — expressed when more than half of the members that
decided say yes; ``any`` — at least one yes; ``all`` — every deciding member says yes. Members
that could not decide (None) abstain; if all abstain, the ensemble is undecided too. Score = the
share of deciding members voting yes (NaN when all abstain).
"""

from __future__ import annotations

from typing import Callable, Sequence

from valuemech.config import OneOf
from valuemech.errors import ValuemechError
from valuemech.judges.base import Judge, JudgeResult

RULES = ("majority", "any", "all")


class EnsembleJudge:
    """Votes of several judges combined by a documented rule."""

    OPTIONS = {"rule": OneOf(RULES)}

    def __init__(self, members: Sequence[Judge], rule: str = "majority") -> None:
        if rule not in RULES:
            raise ValuemechError(f"ensemble rule must be one of {', '.join(RULES)}, not {rule!r}")
        if len(members) < 2:
            raise ValuemechError("an ensemble needs at least two member judges")
        self.members, self.rule = list(members), rule
        self.name = f"ensemble({rule}:{'+'.join(m.name for m in self.members)})"

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        results = [m.score(texts, values, langs, queries) for m in self.members]
        scores, expressed, failures = [], [], []
        for i in range(len(texts)):
            s_row, e_row, f_row = {}, {}, {}
            for v in values:
                votes = [r.expressed[i][v] for r in results if r.expressed[i].get(v) is not None]
                if not votes:
                    s_row[v], e_row[v], f_row[v] = float("nan"), None, "all members undecided"
                    continue
                yes = sum(bool(x) for x in votes)
                s_row[v] = yes / len(votes)
                e_row[v] = {"majority": yes * 2 > len(votes), "any": yes > 0, "all": yes == len(votes)}[self.rule]
            scores.append(s_row)
            expressed.append(e_row)
            failures.append(f_row)
        return JudgeResult(scores, expressed, failures)


def member_specs(members: list[str | dict] | None) -> list[tuple[str, dict]]:
    """``(name, options)`` of each member (``"lexicon"`` or ``{"name": ..., "options": {...}}``), checked."""
    out = []
    for spec in ["lexicon", "embedding"] if members is None else members:
        spec = {"name": spec} if isinstance(spec, str) else spec
        if not isinstance(spec.get("name"), str) or not set(spec) <= {"name", "options"}:
            raise ValuemechError("judge ensemble: each member is a judge name or {name: ..., options: {...}}")
        if spec["name"] == "ensemble":
            raise ValuemechError("an ensemble cannot contain another ensemble")
        out.append((spec["name"], spec.get("options", {})))
    if len(out) < 2:
        raise ValuemechError("an ensemble needs at least two member judges")
    return out


def build_ensemble(make: Callable[[str, dict], Judge], members: list[str | dict] | None = None,
                   rule: str = "majority") -> EnsembleJudge:
    """Options ``{"members": ["lexicon", {"name": "embedding", "options": {...}}], "rule": ...}``."""
    return EnsembleJudge([make(n, o) for n, o in member_specs(members)], rule)
