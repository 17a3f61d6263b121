"""The report's figures (PNG, matplotlib Agg), each drawn from one run-directory artifact.

Every function takes the parsed artifact and an output path, draws one figure with labelled axes,
value names and legends, writes it, and returns the path (None when the artifact lacks what the
figure needs). The paper's reference numbers are drawn where one exists and marked "paper".
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from valuemech.values import ANGLES, VALUES  # noqa: E402

CLASS_COLOURS = {"shared": "#4C72B0", "intrinsic": "#55A868", "prompted": "#C44E52", "none": "#BBBBBB"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    return _save(fig, path)


def neuron_counts(neurons: dict, path: Path) -> Path | None:
    """Kept value neurons per block by class, summed over values: the paper's Figure 3."""
    counts = neurons.get("counts_per_layer")
    if not counts:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.8))
    n = len(next(iter(counts.values())))
    bottom = np.zeros(n)
    for cls in ("shared", "intrinsic", "prompted", "none"):
        if cls in counts:
            ax.bar(range(n), counts[cls], bottom=bottom, label=cls, color=CLASS_COLOURS[cls])
            bottom += np.array(counts[cls], dtype=float)
    ax.set_xlabel("block (0-based)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("neurons (summed over values)")
    ax.set_title(f"value neurons per block by class (top {neurons.get('k_percent', '?')}%, "
                 f"angle < {neurons.get('max_angle', '?')}°)")
    ax.legend(title="class", fontsize=8)
    return _save(fig, path)


def guard_curves(sweep: dict, path: Path) -> Path | None:
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
    return _save(fig, path)


def pvq_gains(pvq: dict, path: Path, unit: str = "6-pt PVQ gain") -> Path | None:
    """Target-value PVQ gain per condition and language, mean over values with 95% intervals."""
    rows = pvq.get("rows")
    if not rows:
        return None
    names = list(rows)
    langs = [k for k in rows[names[0]] if k != "mean"] + ["mean"]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names) + 2), 4))
    width = 0.8 / len(langs)
    for j, lang in enumerate(langs):
        g = np.array([rows[n][lang]["gain"] for n in names], dtype=float)
        ci = np.array([rows[n][lang]["gain_ci"] for n in names], dtype=float)
        err = np.abs(np.stack([g - ci[:, 0], ci[:, 1] - g]))
        ax.bar(np.arange(len(names)) + j * width, g, width, yerr=np.nan_to_num(err), capsize=2, label=lang)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel(f"{unit} (mean over values)")
    ax.set_title("target-value gain under steering (95% CI over values); paper: prompted +2.21, intrinsic +1.74")
    ax.legend(title="language", fontsize=7, ncol=3)
    return _save(fig, path)


def circumplex(cx: dict, path: Path) -> Path | None:
    """2-D PCA of the u_shared axes beside the theoretical Schwartz circle."""
    shared = cx.get("shared")
    if not shared or not shared.get("coords"):
        return None
    coords = np.array(shared["coords"], dtype=float)
    values = shared["values"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4.5))
    for v, (x, y) in zip(values, coords):
        a1.scatter(x, y, color="C0")
        a1.annotate(v, (x, y), fontsize=8)
    a1.set_title(f"u_shared axes, 2-D PCA (block {cx.get('layer')}): {100 * shared['explained_2pc']:.0f}% var, "
                 f"R² {shared['r2']:.2f}, p = {shared['p_value']:.2f}", fontsize=9)
    a1.set_xlabel("PC 1")
    a1.set_ylabel("PC 2")
    t = np.linspace(0, 2 * np.pi, 200)
    a2.plot(np.cos(t), np.sin(t), color="grey", lw=0.8)
    for v in VALUES:
        a2.scatter(np.cos(ANGLES[v]), np.sin(ANGLES[v]), color="C1")
        a2.annotate(v, (np.cos(ANGLES[v]), np.sin(ANGLES[v])), fontsize=8)
    a2.set_title("theoretical circumplex (paper: 2 PCs 72.5%, R² ≈ 0.6–0.7)", fontsize=9)
    a2.set_aspect("equal")
    a2.axis("off")
    return _save(fig, path)


