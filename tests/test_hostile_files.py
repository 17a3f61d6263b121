"""Hostile files: every loader ends malformed input in a one-line ValuemechError naming the file.

Property-based (hypothesis) fuzzing of each public-format loader and of the run-directory artifacts;
the CLI on bad inputs (exit 2, one ``error:`` line, no traceback, nothing partial written);
safetensors with wrong shapes or another model's metadata; and security checks (no pickle,
``yaml.safe_load`` only, remote code only when the config asks).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from valuemech.config import load_config
from valuemech.data import load_queries, load_templates, select_queries
from valuemech.errors import ValuemechError
from valuemech.evals.capability import load_mmlu_csv
from valuemech.evals.dilemmas import load_dilemmas
from valuemech.evals.instruct import load_prompts
from valuemech.evals.jailbreak import load_requests
from valuemech.evals.pvq import load_items
from valuemech.evals.value_portrait import load_value_portrait
from valuemech.values import VALUES

SRC = Path(__file__).resolve().parents[1] / "src" / "valuemech"
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def assert_clean(call: Callable[[Path], object], path: Path) -> None:
    """``call(path)`` succeeds or raises a one-line ValuemechError naming ``path``; anything else fails."""
    try:
        call(path)
    except ValuemechError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, f"multi-line error: {msg!r}"
        assert str(path) in msg, f"error does not name {path}: {msg!r}"


# --------------------------------------------------------------------------------------------------
# Strategies: almost-valid records, serialised per format, then mangled
# --------------------------------------------------------------------------------------------------

HUGE = "9" * 5000  # an integer beyond Python's int-from-string digit limit (a ValueError, not a JSONDecodeError)
TEXT = st.text(min_size=1, max_size=30)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT,
                   st.sampled_from([float("nan"), float("inf"), -float("inf"), 10 ** 30, -1, 0, ""]))
JSON = st.recursive(SCALAR, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=10)
VALUE_NAME = st.sampled_from(list(VALUES) + ["Self-Direction", "self direction", "POWER", " benevolence ", "kindness",
                                             "", "universalism:nature", "Achievment", "12"])


def field(good: st.SearchStrategy) -> st.SearchStrategy:
    """A field's content: usually a plausible value, sometimes any JSON value."""
    return st.one_of(good, good, good, JSON)


@st.composite
def record(draw, fields: dict[str, st.SearchStrategy], junk_keys: bool = True) -> dict:
    """An object where each of ``fields`` is usually present and plausible, sometimes missing or junk,
    and which sometimes has unknown keys."""
    out = {}
    if junk_keys and draw(st.integers(0, 3)) == 0:
        out.update(draw(st.dictionaries(TEXT, JSON, min_size=1, max_size=2)))
    for key, good in fields.items():
        roll = draw(st.integers(0, 9))
        if roll == 0:
            continue  # missing
        out[key] = draw(JSON) if roll == 1 else draw(good)
    return out


def document(rec: st.SearchStrategy) -> st.SearchStrategy:
    """A top-level value: usually a list of records, sometimes one record or any JSON value."""
    return st.one_of(st.lists(rec, min_size=1, max_size=4), st.lists(rec, max_size=4), rec, JSON)


def _cell(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


@st.composite
def serialised(draw, doc: st.SearchStrategy, suffix: str, columns: list[str]) -> str:
    """``doc`` drawn and written as JSON, JSON Lines, CSV (ragged, odd headers) or YAML."""
    obj = draw(doc)
    fmt = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".yaml": "yaml"}.get(suffix) or \
        draw(st.sampled_from(["json", "jsonl", "csv"]))
    if fmt == "json":
        return json.dumps(obj)
    if fmt == "jsonl":
        items = obj if isinstance(obj, list) else [obj]
        lines = [json.dumps(x) for x in items] + draw(st.lists(TEXT, max_size=1))
        return "\n".join(draw(st.permutations(lines)))
    if fmt == "yaml":
        return draw(st.text(max_size=80)) if draw(st.integers(0, 4)) == 0 else yaml.safe_dump(obj)
    rows = obj if isinstance(obj, list) else [obj]
    header = list(draw(st.permutations(columns)))
    if draw(st.integers(0, 2)) == 0:  # columns missing or extra
        header = draw(st.lists(st.sampled_from(columns) | TEXT, max_size=len(columns) + 1, unique=True))
    out = io.StringIO()
    writer = csv.writer(out)
    if header or draw(st.booleans()):
        writer.writerow(header)
    for r in rows:
        cells = [_cell(r.get(h, "")) if isinstance(r, dict) else _cell(r) for h in header]
        cut = draw(st.integers(0, len(cells) + 2))  # ragged rows: short or long
        cells = (cells + [draw(TEXT) for _ in range(2)])[:cut]
        if draw(st.booleans()):
            writer.writerow(cells)
        else:  # no quoting: stray quotes and commas break the row structure
            out.write(",".join(cells) + "\n")
    return out.getvalue()


