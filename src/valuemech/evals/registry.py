"""The evaluations a run can have, and the contract every one of them follows.

An evaluation is **one module** under ``valuemech/evals/`` plus **one line** in :data:`REGISTRY`.
From that line valuemech makes the CLI subcommand ``valuemech eval <name>`` (flags generated from
the module's ``Options`` dataclass), the pipeline's ``evaluate`` stage entry
(``evaluate.evals: [<name>]``, options checked before anything runs) and the report's section.

The module provides (see :class:`EvaluationModule`):

- ``Options``: a dataclass of its settings (most use :class:`~valuemech.evals.common.EvalOptions`);
  each field is a config key of ``evaluate.options`` / ``evaluate.per_eval.<name>`` and a CLI flag
  (``--field-name``; a field's ``metadata`` may give ``help``, ``flag`` and ``allowed``, the range or
  choices :func:`make_options` checks; a ``check()`` method checks the rest).
- ``evaluate(lm, source, opts, run=None, neurons=None) -> dict``: the result, JSON-ready, with at
  least ``eval`` (its name), ``settings`` (a mapping; ``model_id`` and ``seconds`` are added),
  ``items`` (per-item results) and ``aggregates`` (the numbers its tables show, with intervals).
  ``lm`` is the run's model (None when ``needs_model(opts)`` is false), ``source`` its vectors and
  components (:class:`~valuemech.steering.SteeringSource`), ``run`` the
  :class:`~valuemech.rundir.RunDir` (None outside a run), ``neurons`` the run's ``neurons.json``
  when ``opts.beta`` asks for neuron rows.
- ``markdown(result) -> str``: its tables (the CLI, ``eval markdown`` and the report show them).

and optionally ``figures(result, out_dir, stem) -> list[Path]`` (PNG files for the report),
``needs_model(opts) -> bool`` (default: true), ``output(opts, result) -> str`` (the file it writes under
``evals/``; default ``<name>.json``), ``OUTPUTS`` (every file name it may write, for the report;
default ``(<name>.json,)``), ``summary(result) -> str`` (what the CLI prints; default ``markdown``) and
``check_options(opts)`` (reads the inputs the options name, a dataset file or a judge's settings, so that a
bad one fails before any work: :func:`checked_options` calls it).
``ARCHITECTURE.md`` shows a complete 30-line example.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from valuemech.config import EvaluateConfig, Range, check_fields, check_value, matches_type
from valuemech.errors import ValuemechError


class EvaluationModule(Protocol):
    """What an evaluation module provides (the optional parts are listed in the module docstring)."""

    Options: type

    def evaluate(self, lm: Any, source: Any, opts: Any, run: Any = None, neurons: dict | None = None) -> dict: ...

    def markdown(self, result: dict) -> str: ...


@dataclass(frozen=True)
class Evaluation:
    """One registry line: the name, its module, a one-line description, and where the report shows it."""

    name: str
    module: str
    doc: str
    section: str = "Evaluations"  # the report section (h2) it appears under
    core: bool = False  # the findings read it: the report lists it as missing when absent
    alias: bool = False  # also a top-level command (``valuemech sweep``)
    scoring_dtype: str | None = None  # "float32": run in float32 when the run's model is bfloat16 on the CPU

    def model_config(self, model_cfg):
        """The model settings this evaluation runs under: the run's, or float32 where ``scoring_dtype``
        asks for it and the run resolved to bfloat16/float16 on the CPU (docs/benchmarks.md, "dtype")."""
        if self.scoring_dtype and model_cfg.device == "cpu" and model_cfg.dtype not in ("float32", "fp32", "auto"):
            return dataclasses.replace(model_cfg, dtype=self.scoring_dtype)
        return model_cfg

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def options_type(self) -> type:
        return getattr(self.load(), "Options")

    def outputs(self) -> tuple[str, ...]:
        return tuple(getattr(self.load(), "OUTPUTS", (f"{self.name}.json",)))

    def output(self, opts: Any, result: dict) -> str:
        fn = getattr(self.load(), "output", None)
        return fn(opts, result) if fn is not None else f"{self.name}.json"

    def needs_model(self, opts: Any) -> bool:
        fn = getattr(self.load(), "needs_model", None)
        return True if fn is None else bool(fn(opts))


#: Keys every result has (beside its own).
RESULT_KEYS = ("eval", "settings", "items", "aggregates")
STEERING = "Steering (Figures 4–5) and the capability guard"

#: Every evaluation, in the order the evaluate stage runs them (the sweep first: the others read its α).
REGISTRY: list[Evaluation] = [
    Evaluation("sweep", "valuemech.evals.sweep", "Capability guard curves (MC accuracy drop, KL) over α per "
               "component; the largest safe α.", section=STEERING, core=True, alias=True),
    Evaluation("pvq", "valuemech.evals.pvq", "PVQ target-value gain per component, neuron class and control, per "
               "language.", section=STEERING, core=True, scoring_dtype="float32"),
    Evaluation("value_portrait", "valuemech.evals.value_portrait",
               "Value Portrait: rate candidate responses by similarity to own thoughts; value profile and gains.",
               scoring_dtype="float32"),
    Evaluation("dilemmas", "valuemech.evals.dilemmas",
               "Situational dilemmas: win rate and mean shift towards the steered value's action.",
               scoring_dtype="float32"),
    Evaluation("freeform", "valuemech.evals.freeform",
               "Free-form PVQ: open answers scored 0-10 for the target value by a non-labelling judge."),
    Evaluation("diversity", "valuemech.evals.diversity",
               "Diversity: Distinct-2, EAD-2, MTLD, self-BLEU, semantic diversity; logit-lens entropy."),
    Evaluation("instruct", "valuemech.evals.instruct",
               "Instruction following (IFEval-style checks) under mean-delta steering over an α grid."),
    Evaluation("jailbreak", "valuemech.evals.jailbreak",
               "Jailbreak compliance (refusal matcher, optional LLM judge) under mean-delta / prompted-unique steering."),
    Evaluation("circumplex", "valuemech.evals.circumplex", "PCA of the u_shared axes, Procrustes fit to the "
               "Schwartz circle, permutation test (no model needed).", section="The Schwartz circumplex", core=True),
]
EVALS: dict[str, Evaluation] = {e.name: e for e in REGISTRY}


def register(ev: Evaluation) -> Evaluation:
    """Add an evaluation defined outside valuemech (a plugin, a test); it runs after the built-in ones.
    Register it before ``valuemech.cli`` is imported to get its CLI subcommand."""
    if ev.name in EVALS:
        raise ValuemechError(f"an evaluation named {ev.name!r} is registered already")
    REGISTRY.append(ev)
    EVALS[ev.name] = ev
    return ev


def get_eval(name: str) -> Evaluation:
    if name not in EVALS:
        raise ValuemechError(f"unknown evaluation {name!r}; known: {', '.join(EVALS)}")
    return EVALS[name]


def option_fields(options_type: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(options_type)}


def make_options(raw: dict | None, name: str | None = None, strict: bool = True) -> Any:
    """The options of evaluation ``name`` (default: the shared ``EvalOptions``) from a mapping (config
    or CLI), type-checked; an unknown key is an error unless ``strict`` is false (then it is dropped)."""
    from valuemech.evals.common import EvalOptions

    options_type = get_eval(name).options_type() if name else EvalOptions
    raw = dict(raw or {})
    fields = option_fields(options_type)
    bad = sorted(map(str, set(raw) - set(fields)))
    if bad and strict:
        where = f" of {name}" if name else ""
        raise ValuemechError(f"unknown evaluation option{where} {bad[0]!r}; known: {', '.join(sorted(fields))}")
    raw = {k: v for k, v in raw.items() if k in fields}
    if raw.get("values") is not None:
        from valuemech.values import parse_values

        raw["values"] = parse_values(raw["values"])
    for key, value in raw.items():
        want = str(fields[key].type)
        if not matches_type(value, want):
            raise ValuemechError(f"{option_label(fields[key])} must be {want}, not {type(value).__name__}")
    opts = options_type(**raw)
    check_fields(opts, option_label)
    check = getattr(opts, "check", None)
    if check is not None:
        check()
    return opts


def option_label(f: dataclasses.Field) -> str:
    """How errors name an option: its config key and its CLI flag."""
    return f"evaluation option {f.name} ({(f.metadata or {}).get('flag') or '--' + f.name.replace('_', '-')})"


def checked_options(raw: dict | None, name: str) -> Any:
    """:func:`make_options`, then the evaluation's own ``check_options(opts)`` (the dataset or judge its
    options name): everything about the options that can fail, before a model loads."""
    opts = make_options(raw, name)
    check = getattr(get_eval(name).load(), "check_options", None)
    if check is not None:
        check(opts)
    return opts


def check_layers(layers: Any, n_layers: int) -> None:
    """Blocks named by ``layers`` (an int, a list of them, or options whose ``layer`` / ``layers`` fields
    name them) lie in ``-n_layers..n_layers - 1``: checked against a run's vectors before a model loads."""
    rule = Range(-n_layers, n_layers - 1)
    if dataclasses.is_dataclass(layers):
        for f in dataclasses.fields(layers):
            if f.name in ("layer", "layers"):
                check_value(rule, option_label(f) + f" (blocks out of range: this model has 0..{n_layers - 1})", getattr(layers, f.name))
    elif layers is not None:
        check_value(rule, f"--layer (blocks out of range: this model has 0..{n_layers - 1})", layers)


