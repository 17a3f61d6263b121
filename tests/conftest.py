"""Shared fixtures: tiny random chat models of several families (built offline, seeded)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from valuemech.models import load_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model("tiny-llama")


@pytest.fixture(scope="session", params=["llama", "qwen2", "gemma2", "qwen3", "mistral", "gemma3"])
def tiny_any(request):
    return load_model(f"tiny-{request.param}")


def make_source(lm, seed: int = 0):
    """A SteeringSource of random intrinsic/prompted vectors for every value, decomposed (residual norm 10)."""
    from valuemech.decompose import decompose
    from valuemech.steering import SteeringSource
    from valuemech.values import VALUES
    from valuemech.vectors import ValueVectors

    g = torch.Generator().manual_seed(seed)
    vecs = {f"{c}.{v}": torch.randn(lm.n_layers, lm.hidden_size, generator=g)
            for c in ("intrinsic", "prompted") for v in VALUES}
    meta = {"n_layers": str(lm.n_layers), "hidden_size": str(lm.hidden_size), "model_id": lm.model_id,
            "weights_sha256": lm.weights_sha256}
    vv = ValueVectors(vecs, meta, torch.full((lm.n_layers,), 10.0))
    comps, _ = decompose(vv)
    return SteeringSource(vv, comps)


def encode(lm, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded chat prompts for ``texts``."""
    from valuemech.batching import left_pad

    return left_pad([lm.prompt_ids(t, None) for t in texts], lm.tokenizer.pad_token_id)


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port in a background thread."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


# --------------------------------------------------------------------------------------------------
# The CLI as a user meets it: one-line errors, run directories compared by file hashes
# --------------------------------------------------------------------------------------------------

def cli(*args):
    """``valuemech ARGS`` in-process (stdout and stderr kept apart)."""
    from typer.testing import CliRunner

    from valuemech.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_cli_error(result, *needles: str, logged: bool = False) -> None:
    """Exit 2, no traceback, and stderr is one line ``error: ...`` holding every needle (``logged``: a
    fault met after work began, so stage progress lines come before that one error line, the last)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output, result.output
    assert lines and lines[-1].startswith("error:"), lines
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    assert logged or len(lines) == 1, lines
    for n in needles:
        assert n in lines[-1], lines[-1]


def tree_hashes(root) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): equal before and after means nothing
    was written, changed, left partial or removed."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    """A finished smoke run (tiny model, random judge, no evaluations): copy it before changing anything."""
    root = tmp_path_factory.mktemp("smoke-session") / "run"
    result = cli("run", "--preset", "smoke", "--out", root, "--quiet", "--evals", "none")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: what is checked before work must fail before the model loads."""
    from valuemech import pipeline
    from valuemech.models import loading

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(pipeline, "load_model", refuse)
