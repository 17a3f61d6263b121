"""User queries: the built-in English pool and loaders for JSONL, CSV, ShareGPT and Value Portrait files.

Formats accepted by :func:`load_queries` (chosen by content, not only by extension):
- JSONL: one object per line with a text field (``text``, ``query``, ``prompt``, ``question``,
  ``instruction`` or ``content``; or name it with ``text_field``);
- CSV with a header row containing such a column;
- JSON list of the same objects;
- ShareGPT-style conversations: objects with ``conversations`` (``from``/``value``) or
  ``messages`` (``role``/``content``); the first human/user turn is the query;
- Value Portrait ``data/query/*.json``: objects with ``content: {title, text}`` (title and
  text are joined) and an optional ``extra.id``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from valuemech.errors import ValuemechError
from valuemech.io import parse_json, parse_jsonl, read_text

TEXT_FIELDS = ("text", "query", "prompt", "question", "instruction", "content")


@dataclass(frozen=True)
class Query:
    """One user query."""

    id: str
    text: str
    lang: str = "en"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def builtin_queries() -> list[Query]:
    """The built-in pool of everyday English queries written for valuemech."""
    raw = resources.files("valuemech.data").joinpath("builtin/queries_en.jsonl").read_text("utf-8")
    out = []
    for line in raw.splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append(Query(id=rec["id"], text=rec["text"], lang="en",
                             meta={"topic": rec.get("topic"), "values": rec.get("values", [])}))
    return out


def _first_user_turn(rec: dict) -> str | None:
    turns = rec.get("conversations") or rec.get("messages") or rec.get("conversation")
    if not isinstance(turns, list):
        return None
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("from", turn.get("role", ""))).lower()
        if role in ("human", "user"):
            text = turn.get("value", turn.get("content"))
            return text if isinstance(text, str) else None
    return None


def _record_text(rec: dict, text_field: str | None) -> str | None:
    if text_field is not None:
        value = rec.get(text_field)
        return value if isinstance(value, str) else None
    content = rec.get("content")
    if isinstance(content, dict) and "text" in content:  # Value Portrait
        title, body = content.get("title"), content.get("text")
        parts = [p for p in (title, body) if isinstance(p, str) and p.strip()]
        return "\n\n".join(parts) if parts else None
    turn = _first_user_turn(rec)
    if turn is not None:
        return turn
    for key in TEXT_FIELDS:
        if isinstance(rec.get(key), str):
            return rec[key]
    return None


def _record_id(rec: dict, index: int) -> str:
    for key in ("id", "query_id"):
        if isinstance(rec.get(key), (str, int)):
            return str(rec[key])
    extra = rec.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("id"), (str, int)):
        return str(extra["id"])
    return f"q{index:05d}"


def _parse_records(path: Path, raw: str) -> list[dict]:
    stripped = raw.lstrip()
    if path.suffix.lower() == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(raw))
            rows = list(reader)
        except csv.Error as exc:
            raise ValuemechError(f"{path}: not a readable CSV ({exc})") from None
        if not reader.fieldnames:
            raise ValuemechError(f"{path}: CSV has no header row")
        return rows
    if stripped.startswith("["):
        data = parse_json(raw, str(path))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValuemechError(f"{path}: expected a JSON list of objects")
        return data
    if stripped.startswith("{"):
        return parse_jsonl(raw, str(path))
    raise ValuemechError(f"{path}: not a query file (expected JSON, JSON Lines or CSV with a header)")


def load_queries(path: str | Path, text_field: str | None = None, lang: str = "en") -> list[Query]:
    """Load queries from a user-supplied file (see the module docstring for formats)."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"query file {path} does not exist")
    records = _parse_records(path, read_text(path))
    queries, seen = [], set()
    for i, rec in enumerate(records):
        text = _record_text(rec, text_field)
        if text is None or not text.strip():
            wanted = repr(text_field) if text_field else "a text field (" + ", ".join(TEXT_FIELDS) + ")"
            raise ValuemechError(f"{path}: record {i + 1} has no {wanted}")
        qid = _record_id(rec, i + 1)
        if qid in seen:
            qid = f"{qid}#{i + 1}"
        seen.add(qid)
        queries.append(Query(id=qid, text=text.strip(), lang=str(rec.get("lang", lang))))
    if not queries:
        raise ValuemechError(f"{path}: the query pool is empty")
    return queries


def select_queries(source: str = "builtin", n: int | None = None, seed: int = 0,
                   text_field: str | None = None) -> list[Query]:
    """The run's query pool: built-in or from a path, optionally a seeded subsample of ``n``."""
    pool = builtin_queries() if source == "builtin" else load_queries(source, text_field)
    if not pool:
        raise ValuemechError("the query pool is empty")
    if n is not None and n < len(pool):
        pool = random.Random(seed).sample(pool, n)
    return pool
