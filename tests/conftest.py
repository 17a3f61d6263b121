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


def encode(lm, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded chat prompts for ``texts``."""
    from valuemech.generate import left_pad

    return left_pad([lm.prompt_ids(t, None) for t in texts], lm.tokenizer.pad_token_id)
