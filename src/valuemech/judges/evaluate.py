"""Judge agreement with gold labels: per-value precision, recall, F1, ROC-AUC with bootstrap intervals.

The built-in validation set (``data/builtin/judge_validation.jsonl``, written for valuemech) has
gold 0/1 labels for all 10 values. It is split deterministically: items whose id number is a
multiple of 3 form the *calibration* split (used only to set thresholds, e.g. the embedding
judge's), the others the *test* split on which agreement is reported.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Sequence

import numpy as np

from valuemech.errors import ValuemechError
from valuemech.judges.base import Judge
from valuemech.values import VALUES


def load_validation(split: str = "test") -> list[dict]:
    """The labelled validation items of a split: ``calib``, ``test`` or ``all``."""
    raw = resources.files("valuemech.data").joinpath("builtin/judge_validation.jsonl").read_text("utf-8")
    items = [json.loads(line) for line in raw.splitlines() if line.strip()]
    if split == "all":
        return items
    if split not in ("calib", "test"):
        raise ValuemechError(f"unknown split {split!r}; choose calib, test or all")
    calib = lambda it: int(it["id"].lstrip("jv")) % 3 == 0  # noqa: E731
    return [it for it in items if calib(it) == (split == "calib")]


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties; NaN if one class."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks of ``a``, ties sharing the mean of their positions."""
    _, inverse, counts = np.unique(np.asarray(a, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # average rank of each group of tied scores: (first + last) / 2, 1-based
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 (0 where undefined)."""
    tp = float((y & pred).sum())
    fp = float((~y & pred).sum())
    fn = float((y & ~pred).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _metrics(y, pred, score) -> dict[str, float]:
    p, r, f = prf(y, pred)
    return {"precision": p, "recall": r, "f1": f, "auc": roc_auc(y, score)}


def agreement(gold: Sequence[dict[str, int]], expressed: Sequence[dict[str, bool | None]],
              scores: Sequence[dict[str, float]], n_boot: int = 1000, seed: int = 0,
              values: Sequence[str] = VALUES) -> dict:
    """Per-value and macro metrics with 95% percentile bootstrap intervals (resampling texts).

    Items the judge left undecided (None) are excluded for that value and counted.
    """
    rng = np.random.default_rng(seed)
    out: dict = {"per_value": {}, "n": len(gold)}
    boot_macro: dict[str, list] = {k: [] for k in ("precision", "recall", "f1", "auc")}
    idx_boot = [rng.integers(0, len(gold), len(gold)) for _ in range(n_boot)]
    per_boot: list[dict[str, dict[str, float]]] = [dict() for _ in range(n_boot)]
    for v in values:
        keep = [i for i in range(len(gold)) if expressed[i].get(v) is not None]
        y = np.array([bool(gold[i]["labels"][v]) if "labels" in gold[i] else bool(gold[i][v]) for i in keep])
        pred = np.array([bool(expressed[i][v]) for i in keep])
        sc = np.array([scores[i][v] if scores[i].get(v) is not None and not math.isnan(scores[i][v])
                       else float(expressed[i][v]) for i in keep])
        point = _metrics(y, pred, sc)
        pos = {i: k for k, i in enumerate(keep)}
        samples = {k: [] for k in point}
        for b, idx in enumerate(idx_boot):
            sel = np.array([pos[i] for i in idx if i in pos], dtype=int)
            m = _metrics(y[sel], pred[sel], sc[sel]) if len(sel) else {k: float("nan") for k in point}
            per_boot[b][v] = m
            for k in point:
                samples[k].append(m[k])
        out["per_value"][v] = {
            **{k: point[k] for k in point},
            **{f"{k}_ci": _ci(samples[k]) for k in point},
            "n": len(keep), "positives": int(y.sum()), "undecided": len(gold) - len(keep),
        }
    macro = {k: _nanmean([out["per_value"][v][k] for v in values]) for k in boot_macro}
    for b in range(n_boot):
        for k in boot_macro:
            boot_macro[k].append(_nanmean([per_boot[b][v][k] for v in values]))
    out["macro"] = {**macro, **{f"{k}_ci": _ci(boot_macro[k]) for k in boot_macro}}
    return out


def _nanmean(xs: list[float]) -> float:
    arr = np.array([x for x in xs if not math.isnan(x)])
    return float(arr.mean()) if len(arr) else float("nan")


def _ci(samples: list[float]) -> list[float]:
    arr = np.array([s for s in samples if not math.isnan(s)])
    if not len(arr):
        return [float("nan"), float("nan")]
    return [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))]


def evaluate_judge(judge: Judge, split: str = "test", n_boot: int = 1000, seed: int = 0) -> dict:
    """Score the validation split with ``judge`` and compare with the gold labels."""
    items = load_validation(split)
    res = judge.score([it["text"] for it in items], VALUES, [it.get("lang", "en") for it in items])
    report = agreement(items, res.expressed, res.scores, n_boot=n_boot, seed=seed)
    failures: dict[str, int] = {}
    for f in res.failures or []:
        for status in f.values():
            kind = status.split(":")[0]
            failures[kind] = failures.get(kind, 0) + 1
    report.update({"judge": judge.name, "split": split, "n_boot": n_boot, "failures": failures,
                   "languages": sorted({it.get("lang", "en") for it in items})})
    return report


def calibrate_thresholds(scores: Sequence[dict[str, float]], gold: Sequence[dict],
                         values: Sequence[str] = VALUES) -> dict[str, float]:
    """Per value, the score threshold (among observed scores) maximising F1 on ``gold``."""
    out = {}
    for v in values:
        s = np.array([sc[v] for sc in scores], dtype=np.float64)
        y = np.array([bool(g["labels"][v]) for g in gold])
        best, best_f = float(np.max(s)) + 1e-9, -1.0
        for t in np.unique(s):
            f = prf(y, s >= t)[2]
            if f > best_f:
                best, best_f = float(t), f
        out[v] = best
    return out


def with_ci(m: dict, k: str, digits: int = 2) -> str:
    """``m[k]`` and its interval ``m[k + "_ci"]`` as "point [low, high]" (the point to ``digits`` places)."""
    return f"{m[k]:.{digits}f} [{m[k + '_ci'][0]:.2f}, {m[k + '_ci'][1]:.2f}]"


def reports_markdown(reports: list[dict]) -> str:
    """Markdown tables (macro, then per-value F1 / ROC-AUC) of ``judges evaluate --out`` reports."""
    try:
        lines = ["| judge | n | precision | recall | F1 | ROC-AUC | undecided |", "|---|---|---|---|---|---|---|"]
        for r in reports:
            m = r["macro"]
            und = sum(r.get("failures", {}).values())
            lines.append(f"| `{r['judge']}` | {r['n']} | {with_ci(m, 'precision')} | {with_ci(m, 'recall')} | {with_ci(m, 'f1')} | "
                         f"{with_ci(m, 'auc')} | {und} |")
        lines.append("")
        short = lambda name: name.split("(")[0] + (f" ({name.split('(')[1].split(':')[0]})" if name.startswith("ensemble") else "")  # noqa: E731
        lines.append("| value | " + " | ".join(f"F1 / AUC: {short(r['judge'])}" for r in reports) + " |")
        lines.append("|---|" + "---|" * len(reports))
        for v in VALUES:
            cells = [f"{r['per_value'][v]['f1']:.2f} / {r['per_value'][v]['auc']:.2f}" for r in reports]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    except (KeyError, TypeError, IndexError) as exc:
        raise ValuemechError(f"not a `judges evaluate --out` report ({exc.__class__.__name__}: {exc})") from None
    return "\n".join(lines)
