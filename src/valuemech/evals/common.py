"""Shared pieces of the evaluations: options, steering conditions, generation under a condition, intervals.

A *condition* is a factory ``f(value) -> context manager``: entering it steers the model towards
``value`` (a component at block l and relative α, a neuron class at β, or a same-norm random
direction); value-agnostic conditions (``mean_delta``, the baseline) ignore the value. Every
evaluation runs its baseline and its conditions through the same code, with the same prompts and
sampling seeds, so the only difference between rows is the intervention.
"""

from __future__ import annotations

from contextlib import nullcontext
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ContextManager, TypeVar

import numpy as np
import torch

from valuemech.config import AT_LEAST_0, AT_LEAST_1, N_BOOT, PROBABILITY_MASS, SEED, Allowed, GenerationConfig
from valuemech.errors import ValuemechError
from valuemech.generate import sample_batch, stable_seed
from valuemech.hooks import check_operator
from valuemech.models.loading import LoadedModel
from valuemech.neurons import NEURON_CLASSES
from valuemech.rundir import RunDir
from valuemech.steering import COMPONENTS, FILE, VALUE_AGNOSTIC, SteeringSource, scale_neuron_class, steer

Condition = Callable[[str | None], ContextManager]
T = TypeVar("T")
PER_VALUE_DEFAULT = ("intrinsic", "prompted", "intrinsic_orth", "prompted_orth", "shared",
                     "intrinsic_unique", "prompted_unique")


