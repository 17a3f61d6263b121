"""Schwartz's 10 basic values: canonical ids, definitions, circumplex angles, groups."""

from __future__ import annotations

import math
import re

from valuemech.errors import ValuemechError

#: Canonical ids, in circumplex order (use exactly these strings everywhere).
VALUES: tuple[str, ...] = (
    "self_direction",
    "stimulation",
    "hedonism",
    "achievement",
    "power",
    "security",
    "conformity",
    "tradition",
    "benevolence",
    "universalism",
)

DEFINITIONS: dict[str, str] = {
    "self_direction": "Independent thought and action: choosing, creating, exploring.",
    "stimulation": "Excitement, novelty and challenge in life.",
    "hedonism": "Pleasure and sensuous gratification for oneself.",
    "achievement": "Personal success through demonstrating competence according to social standards.",
    "power": "Social status and prestige, control or dominance over people and resources.",
    "security": "Safety, harmony and stability of society, of relationships, and of self.",
    "conformity": "Restraint of actions likely to upset or harm others and violate social norms.",
    "tradition": "Respect, commitment and acceptance of the customs and ideas of one's culture or religion.",
    "benevolence": "Preserving and enhancing the welfare of those with whom one is in frequent personal contact.",
    "universalism": "Understanding, appreciation, tolerance and protection for the welfare of all people and nature.",
}

#: Higher-order groups; hedonism is shared by openness_to_change and self_enhancement.
GROUPS: dict[str, tuple[str, ...]] = {
    "openness_to_change": ("self_direction", "stimulation", "hedonism"),
    "self_enhancement": ("achievement", "power", "hedonism"),
    "conservation": ("security", "conformity", "tradition"),
    "self_transcendence": ("benevolence", "universalism"),
}

#: Theoretical circumplex angle (radians), values evenly spaced in circumplex order.
ANGLES: dict[str, float] = {v: 2 * math.pi * i / len(VALUES) for i, v in enumerate(VALUES)}

_ALIASES: dict[str, str] = {
    "selfdirection": "self_direction",
    "universal": "universalism",
    "benevolent": "benevolence",
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def canonical_value(name: str) -> str:
    """Map a value id or a common spelling ("Self-Direction", "self direction") to its id."""
    if not isinstance(name, str):
        raise ValuemechError(f"a value name must be a string, not {type(name).__name__}")
    key = _squash(name)
    for value in VALUES:
        if _squash(value) == key:
            return value
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValuemechError(f"unknown value {name!r}; known values: {', '.join(VALUES)}")


def parse_values(names: str | list[str] | None) -> list[str]:
    """Parse a comma list or list of value names; None or "all" means every value."""
    if names is None:
        return list(VALUES)
    if isinstance(names, str):
        if names.strip().lower() == "all":
            return list(VALUES)
        names = [n for n in names.split(",") if n.strip()]
    if not isinstance(names, (list, tuple)):
        raise ValuemechError(f"values must be a list or a comma list of value names, not {type(names).__name__}")
    out = [canonical_value(n) for n in names]
    if not out:
        raise ValuemechError("empty value list")
    return out