def diversity(div: dict, path: Path) -> Path | None:
    """Distinct-2 and EAD-2 per condition (mean over target values), the paper's Distinct-2 beside ours."""
    agg = div.get("aggregates", {})
    rows = agg.get("rows", {})
    if not rows:
        return None
    names = ["baseline"] + list(rows)
    paper = div.get("settings", {}).get("paper_distinct_2", {})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
    for j, metric in enumerate(("distinct_2", "ead_2")):
        vals = [agg["baseline"][metric]] + [rows[n]["aggregate"][metric]["mean"] for n in rows]
        ax.bar(np.arange(len(names)) + j * 0.27, vals, 0.27, label=metric.replace("_", "-").title())
    xs = [i + 0.54 for i, n in enumerate(names) if n in paper]
    if xs:
        ax.bar(xs, [paper[n] for n in names if n in paper], 0.27, color="white", edgecolor="black", hatch="//",
               label="Distinct-2 (paper, Qwen2.5-7B)")
    ax.set_xticks(np.arange(len(names)) + 0.27, names, rotation=30, ha="right")
    ax.set_ylabel("diversity (higher = more diverse)")
    ax.set_title("lexical diversity by steering condition")
    ax.legend(fontsize=8)
    return _save(fig, path)


def alpha_curve(rows: list[tuple[str, list[float], list[float], list[list[float]]]], path: Path, ylabel: str,
                title: str, baseline: float | None = None) -> Path | None:
    """A metric vs. α per condition family: rows of (label, alphas, means, CIs)."""
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, xs, ys, cis in rows:
        ci = np.array(cis, dtype=float)
        ax.plot(xs, ys, marker="o", label=label, ls="--" if label.startswith("random") else "-")
        ax.fill_between(xs, np.nan_to_num(ci[:, 0]), np.nan_to_num(ci[:, 1]), alpha=0.15)
    if baseline is not None:
        ax.axhline(baseline, color="black", lw=0.8, ls=":", label="baseline")
    ax.set_xlabel("α (× residual norm)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def instruct_curve(res: dict, path: Path) -> Path | None:
    """Prompt-level IF accuracy vs. α for mean_delta and the random control."""
    agg = res.get("aggregates", {})
    fam: dict[str, list] = {}
    for name, a in agg.items():
        if name == "baseline":
            continue
        key = name.split("@")[0]
        fam.setdefault(key, []).append((a["alpha"], a["prompt_level"]["mean"], a["prompt_level"]["ci"]))
    rows = [(k, [p[0] for p in sorted(v)], [p[1] for p in sorted(v)], [p[2] for p in sorted(v)]) for k, v in fam.items()]
    base = agg.get("baseline", {}).get("prompt_level", {}).get("mean")
    return alpha_curve(rows, path, "prompt-level strict accuracy", "instruction following vs. α", base)


def jailbreak_curve(res: dict, path: Path) -> Path | None:
    """Attack success rate (refusal matcher) vs. α: mean_delta, random control, prompted_unique (mean over values)."""
    agg = res.get("aggregates", {})
    fam: dict[str, list] = {}
    for name, a in agg.items():
        if name == "baseline" or (a.get("component") == "prompted_unique" and a.get("value") != "mean over values"):
            continue
        key = name.split("@")[0]
        fam.setdefault(key, []).append((a["alpha"], a["asr_matcher"]["mean"], a["asr_matcher"]["ci"]))
    rows = [(k, [p[0] for p in sorted(v)], [p[1] for p in sorted(v)], [p[2] for p in sorted(v)]) for k, v in fam.items()]
    base = agg.get("baseline", {}).get("asr_matcher", {}).get("mean")
    return alpha_curve(rows, path, "attack success rate (matcher)",
                       "jailbreak compliance vs. α (paper: 13.3% → 97.2% on Llama-3.1-8B)", base)


def pvq_alpha_curves(pvq: dict, path: Path) -> Path | None:
    """Target-value PVQ gain vs. α per component, mean over languages and values (Figures 4–5)."""
    fam: dict[str, list] = {}
    for name, row in pvq.get("rows", {}).items():
        st = pvq.get("settings", {}).get(name, {})
        if "component" in st and "alpha" in st:
            fam.setdefault(st["component"], []).append((st["alpha"], row["mean"]["gain"], row["mean"]["gain_ci"]))
    rows = [(k, [p[0] for p in sorted(v)], [p[1] for p in sorted(v)], [p[2] for p in sorted(v)])
            for k, v in fam.items() if len(v) > 1]
    return alpha_curve(rows, path, "target-value gain (mean over values)",
                       "PVQ gain vs. α (paper: prompted > intrinsic)", 0.0)


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
    return _save(fig, path)
