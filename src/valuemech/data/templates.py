"""Value-priority system-prompt templates: the built-in paraphrases and a JSON loader."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from valuemech.errors import ValuemechError
from valuemech.io import load_json
from valuemech.values import VALUES, canonical_value


def _check(templates: dict, where: str) -> dict[str, list[str]]:
    if not isinstance(templates, dict):
        raise ValuemechError(f"{where}: expected a JSON object mapping value ids to lists of templates")
    out: dict[str, list[str]] = {}
    for key, items in templates.items():
        try:
            value = canonical_value(key)
        except ValuemechError as exc:
            raise ValuemechError(f"{where}: {exc}") from None
        if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
            raise ValuemechError(f"{where}: templates for {key!r} must be a non-empty list of strings")
        out[value] = list(items)
    return out


def builtin_templates() -> dict[str, list[str]]:
    """The built-in system prompts (at least 25 paraphrases per value), written for valuemech."""
    raw = resources.files("valuemech.data").joinpath("builtin/system_prompts.json").read_text("utf-8")
    return _check(json.loads(raw), "builtin system_prompts.json")


def load_templates(source: str = "builtin", values: list[str] | None = None) -> dict[str, list[str]]:
    """Templates from "builtin" or a JSON file; every requested value must have some."""
    if source == "builtin":
        templates = builtin_templates()
    else:
        path = Path(source)
        if not path.is_file():
            raise ValuemechError(f"template file {path} does not exist")
        templates = _check(load_json(path), str(path))
    missing = [v for v in (values or VALUES) if v not in templates]
    if missing:
        where = "" if source == "builtin" else f"{source}: "
        raise ValuemechError(f"{where}no system-prompt templates for: {', '.join(missing)}")
    return templates
