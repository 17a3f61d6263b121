"""Run artifacts on disk: safetensors I/O with shape checks, and the identity of the model they came from.

Vectors and components are ``[n_layers, hidden]`` float tensors named ``<prefix>.<value id>``, stored
with metadata naming the model (id, weights sha256, layers, hidden size), the library version and
the row convention. :func:`check_artifact_model` refuses an artifact made from another model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from valuemech import __version__
from valuemech.errors import ValuemechError
from valuemech.io import atomic_write_bytes
from valuemech.models.loading import LoadedModel
from valuemech.values import VALUES

ROW_CONVENTION = "row l = output of decoder block l (0-based) = output_hidden_states[l+1] before any final norm"


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` as contiguous float32 with ``metadata``, atomically."""
    data = {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}
    atomic_write_bytes(Path(path), st_save(data, metadata=metadata))


def _meta_int(meta: dict[str, str], key: str, path: Path) -> int:
    if key not in meta:
        raise ValuemechError(f"{path}: metadata lacks {key}")
    try:
        n = int(meta[key])
    except ValueError:
        n = 0
    if n < 1:
        raise ValuemechError(f"{path}: metadata {key} is not a positive integer ({meta[key][:20]!r})")
    return n


def load_safetensors(path: Path, kind: str, prefixes: tuple[str, ...], bare: tuple[str, ...] = ()
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str], torch.Tensor | None]:
    """Tensors named ``<prefix>.<value id>`` (or one of ``bare``), ``[n_layers, hidden]``, float and finite,
    as the metadata says; anything else is a one-line error naming the file."""
    if not path.is_file():
        raise ValuemechError(f"{path} does not exist (run the {'extract' if kind == 'vectors' else 'decompose'} stage)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types on corrupt files
        raise ValuemechError(f"{path}: not a readable safetensors file ({exc.__class__.__name__})") from None
    n_layers, hidden = _meta_int(meta, "n_layers", path), _meta_int(meta, "hidden_size", path)
    norm = tensors.pop("stats.residual_norm", None)
    if norm is not None and (tuple(norm.shape) != (n_layers,) or not norm.is_floating_point()
                             or not bool(torch.isfinite(norm).all())):
        raise ValuemechError(f"{path}: stats.residual_norm must be {n_layers} finite floats "
                             f"(has shape {tuple(norm.shape)}, {norm.dtype})")
    for k, t in tensors.items():
        prefix, dot, value = k.partition(".")
        if not (k in bare or (dot and prefix in prefixes and value in VALUES)):
            raise ValuemechError(f"{path}: unexpected tensor {k[:60]!r} (not <{'|'.join(prefixes)}>.<value id>)")
        if tuple(t.shape) != (n_layers, hidden):
            raise ValuemechError(f"{path}: tensor {k} has shape {tuple(t.shape)}, metadata says ({n_layers}, {hidden})")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ValuemechError(f"{path}: tensor {k} must hold finite floats ({t.dtype})")
    return tensors, meta, norm


def one_line(x: object) -> str:
    """Text from a file, safe inside a one-line message."""
    return " ".join(str(x).split())


def check_artifact_model(meta: dict[str, str], lm: LoadedModel, what: str) -> None:
    def as_int(x: object) -> int | None:
        try:
            return int(x)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    if as_int(meta.get("hidden_size")) != lm.hidden_size or as_int(meta.get("n_layers")) != lm.n_layers:
        layers, hidden = as_int(meta.get("n_layers")), as_int(meta.get("hidden_size"))
        raise ValuemechError(f"{what} is for a model with {layers} layers x {hidden} hidden, "
                             f"the loaded model has {lm.n_layers} x {lm.hidden_size}")
    if not meta.get("weights_sha256"):
        raise ValuemechError(f"{what} has no weights_sha256 metadata, so it cannot be checked against the "
                             f"loaded model {lm.model_id}")
    if meta["weights_sha256"] != lm.weights_sha256:
        raise ValuemechError(
            f"{what} was extracted from {one_line(meta.get('model_id'))} (weights {one_line(meta['weights_sha256'])[:12]}), "
            f"not from the loaded model {lm.model_id} (weights {lm.weights_sha256[:12]})")


def model_metadata(lm: LoadedModel) -> dict[str, str]:
    return {"model_id": lm.model_id, "weights_sha256": lm.weights_sha256, "n_layers": str(lm.n_layers),
            "hidden_size": str(lm.hidden_size), "library": f"valuemech {__version__}",
            "rows": ROW_CONVENTION}


