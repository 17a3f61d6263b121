"""Shared/unique decomposition of intrinsic and prompted vectors, in float64.

Per value and layer, with ``a = v_int`` and ``b = v_prompt``:
- orthogonalisation: ``a_perp = a - (<a,b>/<b,b>) b`` and the mirror ``b_perp``;
- SVD of the ``d x 2`` matrix ``[a, b] = U S R^T``: ``u_shared = U[:,0]`` with the sign making
  ``<u_shared, a + b> > 0``; ``u_int = sign(<U[:,1], a - b>) U[:,1]``; ``u_prompt = -u_int``;
- the mean-delta direction ``mean_s (b_s - a_s)`` with the share of the deltas' second moment
  it explains and the deltas' mean pairwise cosine;
- cosine(a, b).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from valuemech.artifacts import load_safetensors, save_safetensors
from valuemech.errors import ValuemechError
from valuemech.io import atomic_write_json
from valuemech.vectors import ValueVectors

#: Tensor name prefixes of components.safetensors (``<prefix>.<value>``; plus the bare ``mean_delta``).
TENSOR_PREFIXES = ("shared", "intrinsic_unique", "prompted_unique", "intrinsic_orth", "prompted_orth")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def orthogonalize(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` minus its projection on ``b`` (row-wise over the last dim); ``a`` where ``b`` is zero."""
    a, b = a.double(), b.double()
    bb = _dot(b, b)
    coef = torch.where(bb > 0, _dot(a, b) / torch.where(bb > 0, bb, torch.ones_like(bb)), torch.zeros_like(bb))
    return a - coef[..., None] * b


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (0 where either row is zero)."""
    a, b = a.double(), b.double()
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, _dot(a, b) / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def svd_axes(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row (layer): ``u_shared``, ``u_int`` (unit vectors, ``[L, d]``) and singular values ``[L, 2]``."""
    a, b = a.double(), b.double()
    m = torch.stack([a, b], dim=-1)  # [L, d, 2]
    u, s, _ = torch.linalg.svd(m, full_matrices=False)  # u: [L, d, 2]
    u0, u1 = u[..., 0], u[..., 1]
    u_shared = u0 * _sign(_dot(u0, a + b))[..., None]
    u_int = u1 * _sign(_dot(u1, a - b))[..., None]
    return u_shared, u_int, s


@dataclass
class MeanDelta:
    """The mean of the prompted-minus-intrinsic deltas over values, per layer."""

    direction: torch.Tensor  # [L, d]
    explained: torch.Tensor  # [L]: sum_s <delta_s, unit>^2 / sum_s |delta_s|^2
    mean_pairwise_cosine: torch.Tensor  # [L]


def mean_delta(deltas: torch.Tensor) -> MeanDelta:
    """From ``deltas`` ``[S, L, d]`` (one per value): direction, explained share, pairwise cosine."""
    deltas = deltas.double()
    s = deltas.shape[0]
    if s < 2:
        raise ValuemechError("the mean-delta direction needs at least two values with both vectors")
    direction = deltas.mean(0)
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    proj = _dot(deltas, unit[None])  # [S, L]
    total = (deltas ** 2).sum(-1).sum(0)
    explained = torch.where(total > 0, (proj ** 2).sum(0) / total.clamp_min(1e-300), torch.zeros_like(total))
    cos = torch.stack([cosine(deltas[i], deltas[j]) for i in range(s) for j in range(i + 1, s)])
    return MeanDelta(direction, explained, cos.mean(0))