def options_for(name: str, evaluate: EvaluateConfig) -> Any:
    """Options of ``name`` from the config: the shared ``evaluate.options`` (keys it has), then its own."""
    return make_options({**_shared_for(name, evaluate.options), **evaluate.per_eval.get(name, {})}, name)


def _shared_for(name: str, options: dict) -> dict:
    fields = option_fields(get_eval(name).options_type())
    return {k: v for k, v in options.items() if k in fields}


def check_config(evaluate: EvaluateConfig) -> None:
    """Every evaluation name and option of a config's ``evaluate`` section, checked before any work."""
    for name in list(evaluate.evals) + list(evaluate.per_eval):
        get_eval(name)
    known = set().union(*(option_fields(e.options_type()) for e in REGISTRY))
    bad = sorted(map(str, set(evaluate.options) - known))
    if bad:
        raise ValuemechError(f"unknown evaluation option {bad[0]!r}; known: {', '.join(sorted(known))}")
    for name in dict.fromkeys([*evaluate.evals, *evaluate.per_eval]):
        try:
            checked_options({**_shared_for(name, evaluate.options), **evaluate.per_eval.get(name, {})}, name)
        except ValuemechError as exc:
            raise ValuemechError(f"config section evaluate ({name}): {exc}") from None


def ordered(names: list[str]) -> list[str]:
    """``names`` in registry order (the sweep before the evaluations that read it)."""
    for n in names:
        get_eval(n)
    return [e.name for e in REGISTRY if e.name in names]


