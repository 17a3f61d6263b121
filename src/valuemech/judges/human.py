"""Judge agreement with human data: Value Portrait responses, tied to each value by a survey correlation.

A response is *tied* to value v when the correlation r_v between endorsing it and holding v (in the
benchmark's human survey) reaches ``threshold`` (default 0.3). Per value: ROC-AUC of the judge's
score for tied vs. not tied, and Spearman's rho between the score and r_v over all responses. Macro =
mean over values. Intervals: 95% percentile bootstrap over *queries* (the five responses to one
query share it, so they are resampled together).

Note the construct: the judge is asked whether a response *expresses* a value; the survey says
whether people who *hold* the value *endorse* the response. The two agree when a response states
its reasons, and differ when a value shows only in what a response recommends.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from valuemech.data.value_portrait import PortraitResponse
from valuemech.errors import ValuemechError
from valuemech.judges import MODEL_JUDGES
from valuemech.judges.base import Judge
from valuemech.judges.evaluate import _ci, _nanmean, average_ranks, roc_auc, with_ci
from valuemech.values import VALUES


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson on average ranks); NaN when either side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _value_metrics(r: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    return {"auc": roc_auc(r >= threshold, s), "rho": spearman(s, r)}


def portrait_agreement(responses: Sequence[PortraitResponse], scores: Sequence[dict[str, float | None]],
                       threshold: float = 0.3, n_boot: int = 1000, seed: int = 0,
                       values: Sequence[str] = VALUES) -> dict:
    """Per-value and macro AUC (tied = r >= ``threshold``) and Spearman rho, with query-bootstrap intervals.

    ``scores[i][v]`` is the judge's score of response i for value v; None or NaN (undecided) leaves
    the response out for that value and is counted.
    """
    if len(responses) != len(scores):
        raise ValuemechError(f"{len(scores)} scores for {len(responses)} responses")
    missing = sorted({v for r in responses for v in values if v not in r.correlations})
    if missing:
        raise ValuemechError(f"Value Portrait responses without a correlation for {', '.join(missing)}")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(responses):
        groups.setdefault(r.query_id, []).append(i)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    boots = [np.concatenate([groups[keys[k]] for k in rng.integers(0, len(keys), len(keys))])
             for _ in range(n_boot)]
    out: dict = {"per_value": {}, "n": len(responses), "queries": len(keys), "threshold": threshold,
                 "n_boot": n_boot}
    boot_macro: dict[str, list[list[float]]] = {"auc": [[] for _ in range(n_boot)], "rho": [[] for _ in range(n_boot)]}
    for v in values:
        s_all = np.array([_score(sc.get(v)) for sc in scores], dtype=np.float64)
        r_all = np.array([r.correlations[v] for r in responses], dtype=np.float64)
        keep = ~np.isnan(s_all)
        point = _value_metrics(r_all[keep], s_all[keep], threshold)
        samples: dict[str, list[float]] = {"auc": [], "rho": []}
        for b, idx in enumerate(boots):
            idx = idx[keep[idx]]
            m = _value_metrics(r_all[idx], s_all[idx], threshold)
            for k in samples:
                samples[k].append(m[k])
                boot_macro[k][b].append(m[k])
        out["per_value"][v] = {**point, "auc_ci": _ci(samples["auc"]), "rho_ci": _ci(samples["rho"]),
                               "n": int(keep.sum()), "tied": int((r_all[keep] >= threshold).sum()),
                               "undecided": int((~keep).sum())}
    out["macro"] = {k: _nanmean([out["per_value"][v][k] for v in values]) for k in ("auc", "rho")}
    out["macro"].update({f"{k}_ci": _ci([_nanmean(b) for b in boot_macro[k]]) for k in ("auc", "rho")})
    return out


def _none_if_nan(x) -> float | None:
    return None if x is None or x != x else float(x)


def _score(x) -> float:
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def evaluate_on_portrait(judge: Judge, responses: Sequence[PortraitResponse], threshold: float = 0.3,
                         n_boot: int = 1000, seed: int = 0, use_query: bool = True) -> dict:
    """Score ``responses`` with ``judge`` (each with its query unless ``use_query`` is False) and
    compare with the survey correlations (:func:`portrait_agreement`); the report keeps every score
    (``scores[response id][value]``) so that judges can be compared or combined afterwards."""
    texts = [r.text for r in responses]
    queries = [r.query if use_query else "" for r in responses]
    res = judge.score(texts, VALUES, ["en"] * len(texts), queries)
    report = portrait_agreement(responses, res.scores, threshold, n_boot, seed)
    report.update({"judge": judge.name, "use_query": use_query,
                   "scores": {r.id: {v: _none_if_nan(s.get(v)) for v in VALUES} for r, s in zip(responses, res.scores)}})
    return report


def short_name(judge: str) -> str:
    """A column label for a judge name: the kind, and for model judges the model and the prompt."""
    kind = judge.split("(")[0]
    if kind not in MODEL_JUDGES or not judge.endswith(")"):
        return kind
    parts = judge[len(kind) + 1: -1].split(",")
    model = parts[0].split(" ")[0].split("/")[-1]
    return " ".join([kind, model, *[p for p in parts[1:] if not p.startswith("t=")]])


def portrait_markdown(reports: list[dict]) -> str:
    """Markdown tables of Value Portrait agreement reports: macro AUC and rho, then per-value AUC."""
    try:
        lines = ["| judge | n | mean AUC (tied: r ≥ t) | mean Spearman ρ |", "|---|---|---|---|"]
        for r in reports:
            lines.append(f"| `{r['judge']}` | {r['n']} ({r['queries']} queries, t={r['threshold']:g}) | "
                         f"{with_ci(r['macro'], 'auc', 3)} | {with_ci(r['macro'], 'rho', 3)} |")
        lines += ["", "| value | tied | " + " | ".join(f"AUC: {short_name(r['judge'])}" for r in reports) + " |",
                  "|---|---|" + "---|" * len(reports)]
        for v in VALUES:
            cells = [f"{r['per_value'][v]['auc']:.2f}" for r in reports]
            lines.append(f"| {v} | {reports[0]['per_value'][v]['tied']} | " + " | ".join(cells) + " |")
    except (KeyError, TypeError, IndexError) as exc:
        raise ValuemechError(f"not a `judges evaluate --value-portrait --out` report ({exc.__class__.__name__}: {exc})") from None
    return "\n".join(lines)