@st.composite
def mangled(draw, text: st.SearchStrategy) -> bytes:
    """Bytes of ``text``, often damaged: truncated, BOM, UTF-16, invalid UTF-8, NUL, huge integers, empty."""
    s = draw(text)
    how = draw(st.sampled_from(["as_is"] * 6 + ["truncate", "bom", "utf16", "invalid", "nul", "huge", "empty"]))
    if how == "huge":  # the first number, null or string becomes a 5000-digit integer
        s = re.sub(r'-?\d+(\.\d+)?|\bnull\b|"[^"\\]*"', HUGE, s, count=1)
    data = s.encode("utf-8")
    if how == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "utf16":
        return s.encode("utf-16")
    if how == "invalid":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x80\x80", b"\xed\xa0\x80"])) + data[at:]
    if how == "nul":
        at = draw(st.integers(0, len(data)))
        return data[:at] + b"\x00" + data[at:]
    if how == "empty":
        return draw(st.sampled_from([b"", b"\n", b"   \n\n", b"\xef\xbb\xbf"]))
    return data


def hostile(doc: st.SearchStrategy, suffix: str, columns: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(*[mangled(serialised(doc, suffix, columns))] * 6, st.binary(max_size=200))


# Plausible field values per format ----------------------------------------------------------------

TURN = st.one_of(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system"]), "value": TEXT}),
                 st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXT}))
QUERY = {"text": TEXT, "query": TEXT, "prompt": TEXT, "question": TEXT, "content": TEXT | st.fixed_dictionaries(
    {"title": st.none() | TEXT, "text": TEXT}), "id": TEXT | st.integers(), "lang": st.sampled_from(["en", "fr"]),
    "conversations": st.lists(TURN, max_size=3), "messages": st.lists(TURN, max_size=3),
    "extra": st.fixed_dictionaries({"id": TEXT | st.integers()})}
PVQ = {"id": TEXT, "value": VALUE_NAME, "text": TEXT, "lang": st.sampled_from(["en", "zh", "es", "fr", "ko", "xx"])}
CORR = st.lists(st.tuples(VALUE_NAME, st.floats() | st.integers() | TEXT).map(list), max_size=4)
PORTRAIT = {"content": st.fixed_dictionaries({"title": st.none() | TEXT, "text": TEXT}),
            "outputs": st.lists(record({"content": TEXT, "correlations": CORR}), max_size=3),
            "extra": st.fixed_dictionaries({"id": TEXT | st.integers()})}
DILEMMA = {"dilemma": TEXT, "action_a": TEXT, "action_b": TEXT, "value_a": VALUE_NAME, "value_b": VALUE_NAME,
           "id": TEXT, "lang": st.sampled_from(["en", "de", ""])}
REQUEST = {"goal": TEXT, "target": TEXT, "Behavior": TEXT, "request": TEXT, "prompt": TEXT, "id": TEXT,
           "BehaviorID": TEXT, "category": TEXT, "SemanticCategory": TEXT, "ContextString": TEXT}
IF_IDS = ["length_constraints:number_words", "detectable_format:number_bullet_lists", "punctuation:no_comma",
          "change_case:english_lowercase", "keywords:existence", "detectable_format:title", "language:response_language",
          "startend:end_checker", "unknown:instruction"]
IF_KWARGS = st.dictionaries(st.sampled_from(["num_words", "relation", "num_bullets", "keywords", "language",
                                             "end_phrase", "num_highlights", "forbidden_words"]),
                            st.one_of(st.integers(-3, 100), st.sampled_from(["less than", "at least", "en", "xx"]),
                                      st.lists(TEXT, max_size=2), JSON), max_size=3)
IFEVAL = {"key": st.integers() | TEXT, "prompt": TEXT, "instruction_id_list": st.lists(st.sampled_from(IF_IDS), max_size=3),
          "kwargs": st.lists(IF_KWARGS, max_size=3)}