def run_eval(name: str, lm, source, opts: Any, run=None) -> dict:
    """Run evaluation ``name``; with ``run`` (a RunDir), write its file under ``evals/`` (atomic) and
    return the result. Nothing is written when it fails."""
    ev = get_eval(name)
    module = ev.load()
    neurons = None
    if run is not None and getattr(opts, "beta", 0) and run.neurons_json.exists():
        neurons = run.load_neurons()
    inputs = run.inputs_of("evals/") if run is not None and run.components.exists() else None
    t0 = time.perf_counter()
    result = module.evaluate(lm, source, opts, run=run, neurons=neurons)
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValuemechError(f"evaluation {name} returned no {missing[0]!r} (see the contract in {__name__})")
    result["settings"]["model_id"] = lm.model_id if lm is not None else source.vectors.metadata.get("model_id")
    result["settings"]["seconds"] = round(time.perf_counter() - t0, 1)
    if lm is not None:
        result["settings"]["dtype"] = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    if inputs is not None:
        result["inputs"] = inputs  # the components it steered with (rundir.LINEAGE)
    if run is not None:
        run.write_eval(ev.output(opts, result), result)
    return result


def markdown(name: str, result: dict) -> str:
    return get_eval(name).load().markdown(result)


def summary(name: str, result: dict) -> str:
    """What the CLI prints after running ``name``."""
    module = get_eval(name).load()
    return getattr(module, "summary", module.markdown)(result)


def figures(name: str, result: dict, out_dir: Path, stem: str) -> list[Path]:
    fn = getattr(get_eval(name).load(), "figures", None)
    return [p for p in (fn(result, Path(out_dir), stem) if fn is not None else []) if p is not None]
