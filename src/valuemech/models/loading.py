"""Load any supported model (embedded catalog name, tiny-<family>, HF id, local dir) into a LoadedModel."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from valuemech.config import ModelConfig
from valuemech.errors import ValuemechError
from valuemech.models import catalog
from valuemech.models.arch import ModelArch, discover, model_device
from valuemech.models.chat import default_system_prompt, prompt_ids, supports_system
from valuemech.models.tiny import tiny_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """A model, its tokenizer and what valuemech needs to know about them."""

    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for
    model_id: str  # stable id recorded in artifacts
    weights_sha256: str
    arch: ModelArch
    default_system_prompt: str | None
    system_ok: bool
    eos_ids: list[int] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def n_layers(self) -> int:
        return self.arch.n_layers

    @property
    def hidden_size(self) -> int:
        return self.arch.hidden_size

    def prompt_ids(self, query: str, system_prompt: str | None) -> list[int]:
        """Chat-formatted prompt ids; ``system_prompt=None`` keeps the template's default."""
        return prompt_ids(self.tokenizer, query, system_prompt, self.system_ok)


def auto_dtype_for(model_name: str, device: str = "cpu") -> str:
    """What ``dtype: auto`` means for this model: float32 for the tiny test models (their tests are
    exact), else :func:`valuemech.hardware.auto_dtype` for ``device``."""
    from valuemech.hardware import auto_dtype

    return "float32" if model_name.startswith("tiny-") else auto_dtype(device)


def resolve_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """The torch dtype of a config's ``dtype`` (``auto``: :func:`valuemech.hardware.auto_dtype` for ``device``)."""
    if name == "auto":
        from valuemech.hardware import auto_dtype

        name = auto_dtype(device)
    if name not in DTYPES:
        raise ValuemechError(f"unknown dtype {name!r}; choose from float32, bfloat16, float16, auto")
    return DTYPES[name]


def _params_sha256(model: torch.nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes (the identity of in-memory weights)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _files_sha256(directory: Path) -> str | None:
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(catalog.sha256_file(f).encode())
    return h.hexdigest()


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def _contiguous_head_input(model) -> None:
    """In bfloat16/float16, hand lm_head a contiguous input.

    At the prefill, transformers slices the last position (``logits_to_keep``) into a strided view;
    ``F.linear`` then takes a batched-matmul path that, in bfloat16 on the CPU, materialises lm_head's
    weight once per row (SmolLM2 at batch 16: 16 x 576 x 49152 values, ~2 s per batch). A contiguous
    input takes the plain matmul. Float32 models are left as they are (their kernels do not copy).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and next(model.parameters()).dtype in (torch.bfloat16, torch.float16):
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))


def _finish(model, tokenizer, cfg: ModelConfig, model_id: str, sha: str) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    _contiguous_head_input(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    arch = discover(model, cfg.layers_path, cfg.mlp_down_path)
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=cfg.name, model_id=model_id, weights_sha256=sha,
        arch=arch, default_system_prompt=default_system_prompt(tokenizer),
        system_ok=supports_system(tokenizer), eos_ids=_eos_ids(model, tokenizer),
    )


def load_model(cfg: ModelConfig | str) -> LoadedModel:
    """Load a model by catalog name, ``tiny-<family>``, Hugging Face id or local directory."""
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    _set_threads(cfg.threads)
    name = cfg.name
    catalog.check_model_name(name)
    if name.startswith("tiny-"):
        model, tokenizer = tiny_model(name.removeprefix("tiny-"))
        dtype = auto_dtype_for(name, cfg.device) if cfg.dtype == "auto" else cfg.dtype
        if dtype != "float32":  # built in float32
            model = model.to(resolve_dtype(dtype))
        return _finish(model, tokenizer, cfg, f"valuemech/{name}", _params_sha256(model))
    if name in catalog.CATALOG:
        entry = catalog.CATALOG[name]
        path = catalog.cached_dir(name)
        return _load_pretrained(str(path), cfg, model_id=entry.hf_id + f" (GGUF {entry.gguf_name})",
                                sha=entry.sha256)
    local = Path(name).expanduser()
    if local.is_dir():
        return _load_pretrained(str(local), cfg, model_id=str(local.resolve()), sha=None)
    return _load_pretrained(name, cfg, model_id=name, sha=None)


def _load_pretrained(source: str, cfg: ModelConfig, model_id: str, sha: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Weights only from safetensors (never a pickled *.bin); repository code only when the config asks.
    kwargs: dict = {"dtype": resolve_dtype(cfg.dtype, cfg.device), "trust_remote_code": cfg.trust_remote_code,
                    "use_safetensors": True}
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "HF_HUB_OFFLINE=1 and it is not in the local cache" if offline else str(exc).splitlines()[0]
        raise ValuemechError(f"cannot load model {source!r}: {why}") from None
    except ValueError as exc:
        raise ValuemechError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}") from None
    if not cfg.device_map and cfg.device != "cpu":
        model = model.to(cfg.device)
    if sha is None:
        local = Path(source)
        sha = (_files_sha256(local) if local.is_dir() else None) or _params_sha256(model)
    return _finish(model, tokenizer, cfg, model_id, sha)


def wrap_model(model, tokenizer, name: str = "custom", layers_path: str | None = None,
               mlp_down_path: str | None = None) -> LoadedModel:
    """Wrap an already loaded transformers model and tokenizer (Python API)."""
    cfg = ModelConfig(name=name, threads=None, layers_path=layers_path, mlp_down_path=mlp_down_path)
    model_id = getattr(getattr(model, "config", None), "_name_or_path", "") or name
    return _finish(model, tokenizer, cfg, model_id, _params_sha256(model))
