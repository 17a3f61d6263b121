"""Steering with any component of a run, neuron-class scaling, and random controls.

Components: ``intrinsic``, ``prompted`` (the raw vectors), ``intrinsic_orth``, ``prompted_orth``,
``shared``, ``intrinsic_unique``, ``prompted_unique`` (per value) and ``mean_delta`` (value-agnostic).
α is raw (``alpha * v[l]``) or relative (``c * R_l * unit(v[l])``, R_l = the mean residual norm at
block l over the run's response tokens). Every effect should be read beside a random direction of
the same norm at the same block (:func:`random_like`): small models move under any perturbation.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from valuemech import hooks
from valuemech.artifacts import check_artifact_model
from valuemech.decompose import Components
from valuemech.errors import ValuemechError
from valuemech.models.loading import LoadedModel
from valuemech.rundir import RunDir
from valuemech.vectors import ValueVectors

VECTOR_COMPONENTS = ("intrinsic", "prompted")
DECOMPOSED = ("intrinsic_orth", "prompted_orth", "shared", "intrinsic_unique", "prompted_unique")
COMPONENTS = VECTOR_COMPONENTS + DECOMPOSED + ("mean_delta",)


@dataclass
class SteeringSource:
    """Vectors and components of one run, checked against the loaded model."""

    vectors: ValueVectors
    components: Components | None

    @classmethod
    def from_run(cls, run: RunDir | Path | str, lm: LoadedModel | None = None) -> "SteeringSource":
        """The run's vectors and components (components None before decompose), checked against ``lm``."""
        run = run if isinstance(run, RunDir) else RunDir(run)
        vv = run.load_vectors()
        if lm is not None:  # another model's vectors: said before the components are compared with them
            vv.check_model(lm)
        comps = run.load_components() if run.components.exists() else None
        if lm is not None and comps is not None:
            check_artifact_model(comps.metadata, lm, str(run.components))
        return cls(vv, comps)

    @property
    def n_layers(self) -> int:
        """The blocks of the model the vectors come from (their metadata)."""
        return int(self.vectors.metadata["n_layers"])

    def component(self, component: str, value: str | None = None) -> torch.Tensor:
        """``[n_layers, hidden]`` float64 tensor of a component (``value`` ignored for mean_delta)."""
        if component not in COMPONENTS:
            raise ValuemechError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
        if component in VECTOR_COMPONENTS:
            if value is None:
                raise ValuemechError(f"component {component!r} needs a value")
            return self.vectors.get(component, value).double()
        if self.components is None:
            raise ValuemechError("this run has no components.safetensors (run the decompose stage)")
        if component != "mean_delta" and value is None:
            raise ValuemechError(f"component {component!r} needs a value")
        return self.components.get(component, value).double()

    def residual_norm(self, layer: int) -> float:
        if self.vectors.residual_norm is None:
            raise ValuemechError("vectors.safetensors has no residual norms; relative α is unavailable")
        return float(self.vectors.residual_norm[layer])


def scaled(vec: torch.Tensor, alpha: float, relative: bool, residual_norm: float | None = None) -> torch.Tensor:
    """``alpha * vec`` or, when ``relative``, ``alpha * residual_norm * unit(vec)`` (zero stays zero)."""
    vec = vec.double()
    if not relative:
        return alpha * vec
    if residual_norm is None:
        raise ValuemechError("relative α needs the residual norm of the layer")
    n = vec.norm()
    return vec * 0.0 if n == 0 else alpha * residual_norm * vec / n


def random_like(vec: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random direction with the same norm as ``vec`` (the control for every steering effect)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vec.shape, generator=g, dtype=torch.float64)
    return r / r.norm() * vec.double().norm()


@contextmanager
def steer(lm: LoadedModel, source: SteeringSource, component: str, value: str | None,
          layers: int | Sequence[int], alpha: float, relative: bool = True, positions: hooks.Positions = "all",
          control_seed: int | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Add a component at one or more blocks; with ``control_seed``, a same-norm random direction instead."""
    layers = [layers] if isinstance(layers, int) else list(layers)
    comp = source.component(component, value)
    added = {}
    for layer in layers:
        layer = lm.arch.check_layer(layer)
        v = comp[layer]
        if control_seed is not None:
            v = random_like(v, control_seed + layer)
        added[layer] = scaled(v, alpha, relative, source.residual_norm(layer) if relative else None)
    with hooks.add_vectors(lm, added, positions=positions):
        yield added


@contextmanager
def scale_neuron_class(lm: LoadedModel, neurons_json: dict, value: str, cls: str, beta: float) -> Iterator[int]:
    """Multiply the activations of one class of a value's neurons (from ``neurons.json``) by ``beta``."""
    per_value = neurons_json.get("per_value", {})
    if value not in per_value:
        raise ValuemechError(f"no neurons for value {value!r} in neurons.json")
    chosen: dict[int, list[int]] = {}
    for n in per_value[value]["neurons"]:
        if n["class"] == cls:
            chosen.setdefault(int(n["layer"]), []).append(int(n["neuron"]))
    with hooks.scale_neurons(lm, chosen, beta):
        yield sum(len(v) for v in chosen.values())
