"""Value Portrait's published format (``query-response-tagged.json``): candidate responses to real
queries, each tied to the 10 values by the correlation, in a human survey, between endorsing the
response and holding the value. Read by the Value Portrait evaluation and by the judges' validation
on human data (:mod:`valuemech.judges.human`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from valuemech.errors import ValuemechError
from valuemech.io import load_json
from valuemech.values import canonical_value


@dataclass(frozen=True)
class PortraitResponse:
    """One candidate response with its query and its correlation with each value."""

    id: str
    query: str
    text: str
    correlations: dict[str, float]

    @property
    def query_id(self) -> str:
        """The query this response answers (its five responses share it): ``id`` is ``<query id>/<k>``."""
        return self.id.rsplit("/", 1)[0]


def _fail(path: Path, msg: str) -> ValuemechError:
    return ValuemechError(f"{path}: {msg}")


def load_value_portrait(path: str | Path) -> list[PortraitResponse]:
    """Read the benchmark's ``query-response-tagged.json`` format (one record per candidate response)."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"Value Portrait file {path} does not exist")
    return parse_value_portrait(load_json(path), path)


def parse_value_portrait(raw, path: str | Path = "<value portrait>") -> list[PortraitResponse]:
    """Validate parsed JSON in the Value Portrait format (see :func:`load_value_portrait`)."""
    path = Path(path)
    if not isinstance(raw, list):
        raise _fail(path, "expected a JSON list of items")
    out: list[PortraitResponse] = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not isinstance(item.get("content"), dict) \
                or not isinstance(item["content"].get("text"), str) or not item["content"]["text"].strip():
            raise _fail(path, f"item {i} has no content.text")
        outputs = item.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise _fail(path, f"item {i} has no outputs")
        extra = item.get("extra")
        item_id = str(extra["id"]) if isinstance(extra, dict) and extra.get("id") else str(i)
        for j, o in enumerate(outputs, 1):
            if not isinstance(o, dict) or not isinstance(o.get("content"), str) or not o["content"].strip():
                raise _fail(path, f"item {i} output {j} has no content")
            corr = o.get("correlations")
            if not isinstance(corr, list) or not corr:
                raise _fail(path, f"item {i} output {j} has no correlations")
            parsed: dict[str, float] = {}
            for pair in corr:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str):
                    raise _fail(path, f"item {i} output {j}: correlations must be [value name, r] pairs")
                try:
                    value = canonical_value(pair[0])
                except ValuemechError:
                    raise _fail(path, f"item {i} output {j}: unknown value name {pair[0]!r}") from None
                try:
                    parsed[value] = float(pair[1])
                except (TypeError, ValueError):
                    raise _fail(path, f"item {i} output {j}: correlation of {pair[0]!r} is not a number") from None
            out.append(PortraitResponse(f"{item_id}/{j}", item["content"]["text"].strip(), o["content"].strip(), parsed))
    if not out:
        raise _fail(path, "no items")
    return out
