"""Find the decoder blocks and MLP down-projections of a causal LM, per architecture."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from valuemech.errors import ValuemechError

#: Families whose layout (``decoder.layers[i].mlp.down_proj``) is known and tested.
KNOWN_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")


@dataclass
class ModelArch:
    """Where the parts valuemech hooks live in one loaded model."""

    model_type: str
    layers: list[nn.Module]  # decoder block l; its output is the residual stream "after block l"
    down_projs: list[nn.Module]  # MLP output projection of block l; its input holds the neurons
    decoder: nn.Module  # the stack without lm_head (called for extraction)
    hidden_size: int
    d_mlp: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` (negative counts from the end) or raise naming the valid range."""
        n = self.n_layers
        if not isinstance(layer, int) or not -n <= layer < n:
            raise ValuemechError(f"layer {layer} out of range: this model has blocks 0..{n - 1}")
        return layer % n


def _get_path(root: nn.Module, path: str) -> nn.Module:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def discover(model: nn.Module, layers_path: str | None = None,
             mlp_down_path: str | None = None) -> ModelArch:
    """Locate blocks and down-projections; overrides are dotted paths (``model.layers``, ``mlp.down_proj``)."""
    model_type = _model_type(model)
    hint = ("pass --layers-path (dotted path to the block list, e.g. 'model.layers') and "
            "--mlp-down-path (inside a block, e.g. 'mlp.down_proj')")
    try:
        if layers_path:
            layers = _get_path(model, layers_path)
            decoder = _get_path(model, layers_path.rsplit(".", 1)[0]) if "." in layers_path else model
        else:
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
            layers = decoder.layers
        layers = list(layers)
        down_projs = [_get_path(layer, mlp_down_path or "mlp.down_proj") for layer in layers]
    except (AttributeError, IndexError, TypeError, ValueError):
        raise ValuemechError(
            f"cannot find decoder blocks / MLP down_proj for architecture {model_type!r}; {hint}") from None
    if not layers or not all(isinstance(d, nn.Linear) for d in down_projs):
        raise ValuemechError(
            f"architecture {model_type!r}: expected nn.Linear down-projections in every block; {hint}")
    hidden = down_projs[0].out_features
    return ModelArch(model_type=model_type, layers=layers, down_projs=down_projs, decoder=decoder,
                     hidden_size=hidden, d_mlp=down_projs[0].in_features)


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where input ids must go, also under device_map)."""
    return model.get_input_embeddings().weight.device
