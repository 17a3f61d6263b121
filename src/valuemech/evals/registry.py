"""The evaluations a run can have, by name: each is a module with ``evaluate`` and ``markdown``.

``run_eval`` runs one on a loaded model and writes ``RUN/evals/<name>.json`` atomically (nothing is
written when it fails). The CLI (``valuemech eval <name>``) and the pipeline's ``evaluate`` stage
both go through it.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path
from types import ModuleType

from valuemech.errors import ValuemechError
from valuemech.evals.common import EvalOptions

#: name -> (module, one-line description)
EVALS: dict[str, tuple[str, str]] = {
    "value_portrait": ("valuemech.evals.value_portrait",
                       "Value Portrait: rate candidate responses by similarity to own thoughts; value profile and gains."),
    "dilemmas": ("valuemech.evals.dilemmas",
                 "Situational dilemmas: win rate and mean shift towards the steered value's action."),
    "freeform": ("valuemech.evals.freeform",
                 "Free-form PVQ: open answers scored 0-10 for the target value by a non-labelling judge."),
    "diversity": ("valuemech.evals.diversity",
                  "Diversity: Distinct-2, EAD-2, MTLD, self-BLEU, semantic diversity; logit-lens entropy."),
    "instruct": ("valuemech.evals.instruct",
                 "Instruction following (IFEval-style checks) under mean-delta steering over an α grid."),
    "jailbreak": ("valuemech.evals.jailbreak",
                  "Jailbreak compliance (refusal matcher, optional LLM judge) under mean-delta / prompted-unique steering."),
}


def get_eval(name: str) -> ModuleType:
    if name not in EVALS:
        raise ValuemechError(f"unknown evaluation {name!r}; known: {', '.join(EVALS)}")
    return importlib.import_module(EVALS[name][0])


def make_options(raw: dict | None) -> EvalOptions:
    """EvalOptions from a mapping (config or CLI), naming any unknown key."""
    from valuemech.config import matches_type

    raw = dict(raw or {})
    types = {f.name: str(f.type) for f in dataclasses.fields(EvalOptions)}
    bad = sorted(map(str, set(raw) - set(types)))
    if bad:
        raise ValuemechError(f"unknown evaluation option {bad[0]!r}; known: {', '.join(sorted(types))}")
    if raw.get("values") is not None:
        from valuemech.values import parse_values

        raw["values"] = parse_values(raw["values"])
    for key, value in raw.items():
        if not matches_type(value, types[key]):
            raise ValuemechError(f"evaluation option {key} must be {types[key]}, not {type(value).__name__}")
    return EvalOptions(**raw)


def eval_path(run_root: Path, name: str) -> Path:
    return Path(run_root) / "evals" / f"{name}.json"


def run_eval(name: str, lm, source, opts: EvalOptions, run_root: Path | None = None) -> dict:
    """Run evaluation ``name``; with ``run_root``, write ``evals/<name>.json`` (atomic) and return the result."""
    from valuemech.io import atomic_write_json

    module = get_eval(name)
    neurons = None
    if run_root is not None and (Path(run_root) / "neurons.json").exists() and opts.beta:
        from valuemech.neurons import load_neurons

        neurons = load_neurons(Path(run_root) / "neurons.json")
    t0 = time.perf_counter()
    result = module.evaluate(lm, source, opts, run_root=run_root, neurons=neurons)
    result.setdefault("settings", {})
    result["settings"]["model_id"] = lm.model_id
    result["settings"]["seconds"] = round(time.perf_counter() - t0, 1)
    if run_root is not None:
        atomic_write_json(eval_path(run_root, name), result)
    return result


def markdown(name: str, result: dict) -> str:
    return get_eval(name).markdown(result)
