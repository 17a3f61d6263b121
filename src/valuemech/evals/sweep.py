"""α sweep under a capability guard: per component, the largest α whose guard cost stays acceptable.

For each component, block and α (relative: ``c * R_l * unit(v)``), the guard measures the
multiple-choice accuracy drop (points, vs. unsteered) and the mean KL on neutral text. The
chosen α is the largest one on the grid whose drop stays under ``max_drop`` (5 points, as in the
paper) and, when ``max_kl`` is set, whose KL stays under it. Per-value components are steered with
``probe_value`` (the guard is about capability, not about which value). Alongside, a same-norm
random direction gives the guard cost of an arbitrary perturbation of that size.
"""

from __future__ import annotations

from dataclasses import asdict

from tqdm.auto import tqdm

from valuemech.evals.capability import (GuardPoint, builtin_mc, guard, mc_accuracy, neutral_texts,
                                        next_token_logprobs)
from valuemech.models.loading import LoadedModel
from valuemech.steering import SteeringSource, steer


def sweep(lm: LoadedModel, source: SteeringSource, components: list[str], layers: list[int],
          alphas: list[float], probe_value: str = "benevolence", max_drop: float = 5.0,
          max_kl: float | None = None, n_items: int | None = 80, n_texts: int = 10,
          progress: bool = True, mc_scoring: str = "cloze", items: list | None = None) -> dict:
    """Guard curves and the chosen (layer, α) per component; see the module docstring.

    ``items`` replaces the built-in multiple-choice set (e.g. from ``load_mmlu_csv``); ``n_items``
    keeps its first n; ``mc_scoring`` is ``cloze`` or ``letter`` (see ``capability.mc_accuracy``).
    """
    items = items or builtin_mc()
    items = items[:n_items] if n_items else items
    texts = neutral_texts()[:n_texts]
    base_acc, _ = mc_accuracy(lm, items, scoring=mc_scoring)
    base_lp = next_token_logprobs(lm, texts)
    curves: dict = {}
    grid = [(c, l, a) for c in components + ["random"] for l in layers for a in alphas]
    for comp, layer, alpha in tqdm(grid, desc="sweep", disable=not progress):
        real = comp if comp != "random" else "shared"
        ctx = steer(lm, source, real, probe_value, layer, alpha, relative=True,
                    control_seed=0 if comp == "random" else None)
        point = guard(lm, items, texts, base_acc, base_lp, ctx, scoring=mc_scoring)
        curves.setdefault(comp, {}).setdefault(str(layer), []).append({"alpha": alpha, **asdict(point)})
    chosen = choose(curves, max_drop, max_kl)
    return {"baseline_accuracy": base_acc, "n_items": len(items), "mc_scoring": mc_scoring, "n_texts": len(texts),
            "probe_value": probe_value, "max_drop": max_drop, "max_kl": max_kl, "alphas": alphas,
            "layers": layers, "curves": curves, "chosen": chosen}


def choose(curves: dict, max_drop: float = 5.0, max_kl: float | None = None) -> dict:
    """Per component, the (layer, α) point with the largest α whose accuracy drop stays under
    ``max_drop`` (strictly: a drop of exactly 5 points on 80 items is not under 5, whatever the float
    rounding of 100 * (a - b)) and whose KL stays under ``max_kl``; None where no point qualifies."""
    chosen = {}
    for comp, by_layer in curves.items():
        best = None
        for layer, pts in by_layer.items():
            ok = [p for p in pts if round(p["accuracy_drop"], 9) < max_drop and (max_kl is None or p["kl"] < max_kl)]
            if ok:
                top = max(ok, key=lambda p: p["alpha"])
                if best is None or top["alpha"] > best["alpha"]:
                    best = {"layer": int(layer), **top}
        chosen[comp] = best
    return chosen


__all__ = ["GuardPoint", "choose", "sweep"]
