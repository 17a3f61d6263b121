"""Value-expression judges behind one protocol: lexicon, embedding, llm, self, ensemble, random."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from valuemech.config import short
from valuemech.errors import ValuemechError
from valuemech.judges.base import Judge, JudgeResult

from valuemech.judges.names import JUDGES


#: Each judge's module and class, imported when the judge is used.
CLASSES: dict[str, tuple[str, str]] = {
    "lexicon": ("valuemech.judges.lexicon", "LexiconJudge"),
    "embedding": ("valuemech.judges.embedding", "EmbeddingJudge"),
    "llm": ("valuemech.judges.llm", "LLMJudge"),
    "self": ("valuemech.judges.self_judge", "SelfJudge"),
    "ensemble": ("valuemech.judges.ensemble", "EnsembleJudge"),
    "random": ("valuemech.judges.random_judge", "RandomJudge"),
}


def judge_class(name: str) -> type:
    """The class of judge ``name`` (unknown: a one-line error)."""
    if name not in CLASSES:
        raise ValuemechError(f"unknown judge {short(name)}; known: {', '.join(JUDGES)}")
    module, cls = CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def _builder(name: str) -> Callable:
    """What a judge's options are passed to: its class, or for an ensemble the builder of its members."""
    if name == "ensemble":
        from valuemech.judges.ensemble import build_ensemble

        return build_ensemble
    return judge_class(name)


def check_judge_options(make: Callable, allowed: dict, options: Any, where: str) -> None:
    """``options`` for ``make`` (a judge class or builder): names and types from its signature, ``allowed``
    ranges and choices, and the API key's environment variable when it takes ``api_key_env``."""
    from valuemech.config import check_call

    check_call(make, options, where, allowed, skip=("self", "lm", "make"))
    params = inspect.signature(make).parameters
    if "api_key_env" in params:
        from valuemech.openai_client import check_key_env

        check_key_env(options.get("api_key_env", params["api_key_env"].default), where)


def check_judge(name: Any, options: Any = None, where: str = "judge") -> None:
    """Judge ``name`` and its ``options`` checked without building it (no model loaded, no request sent):
    option names and types from the constructor, ranges and choices from the class's ``OPTIONS``, the
    API key's environment variable of an endpoint judge, the model of the ``self`` judge, every member
    of an ensemble."""
    if not isinstance(name, str):
        raise ValuemechError(f"{where} name must be a string, not {short(name)}")
    cls, make = judge_class(name), _builder(name)
    options = {} if options is None else options
    where = f"{where} {name}"
    if name == "self" and isinstance(options, dict) and "model" in options:
        from valuemech.models.catalog import check_model_name

        if not isinstance(options["model"], str):
            raise ValuemechError(f"{where} option model must be a model name")
        check_model_name(options["model"])
        options = {k: v for k, v in options.items() if k != "model"}
    check_judge_options(make, getattr(cls, "OPTIONS", {}), options, where)
    if name == "ensemble":
        from valuemech.judges.ensemble import member_specs

        for member, opts in member_specs(options.get("members")):
            check_judge(member, opts, f"{where} member")


def get_judge(name: str, options: dict[str, Any] | None = None, lm=None) -> Judge:
    """Build a judge by name (checked first by :func:`check_judge`). ``self`` judges with ``lm`` (or
    loads ``options["model"]``)."""
    check_judge(name, options)
    options = dict(options or {})
    try:
        if name == "self":
            if lm is None:
                from valuemech.models.loading import load_model
                lm = load_model(options.pop("model", "smollm2-135m"))
            else:
                options.pop("model", None)
            return judge_class(name)(lm, **options)
        if name == "ensemble":
            return _builder(name)(lambda n, o: get_judge(n, o, lm), **options)
        return judge_class(name)(**options)
    except TypeError as exc:
        raise ValuemechError(f"bad options for judge {name!r}: {exc}") from None


__all__ = ["JUDGES", "Judge", "JudgeResult", "get_judge"]
