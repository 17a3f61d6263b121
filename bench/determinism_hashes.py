"""The table behind tests/test_determinism.py: sha256 of each artifact of three smoke runs.

Runs A and B: seed 0 (different PYTHONHASHSEED); run C: seed 1 (generate only). Each is a separate
``valuemech run --preset smoke --evals none`` process. For the safetensors files the table shows
the sha256 of the file bytes, of the tensors (name, dtype, shape, bytes), and of the parsed header
(sorted JSON), to show which part differs between processes (only the metadata key order).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/determinism_hashes.py   (prints a Markdown table)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from valuemech.io import tensor_digest

BIN = str(Path(sys.executable).with_name("valuemech"))


def run(out: Path, hash_seed: str, *extra: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": hash_seed}
    subprocess.run([BIN, "run", "--preset", "smoke", "--evals", "none", "--out", str(out), "--quiet", *extra],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def header_sha(path: Path) -> str:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return sha(json.dumps(json.loads(raw[8:8 + n]), sort_keys=True).encode())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a = run(Path(tmp) / "a", "1")
        b = run(Path(tmp) / "b", "2")
        c = run(Path(tmp) / "c", "3", "--seed", "1", "--stages", "generate")
        rows = []
        for name in ("responses.jsonl", "labels.jsonl", "decompose.json", "neurons.json", "config.yaml"):
            rows.append((f"`{name}` (file bytes)", *(sha((r / name).read_bytes()) if (r / name).exists() else "-"
                                                      for r in (a, b, c))))
        for name in ("vectors.safetensors", "components.safetensors"):
            rows.append((f"`{name}` (file bytes)", sha((a / name).read_bytes()), sha((b / name).read_bytes()), "-"))
            rows.append((f"`{name}` (tensors)", tensor_digest(a / name)[0][:12], tensor_digest(b / name)[0][:12], "-"))
            rows.append((f"`{name}` (header, keys sorted)", header_sha(a / name), header_sha(b / name), "-"))
    print("| artifact | A: seed 0 | B: seed 0 | C: seed 1 | A = B |")
    print("|---|---|---|---|---|")
    for name, x, y, z in rows:
        print(f"| {name} | {x} | {y} | {z} | {'yes' if x == y else 'no'} |")


if __name__ == "__main__":
    main()
