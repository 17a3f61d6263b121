"""``valuemech monitor``: how strongly a text expresses each value, read off the residual stream.

For every token t of a response, and every value s and component c of ``shared``,
``intrinsic_unique``, ``prompted_unique`` (the run's unit SVD axes at block l, default the middle
block): the projection ``p = h_t · u_{c,s,l}`` of the output of block l (one teacher-forced pass over
the chat prompt + response, left padding, explicit positions). A response's raw score is the mean of
``p`` over its response tokens, the same reading the run's vectors were extracted from.

Scores are centred and scaled by the run's own responses: per (value, component), the token z-score is
``(p - mean) / std`` over every response token of the run's ``responses.jsonl``, and the response
z-score is ``(score - mean) / std`` over the run's per-response scores. 0 means "as in the run's
responses"; +2 means two standard deviations more along the value's axis than they are. These
statistics are computed at monitor time from the stored token ids (one pass over the run's responses
at block l) and kept in ``RUN/monitor/stats-block<l>.json``, reused while it is newer than
``responses.jsonl`` and ``components.safetensors`` and was made from the same model weights.

Inputs are records: ``{"text": ...}`` (the reply to an empty user turn; ``prompt`` / ``query`` /
``system`` give the turn it answers), ``{"response": ...}`` (a run's own ``responses.jsonl`` records
also work: with ``response_token_ids`` they are read as generated), or ``{"messages": [...]}`` (a
conversation; its last assistant message is scored after the rest as context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from valuemech.batching import padded_forward
from valuemech.errors import ValuemechError
from valuemech.hooks import residual_callback
from valuemech.io import atomic_write_json, load_json, read_jsonl
from valuemech.models.loading import LoadedModel
from valuemech.rundir import RunDir
from valuemech.steering import SteeringSource

MONITOR_COMPONENTS = ("shared", "intrinsic_unique", "prompted_unique")
STATS_VERSION = 1


@dataclass
class Axes:
    """The unit directions read at one block: ``names[i] = (value, component)``, ``matrix`` ``[K, hidden]`` float64."""

    layer: int
    names: list[tuple[str, str]]
    matrix: torch.Tensor

    @classmethod
    def from_source(cls, source: SteeringSource, layer: int, values: Iterable[str] | None = None) -> "Axes":
        if source.components is None:
            raise ValuemechError("monitoring needs components.safetensors (run the decompose stage)")
        have = [k.split(".", 1)[1] for k in source.components.tensors if k.startswith("shared.")]
        values = list(values) if values else have
        missing = [v for v in values if v not in have]
        if missing:
            raise ValuemechError(f"no components for value {missing[0]!r} in this run (it has {', '.join(have)})")
        names = [(v, c) for v in values for c in MONITOR_COMPONENTS]
        rows = [source.component(c, v)[layer] for v, c in names]
        rows = [r / r.norm() if r.norm() > 0 else r for r in rows]
        return cls(layer, names, torch.stack(rows))


@dataclass
class Item:
    """One text to monitor: its prompt ids (context, not scored) and the response ids that are scored."""

    id: str
    prompt_ids: list[int]
    response_ids: list[int]
    text: str


@dataclass
class Reading:
    """Raw projections of one item's response tokens, ``proj`` ``[n_tokens, K]`` float64 (order of ``Axes.names``)."""

    item: Item
    proj: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        return self.proj.mean(0)


def to_items(lm: LoadedModel, records: list[dict]) -> list[Item]:
    """Records (module docstring) as token ids; a record with nothing to score is a one-line error."""
    items = []
    for i, r in enumerate(records):
        rid = str(r.get("id", i))
        if "messages" in r:
            msgs = r["messages"]
            if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
                raise ValuemechError(f"record {rid}: 'messages' must end with an assistant message")
            context = lm.tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
            prompt = list(lm.tokenizer(context, add_special_tokens=False)["input_ids"])
            text = str(msgs[-1].get("content", ""))
        else:
            text = r.get("text", r.get("response"))
            if not isinstance(text, str):
                raise ValuemechError(f"record {rid}: needs 'text', 'response' or 'messages'")
            prompt = r.get("prompt_token_ids") or lm.prompt_ids(str(r.get("prompt", r.get("query", ""))),
                                                               r.get("system", r.get("system_prompt")))
        resp = r.get("response_token_ids") if "messages" not in r else None
        resp = list(resp) if resp else lm.tokenizer.encode(text, add_special_tokens=False)
        if not resp:
            raise ValuemechError(f"record {rid}: the text to score is empty")
        items.append(Item(rid, list(prompt), resp, text))
    return items