def opt(default=None, help: str = "", flag: str | None = None, factory=None, allowed: Allowed | None = None):
    """A dataclass field of an evaluation's options; ``help`` and ``flag`` feed the generated CLI, ``allowed``
    (a :class:`~valuemech.config.Range`, ...) is checked by ``registry.make_options`` (config and CLI alike;
    float fields are always finite)."""
    meta = {"help": help, **({"flag": flag} if flag else {}), **({"allowed": allowed} if allowed else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


OPERATOR_HELP = ("How each component acts: add | ablate (remove the residual's projection on its direction at "
                 "every position) | ablate_add (remove it, then add).")


@dataclass
class EvalOptions:
    """Settings every evaluation understands (each uses the ones that apply to it)."""

    components: list[str] = opt(factory=lambda: list(PER_VALUE_DEFAULT), help="Components to steer with.")
    layer: int | None = opt(help="Block (default: evals/sweep.json, else the middle block).")
    alpha: float | None = opt(help="Relative α (default: evals/sweep.json, else 0.2).")
    alphas: list[float] = opt(factory=lambda: [0.05, 0.1, 0.2], help="Relative α grid (instruct, jailbreak).")
    values: list[str] | None = opt(help="Target values (comma list; default all).")
    operator: str = opt("add", help=OPERATOR_HELP)
    vector_file: str | None = opt(help="A control-vector file (GGUF from `valuemech export`, llama.cpp or repeng; "
                                       "safetensors; steering-vectors): adds the row 'file', steered at its own "
                                       "blocks (or --layer).")
    beta: float = opt(0.0, help="Neuron-class scaling β (0: no neuron rows).")
    control: bool = opt(True, help="Add the same-norm random-direction control.")
    limit: int | None = opt(help="Use only the first N items / queries.", allowed=AT_LEAST_1)
    items: str | None = opt(help="A dataset file in the evaluation's public format.")
    column: str | None = opt(help="Text column of --items (jailbreak; default: goal, Behavior, ... whichever "
                                   "is present).")
    judge: str | None = opt(help="Judge that scores generated text (default: the evaluation's own).")
    judge_options: dict = opt(factory=dict, help="Judge options as JSON.")
    max_new_tokens: int = opt(64, help="New tokens per generated answer.", allowed=AT_LEAST_1)
    temperature: float = opt(0.7, help="Sampling temperature (0: greedy).", allowed=AT_LEAST_0)
    top_p: float = opt(0.9, help="Nucleus sampling mass.", allowed=PROBABILITY_MASS)
    samples: int = opt(1, help="Generations per prompt.", allowed=AT_LEAST_1)
    seed: int = opt(0, help="Sampling seed.", allowed=SEED)
    batch_size: int = opt(16, help="Prompts per batch.", allowed=AT_LEAST_1)
    n_boot: int = opt(1000, help="Bootstrap resamples of the 95% intervals.", allowed=N_BOOT)
    progress: bool = opt(True, help="Progress bars.")

    def check(self) -> None:
        check_operator(self.operator)
        check_components(self.components)


def bootstrap_mean(xs, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean (``[nan, nan]`` for fewer than two points)."""
    arr = np.asarray(list(xs), dtype=np.float64)
    if len(arr) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), (n_boot, len(arr)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def bootstrap_stat(groups: list, stat: Callable[[list], float], n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% interval of ``stat`` over resamples of ``groups`` (e.g. per-prompt response sets)."""
    if len(groups) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    vals = [stat([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(n_boot)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def summarise(xs: list[float], n_boot: int = 1000) -> dict:
    """Mean, 95% bootstrap interval and n of a list of numbers."""
    xs = [float(x) for x in xs]
    return {"mean": float(np.mean(xs)) if xs else float("nan"), "ci": bootstrap_mean(xs, n_boot), "n": len(xs)}


def chosen_settings(run: RunDir | None) -> dict:
    """``chosen`` of the run's ``evals/sweep.json`` ({component: {layer, alpha, ...}}), or {} without a sweep."""
    return {} if run is None else run.sweep_choice()


def layer_alpha(lm: LoadedModel, opts: EvalOptions, component: str, chosen: dict) -> tuple[int, float]:
    """The block and relative α for ``component``: explicit options, else the sweep's choice, else defaults."""
    ch = chosen.get(component) or {}
    layer = opts.layer if opts.layer is not None else ch.get("layer", lm.n_layers // 2)
    alpha = opts.alpha if opts.alpha is not None else ch.get("alpha", 0.2)
    return lm.arch.check_layer(int(layer)), float(alpha)


def check_components(components: list[str], allow_mean_delta: bool = True) -> list[str]:
    bad = [c for c in components if (c not in COMPONENTS and c != FILE) or (c == "mean_delta" and not allow_mean_delta)]
    if bad:
        raise ValuemechError(f"unknown component {bad[0]!r} here; choose from "
                             f"{', '.join(c for c in COMPONENTS if allow_mean_delta or c != 'mean_delta')}")
    return components


def refuse_vector_file(opts, name: str) -> None:
    """For the evaluations whose rows are fixed (an α grid of named components): a file is not one of them."""
    if getattr(opts, "vector_file", None):
        raise ValuemechError(f"{name} does not take --vector-file (its rows are fixed components over an α grid); "
                             "evaluate a file with value_portrait, dilemmas, freeform or diversity")


def build_conditions(lm: LoadedModel, source: SteeringSource, opts: EvalOptions, run: RunDir | None = None,
                     neurons: dict | None = None, control_name: str = "random control"
                     ) -> tuple[dict[str, Condition], dict[str, dict]]:
    """Conditions (name -> factory) and their settings for every component, neuron class and the control.

    The random control steers a same-norm random direction at the block and α of ``prompted``
    (else of the first component): the noise floor every other row is read against.
    """
    chosen = chosen_settings(run)
    op = check_operator(getattr(opts, "operator", "add"))
    marked = {} if op == "add" else {"operator": op}  # settings of plain additive steering stay as they were
    conditions: dict[str, Condition] = {}
    settings: dict[str, dict] = {}
    components = list(opts.components)
    if getattr(opts, "vector_file", None):
        source = source.with_file(opts.vector_file, lm)
        components += [] if FILE in components else [FILE]
    for c in check_components(components):
        layer, alpha = layer_alpha(lm, opts, c, chosen)
        if c == FILE and opts.layer is None:  # the file's own blocks
            layer = source.file.blocks[0] if len(source.file.blocks) == 1 else source.file.blocks
        settings[c] = {"layer": layer, "alpha": alpha, "relative": True, **marked}
        conditions[c] = (lambda v, c=c, layer=layer, alpha=alpha: steer(lm, source, c, v, layer, alpha, operator=op))
    if opts.beta and neurons is not None:
        for cls in NEURON_CLASSES:
            conditions[f"neurons:{cls}"] = (lambda v, cls=cls: scale_neuron_class(lm, neurons, v, cls, opts.beta))
            settings[f"neurons:{cls}"] = {"beta": opts.beta}
    if opts.control and settings:
        ref_name = "prompted" if "prompted" in settings else next(iter(settings))
        ref = settings[ref_name]
        if "layer" in ref:
            comp = ref_name if ref_name in VALUE_AGNOSTIC else "shared"
            conditions[control_name] = (lambda v, comp=comp, ref=ref: steer(
                lm, source, comp, v, ref["layer"], ref["alpha"], control_seed=0, operator=op))
            settings[control_name] = {"layer": ref["layer"], "alpha": ref["alpha"], "relative": True,
                                      **marked, "direction": f"random, norm of {comp}"}
    return conditions, settings


def over_alphas(alphas: list[float], build: Callable[[float], dict[str, T]]) -> dict[str, tuple[float, T]]:
    """The α grid of every evaluation: ``build(α)``'s entries at each α, named ``<name>@<α>`` in grid order."""
    return {f"{name}@{a:g}": (float(a), x) for a in alphas for name, x in build(float(a)).items()}


def grid_conditions(lm: LoadedModel, source: SteeringSource, opts: EvalOptions, alphas: list[float],
                    run: RunDir | None = None, control_name: str = "random control"
                    ) -> tuple[dict[str, Condition], dict[str, dict]]:
    """:func:`build_conditions` (no neuron rows) at every α of ``alphas``; names ``<condition>@<α>``."""
    built = {a: build_conditions(lm, source, dataclasses.replace(opts, alpha=a, beta=0.0), run,
                                 control_name=control_name) for a in alphas}
    conditions = {k: f for k, (_, f) in over_alphas(alphas, lambda a: built[a][0]).items()}
    settings = {k: st for k, (_, st) in over_alphas(alphas, lambda a: built[a][1]).items()}
    return conditions, settings


def baseline(_value: str | None = None) -> ContextManager:
    """The unsteered condition."""
    return nullcontext()


def generate_texts(lm: LoadedModel, users: list[str], opts: EvalOptions, system_prompt: str | None = None,
                   desc: str = "generate") -> list[str]:
    """Sample one reply per user message (``opts.samples`` per message when listed repeatedly).

    Batches follow the input order and each samples under a seed derived from ``opts.seed`` and
    its position, so the baseline and every condition see the same prompts and the same seeds.
    Active hooks (a steering condition) apply to prompt and generated tokens alike.
    """
    from tqdm.auto import tqdm

    cfg = GenerationConfig(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                           top_p=opts.top_p, batch_size=opts.batch_size)
    prompts = [lm.prompt_ids(u, system_prompt) for u in users]
    out: list[str] = []
    with torch.no_grad():
        for s in tqdm(range(0, len(prompts), opts.batch_size), desc=desc, leave=False,
                      disable=not opts.progress):
            batch = prompts[s: s + opts.batch_size]
            for ids, _ in sample_batch(lm, batch, cfg, stable_seed(opts.seed, "eval-batch", s)):
                out.append(lm.tokenizer.decode(ids, skip_special_tokens=True))
    return out