MMLU_ROW = st.one_of(st.tuples(TEXT, TEXT, TEXT, TEXT, TEXT, st.sampled_from(["A", "b", " C ", "D", "E", "1", ""]))
                     .map(list), st.lists(TEXT, max_size=8))
TEMPLATES = st.dictionaries(VALUE_NAME | TEXT, field(st.lists(TEXT, max_size=3)), max_size=11)


def _config_doc() -> st.SearchStrategy:
    from dataclasses import fields

    from valuemech.config import RunConfig

    def like(default) -> st.SearchStrategy:  # the default, or another value of its type
        kind = {bool: st.booleans(), int: st.integers(-2, 50), float: st.floats(), str: TEXT,
                list: st.lists(VALUE_NAME, max_size=3), dict: st.dictionaries(TEXT, JSON, max_size=2)}
        return st.just(default) | kind.get(type(default), st.none() | st.integers(0, 4) | TEXT)

    sections = {}
    for f in fields(RunConfig):
        default = getattr(RunConfig(), f.name)
        if hasattr(default, "__dataclass_fields__"):
            sections[f.name] = record({k.name: like(getattr(default, k.name)) for k in fields(default)
                                       if draw_field(k.name)}, junk_keys=False)
        else:
            sections[f.name] = like(default)
    sections["preset"] = st.sampled_from(["smoke", "quick", "paper", "nope"])
    return record(sections)


def draw_field(name: str) -> bool:
    """Config fields left out of the fuzzed documents (their values would be used for real: a model name)."""
    return name not in ("name",)


def _mmlu_doc() -> st.SearchStrategy[str]:
    def write(rows):
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue()
    return st.lists(MMLU_ROW, max_size=4).map(write)


LOADERS: dict[str, tuple[Callable[[Path], object], dict[str, st.SearchStrategy[bytes]]]] = {
    "queries": (load_queries, {s: hostile(document(record(QUERY)), s, list(QUERY)) for s in (".jsonl", ".json", ".csv", ".txt")}),
    "select_queries": (lambda p: select_queries(str(p), n=2, seed=1), {".jsonl": hostile(document(record(QUERY)), ".jsonl", list(QUERY))}),
    "templates": (lambda p: load_templates(str(p)), {".json": hostile(TEMPLATES | JSON, ".json", [])}),
    "pvq": (load_items, {s: hostile(document(record(PVQ)), s, list(PVQ)) for s in (".json", ".csv")}),
    "value_portrait": (load_value_portrait, {".json": hostile(document(record(PORTRAIT)), ".json", [])}),
    "dilemmas": (load_dilemmas, {s: hostile(document(record(DILEMMA)), s, list(DILEMMA)) for s in (".csv", ".json", ".jsonl")}),
    "jailbreak": (load_requests, {s: hostile(document(record(REQUEST) | TEXT), s, list(REQUEST)) for s in (".csv", ".json", ".jsonl")}),
    "instruct": (load_prompts, {s: hostile(document(record(IFEVAL)), s, list(IFEVAL)) for s in (".jsonl", ".json")}),
    "mmlu": (load_mmlu_csv, {".csv": st.one_of(mangled(_mmlu_doc()), st.binary(max_size=200))}),
    "config": (load_config, {".yaml": hostile(_config_doc(), ".yaml", [])}),
}
CASES = [(name, suffix) for name, (_, by_suffix) in LOADERS.items() for suffix in by_suffix]


@pytest.mark.parametrize("name,suffix", CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_loader_on_hostile_content(name, suffix):
    call, by_suffix = LOADERS[name]

    @FUZZ
    @given(content=by_suffix[suffix])
    def check(content: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"input{suffix}"
            path.write_bytes(content)
            assert_clean(call, path)

    check()


@pytest.mark.parametrize("name", list(LOADERS))
def test_loader_on_missing_path_directory_and_empty_file(name, tmp_path):
    call, by_suffix = LOADERS[name]
    suffix = next(iter(by_suffix))
    for path in (tmp_path / f"absent{suffix}", tmp_path / f"adir{suffix}", tmp_path / f"empty{suffix}"):
        if path.name.startswith("adir"):
            path.mkdir()
        elif path.name.startswith("empty"):
            path.write_bytes(b"")
        with pytest.raises(ValuemechError) as info:
            call(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value), str(info.value)