@dataclass
class Components:
    """Decomposed components per value (``<component>.<value>``) plus ``mean_delta``, ``[L, d]`` each."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    def get(self, component: str, value: str | None = None) -> torch.Tensor:
        key = component if component == "mean_delta" else f"{component}.{value}"
        if key not in self.tensors:
            raise ValuemechError(f"component {key!r} is not in this run")
        return self.tensors[key]

    def save(self, path: Path) -> None:
        save_safetensors(path, self.tensors, self.metadata)

    @classmethod
    def load(cls, path: Path) -> "Components":
        tensors, meta, _ = load_safetensors(Path(path), "components", TENSOR_PREFIXES, ("mean_delta",))
        return cls(tensors, meta)


def decompose(vv: ValueVectors) -> tuple[Components, dict]:
    """All components (module docstring) and a JSON-ready summary (cosines, singular values, mean-delta stats)."""
    values = vv.values_with_both()
    if not values:
        raise ValuemechError("no value has both an intrinsic and a prompted vector; "
                             "see the counts (more responses or a lower extract.min_group)")
    tensors: dict[str, torch.Tensor] = {}
    summary: dict = {"values": values, "per_value": {}}
    deltas = []
    for v in values:
        a, b = vv.get("intrinsic", v).double(), vv.get("prompted", v).double()
        u_shared, u_int, sing = svd_axes(a, b)
        tensors[f"shared.{v}"] = u_shared
        tensors[f"intrinsic_unique.{v}"] = u_int
        tensors[f"prompted_unique.{v}"] = -u_int
        tensors[f"intrinsic_orth.{v}"] = orthogonalize(a, b)
        tensors[f"prompted_orth.{v}"] = orthogonalize(b, a)
        var = sing ** 2
        summary["per_value"][v] = {
            "cosine": cosine(a, b).tolist(),
            "singular_values": sing.tolist(),
            "shared_variance": (var[:, 0] / var.sum(-1).clamp_min(1e-300)).tolist(),
            "norm_intrinsic": a.norm(dim=-1).tolist(),
            "norm_prompted": b.norm(dim=-1).tolist(),
        }
        deltas.append(b - a)
    if len(values) >= 2:
        md = mean_delta(torch.stack(deltas))
        tensors["mean_delta"] = md.direction
        summary["mean_delta"] = {"explained": md.explained.tolist(),
                                 "mean_pairwise_cosine": md.mean_pairwise_cosine.tolist(),
                                 "values": values}
    meta = {k: vv.metadata[k] for k in ("model_id", "weights_sha256", "n_layers", "hidden_size",
                                        "library", "rows", "judge") if k in vv.metadata}
    meta["note"] = ("shared/intrinsic_unique/prompted_unique are unit SVD axes; *_orth and mean_delta "
                    "keep the vectors' scale")
    meta["values"] = json.dumps(values)
    return Components(tensors, meta), summary


def load_summary(path: Path) -> dict:
    """Read ``decompose.json``, checking the shape its readers rely on (per-value lists of numbers)."""
    from valuemech.io import load_json
    from valuemech.values import VALUES

    path = Path(path)
    data = load_json(path)

    def numbers(x: object) -> bool:
        return isinstance(x, list) and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in x)

    per = data.get("per_value") if isinstance(data, dict) else None
    if not isinstance(per, dict) or not all(
            v in VALUES and isinstance(d, dict) and all(numbers(d.get(k, [])) for k in
                                                        ("cosine", "shared_variance", "norm_intrinsic", "norm_prompted"))
            and "cosine" in d for v, d in per.items()):
        raise ValuemechError(f"{path}: not a decomposition summary (per_value: {{value: {{cosine: [...]}}}}); "
                             "rerun the decompose stage")
    md = data.get("mean_delta", {})
    if not isinstance(md, dict) or not all(numbers(md.get(k, [])) for k in ("explained", "mean_pairwise_cosine")):
        raise ValuemechError(f"{path}: mean_delta must hold lists of numbers; rerun the decompose stage")
    return data


def write_decomposition(vv: ValueVectors, components_path: Path, summary_path: Path,
                        inputs: dict[str, str] | None = None) -> dict:
    """Write the components and the summary (each recording ``inputs``, the vectors' fingerprint)."""
    comps, summary = decompose(vv)
    if inputs is not None:
        comps.metadata["inputs"] = json.dumps(inputs, sort_keys=True)
        summary["inputs"] = inputs
    comps.save(components_path)
    atomic_write_json(summary_path, summary)
    return summary