@torch.no_grad()
def read(lm: LoadedModel, items: list[Item], axes: Axes, batch_size: int = 8,
         progress: bool = False) -> Iterator[Reading]:
    """Projections of every item's response tokens on ``axes`` (batches by length; input order kept)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids) + len(items[i].response_ids))
    out: dict[int, Reading] = {}
    mat = axes.matrix
    bar = tqdm(total=len(items), desc="monitor", disable=not progress)
    for s in range(0, len(order), batch_size):
        batch = [items[i] for i in order[s: s + batch_size]]
        got: dict[str, torch.Tensor] = {}

        def keep(_layer: int, hidden: torch.Tensor) -> None:
            got["p"] = hidden.detach().to("cpu", torch.float64) @ mat.T  # [b, t, K]

        with residual_callback(lm, [axes.layer], keep):
            padded_forward(lm, [it.prompt_ids + it.response_ids for it in batch], logits_to_keep=1)
        for j, it in enumerate(batch):
            out[order[s + j]] = Reading(it, got["p"][j, -len(it.response_ids):].clone())
        bar.update(len(batch))
    bar.close()
    for i in range(len(items)):
        yield out[i]


@dataclass
class Stats:
    """Mean and standard deviation of the projections over a run's responses, per axis (``Axes.names``)."""

    layer: int
    names: list[tuple[str, str]]
    token_mean: torch.Tensor
    token_std: torch.Tensor
    response_mean: torch.Tensor
    response_std: torch.Tensor
    n_responses: int
    n_tokens: int
    meta: dict = field(default_factory=dict)

    def token_z(self, proj: torch.Tensor) -> torch.Tensor:
        return (proj - self.token_mean) / self.token_std.clamp_min(1e-12)

    def response_z(self, score: torch.Tensor) -> torch.Tensor:
        return (score - self.response_mean) / self.response_std.clamp_min(1e-12)

    def to_dict(self) -> dict:
        per: dict = {}
        for k, (v, c) in enumerate(self.names):
            per.setdefault(v, {})[c] = {"token_mean": float(self.token_mean[k]), "token_std": float(self.token_std[k]),
                                        "response_mean": float(self.response_mean[k]),
                                        "response_std": float(self.response_std[k])}
        return {"version": STATS_VERSION, "block": self.layer, "n_responses": self.n_responses,
                "n_tokens": self.n_tokens, **self.meta, "per_value": per}

    @classmethod
    def from_dict(cls, data: dict, names: list[tuple[str, str]]) -> "Stats":
        per = data["per_value"]
        col = lambda key: torch.tensor([per[v][c][key] for v, c in names], dtype=torch.float64)  # noqa: E731
        return cls(int(data["block"]), names, col("token_mean"), col("token_std"), col("response_mean"),
                   col("response_std"), int(data["n_responses"]), int(data["n_tokens"]),
                   {k: data[k] for k in ("weights_sha256", "limit") if k in data})


def compute_stats(readings: Iterable[Reading], axes: Axes, meta: dict | None = None) -> Stats:
    """Token-level (pooled) and response-level mean and standard deviation of the projections, float64."""
    k = len(axes.names)
    s1, s2, n = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64), 0
    scores = []
    for r in readings:
        s1 += r.proj.sum(0)
        s2 += (r.proj ** 2).sum(0)
        n += r.proj.shape[0]
        scores.append(r.score)
    if len(scores) < 2:
        raise ValuemechError("the run needs at least two non-empty responses for monitoring statistics")
    mean = s1 / n
    std = ((s2 / n - mean ** 2).clamp_min(0) * n / max(n - 1, 1)).sqrt()
    sc = torch.stack(scores)
    return Stats(axes.layer, axes.names, mean, std, sc.mean(0), sc.std(0), len(scores), n, meta or {})


