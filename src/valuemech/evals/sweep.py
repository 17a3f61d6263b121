"""α sweep under a capability guard: per component, the largest α whose guard cost stays acceptable.

For each component, block and α (relative: ``c * R_l * unit(v)``), the guard measures the
multiple-choice accuracy drop (points, vs. unsteered) and the mean KL on neutral text. The
chosen α is the largest one on the grid whose drop stays under ``max_drop`` (5 points, as in the
paper) and, when ``max_kl`` is set, whose KL stays under it. Per-value components are steered with
``probe_value`` (the guard is about capability, not about which value). Alongside, a same-norm
random direction gives the guard cost of an arbitrary perturbation of that size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from valuemech.config import AT_LEAST_0, AT_LEAST_1, Range
from valuemech.errors import ValuemechError
from valuemech.evals.capability import (SCORINGS, builtin_mc, guard, load_mmlu_csv, mc_accuracy,
                                        neutral_texts, next_token_logprobs)
from valuemech.evals.common import opt
from valuemech.models.loading import LoadedModel
from valuemech.plots import plt, save
from valuemech.rundir import RunDir
from valuemech.steering import COMPONENTS, SteeringSource, steer
from valuemech.values import canonical_value


@dataclass
class Options:
    """Settings of the sweep (``valuemech sweep``)."""

    components: list[str] = opt(factory=lambda: list(COMPONENTS), help="Components to sweep.")
    layers: list[int] | None = opt(help="Blocks (comma list; default: the middle block).")
    alphas: list[float] = opt(factory=lambda: [0.05, 0.1, 0.2, 0.4, 0.8], help="Relative α grid (x residual norm).")
    probe_value: str = opt("benevolence", help="Value whose components are swept.")
    max_drop: float = opt(5.0, help="Largest accuracy drop allowed (points).", allowed=Range(0, 100))
    max_kl: float | None = opt(help="Largest KL on neutral text allowed.", allowed=AT_LEAST_0)
    n_items: int = opt(80, help="Multiple-choice items used by the guard.", allowed=AT_LEAST_1)
    mc_scoring: str = opt("cloze", help="cloze (likelihood of each option's text) or letter (most probable of "
                                        "A-D after the listed options).")
    mmlu: str | None = opt(help="MMLU CSV file, or a directory of them, instead of the built-in items.")
    progress: bool = opt(True, help="Progress bars.")

    def check(self) -> None:
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad:
            raise ValuemechError(f"unknown component {bad[0]!r}; choose from {', '.join(COMPONENTS)}")
        if self.mc_scoring not in SCORINGS:
            raise ValuemechError(f"--mc-scoring must be one of {', '.join(SCORINGS)}, not {self.mc_scoring!r}")
        self.probe_value = canonical_value(self.probe_value)


def mmlu_items(path: str) -> list:
    """Items of an MMLU CSV file or of every CSV in a directory."""
    root = Path(path)
    files = sorted(root.glob("*.csv")) if root.is_dir() else [root]
    if not files:
        raise ValuemechError(f"--mmlu: no .csv files in {root}")
    return [it for f in files for it in load_mmlu_csv(f)]


def check_options(opts: Options) -> None:
    """The MMLU files, read before any work (the registry's ``check_options``)."""
    if opts.mmlu is not None:
        mmlu_items(opts.mmlu)


def evaluate(lm: LoadedModel, source: SteeringSource, opts: Options, run: RunDir | None = None,
             neurons: dict | None = None) -> dict:
    """Guard curves and the chosen (block, α) per component (see :func:`sweep`)."""
    items = mmlu_items(opts.mmlu) if opts.mmlu is not None else None
    layers = list(opts.layers) if opts.layers else [lm.n_layers // 2]
    for layer in layers:
        lm.arch.check_layer(layer)
    res = sweep(lm, source, list(opts.components), layers, list(opts.alphas), opts.probe_value, opts.max_drop,
                opts.max_kl, opts.n_items, progress=opts.progress, mc_scoring=opts.mc_scoring, items=items)
    res["mc_items"] = str(opts.mmlu) if opts.mmlu is not None else "builtin:general_knowledge_mc"
    res["eval"], res["settings"] = "sweep", {"probe_value": res["probe_value"], "max_drop": res["max_drop"],
                                            "max_kl": res["max_kl"], "mc_scoring": res["mc_scoring"]}
    res["items"] = [{"component": c, "layer": int(layer), **p} for c, by in res["curves"].items()
                    for layer, pts in by.items() for p in pts]
    res["aggregates"] = {"baseline_accuracy": res["baseline_accuracy"], "chosen": res["chosen"]}
    return res


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




def _chart(sweep: dict, path: Path) -> Path | None:
    """Capability guard vs. α per component: MC accuracy drop and KL on neutral text."""
    curves = sweep.get("curves")
    if not curves:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for comp, by_layer in curves.items():
        for layer, pts in by_layer.items():
            xs = [p["alpha"] for p in pts]
            style = dict(ls="--", color="black") if comp == "random" else {}
            a1.plot(xs, [p["accuracy_drop"] for p in pts], marker="o", label=f"{comp} @ {layer}", **style)
            a2.plot(xs, [p["kl"] for p in pts], marker="o", label=f"{comp} @ {layer}", **style)
    a1.axhline(sweep.get("max_drop", 5.0), color="grey", lw=0.8, ls=":", label="max drop")
    a1.set_xlabel("α (× residual norm)")
    a1.set_ylabel("MC accuracy drop (points)")
    a1.set_title(f"accuracy drop (baseline {100 * sweep.get('baseline_accuracy', float('nan')):.1f}%)")
    a2.set_xlabel("α (× residual norm)")
    a2.set_ylabel("KL(base ‖ steered), nats")
    a2.set_title("KL on neutral text")
    a2.legend(fontsize=7, ncol=2)
    return save(fig, path)


def figures(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """``guard.png`` (``<stem>_guard.png`` for another file name): accuracy drop and KL vs. α."""
    return [_chart(result, out_dir / ("guard.png" if stem == "sweep" else f"{stem}_guard.png"))]


def markdown(sw: dict) -> str:
    alphas = sw["alphas"]
    out = [f"### Capability guard (probe value {sw['probe_value']}; MC baseline accuracy "
           f"{sw['baseline_accuracy']:.3f} on {sw['n_items']} items, {sw.get('mc_scoring', 'letter')} scoring; "
           f"KL on {sw['n_texts']} neutral texts)", "",
           "| component | block | " + " | ".join(f"α={a:g}: drop / KL" for a in alphas) + " | chosen α |",
           "|---|---|" + "---|" * (len(alphas) + 1)]
    for comp, by_layer in sw["curves"].items():
        for layer, pts in by_layer.items():
            ch = sw["chosen"].get(comp)
            out.append(f"| {comp} | {layer} | " + " | ".join(f"{p['accuracy_drop']:+.1f} / {p['kl']:.3f}" for p in pts)
                       + f" | {'-' if ch is None else format(ch['alpha'], 'g')} |")
    return "\n".join(out)


def summary(sw: dict) -> str:
    """The chosen α per component, and the guard table."""
    kl = "" if sw.get("max_kl") is None else f", KL < {sw['max_kl']:g}"
    lines = [f"chosen α (accuracy drop < {sw['max_drop']:g} pts{kl}); baseline accuracy "
             f"{sw['baseline_accuracy']:.3f} on {sw['n_items']} items ({sw['mc_scoring']})"]
    for comp, ch in sw["chosen"].items():
        lines.append(f"  {comp}: " + ("-" if ch is None else f"block {ch['layer']}, α {ch['alpha']:g} "
                                      f"(drop {ch['accuracy_drop']:.1f}, KL {ch['kl']:.3f})"))
    return "\n".join(lines) + "\n\n" + markdown(sw)
