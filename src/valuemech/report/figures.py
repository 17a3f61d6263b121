"""The report's figures (PNG, matplotlib Agg), each drawn from one run-directory artifact.

The report's own figures; each evaluation draws its figures in its module (``figures``).

Every function takes the parsed artifact and an output path, draws one figure with labelled axes,
value names and legends, writes it, and returns the path (None when the artifact lacks what the
figure needs). The paper's reference numbers are drawn where one exists and marked "paper".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from valuemech.neurons import generic_neurons
from valuemech.plots import CLASS_COLOURS, plt, save
from valuemech.values import VALUES


def cosine_heatmap(decompose: dict, path: Path) -> Path | None:
    """cos(v_int, v_prompt) per value (rows) and block (columns): the paper's Figure 2."""
    per_value = decompose.get("per_value", {})
    values = [v for v in VALUES if v in per_value]
    if not values:
        return None
    m = np.array([per_value[v]["cosine"] for v in values], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * m.shape[1] + 3), 4))
    im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_yticks(range(len(values)), values)
    ax.set_xlabel("block (0-based)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("cos(v_intrinsic, v_prompted) per value and block")
    fig.colorbar(im, ax=ax, label="cosine")
    return save(fig, path)


def neuron_counts(neurons: dict, path: Path) -> Path | None:
    """Kept value neurons per block by class, summed over values (the paper's Figure 3), with the
    entries of generic neurons (kept for most values, :func:`valuemech.neurons.generic_neurons`) in grey."""
    counts = neurons.get("counts_per_layer")
    if not counts:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.8))
    n = len(next(iter(counts.values())))
    generic = generic_neurons(neurons)
    per = {c: np.zeros(n) for c in ("shared", "intrinsic", "prompted", "none", "generic")}
    for d in neurons.get("per_value", {}).values():
        for x in d["neurons"]:
            per["generic" if (int(x["layer"]), int(x["neuron"])) in generic else x["class"]][int(x["layer"])] += 1
    bottom = np.zeros(n)
    colours = {**CLASS_COLOURS, "generic": "#777777"}
    for cls in ("shared", "intrinsic", "prompted", "none", "generic"):
        if per[cls].any():
            label = f"generic ({len(generic)} neurons kept for most values)" if cls == "generic" else cls
            ax.bar(range(n), per[cls], bottom=bottom, label=label, color=colours[cls])
            bottom += per[cls]
    ax.set_xlabel("block (0-based)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("neurons (summed over values)")
    ax.set_title(f"value neurons per block by class (top {neurons.get('k_percent', '?')}%, "
                 f"angle < {neurons.get('max_angle', '?')}°)")
    ax.legend(title="class", fontsize=8)
    return save(fig, path)


def findings_chart(found: list[dict], path: Path) -> Path | None:
    """Each headline claim's effect with its 95% interval (0 = no effect)."""
    rows = [f for f in found if f["effect"] is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(3.4 * len(rows), 3))
    for ax, f in zip(np.atleast_1d(axes), rows):
        lo, hi = f["ci"]
        ax.errorbar([0], [f["effect"]], yerr=[[f["effect"] - lo], [hi - f["effect"]]], fmt="o", capsize=6)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([])
        ax.set_title(f"{f['claim']}: {f['verdict']}", fontsize=9)
        ax.set_ylabel("effect (95% CI)", fontsize=8)
    return save(fig, path)
