"""Control-vector files other tools load: llama.cpp GGUF, safetensors and steering-vectors, written and read back.

A :class:`ControlVector` is one direction per block, ``{block: float32 [hidden]}``, plus string metadata.

Block numbering (the classic off-by-one), checked against llama.cpp's source:

- llama.cpp's loader (``common/common.cpp``, ``common_control_vector_load_one``) reads F32 1-D tensors
  named ``direction.N`` with N >= 1 (``direction.0`` is rejected: "invalid (zero) direction tensor
  layer index") into its buffer at offset ``(N - 1) * n_embd``, scaled by the file's strength and summed
  over files; ``llama_adapter_cvec::apply`` copies buffer slot ``N - 1`` into the tensor of layer N; and
  every model graph adds the tensor of layer ``il`` to ``l_out``, the output of decoder block ``il``
  (0-based, after the FFN's residual add, before the next block or the final norm), for ``il`` in
  ``--control-vector-layer-range`` (default 1 .. n_layer).
- valuemech block l is the output of decoder block l (0-based; ``output_hidden_states[l + 1]``).

So ``direction.N`` is valuemech block N, with no shift, and valuemech block 0 has no llama.cpp
equivalent (refused when writing GGUF). repeng's ``ControlVector.directions[N]`` (added to the output of
``model.layers[N]``) and steering-vectors' ``layer_activations[N]`` (``decoder_block`` N) use the same N.

Formats: ``gguf`` (above); ``safetensors``, tensors ``direction.<block>``; ``steering-vectors``, a
safetensors file of ``layer_activations.<block>`` with metadata ``layer_type = decoder_block``, for
``SteeringVector({int(k.split(".")[1]): v for k, v in load_file(f).items()}, "decoder_block")`` (the
library has no file format of its own; valuemech never writes or reads a pickle).

GGUF metadata: ``general.architecture = controlvector``, ``controlvector.model_hint`` (the model id;
repeng requires it), ``controlvector.layer_count`` (the number of direction tensors), and every entry
of :attr:`ControlVector.metadata` as ``valuemech.<key>`` strings (model id, weights sha256, block
numbering, component, values, α). llama.cpp reads only the tensors; the keys are for people and for
:func:`read_vector_file`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from valuemech.artifacts import check_artifact_model, one_line
from valuemech.errors import ValuemechError
from valuemech.io import atomic_write_bytes

FORMATS = ("gguf", "steering-vectors", "safetensors")
#: Where ``direction.N`` applies, written into every file valuemech exports.
LAYER_NUMBERING = ("direction.N is added to the output of decoder block N (0-based) = valuemech block N = "
                   "output_hidden_states[N+1]; llama.cpp rejects direction.0")
ARCH = "controlvector"
PREFIX = "valuemech."


@dataclass
class ControlVector:
    """One direction per block, ``{block: float32 [hidden]}``, and string metadata (valuemech's keys)."""

    directions: dict[int, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValuemechError(f"{self._what()}: no direction tensors")
        sizes = {int(v.numel()) for v in self.directions.values()}
        if len(sizes) != 1 or any(v.dim() != 1 for v in self.directions.values()):
            raise ValuemechError(f"{self._what()}: direction tensors must be 1-D of one size (got sizes {sorted(sizes)})")
        bad = [b for b in self.directions if b < 0]
        if bad:
            raise ValuemechError(f"{self._what()}: negative block {bad[0]}")
        if not all(bool(torch.isfinite(v).all()) for v in self.directions.values()):
            raise ValuemechError(f"{self._what()}: direction tensors must hold finite numbers")
        self.directions = {int(b): v.to(torch.float32).contiguous() for b, v in sorted(self.directions.items())}

    def _what(self) -> str:
        return str(self.source) if self.source is not None else "control vector"

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).numel())

    @property
    def blocks(self) -> list[int]:
        return list(self.directions)

    def rows(self, n_layers: int) -> torch.Tensor:
        """``[n_layers, hidden]`` float64, the directions at their blocks and zero elsewhere."""
        if max(self.blocks) >= n_layers:
            raise ValuemechError(f"{self._what()} has a direction for block {max(self.blocks)}, "
                                 f"the model has blocks 0..{n_layers - 1}")
        out = torch.zeros(n_layers, self.hidden_size, dtype=torch.float64)
        for b, v in self.directions.items():
            out[b] = v.double()
        return out

    def check_model(self, lm) -> None:
        """Refuse a file made for another model: by weights hash when valuemech wrote it, else by shape."""
        if self.metadata.get("weights_sha256"):
            check_artifact_model(self.metadata, lm, self._what())
        elif self.hidden_size != lm.hidden_size:
            raise ValuemechError(f"{self._what()} has {self.hidden_size}-d directions, "
                                 f"the loaded model's hidden size is {lm.hidden_size}")
        self.rows(lm.n_layers)