def run_stats(lm: LoadedModel, run: RunDir, source: SteeringSource, axes: Axes, limit: int | None = None,
              batch_size: int = 8, progress: bool = False) -> Stats:
    """The run's response statistics at ``axes.layer``: read from ``RUN/monitor/stats-block<l>.json`` when
    it is current (newer than responses and components, same weights and limit), else computed for every
    value of the run and stored."""
    path = run.monitor_stats(axes.layer)
    want = {"weights_sha256": lm.weights_sha256, "limit": limit}
    if run.newer(path, run.responses) and run.newer(path, run.components):
        data = load_json(path)
        if data.get("version") == STATS_VERSION and all(data.get(k) == x for k, x in want.items()) \
                and {v for v, _ in axes.names} <= set(data.get("per_value", {})):
            return Stats.from_dict(data, axes.names)
    records = [r for r in run.load_responses() if r.get("response_token_ids")]
    records = records[:limit] if limit else records
    every = Axes.from_source(source, axes.layer)
    full = compute_stats(read(lm, to_items(lm, records), every, batch_size, progress), every, want).to_dict()
    atomic_write_json(path, full)
    return Stats.from_dict(full, axes.names)


@dataclass
class Scored:
    """One monitored response: its JSONL row (raw and z-scores per value and component), its tokens and
    their z-scores ``[n_tokens, K]`` (order of ``names``)."""

    row: dict
    tokens: list[str]
    token_z: torch.Tensor
    names: list[tuple[str, str]]


def score(lm: LoadedModel, readings: Iterable[Reading], stats: Stats) -> list[Scored]:
    """Raw mean projections and z-scores ``{value: {component: x}}`` per response; token z-scores."""
    out = []
    for r in readings:
        row = {"id": r.item.id, "text": r.item.text, "block": stats.layer, "n_tokens": int(r.proj.shape[0]),
               "z": _nest(stats.names, stats.response_z(r.score)), "raw": _nest(stats.names, r.score)}
        tokens = [lm.tokenizer.decode([t]) for t in r.item.response_ids]
        out.append(Scored(row, tokens, stats.token_z(r.proj), stats.names))
    return out


def _nest(names: list[tuple[str, str]], t: torch.Tensor) -> dict:
    out: dict = {}
    for k, (v, c) in enumerate(names):
        out.setdefault(v, {})[c] = float(t[k])
    return out


def top_responses(rows: list[dict], value: str, component: str = "shared", n: int = 10) -> list[dict]:
    """The ``n`` rows with the largest z-score of ``value`` on ``component`` (NaN last)."""
    def key(r: dict) -> float:
        z = r["z"][value][component]
        return math.inf if math.isnan(z) else -z

    return sorted(rows, key=key)[:n]


def read_input(path: Path) -> list[dict]:
    """A JSONL file of records (module docstring)."""
    rows = read_jsonl(Path(path))
    if not rows:
        raise ValuemechError(f"{path}: no records")
    return rows


def monitor(lm: LoadedModel, run: RunDir, source: SteeringSource, records: list[dict], layer: int | None = None,
            values: list[str] | None = None, batch_size: int = 8, stats_limit: int | None = None,
            progress: bool = False) -> tuple[list[Scored], Stats]:
    """Score ``records`` against the run's statistics at block ``layer`` (default the middle block)."""
    layer = lm.n_layers // 2 if layer is None else lm.arch.check_layer(layer)
    axes = Axes.from_source(source, layer, values)
    items = to_items(lm, records)
    stats = run_stats(lm, run, source, axes, stats_limit, batch_size, progress)
    return score(lm, read(lm, items, axes, batch_size, progress), stats), stats


