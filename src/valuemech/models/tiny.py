"""Tiny randomly initialised chat models (llama, qwen2, qwen3, mistral, gemma2, gemma3) for tests.

Built from configs, no download: a byte-level tokenizer with a ChatML template and a
2–4 layer decoder. Weights are seeded, so two builds are identical.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from valuemech.errors import ValuemechError
from valuemech.models.tiny_names import TINY_FAMILIES

SPECIALS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)



def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 3 specials) with a ChatML template."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
        bos_token=None, additional_special_tokens=["<|im_start|>"],
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_config(family: str, n_layers: int = 2, vocab_size: int = 259):
    """A small config of the given family (hidden 64, MLP 128, 4 heads, 2 KV heads)."""
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, pad_token_id=0, eos_token_id=2, bos_token_id=1)
    if family == "llama":
        from transformers import LlamaConfig
        return LlamaConfig(**common)
    if family == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(**common)
    if family == "qwen3":
        from transformers import Qwen3Config
        return Qwen3Config(head_dim=16, **common)
    if family == "mistral":
        from transformers import MistralConfig
        return MistralConfig(**common)
    if family == "gemma2":
        from transformers import Gemma2Config
        return Gemma2Config(head_dim=16, sliding_window=64, **common)
    if family == "gemma3":
        from transformers import Gemma3TextConfig
        return Gemma3TextConfig(head_dim=16, sliding_window=64, **common)
    raise ValuemechError(f"unknown tiny model family {family!r}; known: {', '.join(TINY_FAMILIES)}")


def tiny_model(family: str = "llama", n_layers: int = 2, seed: int = 0):
    """Return ``(model, tokenizer)``: a seeded random model in float32, eval mode."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(family, n_layers=n_layers, vocab_size=len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.eval()
    return model, tokenizer
