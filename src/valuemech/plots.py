"""Matplotlib set-up shared by every figure (Agg backend, one save helper, the α-curve plot).

Figures belong to the module whose artifact they draw (each evaluation's ``figures``, the report's
own in :mod:`valuemech.report.figures`); this module holds only what they share.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from valuemech.io import atomic_write_bytes  # noqa: E402

CLASS_COLOURS = {"shared": "#4C72B0", "intrinsic": "#55A868", "prompted": "#C44E52", "none": "#BBBBBB"}


def save(fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi, atomically: never a truncated figure) and close ``fig``; return ``path``."""
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, dpi=110, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def curve_rows(families: dict[str, list[tuple[float, float, list[float]]]], min_points: int = 1
               ) -> list[tuple[str, list[float], list[float], list[list[float]]]]:
    """``{label: [(α, mean, ci), ...]}`` -> rows of :func:`alpha_curve`, each sorted by α."""
    return [(k, [p[0] for p in sorted(v)], [p[1] for p in sorted(v)], [p[2] for p in sorted(v)])
            for k, v in families.items() if len(v) >= min_points]


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
    return save(fig, path)