def validate(lm: LoadedModel, run: RunDir, layer: int | None = None, holdout: float = 0.5, seed: int = 0,
             n_boot: int = 1000, batch_size: int = 8, progress: bool = False) -> dict:
    """How well the projection predicts the judge's label on responses the vectors never saw.

    The run's labelled responses are split by query (a seeded draw of ``holdout`` of the query ids is
    held back, so no query is on both sides); vectors are extracted from the rest with the run's judge
    labels and ``extract`` settings and decomposed; each held-back response's mean projection on every
    value's axes is scored against its label by ROC-AUC (95% bootstrap interval over held-back
    responses), per value and component, over both conditions together and per condition.
    """
    import random

    from valuemech.decompose import decompose
    from valuemech.vectors import extract_vectors

    layer = lm.n_layers // 2 if layer is None else lm.arch.check_layer(layer)
    cfg = run.load_config()
    labels, judge = run.load_labels_and_judge()
    records = [r for r in run.load_responses() if r.get("response_token_ids") and r["id"] in labels]
    queries = sorted({str(r["query_id"]) for r in records})
    held = set(random.Random(seed).sample(queries, round(len(queries) * holdout)))
    build = [r for r in records if str(r["query_id"]) not in held]
    test = [r for r in records if str(r["query_id"]) in held]
    if not build or len(test) < 2:
        raise ValuemechError(f"too few responses to hold back {holdout:g} of {len(queries)} queries")
    vv = extract_vectors(lm, build, labels, judge or cfg.judge.name, cfg.extract.batch_size, cfg.extract.min_group,
                         progress)
    comps, _ = decompose(vv)
    axes = Axes.from_source(SteeringSource(vv, comps), layer)
    score = torch.stack([r.score for r in read(lm, to_items(lm, test), axes, batch_size, progress)]).numpy()
    out: dict = {"block": layer, "holdout": holdout, "seed": seed, "judge": judge, "n_queries": len(queries),
                 "n_held_queries": len(held), "n_build": len(build), "n_test": len(test),
                 "min_group": cfg.extract.min_group, "n_boot": n_boot, "held_queries": sorted(held), "per_value": {}}
    for k, (v, c) in enumerate(axes.names):
        rows = {}
        for cond in ("all", "intrinsic", "prompted"):
            idx = [i for i, r in enumerate(test) if labels[r["id"]].get(v) is not None
                   and (cond == "all" or r["condition"] == cond)]
            y = np.array([bool(labels[test[i]["id"]][v]) for i in idx], dtype=bool)
            auc, ci = auc_interval(y, score[idx, k], n_boot, seed)
            rows[cond] = {"auc": auc, "ci": ci, "n": len(idx), "positives": int(y.sum())}
        out["per_value"].setdefault(v, {})[c] = rows
    return out


def auc_interval(y, s, n_boot: int = 1000, seed: int = 0) -> tuple[float, list[float]]:
    """ROC-AUC (Mann-Whitney, ties count half) and its 95% percentile bootstrap interval over items; resamples
    with one class are left out; NaN without both classes. Each resample's AUC is computed from the pairwise
    comparison matrix weighted by how often each item was drawn."""
    y, s = np.asarray(y, dtype=bool), np.asarray(s, dtype=np.float64)
    if y.all() or not y.any():
        return float("nan"), [float("nan"), float("nan")]
    pos, neg = s[y], s[~y]
    g = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = float(g.mean())
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(s), (n_boot, len(s)))
    counts = np.zeros((n_boot, len(s)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    wp, wn = counts[:, y], counts[:, ~y]
    den = wp.sum(1) * wn.sum(1)
    ok = den > 0
    boots = ((wp @ g) * wn).sum(1)[ok] / den[ok]
    if not len(boots):
        return auc, [float("nan"), float("nan")]
    return auc, [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def validation_markdown(result: dict, condition: str = "all") -> str:
    """Per value: ROC-AUC [95% CI] of each component's projection against the judge's label, with n and positives."""
    head = "| value | " + " | ".join(f"AUC {c}" for c in MONITOR_COMPONENTS) + " | n (positives) |"
    lines = [head, "|---|" + "---|" * (len(MONITOR_COMPONENTS) + 1)]
    fmt = lambda a: "-" if a["auc"] != a["auc"] else f"{a['auc']:.2f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]"  # noqa: E731
    for v, per in result["per_value"].items():
        first = per[MONITOR_COMPONENTS[0]][condition]
        lines.append(f"| {v} | " + " | ".join(fmt(per[c][condition]) for c in MONITOR_COMPONENTS)
                     + f" | {first['n']} ({first['positives']}) |")
    return "\n".join(lines)
