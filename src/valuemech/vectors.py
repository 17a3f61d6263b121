"""Residual-stream means over response tokens, difference in means, and the ValueVectors artifact.

For response r, ``mean_l(r)`` is the mean over r's response tokens of the output of decoder
block l, with the full chat context (system prompt included) fed through the model in one
teacher-forced pass (left padding, explicit ``position_ids``, no ``lm_head``). For value s and
condition e, ``v[e, s, l] = mean_{r expresses s} mean_l(r) - mean_{r does not} mean_l(r)`` over
condition e's responses, accumulated in float64 as batches stream (activations are never all held).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from valuemech.artifacts import check_artifact_model, load_safetensors, model_metadata, save_safetensors
from valuemech.batching import left_pad, padded_positions
from valuemech.errors import ValuemechError
from valuemech.hooks import residual_callback
from valuemech.models.loading import LoadedModel
from valuemech.values import VALUES

CONDITIONS = ("intrinsic", "prompted")


@torch.no_grad()
def response_means(lm: LoadedModel, prompts: list[list[int]], responses: list[list[int]],
                   layers: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean over response tokens of each block's output, float64 ``[b, L, d]``.

    Also returns the per-sequence sum of residual norms over response tokens ``[b, L]``.
    Every response must have at least one token.
    """
    if any(len(r) == 0 for r in responses):
        raise ValueError("response_means needs at least one response token per sequence")
    layers = list(range(lm.n_layers)) if layers is None else layers
    seqs = [p + r for p, r in zip(prompts, responses)]
    ids, attn = left_pad(seqs, lm.tokenizer.pad_token_id)
    width = ids.shape[1]
    resp = torch.zeros_like(attn, dtype=torch.float64)
    for i, r in enumerate(responses):
        resp[i, width - len(r):] = 1.0
    counts = resp.sum(1, keepdim=True)  # [b, 1]
    position_ids = padded_positions(attn)
    b = len(seqs)
    means = torch.zeros(b, len(layers), lm.hidden_size, dtype=torch.float64)
    norms = torch.zeros(b, len(layers), dtype=torch.float64)
    slot = {l: i for i, l in enumerate(layers)}

    def reduce(layer: int, hidden: torch.Tensor) -> None:
        h = hidden.detach().to("cpu", torch.float64)
        means[:, slot[layer]] = (h * resp[..., None]).sum(1) / counts
        norms[:, slot[layer]] = (h.norm(dim=-1) * resp).sum(1)

    dev = lm.device
    with residual_callback(lm, layers, reduce):
        lm.arch.decoder(input_ids=ids.to(dev), attention_mask=attn.to(dev),
                        position_ids=position_ids.to(dev), use_cache=False)
    return means, norms


@dataclass
class DiffMeansAccumulator:
    """Streams per-response means into per-condition, per-value sums for both sides of each label.

    A label of None (the judge could not decide) leaves the response out of that value's groups.
    """

    n_layers: int
    hidden: int
    values: tuple[str, ...] = VALUES
    sums: dict[tuple[str, str, bool], torch.Tensor] = field(default_factory=dict)
    n: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    norm_sum: torch.Tensor | None = None
    n_tokens: int = 0

    def __post_init__(self) -> None:
        for c in CONDITIONS:
            for v in self.values:
                for side in (True, False):
                    self.sums[c, v, side] = torch.zeros(self.n_layers, self.hidden, dtype=torch.float64)
                    self.n[c, v, side] = 0
        self.norm_sum = torch.zeros(self.n_layers, dtype=torch.float64)

    def add(self, condition: str, mean: torch.Tensor, expressed: dict[str, bool | None]) -> None:
        """Add one response's ``[L, d]`` mean with its labels."""
        for v in self.values:
            label = expressed.get(v, False)
            if label is None:
                continue
            self.sums[condition, v, bool(label)] += mean
            self.n[condition, v, bool(label)] += 1

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{condition: {value: {"expressed": n, "not": n}}}``."""
        return {c: {v: {"expressed": self.n[c, v, True], "not": self.n[c, v, False]}
                    for v in self.values} for c in CONDITIONS}

    def vector(self, condition: str, value: str, min_group: int = 1) -> torch.Tensor | None:
        """Difference in means ``[L, d]`` (float64), or None when a group is below ``min_group``."""
        k, m = self.n[condition, value, True], self.n[condition, value, False]
        if k < min_group or m < min_group:
            return None
        return self.sums[condition, value, True] / k - self.sums[condition, value, False] / m


@dataclass
class KeptMeans:
    """Every response's mean at one block with its labels (1 expressed, 0 not, -1 undecided), per condition."""

    layer: int
    means: dict[str, torch.Tensor]  # condition -> [n, d] float64
    labels: dict[str, dict[str, np.ndarray]]  # condition -> value -> [n]


