"""Built-in data sizes and the query/template loaders, including their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valuemech.data import builtin_queries, builtin_templates, load_queries, load_templates, select_queries
from valuemech.errors import ValuemechError
from valuemech.values import VALUES, canonical_value, parse_values

FIX = Path(__file__).parent / "fixtures"


def test_builtin_pool_and_templates_are_large_enough_and_balanced():
    qs = builtin_queries()
    assert len(qs) >= 300
    assert len({q.id for q in qs}) == len(qs) and len({q.text for q in qs}) == len(qs)
    for v in VALUES:
        assert sum(v in q.meta["values"] for q in qs) >= 20, v
    t = builtin_templates()
    assert set(t) == set(VALUES)
    for v, items in t.items():
        assert len(set(items)) >= 20, v


def test_jsonl_csv_and_text_field(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"id": "a", "prompt": "Should I save or spend?"}\n\n{"prompt": "Is it ok to skip a wedding?"}\n')
    qs = load_queries(p)
    assert [q.text for q in qs] == ["Should I save or spend?", "Is it ok to skip a wedding?"]
    assert qs[0].id == "a"
    c = tmp_path / "q.csv"
    c.write_text("id,question,other\n1,How do I lead a team?,x\n2,\"Is tradition, in the end, good?\",y\n")
    assert [q.text for q in load_queries(c)] == ["How do I lead a team?", "Is tradition, in the end, good?"]
    assert [q.text for q in load_queries(c, text_field="other")] == ["x", "y"]


def test_sharegpt_and_value_portrait_formats():
    sg = load_queries(FIX / "sharegpt.json")
    assert [q.text for q in sg] == ["Is it wise to quit a stable job to travel?", "What makes a good neighbour?"]
    vp = load_queries(FIX / "value_portrait_query.json")
    assert vp[0].id == "vp_a" and vp[0].text == "how should I choose what to study?"
    assert vp[1].text.startswith("Family dinner\n\nMy sister")


@pytest.mark.parametrize("content,match", [
    ("this is plain text, not a query file", "not a query file"),
    ('{"id": 1, "body": "no text field"}\n', "no a text field"),
    ("[1, 2]", "list of objects"),
    ('{"text": "ok"}\n{broken\n', "line 2 is not valid JSON"),
    ("", "not a query file"),
    ("[]", "empty"),
])
def test_bad_query_files_give_one_line_errors(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ValuemechError, match=match) as info:
        load_queries(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_missing_file_and_selection(tmp_path):
    with pytest.raises(ValuemechError, match="does not exist"):
        load_queries(tmp_path / "nope.jsonl")
    a = select_queries("builtin", 10, seed=1)
    assert a == select_queries("builtin", 10, seed=1) and a != select_queries("builtin", 10, seed=2)


def test_value_names_and_templates_file(tmp_path):
    assert canonical_value("Self-Direction") == "self_direction"
    assert canonical_value("UNIVERSALISM") == "universalism"
    assert parse_values("power, Tradition") == ["power", "tradition"]
    with pytest.raises(ValuemechError, match="unknown value 'honour'"):
        parse_values("power,honour")
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"Power": ["Seek control."]}))
    assert load_templates(str(p), ["power"]) == {"power": ["Seek control."]}
    with pytest.raises(ValuemechError, match="no system-prompt templates for: tradition"):
        load_templates(str(p), ["power", "tradition"])
