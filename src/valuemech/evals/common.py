"""Shared pieces of the evaluations: options, steering conditions, generation under a condition, intervals.

A *condition* is a factory ``f(value) -> context manager``: entering it steers the model towards
``value`` (a component at block l and relative α, a neuron class at β, or a same-norm random
direction); value-agnostic conditions (``mean_delta``, the baseline) ignore the value. Every
evaluation runs its baseline and its conditions through the same code, with the same prompts and
sampling seeds, so the only difference between rows is the intervention.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch

from valuemech.config import GenerationConfig
from valuemech.errors import ValuemechError
from valuemech.generate import sample_batch, stable_seed
from valuemech.models.loading import LoadedModel
from valuemech.steering import COMPONENTS, SteeringSource, scale_neuron_class, steer

Condition = Callable[[str | None], ContextManager]
NEURON_CLASSES = ("shared", "intrinsic", "prompted")
PER_VALUE_DEFAULT = ("intrinsic", "prompted", "intrinsic_orth", "prompted_orth", "shared",
                     "intrinsic_unique", "prompted_unique")


@dataclass
class EvalOptions:
    """Settings every evaluation understands (each uses the ones that apply to it)."""

    components: list[str] = field(default_factory=lambda: list(PER_VALUE_DEFAULT))
    layer: int | None = None  # block; None: from evals/sweep.json, else the middle block
    alpha: float | None = None  # relative α; None: from evals/sweep.json, else 0.2
    alphas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])  # α grids (IF, jailbreak)
    values: list[str] | None = None  # target values (None: all 10)
    beta: float = 0.0  # neuron-class scaling (0: no neuron rows)
    control: bool = True  # add the same-norm random-direction control
    limit: int | None = None  # use only the first n items of the dataset
    items: str | None = None  # a dataset file in the evaluation's public format
    column: str | None = None  # the text column of ``items`` where the format has a choice (jailbreak)
    judge: str | None = None  # judge that scores generated text (None: the evaluation's default)
    judge_options: dict = field(default_factory=dict)
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    samples: int = 1  # generations per prompt
    seed: int = 0
    batch_size: int = 16
    n_boot: int = 1000
    progress: bool = True


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


def chosen_settings(run_root: Path | None) -> dict:
    """``chosen`` of ``evals/sweep.json`` ({component: {layer, alpha, ...}}), or {} without a sweep."""
    if run_root is None:
        return {}
    path = Path(run_root) / "evals" / "sweep.json"
    if not path.exists():
        return {}
    from valuemech.io import load_json

    data = load_json(path)
    if not _is_sweep(data):
        raise ValuemechError(f"{path}: not a sweep result (rerun `valuemech sweep`)")
    return data["chosen"] or {}


def _is_sweep(data: object) -> bool:
    """The shape sweep readers rely on: ``chosen`` {component: null | point with layer} and ``curves``
    {component: {block: [point]}}, a point holding numbers alpha, accuracy_drop and kl."""
    def point(p: object) -> bool:
        return isinstance(p, dict) and all(isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
                                           for k in ("alpha", "accuracy_drop", "kl"))

    if not isinstance(data, dict) or "chosen" not in data or not isinstance(data["chosen"] or {}, dict) \
            or not isinstance(data.get("curves", {}), dict):
        return False
    chosen_ok = all(c is None or (point(c) and type(c.get("layer")) is int) for c in (data["chosen"] or {}).values())
    curves_ok = all(isinstance(by, dict) and all(isinstance(pts, list) and all(map(point, pts)) for pts in by.values())
                    for by in data.get("curves", {}).values())
    return chosen_ok and curves_ok


def layer_alpha(lm: LoadedModel, opts: EvalOptions, component: str, chosen: dict) -> tuple[int, float]:
    """The block and relative α for ``component``: explicit options, else the sweep's choice, else defaults."""
    ch = chosen.get(component) or {}
    layer = opts.layer if opts.layer is not None else ch.get("layer", lm.n_layers // 2)
    alpha = opts.alpha if opts.alpha is not None else ch.get("alpha", 0.2)
    return lm.arch.check_layer(int(layer)), float(alpha)


def check_components(components: list[str], allow_mean_delta: bool = True) -> list[str]:
    bad = [c for c in components if c not in COMPONENTS or (c == "mean_delta" and not allow_mean_delta)]
    if bad:
        raise ValuemechError(f"unknown component {bad[0]!r} here; choose from "
                             f"{', '.join(c for c in COMPONENTS if allow_mean_delta or c != 'mean_delta')}")
    return components


def build_conditions(lm: LoadedModel, source: SteeringSource, opts: EvalOptions, run_root: Path | None = None,
                     neurons: dict | None = None) -> tuple[dict[str, Condition], dict[str, dict]]:
    """Conditions (name -> factory) and their settings for every component, neuron class and the control.

    The random control steers a same-norm random direction at the block and α of ``prompted``
    (else of the first component): the noise floor every other row is read against.
    """
    chosen = chosen_settings(run_root)
    conditions: dict[str, Condition] = {}
    settings: dict[str, dict] = {}
    for c in check_components(opts.components):
        layer, alpha = layer_alpha(lm, opts, c, chosen)
        settings[c] = {"layer": layer, "alpha": alpha, "relative": True}
        conditions[c] = (lambda v, c=c, layer=layer, alpha=alpha: steer(lm, source, c, v, layer, alpha))
    if opts.beta and neurons is not None:
        for cls in NEURON_CLASSES:
            conditions[f"neurons:{cls}"] = (lambda v, cls=cls: scale_neuron_class(lm, neurons, v, cls, opts.beta))
            settings[f"neurons:{cls}"] = {"beta": opts.beta}
    if opts.control and settings:
        ref_name = "prompted" if "prompted" in settings else next(iter(settings))
        ref = settings[ref_name]
        if "layer" in ref:
            comp = "mean_delta" if ref_name == "mean_delta" else "shared"
            conditions["random control"] = (lambda v, comp=comp, ref=ref: steer(
                lm, source, comp, v, ref["layer"], ref["alpha"], control_seed=0))
            settings["random control"] = {"layer": ref["layer"], "alpha": ref["alpha"], "relative": True,
                                          "direction": f"random, norm of {comp}"}
    return conditions, settings


def alpha_conditions(lm: LoadedModel, source: SteeringSource, component: str, value: str | None,
                     layer: int, alphas: list[float], control: bool = True) -> dict[str, tuple[float, Condition]]:
    """One condition per α of the grid for one component (and a same-norm random control per α)."""
    out: dict[str, tuple[float, Condition]] = {}
    for a in alphas:
        out[f"{component}@{a:g}"] = (a, lambda v, a=a: steer(lm, source, component, value, layer, a))
        if control:
            out[f"random@{a:g}"] = (a, lambda v, a=a: steer(lm, source, component, value, layer, a, control_seed=0))
    return out


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