@dataclass
class ValueVectors:
    """Intrinsic and prompted value vectors, ``[n_layers, hidden]`` each, plus provenance."""

    vectors: dict[str, torch.Tensor]  # "intrinsic.<value>" / "prompted.<value>"
    metadata: dict[str, str]
    residual_norm: torch.Tensor | None = None  # mean residual norm over response tokens, [L]
    source: Path | None = field(default=None, compare=False)  # the file it was loaded from
    kept: KeptMeans | None = field(default=None, compare=False, repr=False)  # extract's keep_layer (not saved)

    def get(self, condition: str, value: str) -> torch.Tensor:
        key = f"{condition}.{value}"
        if key not in self.vectors:
            have = sorted({k.split(".", 1)[1] for k in self.vectors if k.startswith(condition + ".")})
            raise ValuemechError(f"no {condition} vector for {value!r} in this run "
                                 f"(available: {', '.join(have) or 'none'})")
        return self.vectors[key]

    def values_with_both(self) -> list[str]:
        return [v for v in VALUES if f"intrinsic.{v}" in self.vectors and f"prompted.{v}" in self.vectors]

    @property
    def counts(self) -> dict:
        return json.loads(self.metadata.get("counts", "{}"))

    def save(self, path: Path) -> None:
        tensors = dict(self.vectors)
        if self.residual_norm is not None:
            tensors["stats.residual_norm"] = self.residual_norm
        save_safetensors(path, tensors, self.metadata)

    @classmethod
    def load(cls, path: Path) -> "ValueVectors":
        path = Path(path)
        tensors, meta, norm = load_safetensors(path, "vectors", CONDITIONS)
        if "counts" in meta:
            _check_counts(meta["counts"], path)
        return cls(tensors, meta, norm, source=path)

    def check_model(self, lm: LoadedModel) -> None:
        """Raise unless these vectors were extracted from ``lm`` (hidden size, layers, weights)."""
        check_artifact_model(self.metadata, lm, str(self.source or "vectors.safetensors"))


def _check_counts(text: str, path: Path) -> None:
    """``counts`` metadata: ``{condition: {value: {"expressed": n, "not": n}}}``."""
    try:
        counts = json.loads(text)
    except ValueError:
        counts = None
    ok = isinstance(counts, dict) and all(
        c in CONDITIONS and isinstance(per, dict) and all(
            v in VALUES and isinstance(n, dict) and all(isinstance(n.get(k), int) for k in ("expressed", "not"))
            for v, n in per.items()) for c, per in counts.items())
    if not ok:
        raise ValuemechError(f"{path}: metadata counts is not {{condition: {{value: {{expressed, not}}}}}}")


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def extract_vectors(lm: LoadedModel, responses: Iterable[dict], labels: dict[str, dict[str, bool]],
                    judge: str, batch_size: int = 16, min_group: int = 5,
                    progress: bool = True, keep_layer: int | None = None) -> ValueVectors:
    """Difference-in-means vectors for every condition x value from stored token ids and labels.

    ``responses`` are ``responses.jsonl`` records (with ``prompt_token_ids`` and
    ``response_token_ids``); ``labels`` maps response id to ``{value: expressed}``. Responses
    with no tokens are skipped and counted. Values whose groups fall below ``min_group`` get no
    vector; their counts are recorded in the metadata. With ``keep_layer``, every response's mean at
    that block is kept with its labels in ``ValueVectors.kept`` (not saved; for
    ``valuemech.label_null``, the random-label null of cos(v_int, v_prompt)).
    """

    usable, empty = [], 0
    for r in responses:
        if r["id"] not in labels:
            raise ValuemechError(f"response {r['id']} has no label (run the label stage)")
        if not r.get("response_token_ids"):
            empty += 1
            continue
        usable.append(r)
    if not usable:
        raise ValuemechError("no non-empty responses to extract from")
    usable.sort(key=lambda r: (len(r["prompt_token_ids"]) + len(r["response_token_ids"]), r["id"]))
    acc = DiffMeansAccumulator(lm.n_layers, lm.hidden_size)
    kept: dict[str, list[torch.Tensor]] = {c: [] for c in CONDITIONS}  # per-response means at keep_layer
    kept_labels: dict[str, dict[str, list[int]]] = {c: {v: [] for v in VALUES} for c in CONDITIONS}
    bar = tqdm(total=len(usable), desc="extract", unit="resp", disable=not progress)
    for batch in _batched(usable, batch_size):
        means, norms = response_means(lm, [r["prompt_token_ids"] for r in batch],
                                      [r["response_token_ids"] for r in batch])
        for i, r in enumerate(batch):
            acc.add(r["condition"], means[i], labels[r["id"]])
            if keep_layer is not None:
                kept[r["condition"]].append(means[i, keep_layer].clone())
                for v in VALUES:
                    lab = labels[r["id"]].get(v, False)
                    kept_labels[r["condition"]][v].append(-1 if lab is None else int(bool(lab)))
        acc.norm_sum += norms.sum(0)
        acc.n_tokens += sum(len(r["response_token_ids"]) for r in batch)
        bar.update(len(batch))
    bar.close()
    vectors, skipped = {}, {}
    for c in CONDITIONS:
        for v in VALUES:
            vec = acc.vector(c, v, min_group)
            if vec is None:
                skipped[f"{c}.{v}"] = acc.counts()[c][v]
            else:
                vectors[f"{c}.{v}"] = vec
    meta = model_metadata(lm) | {
        "judge": judge, "counts": json.dumps(acc.counts()), "skipped": json.dumps(skipped),
        "min_group": str(min_group), "empty_responses": str(empty),
        "reading": "mean over response tokens, full chat context, teacher forced",
    }
    out = ValueVectors(vectors, meta, acc.norm_sum / max(acc.n_tokens, 1))
    if keep_layer is not None and all(kept.values()):
        out.kept = KeptMeans(keep_layer, {c: torch.stack(kept[c]) for c in CONDITIONS},
                             {c: {v: np.array(kept_labels[c][v]) for v in VALUES} for c in CONDITIONS})
    return out
