"""Value-expression judges behind one protocol: lexicon, embedding, llm, lm, self, learned, ensemble, random."""

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
    "lm": ("valuemech.judges.lm_judge", "LMJudge"),
    "self": ("valuemech.judges.lm_judge", "SelfJudge"),
    "learned": ("valuemech.judges.learned", "LearnedJudge"),
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
    if name in MODEL_JUDGES and isinstance(options, dict):
        options = _check_model_options(options, where)
    if name == "learned" and isinstance(options, dict) and isinstance(options.get("train"), str):
        from pathlib import Path

        if not Path(options["train"]).expanduser().is_file():
            raise ValuemechError(f"{where} option train: {options['train']} is not a file (a Value Portrait "
                                 "file with survey correlations to fit the judge to)")
    check_judge_options(make, getattr(cls, "OPTIONS", {}), options, where)
    if name == "ensemble":
        from valuemech.judges.ensemble import member_specs

        for member, opts in member_specs(options.get("members")):
            check_judge(member, opts, f"{where} member")


#: Judges that run a local model: ``lm`` (options ``model``, ``dtype``: any model; without ``model``,
#: the run's) and ``self`` (the run's model; ``model`` only outside a run).
MODEL_JUDGES = ("lm", "self")
#: The options of a model judge that choose its model (the rest go to its class).
MODEL_OPTIONS = ("model", "dtype")


def uses_run_model(name: str, options: dict | None) -> bool:
    """Whether judge ``name`` scores with the run's own model (``self``; ``lm`` without a ``model``)."""
    return name == "self" or (name == "lm" and "model" not in (options or {}))


def _check_model_options(options: dict, where: str) -> dict:
    """The ``model`` and ``dtype`` options of a model judge checked; the other options returned."""
    from valuemech.models.catalog import check_model_name
    from valuemech.config import DTYPES

    if "model" in options:
        if not isinstance(options["model"], str):
            raise ValuemechError(f"{where} option model must be a model name")
        check_model_name(options["model"])
    if "dtype" in options:
        if not isinstance(options["dtype"], str):
            raise ValuemechError(f"{where} option dtype must be a string")
        DTYPES.check(f"{where} option dtype", options["dtype"])
    return {k: v for k, v in options.items() if k not in MODEL_OPTIONS}


def judge_model(name: str, options: dict | None, lm=None):
    """The model a model judge scores with: ``lm`` judge with a ``model`` option loads its own
    (never the run's); otherwise the run's ``lm``; outside a run, ``model`` (``self``: the default model)."""
    from valuemech.config import ModelConfig
    from valuemech.models.loading import load_model

    options = options or {}
    own = options.get("model")
    if not uses_run_model(name, options):
        return load_model(ModelConfig(name=own, dtype=options.get("dtype", "auto")))
    if lm is not None:
        return lm
    if name == "lm":
        raise ValuemechError("judge lm needs option model (an embedded model, tiny-<family>, a Hugging Face id "
                             "or a local directory) outside a run")
    return load_model(ModelConfig(name=own or "smollm2-135m", dtype=options.get("dtype", "auto")))


def get_judge(name: str, options: dict[str, Any] | None = None, lm=None) -> Judge:
    """Build a judge by name (checked first by :func:`check_judge`). Model judges score with the model
    :func:`judge_model` gives (``lm``: the run's model, passed here, unless ``options["model"]`` names another)."""
    check_judge(name, options)
    options = dict(options or {})
    try:
        if name in MODEL_JUDGES:
            model = judge_model(name, options, lm)
            return judge_class(name)(model, **{k: v for k, v in options.items() if k not in MODEL_OPTIONS})
        if name == "ensemble":
            return _builder(name)(lambda n, o: get_judge(n, o, lm), **options)
        return judge_class(name)(**options)
    except TypeError as exc:
        raise ValuemechError(f"bad options for judge {name!r}: {exc}") from None


__all__ = ["JUDGES", "Judge", "JudgeResult", "get_judge"]
