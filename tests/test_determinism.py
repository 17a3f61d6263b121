"""Determinism: two smoke runs with the same config and seed give identical artifacts; another seed does not.

Each run is a separate ``valuemech run`` process with a different ``PYTHONHASHSEED``, so nothing may
depend on set/dict-of-str iteration order or on state left in one process. What is compared:

- ``responses.jsonl``, ``labels.jsonl``, ``decompose.json``, ``neurons.json``, ``config.yaml``: whole
  file bytes (sha256); none of them holds a timestamp or a path.
- ``vectors.safetensors`` / ``components.safetensors``: a sha256 over every tensor (name, dtype,
  shape, raw bytes) and the metadata without ``library`` (the valuemech version, which only says
  which code wrote the file). Then the file itself, parsed: the header (tensor names, dtypes,
  shapes, data offsets, metadata; compared as a dict) and the whole data section (bytes) must be
  equal. The raw file bytes are *not* equal across processes: the safetensors library (0.8, Rust)
  keeps the metadata in a HashMap and writes its keys in a per-process random order, so only the
  order of the metadata keys in the header JSON differs (no timestamp is stored).
- Not compared: ``stages.json`` (wall-clock seconds), ``report.html`` and ``figures/`` (they show
  timings and the run path).

``--seed 1`` must change the sampled responses (and the seeded query choice).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from valuemech.io import tensor_digest

VALUEMECH = str(Path(sys.executable).with_name("valuemech"))
SAME_BYTES = ("responses.jsonl", "labels.jsonl", "decompose.json", "neurons.json", "config.yaml")
TENSOR_FILES = ("vectors.safetensors", "components.safetensors")


def _run(out: Path, hash_seed: str, *extra: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([VALUEMECH, "run", "--preset", "smoke", "--evals", "none", "--out", str(out), "--quiet",
                           *extra], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    a = _run(root / "a", "1")
    b = _run(root / "b", "2")
    c = _run(root / "c", "3", "--seed", "1", "--stages", "generate")
    return a, b, c


@pytest.mark.parametrize("name", SAME_BYTES)
def test_same_seed_same_bytes(runs, name):
    a, b, _ = runs
    assert (a / name).stat().st_size > 0
    assert _sha(a / name) == _sha(b / name), f"{name} differs between two runs with seed 0"


@pytest.mark.parametrize("name", TENSOR_FILES)
def test_same_seed_same_tensors(runs, name):
    a, b, _ = runs
    digest_a, meta_a = tensor_digest(a / name)
    digest_b, meta_b = tensor_digest(b / name)
    assert digest_a == digest_b, f"{name}: tensors differ between two runs with seed 0"
    assert meta_a == meta_b
    header_a, data_a = split_safetensors(a / name)
    header_b, data_b = split_safetensors(b / name)
    assert header_a == header_b, f"{name}: headers differ"
    assert data_a == data_b, f"{name}: data sections differ"


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (parsed header JSON, data bytes): 8-byte little-endian header size, header, data."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_same_seed_same_vector_count(runs):
    a, b, _ = runs
    sa, sb = (json.loads((r / "stages.json").read_text()) for r in (a, b))
    assert sa["extract"]["vectors"] == sb["extract"]["vectors"] > 0
    assert sa["generate"]["written"] == sb["generate"]["written"] == 48


def test_other_seed_changes_responses(runs):
    a, _, c = runs
    ra = [json.loads(l) for l in (a / "responses.jsonl").read_text().splitlines()]
    rc = [json.loads(l) for l in (c / "responses.jsonl").read_text().splitlines()]
    assert len(ra) == len(rc) == 48
    assert _sha(a / "responses.jsonl") != _sha(c / "responses.jsonl")
    # the sampled token ids differ, not only the ids or the query choice
    assert sorted(r["response_token_ids"] for r in ra) != sorted(r["response_token_ids"] for r in rc)
    by_id = {r["id"]: r["response_token_ids"] for r in ra}
    common = [r for r in rc if r["id"] in by_id]
    assert all(r["response_token_ids"] != by_id[r["id"]] for r in common if r["condition"] == "intrinsic")
    assert {r["query_id"] for r in ra} != {r["query_id"] for r in rc}  # the seeded query subsample moves too
