"""The Schwartz circumplex in a model's value axes: PCA, Procrustes fit to the circle, permutation test.

For one block, the 10 unit ``u_shared`` axes (rows) are centred and projected on their first two
principal components. The 2-D points are fitted to the theoretical circle (values evenly spaced in
circumplex order, :data:`valuemech.values.ANGLES`) by orthogonal Procrustes with uniform scaling
(rotation/reflection, scale and translation); R^2 = 1 - SS_res / SS_tot of the circle points.
The p-value is the share of random relabellings of the points (permutations) whose fit is at least
as good as the observed one. The difference axes (``intrinsic_unique``) are fitted alongside as a
control. The evaluation reads only ``components.safetensors``: it needs no model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from valuemech.errors import ValuemechError
from valuemech.config import N_BOOT
from valuemech.evals.common import opt
from valuemech.plots import plt, save
from valuemech.rundir import RunDir
from valuemech.values import ANGLES, VALUES


@dataclass
class CircumplexFit:
    values: list[str]
    coords: np.ndarray  # [n, 2] PCA coordinates
    explained_2pc: float  # share of variance of the centred axes explained by 2 PCs
    r2: float
    p_value: float
    n_permutations: int


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Coordinates on the first two principal components and the variance share they explain."""
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    var = s ** 2
    return u[:, :2] * s[:2], float(var[:2].sum() / var.sum()) if var.sum() > 0 else 0.0


def procrustes_r2(points: np.ndarray, target: np.ndarray) -> float:
    """R^2 of the best similarity transform (rotation/reflection, scale, shift) of ``points`` onto ``target``."""
    p = points - points.mean(axis=0)
    t = target - target.mean(axis=0)
    ss_tot = float((t ** 2).sum())
    if ss_tot == 0 or float((p ** 2).sum()) == 0:
        return 0.0
    u, s, vt = np.linalg.svd(p.T @ t)
    rot = u @ vt
    scale = s.sum() / float((p ** 2).sum())
    resid = t - scale * p @ rot
    return 1.0 - float((resid ** 2).sum()) / ss_tot


def circle(values: list[str]) -> np.ndarray:
    return np.array([[math.cos(ANGLES[v]), math.sin(ANGLES[v])] for v in values])


def fit_circumplex(axes: dict[str, np.ndarray], n_permutations: int = 1000, seed: int = 0) -> CircumplexFit:
    """PCA + Procrustes fit of per-value axes (``{value: [d]}``) to the theoretical circle."""
    values = [v for v in VALUES if v in axes]
    if len(values) < 4:
        raise ValuemechError(f"the circumplex fit needs at least 4 values with axes, got {len(values)}")
    x = np.stack([np.asarray(axes[v], dtype=np.float64) for v in values])
    coords, explained = pca_2d(x)
    target = circle(values)
    r2 = procrustes_r2(coords, target)
    rng = np.random.default_rng(seed)
    hits = sum(procrustes_r2(coords[rng.permutation(len(values))], target) >= r2 - 1e-12
               for _ in range(n_permutations))
    return CircumplexFit(values, coords, explained, r2, (hits + 1) / (n_permutations + 1), n_permutations)


def cosine_matrix(axes: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Value-by-value cosine similarity of the axes."""
    values = [v for v in VALUES if v in axes]
    x = np.stack([np.asarray(axes[v], dtype=np.float64) for v in values])
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-300, None)
    return values, x @ x.T


# --------------------------------------------------------------------------------------------------
# The evaluation (``valuemech eval circumplex``)
# --------------------------------------------------------------------------------------------------

@dataclass
class Options:
    """Settings of the circumplex fit."""

    layer: int | None = opt(help="Block (default: the middle block).")
    n_permutations: int = opt(1000, help="Random relabellings for the permutation p-value.", allowed=N_BOOT)


def needs_model(opts: Options) -> bool:
    return False


def evaluate(lm, source, opts: Options, run: RunDir | None = None, neurons: dict | None = None) -> dict:
    """Fit the shared axes and, as a control, the difference axes at one block (no model needed)."""
    comps = source.components
    if comps is None:
        raise ValuemechError("this run has no components.safetensors (run the decompose stage)")
    n_layers = int(comps.metadata["n_layers"])
    layer = n_layers // 2 if opts.layer is None else opts.layer
    if not 0 <= layer < n_layers:
        raise ValuemechError(f"layer {layer} out of range 0..{n_layers - 1}")
    out: dict = {"eval": "circumplex", "settings": {"layer": layer, "n_permutations": opts.n_permutations},
                 "layer": layer}
    for name, comp in (("shared", "shared"), ("difference (control)", "intrinsic_unique")):
        axes = {k.split(".", 1)[1]: t[layer].numpy() for k, t in comps.tensors.items() if k.startswith(comp + ".")}
        fit = fit_circumplex(axes, opts.n_permutations)
        vals, cos = cosine_matrix(axes)
        out[name] = {"values": fit.values, "explained_2pc": fit.explained_2pc, "r2": fit.r2,
                     "p_value": fit.p_value, "coords": fit.coords.tolist(), "cosine_matrix": cos.tolist()}
    out["items"] = [{"axes": name, "value": v, "pc1": x, "pc2": y} for name in ("shared", "difference (control)")
                    for v, (x, y) in zip(out[name]["values"], out[name]["coords"])]
    out["aggregates"] = {name: {k: out[name][k] for k in ("explained_2pc", "r2", "p_value")}
                         for name in ("shared", "difference (control)")}
    return out


def markdown(cx: dict) -> str:
    out = [f"### Circumplex (block {cx['layer']})", "", "| axes | 2 PCs explain | Procrustes R² | permutation p |",
           "|---|---|---|---|"]
    for name in ("shared", "difference (control)"):
        c = cx[name]
        out.append(f"| {name} | {c['explained_2pc']:.3f} | {c['r2']:.3f} | {c['p_value']:.3f} |")
    return "\n".join(out)


def summary(cx: dict) -> str:
    return "\n".join(f"{name} axes @ block {cx['layer']}: 2 PCs explain {cx[name]['explained_2pc']:.3f}; "
                     f"Procrustes R^2 {cx[name]['r2']:.3f}, permutation p = {cx[name]['p_value']:.3f}"
                     for name in ("shared", "difference (control)"))


def _chart(cx: dict, path: Path) -> Path | None:
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
    return save(fig, path)


def figures(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png``: the u_shared axes' 2-D PCA beside the theoretical circle."""
    return [_chart(result, out_dir / f"{stem}.png")]