def write_vector_file(cv: ControlVector, path: Path, fmt: str = "gguf") -> Path:
    """Write ``cv`` as ``fmt`` (:data:`FORMATS`), atomically."""
    path = Path(path)
    if fmt == "gguf":
        data = _gguf_bytes(cv)
    elif fmt in ("safetensors", "steering-vectors"):  # never a pickle: steering-vectors gets safetensors too
        from safetensors.torch import save

        prefix = "direction" if fmt == "safetensors" else "layer_activations"
        meta = dict(cv.metadata) | ({"layer_type": "decoder_block"} if fmt == "steering-vectors" else {})
        data = save({f"{prefix}.{b}": v for b, v in cv.directions.items()}, metadata=meta)
    else:
        raise ValuemechError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    atomic_write_bytes(path, data)
    return path


def _gguf_bytes(cv: ControlVector) -> bytes:
    import gguf

    if 0 in cv.directions:
        raise ValuemechError("llama.cpp cannot steer the output of block 0 (it rejects direction.0); "
                             "choose blocks 1 and above")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cv.gguf"
        writer = gguf.GGUFWriter(str(out), ARCH)
        writer.add_string(f"{ARCH}.model_hint", cv.metadata.get("model_id", "unknown"))
        writer.add_int32(f"{ARCH}.layer_count", len(cv.directions))
        for key, value in cv.metadata.items():
            writer.add_string(PREFIX + key, str(value))
        for block, vec in cv.directions.items():
            writer.add_tensor(f"direction.{block}", vec.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return out.read_bytes()


def read_vector_file(path: Path | str) -> ControlVector:
    """A GGUF control vector (llama.cpp, repeng, valuemech), or a safetensors file of ``direction.<block>``
    (or steering-vectors' ``layer_activations.<block>``) tensors, recognised by content."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"{path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    try:
        if head == b"GGUF":
            directions, meta = _read_gguf(path)
        else:
            directions, meta = _read_safetensors(path)
    except ValuemechError:
        raise
    except Exception as exc:  # the readers raise many types on corrupt files
        raise ValuemechError(f"{path}: not a readable control-vector file ({exc.__class__.__name__}: "
                             f"{one_line(exc)[:120]})") from None
    return ControlVector(directions, meta, source=path)


def _block(name: str, path: Path, prefixes: tuple[str, ...] = ("direction",)) -> int:
    prefix, _, num = name.partition(".")
    if prefix not in prefixes or not num.isdigit():
        raise ValuemechError(f"{path}: unexpected tensor {one_line(name)[:60]!r} (not {'|'.join(prefixes)}.<block>)")
    return int(num)


def _read_gguf(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = reader.get_field("general.architecture")
    if arch is None or arch.contents() != ARCH:
        raise ValuemechError(f"{path}: a GGUF file, but not a control vector (general.architecture is "
                             f"{one_line(arch.contents() if arch is not None else None)!r})")
    directions = {}
    for t in reader.tensors:
        block = _block(t.name, path)
        if block == 0:
            raise ValuemechError(f"{path}: direction.0 (llama.cpp numbers blocks from 1 and rejects it)")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ValuemechError(f"{path}: {t.name} must be a 1-D F32 tensor, as llama.cpp requires")
        directions[block] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    meta = {k[len(PREFIX):]: str(f.contents()) for k, f in reader.fields.items() if k.startswith(PREFIX)}
    hint = reader.get_field(f"{ARCH}.model_hint")
    if hint is not None and "model_id" not in meta:
        meta["model_hint"] = str(hint.contents())
    return directions, meta


def _read_safetensors(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    """``direction.<block>`` tensors, or steering-vectors' ``layer_activations.<block>`` (decoder blocks)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        if meta.get("layer_type", "decoder_block") != "decoder_block":
            raise ValuemechError(f"{path}: layer_type {one_line(meta['layer_type'])[:40]!r}; only decoder_block "
                                 "(the output of a decoder block) is a valuemech block")
        directions = {_block(k, path, ("direction", "layer_activations")): fh.get_tensor(k) for k in fh.keys()}
    meta.pop("layer_type", None)
    return directions, meta
