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
