"""Steering with any component of a run, neuron-class scaling, and random controls.

Components: ``intrinsic``, ``prompted`` (the raw vectors), ``intrinsic_orth``, ``prompted_orth``,
``shared``, ``intrinsic_unique``, ``prompted_unique`` (per value) and ``mean_delta`` (value-agnostic);
with a control-vector file attached (:meth:`SteeringSource.with_file`: GGUF, safetensors or
steering-vectors, e.g. from ``valuemech export``, repeng or llama.cpp), ``file`` is its directions
(value-agnostic, zero at the blocks it lacks).
α is raw (``alpha * v[l]``) or relative (``c * R_l * unit(v[l])``, R_l = the mean residual norm at
block l over the run's response tokens). Every effect should be read beside a random direction of
the same norm at the same block (:func:`random_like`): small models move under any perturbation.
"""

from __future__ import annotations

import dataclasses
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
from valuemech.vectorfile import ControlVector, read_vector_file
from valuemech.vectors import ValueVectors

VECTOR_COMPONENTS = ("intrinsic", "prompted")
DECOMPOSED = ("intrinsic_orth", "prompted_orth", "shared", "intrinsic_unique", "prompted_unique")
COMPONENTS = VECTOR_COMPONENTS + DECOMPOSED + ("mean_delta",)
#: The directions of an attached control-vector file (:meth:`SteeringSource.with_file`).
FILE = "file"
#: Components with one direction for all values (a value given with them is ignored).
VALUE_AGNOSTIC = ("mean_delta", FILE)


@dataclass
class SteeringSource:
    """Vectors and components of one run, checked against the loaded model; optionally a control-vector file."""

    vectors: ValueVectors
    components: Components | None
    file: ControlVector | None = None

    @classmethod
    def from_run(cls, run: RunDir | Path | str, lm: LoadedModel | None = None) -> "SteeringSource":
        """The run's vectors and components (components None before decompose), checked against ``lm``."""
        run = run if isinstance(run, RunDir) else RunDir(run)
        vv = run.load_vectors()
        if lm is not None:  # another model's vectors: said before the components are read
            vv.check_model(lm)
        source = cls(vv, run.load_components() if run.components.exists() else None)
        if lm is not None:
            source.check_model(lm, run.components)
        return source

    def check_model(self, lm: LoadedModel, components_path: Path | str = "components.safetensors") -> None:
        """Raise unless the vectors and components were made from ``lm``."""
        self.vectors.check_model(lm)
        if self.components is not None:
            check_artifact_model(self.components.metadata, lm, str(components_path))

    def with_file(self, path: Path | str, lm: LoadedModel | None = None) -> "SteeringSource":
        """This source with a control-vector file attached as the component ``file`` (checked against ``lm``)."""
        cv = read_vector_file(path)
        if lm is not None:
            cv.check_model(lm)
        return dataclasses.replace(self, file=cv)

    @property
    def n_layers(self) -> int:
        """The blocks of the model the vectors come from (their metadata)."""
        return int(self.vectors.metadata.get("n_layers") or len(next(iter(self.vectors.vectors.values()))))

    def component(self, component: str, value: str | None = None) -> torch.Tensor:
        """``[n_layers, hidden]`` float64 tensor of a component (``value`` ignored for mean_delta and file)."""
        if component == FILE:
            if self.file is None:
                raise ValuemechError("component 'file' needs a control-vector file (--vector-file FILE)")
            return self.file.rows(self.n_layers)
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


def value_list(value: str | Sequence[str] | None) -> list[str | None]:
    """``value`` as a list: one value, several applied together, or ``[None]`` (value-agnostic components)."""
    if value is None or isinstance(value, str):
        return [value]
    values = list(value)
    if not values:
        raise ValuemechError("steering needs at least one value")
    return values


def steering_vectors(source: SteeringSource, component: str, value: str | Sequence[str] | None,
                     layers: Sequence[int], alpha: float, relative: bool = True, control_seed: int | None = None,
                     operator: str = "add") -> tuple[dict[int, list[torch.Tensor]], dict[int, torch.Tensor]]:
    """Per block: the directions (one per value; same-norm random ones with ``control_seed``) and the
    vector to add (the sum of each direction scaled by α on its own; zero for ``ablate``), float64."""
    hooks.check_operator(operator)
    comps = [source.component(component, v) for v in ([None] if component in VALUE_AGNOSTIC else value_list(value))]
    if component == FILE and source.file is not None:
        missing = [l for l in layers if l not in source.file.directions]
        if missing:
            raise ValuemechError(f"the vector file has no direction for block {missing[0]} "
                                 f"(it has blocks {', '.join(map(str, source.file.blocks))})")
    directions: dict[int, list[torch.Tensor]] = {}
    added: dict[int, torch.Tensor] = {}
    for layer in layers:
        rows = [c[layer] for c in comps]
        if control_seed is not None:  # the first value keeps the seed of single-value steering
            rows = [random_like(v, control_seed + layer + 7919 * i) for i, v in enumerate(rows)]
        directions[layer] = rows
        norm = source.residual_norm(layer) if relative and operator != "ablate" else None
        added[layer] = torch.zeros(rows[0].shape[-1], dtype=torch.float64) if operator == "ablate" else \
            torch.stack([scaled(v, alpha, relative, norm) for v in rows]).sum(0)
    return directions, added


@contextmanager
def steer(lm: LoadedModel, source: SteeringSource, component: str, value: str | Sequence[str] | None,
          layers: int | Sequence[int], alpha: float, relative: bool = True, positions: hooks.Positions = "all",
          control_seed: int | None = None, operator: str = "add") -> Iterator[dict[int, torch.Tensor]]:
    """Steer with a component at one or more blocks; yields the vector added at each block.

    ``value`` may be a list: the values' vectors are applied together (each scaled on its own, added
    as their sum, ablated as their span). ``operator`` is ``add``, ``ablate`` (remove the residual's
    projection on the direction at every position; α is unused) or ``ablate_add`` (remove it, then
    add). With ``control_seed``, a same-norm random direction replaces each vector.
    """
    layers = [lm.arch.check_layer(l) for l in ([layers] if isinstance(layers, int) else layers)]
    directions, added = steering_vectors(source, component, value, layers, alpha, relative, control_seed, operator)
    with hooks.apply_operator(lm, operator, directions, {l: [v] for l, v in added.items()}, positions):
        yield added


def neuron_class(neurons_json: dict, value: str, cls: str) -> dict[int, list[int]]:
    """One class of a value's neurons from ``neurons.json``: ``{layer: [neuron, ...]}``."""
    per_value = neurons_json.get("per_value", {})
    if value not in per_value:
        raise ValuemechError(f"no neurons for value {value!r} in neurons.json")
    chosen: dict[int, list[int]] = {}
    for n in per_value[value]["neurons"]:
        if n["class"] == cls:
            chosen.setdefault(int(n["layer"]), []).append(int(n["neuron"]))
    return chosen


@contextmanager
def scale_neuron_class(lm: LoadedModel, neurons_json: dict, value: str, cls: str, beta: float,
                       positions: hooks.Positions = "all") -> Iterator[int]:
    """Multiply the activations of one class of a value's neurons (from ``neurons.json``) by ``beta``
    (at ``positions``, as ``hooks.scale_neurons``)."""
    chosen = neuron_class(neurons_json, value, cls)
    with hooks.scale_neurons(lm, chosen, beta, positions):
        yield sum(len(v) for v in chosen.values())
