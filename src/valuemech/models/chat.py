"""Chat formatting with and without a system prompt, and the template's default system prompt."""

from __future__ import annotations

from valuemech.errors import ValuemechError

_SYS = "\x00VALUEMECH_SYSTEM\x00"
_USER = "\x00VALUEMECH_USER\x00"


def _render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def supports_system(tokenizer) -> bool:
    """Whether the chat template accepts a system message (Gemma's rejects one)."""
    try:
        text = _render(tokenizer, [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}])
    except Exception:  # jinja raises TemplateError via raise_exception
        return False
    return _SYS in text


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt the template inserts when none is given (None if it inserts none).

    Renders the conversation with a marker system prompt and without one; if the two differ
    only where the marker stood, the text standing there is the default.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    plain = _render(tokenizer, [{"role": "user", "content": _USER}])
    if not supports_system(tokenizer):
        return None
    with_sys = _render(tokenizer, [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}])
    prefix, suffix = with_sys.split(_SYS, 1)
    if plain.startswith(prefix) and plain.endswith(suffix) and len(plain) >= len(prefix) + len(suffix):
        default = plain[len(prefix): len(plain) - len(suffix)]
        return default or None
    return None


def format_chat(tokenizer, query: str, system_prompt: str | None,
                system_ok: bool | None = None) -> str:
    """Render one user turn (with an optional system prompt) ready for the assistant's reply.

    Templates that reject a system role get the system prompt prepended to the user turn.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValuemechError("the tokenizer has no chat template; valuemech needs a chat model")
    if system_prompt is None:
        return _render(tokenizer, [{"role": "user", "content": query}])
    if system_ok is None:
        system_ok = supports_system(tokenizer)
    if system_ok:
        return _render(tokenizer, [{"role": "system", "content": system_prompt},
                                   {"role": "user", "content": query}])
    return _render(tokenizer, [{"role": "user", "content": f"{system_prompt}\n\n{query}"}])


def prompt_ids(tokenizer, query: str, system_prompt: str | None,
               system_ok: bool | None = None) -> list[int]:
    """Token ids of the formatted prompt (the template supplies any BOS token itself)."""
    text = format_chat(tokenizer, query, system_prompt, system_ok)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
