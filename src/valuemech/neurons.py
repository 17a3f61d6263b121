"""Value neurons: MLP neurons whose output weights lie in span(v_int, v_prompt).

Neuron i of block l writes ``act_i * w_i`` into the residual stream, ``w_i = down_proj.weight[:, i]``.
Per value and block, ``w_i`` is projected onto the plane spanned by ``u_shared`` and ``u_int`` (the
orthonormal SVD axes of ``[v_int, v_prompt]``); neurons are ranked by the projection's norm and the
top ``k_percent`` kept. A kept neuron is assigned to the nearest of ``u_shared``, ``u_int``,
``u_prompt = -u_int`` by the angle of its projection, when that angle is below ``max_angle``
degrees (30 by default), else ``none``. The sign of ``w_i`` is kept as is: a neuron writing along
``-u_shared`` is not shared.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from valuemech.decompose import Components
from valuemech.errors import ValuemechError
from valuemech.batching import left_pad, padded_positions
from valuemech.hooks import read_neurons
from valuemech.models.loading import LoadedModel

CLASSES = ("shared", "intrinsic", "prompted", "none")
#: The classes a neuron can be steered by (kept neurons of no class are "none").
NEURON_CLASSES = CLASSES[:3]


@dataclass
class NeuronInfo:
    """One kept neuron of one value and block."""

    layer: int
    neuron: int
    proj_norm: float
    angle_shared: float  # degrees between the projection and u_shared
    angle_intrinsic: float
    angle_prompted: float
    cls: str


def classify_layer(w_out: torch.Tensor, u_shared: torch.Tensor, u_int: torch.Tensor, layer: int,
                   k_percent: float = 1.0, max_angle: float = 30.0, rank_by: str = "norm") -> list[NeuronInfo]:
    """Rank the columns of ``w_out`` ``[d, d_mlp]`` by projection onto span(u_shared, u_int); classify the top k%.

    ``rank_by="norm"`` ranks by the projection's norm (the paper's ranking; favours neurons with large
    output weights, often generic ones); ``"cosine"`` by the projection's norm over the weight's
    norm (how much of the neuron's output lies in the plane).
    """
    if rank_by not in ("norm", "cosine"):
        raise ValuemechError(f"rank_by must be 'norm' or 'cosine', not {rank_by!r}")
    w = w_out.detach().to("cpu", torch.float64)
    x = u_shared.double() @ w  # [d_mlp]
    y = u_int.double() @ w
    norm = torch.sqrt(x ** 2 + y ** 2)
    key = norm if rank_by == "norm" else norm / w.norm(dim=0).clamp_min(1e-300)
    n_keep = max(1, int(math.ceil(w.shape[1] * k_percent / 100.0)))
    top = torch.topk(key, n_keep).indices.tolist()
    out = []
    for i in top:
        n = float(norm[i])
        if n == 0.0:
            angles = (90.0, 90.0, 90.0)
        else:
            cx, cy = float(x[i]) / n, float(y[i]) / n
            angles = tuple(math.degrees(math.acos(max(-1.0, min(1.0, c)))) for c in (cx, cy, -cy))
        best = min(range(3), key=lambda j: angles[j])
        cls = ("shared", "intrinsic", "prompted")[best] if angles[best] < max_angle else "none"
        out.append(NeuronInfo(layer, i, n, *angles, cls))
    return out


def find_value_neurons(lm: LoadedModel, comps: Components, values: list[str] | None = None,
                       k_percent: float = 1.0, max_angle: float = 30.0,
                       rank_by: str = "norm") -> dict[str, list[NeuronInfo]]:
    """Kept and classified neurons per value over every block."""
    if not 0 < k_percent <= 100:
        raise ValuemechError("k_percent must be in (0, 100]")
    values = values or [k.split(".", 1)[1] for k in comps.tensors if k.startswith("shared.")]
    out = {}
    for v in values:
        u_s, u_i = comps.get("shared", v), comps.get("intrinsic_unique", v)
        kept = []
        for layer, down in enumerate(lm.arch.down_projs):
            kept += classify_layer(down.weight, u_s[layer], u_i[layer], layer, k_percent, max_angle, rank_by)
        out[v] = kept
    return out


def counts_per_layer(neurons: list[NeuronInfo], n_layers: int) -> dict[str, list[int]]:
    """``{class: [count in block 0, 1, ...]}`` (the paper's Figure 3)."""
    counts = {c: [0] * n_layers for c in CLASSES}
    for n in neurons:
        counts[n.cls][n.layer] += 1
    return counts


def overlap(neurons: dict[str, list[NeuronInfo]]) -> dict:
    """How often the same (block, neuron) is kept for several values, per class."""
    seen: Counter = Counter()
    for kept in neurons.values():
        for n in kept:
            if n.cls != "none":
                seen[n.layer, n.neuron, n.cls] += 1
    multi = Counter(c for (_, _, c), k in seen.items() if k > 1)
    return {"neurons_in_several_values": dict(multi), "distinct_classified": len(seen)}


@torch.no_grad()
def top_activations(lm: LoadedModel, records: list[dict], targets: list[tuple[int, int]], top_n: int = 5,
                    context: int = 6, batch_size: int = 8, progress: bool = True) -> dict[tuple[int, int], list[dict]]:
    """For each (block, neuron), the ``top_n`` response tokens with the highest activation, with context."""
    by_layer: dict[int, list[int]] = {}
    for layer, idx in targets:
        by_layer.setdefault(layer, []).append(idx)
    heaps: dict[tuple[int, int], list] = {t: [] for t in targets}
    recs = [r for r in records if r.get("response_token_ids")]
    tok = lm.tokenizer
    for s in tqdm(range(0, len(recs), batch_size), desc="neuron tokens", disable=not progress):
        batch = recs[s: s + batch_size]
        seqs = [r["prompt_token_ids"] + r["response_token_ids"] for r in batch]
        ids, mask = left_pad(seqs, tok.pad_token_id)
        pos = padded_positions(mask)
        dev = lm.device
        with read_neurons(lm, sorted(by_layer)) as acts:
            lm.arch.decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                            use_cache=False)
        width = ids.shape[1]
        for b, r in enumerate(batch):
            start = width - len(r["response_token_ids"])
            for layer, idxs in by_layer.items():
                a = acts[layer][b, start:][:, idxs].float().cpu()  # [n_resp, k]
                best_val, best_t = a.max(dim=0)
                for neuron, val, t in zip(idxs, best_val.tolist(), best_t.tolist()):
                    heap = heaps[layer, neuron]
                    item = (val, r["id"], t)
                    if len(heap) < top_n:
                        heapq.heappush(heap, item)
                    elif val > heap[0][0]:
                        heapq.heapreplace(heap, item)
    by_id = {r["id"]: r for r in recs}
    out = {}
    for key, heap in heaps.items():
        rows = []
        for val, rid, t in sorted(heap, reverse=True):
            resp = by_id[rid]["response_token_ids"]
            rows.append({"activation": val, "response_id": rid, "token": tok.decode([resp[t]]),
                         "context": tok.decode(resp[max(0, t - context): t + context + 1])})
        out[key] = rows
    return out


def neurons_report(lm: LoadedModel, comps: Components, records: list[dict], k_percent: float = 1.0,
                   max_angle: float = 30.0, top_tokens: int = 5, top_responses: int = 120,
                   progress: bool = True, rank_by: str = "norm") -> dict:
    """The content of ``neurons.json``: kept neurons per value (each with its ``top_tokens``
    highest-activating response tokens and their context over the first ``top_responses`` stored
    responses), per-block counts per class, and overlaps across values."""
    found = find_value_neurons(lm, comps, None, k_percent, max_angle, rank_by)
    targets = {(n.layer, n.neuron) for kept in found.values() for n in kept}
    tokens = top_activations(lm, records[:top_responses], sorted(targets), top_n=top_tokens,
                             progress=progress) if targets else {}
    per_value = {}
    for v, kept in found.items():
        rows = []
        for n in kept:
            row = {"layer": n.layer, "neuron": n.neuron, "proj_norm": n.proj_norm, "class": n.cls,
                   "angle_shared": n.angle_shared, "angle_intrinsic": n.angle_intrinsic,
                   "angle_prompted": n.angle_prompted}
            if (n.layer, n.neuron) in tokens:
                row["top_tokens"] = tokens[n.layer, n.neuron]
            rows.append(row)
        per_value[v] = {"neurons": rows, "counts_per_layer": counts_per_layer(kept, lm.n_layers)}
    totals = {c: [sum(per_value[v]["counts_per_layer"][c][l] for v in per_value) for l in range(lm.n_layers)]
              for c in CLASSES}
    return {"k_percent": k_percent, "max_angle": max_angle, "rank_by": rank_by, "n_layers": lm.n_layers, "d_mlp": lm.arch.d_mlp,
            "per_value": per_value, "counts_per_layer": totals, "overlap": overlap(found)}


def load_neurons(path) -> dict:
    """Read ``neurons.json``, checking the shape its readers (steering, tables, figures) rely on."""
    from pathlib import Path

    from valuemech.io import load_json
    from valuemech.values import VALUES

    path = Path(path)
    data = load_json(path)

    def count(x: object) -> bool:
        return type(x) is int and x >= 0

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def fail(what: str) -> ValuemechError:
        return ValuemechError(f"{path}: {what}; rerun the neurons stage")

    if not isinstance(data, dict):
        raise fail("expected a JSON object")
    n_layers, d_mlp = data.get("n_layers"), data.get("d_mlp")
    if not (count(n_layers) and n_layers > 0 and count(d_mlp) and d_mlp > 0):
        raise fail("n_layers and d_mlp must be positive integers")
    if not all(number(data.get(k)) for k in ("k_percent", "max_angle")):
        raise fail("k_percent and max_angle must be numbers")
    counts = data.get("counts_per_layer")
    if not isinstance(counts, dict) or not counts or not all(
            c in CLASSES and isinstance(xs, list) and len(xs) == n_layers and all(map(count, xs))
            for c, xs in counts.items()):
        raise fail(f"counts_per_layer must map classes to {n_layers} counts")
    overlap_ = data.get("overlap")
    several = overlap_.get("neurons_in_several_values") if isinstance(overlap_, dict) else None
    if not isinstance(several, dict) or not all(c in CLASSES and count(k) for c, k in several.items()):
        raise fail("overlap.neurons_in_several_values must map classes to counts")
    per_value = data.get("per_value")
    if not isinstance(per_value, dict):
        raise fail("per_value must be an object")
    for v, d in per_value.items():
        if v not in VALUES or not isinstance(d, dict) or not isinstance(d.get("neurons"), list):
            raise fail(f"per_value entry {v[:40]!r} is not a value id with a neurons list")
        for n in d["neurons"]:
            ok = isinstance(n, dict) and count(n.get("layer")) and n["layer"] < n_layers and count(n.get("neuron")) \
                and n["neuron"] < d_mlp and n.get("class") in CLASSES and number(n.get("proj_norm")) \
                and isinstance(n.get("top_tokens", []), list) \
                and all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in n.get("top_tokens", []))
            if not ok:
                raise fail(f"a neuron of {v} is not {{layer < {n_layers}, neuron < {d_mlp}, class, proj_norm, "
                           "top_tokens}")
    return data


#: A kept neuron is *generic* when it is kept for at least this share of the values (and at least 2).
GENERIC_SHARE = 0.5


def values_per_neuron(nj: dict) -> dict[tuple[int, int], list[str]]:
    """``(block, neuron) -> values it is kept for`` from a ``neurons.json``."""
    out: dict[tuple[int, int], list[str]] = {}
    for v, d in nj.get("per_value", {}).items():
        for n in d["neurons"]:
            out.setdefault((int(n["layer"]), int(n["neuron"])), []).append(v)
    return out


def generic_neurons(nj: dict, share: float = GENERIC_SHARE) -> dict[tuple[int, int], list[str]]:
    """The kept neurons that are among the top neurons of most values (``share`` of them, at least 2):
    they say little about any one value (e.g. a neuron firing on " the" for every value)."""
    n_values = len(nj.get("per_value", {}))
    need = max(2, math.ceil(share * n_values))
    return {k: vs for k, vs in values_per_neuron(nj).items() if len(vs) >= need}
