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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from conftest import assert_cli_error
from valuemech.cli import app
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
# text with the characters that break formats and one-line messages more often than chance would
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(list("\n\r\t,;\"'[]{}/\\ \ufeff")), min_size=1, max_size=30)
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
        if draw(st.integers(0, 2)) == 0:  # ragged rows: short or long
            cells = (cells + [draw(TEXT) for _ in range(2)])[: draw(st.integers(0, len(cells) + 2))]
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


def formats(fields: dict, suffixes: tuple[str, ...], rec: st.SearchStrategy | None = None) -> dict:
    """Hostile bytes per file suffix for records with ``fields``."""
    doc = document(rec if rec is not None else record(fields))
    return {s: hostile(doc, s, list(fields)) for s in suffixes}


LOADERS: dict[str, tuple[Callable[[Path], object], dict[str, st.SearchStrategy[bytes]]]] = {
    "queries": (load_queries, formats(QUERY, (".jsonl", ".json", ".csv", ".txt"))),
    "select_queries": (lambda p: select_queries(str(p), n=2, seed=1), formats(QUERY, (".jsonl",))),
    "templates": (lambda p: load_templates(str(p)), {".json": hostile(TEMPLATES | JSON, ".json", [])}),
    "pvq": (load_items, formats(PVQ, (".json", ".csv"))),
    "value_portrait": (load_value_portrait, formats(PORTRAIT, (".json",))),
    "dilemmas": (load_dilemmas, formats(DILEMMA, (".csv", ".json", ".jsonl"))),
    "jailbreak": (load_requests, formats(REQUEST, (".csv", ".json", ".jsonl"), record(REQUEST) | TEXT)),
    "instruct": (load_prompts, formats(IFEVAL, (".jsonl", ".json"))),
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


@pytest.mark.parametrize("name,suffix,content", [
    ("jailbreak", ".json", '[{"a\\nb": "x"}]'),  # column names are echoed in the error
    ("jailbreak", ".csv", '"col\none",x\n1,2\n'),
    ("dilemmas", ".jsonl", '{"dilemma": "d", "action_a": "a", "action_b": "b", "value_a": "a\\nb", "value_b": "power"}'),
    ("dilemmas", ".csv", 'dilemma,action_a,action_b,value_a,value_b,lang\nd,a,b,power,security,"e\nn"\n'),
    ("pvq", ".csv", 'id,value,text,lang\n1,power,t,"x\ny"\n'),
    ("value_portrait", ".json", '[{"content": {"text": "q"}, "outputs": [{"content": "r", "correlations": [["a\\nb", 1]]}]}]'),
    ("templates", ".json", '{"power\\n": ["x"]}'),
    ("instruct", ".jsonl", '{"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"], '
                           '"kwargs": [{"relation": "less\\nthan", "num_words": 5}]}'),
    ("config", ".yaml", '"a\\nb": 1\n'),
    ("config", ".yaml", 'model: {dtype: "x\\ny", name: 3}\n'),
])
def test_text_from_the_file_stays_on_one_line(name, suffix, content, tmp_path):
    path = tmp_path / f"input{suffix}"
    path.write_text(content)
    with pytest.raises(ValuemechError) as info:
        LOADERS[name][0](path)
    assert "\n" not in str(info.value) and str(path) in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------------
# Run directories: one file damaged at a time, read as summary / eval markdown / steering read them
# --------------------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run (tiny model, no evaluations); tests must leave it as they found it."""
    root = tmp_path_factory.mktemp("hostile") / "run"
    result = invoke("run", "--preset", "smoke", "--out", root, "--quiet", "--evals", "none")
    assert result.exit_code == 0, result.output
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_run(root: Path) -> None:
    """Everything ``summary``, ``eval markdown`` and the steering source read from a run directory."""
    from valuemech.evals.common import chosen_settings
    from valuemech.labels import following_rates
    from valuemech.neurons import load_neurons
    from valuemech.pipeline import open_run, summary_rows
    from valuemech.report.tables import run_markdown
    from valuemech.steering import SteeringSource

    rd, _ = open_run(root)
    following_rates(rd.load_responses(), rd.load_labels())
    summary_rows(rd)
    SteeringSource.from_run(root)
    load_neurons(rd.neurons_json)
    chosen_settings(rd)  # what every evaluation reads from evals/sweep.json
    run_markdown(root)


@st.composite
def mutated(draw, obj, depth: int = 0):
    """``obj`` with one spot changed: a value replaced by junk, a key dropped or added, an item dropped."""
    if isinstance(obj, (dict, list)) and obj and depth < 8 and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(obj) if isinstance(obj, dict) else range(len(obj))))
        out = dict(obj) if isinstance(obj, dict) else list(obj)
        out[key] = draw(mutated(obj[key], depth + 1))
        return out
    how = draw(st.integers(0, 2))
    if how == 0 or not isinstance(obj, (dict, list)) or not obj:
        return draw(JSON | VALUE_NAME)
    if isinstance(obj, dict):
        key = draw(st.sampled_from(sorted(obj)))
        return {k: v for k, v in obj.items() if k != key} if how == 1 else {**obj, draw(TEXT): draw(JSON)}
    i = draw(st.integers(0, len(obj) - 1))
    return obj[:i] + obj[i + 1:] if how == 1 else obj + [draw(JSON)]


@st.composite
def damaged_jsonl(draw, text: str) -> str:
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = json.dumps(draw(mutated(json.loads(lines[i]))))
    return "\n".join(lines) + "\n"


@st.composite
def damaged_safetensors(draw, data: bytes) -> bytes:
    """A safetensors file with wrong shapes, dtypes, NaN, unknown names, or missing/odd metadata."""
    from safetensors.torch import load as st_load

    tensors = st_load(data)
    meta = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})
    keys = sorted(k for k in tensors if k != "stats.residual_norm")
    key = draw(st.sampled_from(keys))
    t = tensors[key]
    how = draw(st.sampled_from(["rows+1", "1d", "transpose", "int", "nan", "inf", "unknown_value", "unknown_kind",
                                "drop_meta", "odd_meta", "norm", "empty_meta"]))
    if how == "rows+1":
        tensors[key] = torch.zeros(t.shape[0] + 1, t.shape[1])
    elif how == "1d":
        tensors[key] = t[0].clone()
    elif how == "transpose":
        tensors[key] = t.T.contiguous()
    elif how == "int":
        tensors[key] = t.to(torch.int32)
    elif how in ("nan", "inf"):
        tensors[key] = t.clone()
        tensors[key][0, 0] = float(how)
    elif how == "unknown_value":
        tensors[key.split(".")[0] + "." + draw(st.sampled_from(["kindness", "Power", "", "power.x"]))] = tensors.pop(key)
    elif how == "unknown_kind":
        tensors[draw(st.sampled_from(["extrinsic.power", "power", "stats.other", "mean_delta.power"]))] = tensors.pop(key)
    elif how == "drop_meta":
        meta.pop(draw(st.sampled_from(["n_layers", "hidden_size", "weights_sha256", "counts"])), None)
    elif how == "odd_meta":
        meta[draw(st.sampled_from(["n_layers", "hidden_size", "counts"]))] = draw(
            st.sampled_from(["0", "-1", "two", "", "9" * 5000, "{}", "[]", '{"intrinsic": []}', "3.5"]) | TEXT)
    elif how == "norm":
        tensors["stats.residual_norm"] = draw(st.sampled_from([torch.zeros(99), torch.full((2,), float("nan")),
                                                               torch.zeros(2, 2)]))
    else:
        meta = {}
    out = st_save(tensors, metadata=meta)
    cut = draw(st.sampled_from(["as_is"] * 5 + ["truncate", "header", "empty"]))
    if cut == "truncate":
        return out[: draw(st.integers(0, len(out) - 1))]
    if cut == "header":  # a header length beyond the file, or a garbled header
        return draw(st.sampled_from([(10 ** 12).to_bytes(8, "little") + out[8:], out[:8] + b"{" + out[9:]]))
    if cut == "empty":
        return b""
    return out


def _run_file_content(root: Path, name: str) -> st.SearchStrategy[bytes]:
    path = root / name
    if name.endswith(".safetensors"):
        return st.one_of(*[damaged_safetensors(path.read_bytes())] * 4, st.binary(max_size=100))
    if name.endswith(".jsonl"):
        return st.one_of(*[mangled(damaged_jsonl(path.read_text()))] * 4, st.binary(max_size=100))
    if name.endswith(".yaml"):
        doc = yaml.safe_load(path.read_text())
        return st.one_of(*[mangled(mutated(doc).map(yaml.safe_dump))] * 4, st.binary(max_size=100))
    base = json.loads(path.read_text()) if path.exists() else {"eval": name, "settings": {}, "items": [],
                                                                 "aggregates": {"rows": {}}}
    return st.one_of(*[mangled(mutated(base).map(json.dumps))] * 3, mangled(JSON.map(json.dumps)),
                     st.binary(max_size=100))


RUN_FILES = ["config.yaml", "responses.jsonl", "labels.jsonl", "vectors.safetensors", "components.safetensors",
             "decompose.json", "neurons.json", "evals/sweep.json", "evals/pvq.json", "evals/circumplex.json",
             "evals/dilemmas.json", "evals/value_portrait.json", "evals/jailbreak.json", "evals/instruct.json",
             "evals/diversity.json", "evals/freeform.json"]


@pytest.mark.parametrize("name", RUN_FILES)
def test_run_directory_with_one_damaged_file(smoke_run, name):
    path = smoke_run / name
    original = path.read_bytes() if path.exists() else None
    before = snapshot(smoke_run)

    @settings(FUZZ, max_examples=30)
    @given(content=_run_file_content(smoke_run, name))
    def check(content: bytes) -> None:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        try:
            assert_clean(read_run, path)
        finally:
            if original is None:
                path.unlink()
            else:
                path.write_bytes(original)

    made_dir = not path.parent.exists()
    read_run(smoke_run)  # the intact run reads cleanly
    try:
        check()
    finally:
        if made_dir:
            path.parent.rmdir()
    assert snapshot(smoke_run) == before  # readers wrote nothing


@pytest.mark.parametrize("name", ["config.yaml", "responses.jsonl", "labels.jsonl", "vectors.safetensors",
                                  "components.safetensors", "decompose.json", "neurons.json"])
def test_run_directory_with_a_missing_file(smoke_run, name, tmp_path):
    """A missing artifact reads as "not made yet" or a one-line error naming it, never a traceback."""
    root = tmp_path / "run"
    shutil.copytree(smoke_run, root)
    (root / name).unlink()
    try:
        read_run(root)
    except ValuemechError as exc:
        named = str(root / name) if name != "config.yaml" else f"{root} is not a run directory (no config.yaml)"
        assert "\n" not in str(exc) and named in str(exc), str(exc)
    else:
        assert name not in ("config.yaml", "vectors.safetensors", "neurons.json")


# --------------------------------------------------------------------------------------------------
# safetensors against the loaded model: wrong shapes, missing metadata, another model's weights
# --------------------------------------------------------------------------------------------------

def _rewrite(path: Path, tensors: dict | None = None, meta: dict | None = None, **changes) -> None:
    from safetensors.torch import load as st_load

    data = path.read_bytes()
    t = st_load(data) if tensors is None else tensors
    m = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {}) if meta is None else meta
    path.write_bytes(st_save(t, metadata={k: v for k, v in {**m, **changes}.items() if v is not None}))


@pytest.mark.parametrize("kind", ["vectors", "components"])
def test_safetensors_shapes_and_metadata(smoke_run, tiny_llama, tmp_path, kind):
    from safetensors.torch import load as st_load

    from valuemech.decompose import Components
    from valuemech.steering import SteeringSource
    from valuemech.vectors import ValueVectors

    root = tmp_path / "run"
    shutil.copytree(smoke_run, root)
    path = root / f"{kind}.safetensors"
    good = path.read_bytes()
    load = ValueVectors.load if kind == "vectors" else Components.load
    tensors = st_load(good)
    key = sorted(k for k in tensors if k != "stats.residual_norm")[0]
    L, d = tiny_llama.n_layers, tiny_llama.hidden_size
    SteeringSource.from_run(root, tiny_llama)  # the intact run matches the model

    def expect(call, *needles: str) -> None:
        with pytest.raises(ValuemechError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg, msg
        for n in needles:
            assert n in msg, msg
        path.write_bytes(good)

    cases = {
        "rows+1": ({**tensors, key: torch.zeros(L + 1, d)}, {}, f"has shape ({L + 1}, {d})"),
        "1-D": ({**tensors, key: torch.zeros(d)}, {}, f"has shape ({d},)"),
        "int": ({**tensors, key: torch.zeros(L, d, dtype=torch.int64)}, {}, "finite floats"),
        "nan": ({**tensors, key: torch.full((L, d), float("nan"))}, {}, "finite floats"),
        "unknown value": ({**{k: v for k, v in tensors.items() if k != key}, key.split(".")[0] + ".kindness": tensors[key]},
                          {}, "unexpected tensor"),
        "no n_layers": (tensors, {"n_layers": None}, "lacks n_layers"),
        "no hidden_size": (tensors, {"hidden_size": None}, "lacks hidden_size"),
        "bad n_layers": (tensors, {"n_layers": "two"}, "n_layers is not a positive integer"),
        "huge n_layers": (tensors, {"n_layers": "9" * 5000}, "n_layers is not a positive integer"),
    }
    if kind == "vectors":
        cases["bad counts"] = (tensors, {"counts": "{not json"}, "counts")
        cases["odd counts"] = (tensors, {"counts": '{"intrinsic": {"power": 3}}'}, "counts")
        cases["bad norm"] = ({**tensors, "stats.residual_norm": torch.zeros(L + 1)}, {}, "residual_norm")
    for name, (t, changes, needle) in cases.items():
        _rewrite(path, t, None, **changes)
        expect(lambda: load(path), needle)
    # Consistent files from another model: loading works, the check against the loaded model does not.
    other = {k: torch.zeros(L + 1, d) for k in tensors if k != "stats.residual_norm"}
    for t, changes, needle in [(tensors, {"weights_sha256": "0" * 64}, "was extracted from"),
                               (tensors, {"weights_sha256": "0\n" * 9, "model_id": "evil\nmodel"}, "evil model"),
                               (tensors, {"weights_sha256": None}, "has no weights_sha256"),
                               (other, {"n_layers": str(L + 1)}, f"{L + 1} layers x {d} hidden")]:
        _rewrite(path, t, None, **changes)
        load(path)
        expect(lambda: SteeringSource.from_run(root, tiny_llama), needle)
    if kind == "vectors":
        _rewrite(path, tensors, None, weights_sha256="0" * 64)
        expect(lambda: ValueVectors.load(path).check_model(tiny_llama), "was extracted from")


# --------------------------------------------------------------------------------------------------
# The CLI: exit 2, one "error:" line, no traceback, nothing written
# --------------------------------------------------------------------------------------------------

def test_cli_run_with_hostile_inputs_writes_nothing(tmp_path):
    cases = {
        "queries.jsonl": ("--queries", b'{"text": "fine"}\n{"text": 12\n', "line 2 is not valid JSON"),
        "queries.csv": ("--queries", b"id,other\n1,x\n", "record 1 has no"),
        "queries.json": ("--queries", b"\xff\xfe\x00", "not UTF-8"),
        "config.yaml": ("--config", b"model: {trust_remote_code: 'yes'}\n", "model.trust_remote_code must be bool"),
        "config2.yaml": ("--config", b"!!python/object/apply:os.system ['touch PWNED']\n", "cannot read config"),
        "config3.yaml": ("--config", b"data: {n_queries: '12'}\n", "data.n_queries must be int"),
        "config4.yaml": ("--config", b"evaluate: {evals: 3}\n", "evaluate.evals must be list[str]"),  # not markup
    }
    for fname, (opt, content, needle) in cases.items():
        bad = tmp_path / fname
        bad.write_bytes(content)
        out = tmp_path / f"out-{fname}"
        result = invoke("run", "--preset", "smoke", opt, bad, "--out", out, "--quiet", "--evals", "none")
        assert_cli_error(result, str(bad), needle)
        assert not out.exists()  # not even config.yaml: the inputs are checked before anything is written
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_cli_on_a_damaged_run_directory(smoke_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(smoke_run, root)

    def check(args: list, damaged: str, content: bytes, *needles: str) -> None:
        path = root / damaged
        good = path.read_bytes() if path.exists() else None
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        before = snapshot(root)
        assert_cli_error(invoke(*args), str(path), *needles)
        assert snapshot(root) == before  # no partial artifact
        path.unlink()
        if good is not None:
            path.write_bytes(good)

    bad_items = tmp_path / "dilemmas.csv"
    bad_items.write_text("dilemma,action_a,action_b,value_a,value_b\nStay or go?,stay,go,[/],power\n")
    assert_cli_error(invoke("eval", "dilemmas", "--run", root, "--items", bad_items, "--quiet"),
                     str(bad_items), "unknown value_a '[/]'")  # user text in the message is not rich markup
    assert not (root / "evals").exists()
    check(["summary", root], "vectors.safetensors", b"\x00" * 40, "not a readable safetensors file")
    check(["summary", root], "labels.jsonl", b'{"response_id": "x", "expressed": {"kindness": true}}\n',
          "expressed must map value ids")
    check(["summary", root], "decompose.json", b'{"per_value": {"power": {"cosine": "high"}}}', "decomposition")
    check(["eval", "markdown", "--run", root], "evals/dilemmas.json", b'{"eval": "dilemmas", "rows": []}',
          "not the expected result format")
    check(["eval", "markdown", "--run", root], "neurons.json", b"[1, 2", "not valid JSON")
    check(["report", root, "--n-boot", "20"], "vectors.safetensors", good_header_bad_shape(smoke_run), "has shape")
    lines = (root / "responses.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    del rec["condition"]
    check(["run", "--preset", "smoke", "--out", root, "--quiet", "--evals", "none"], "responses.jsonl",
          "\n".join(lines[:3] + [json.dumps(rec)] + lines[4:]).encode() + b"\n", "record 4 has no condition")
    # timing bookkeeping is not an artifact: a damaged stages.json is started afresh
    (root / "stages.json").write_text("{oops")
    assert invoke("decompose", "--run", root, "--force", "--quiet").exit_code == 0
    assert "decompose" in json.loads((root / "stages.json").read_text())


def good_header_bad_shape(root: Path) -> bytes:
    from safetensors.torch import load as st_load

    data = (root / "vectors.safetensors").read_bytes()
    tensors = st_load(data)
    meta = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    key = sorted(tensors)[0]
    tensors[key] = torch.zeros(1, 3)
    return st_save(tensors, metadata=meta)


# --------------------------------------------------------------------------------------------------
# Security: only safetensors/JSON/safe YAML are read; remote code runs only when asked
# --------------------------------------------------------------------------------------------------

def test_no_pickle_or_unsafe_yaml_in_the_package():
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|\bcPickle\b|dill\.|joblib\.load|allow_pickle\s*=\s*True"
                         r"|yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|Loader\s*=\s*yaml\.(Full|Unsafe)?Loader\b"
                         r"|(?<![.\w])(eval|exec)\(")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in sorted(SRC.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
    assert "yaml.safe_load" in (SRC / "config.py").read_text()


@pytest.mark.parametrize("trust", [False, True])
def test_load_model_passes_trust_remote_code_only_when_asked(tmp_path, monkeypatch, trust):
    import transformers

    from valuemech.config import ModelConfig
    from valuemech.models import loading

    calls = []

    class Stop(Exception):
        pass

    def fake(kind):
        def from_pretrained(source, *args, **kwargs):
            calls.append((kind, source, kwargs))
            if kind == "model":
                raise Stop
            return object()
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    local = tmp_path / "some-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    with pytest.raises(Stop):
        loading.load_model(ModelConfig(name=str(local), trust_remote_code=trust))
    assert [c[0] for c in calls] == ["tokenizer", "model"]
    for _, source, kwargs in calls:
        assert source == str(local)
        assert kwargs["trust_remote_code"] is trust
    assert calls[1][2]["use_safetensors"] is True  # never a pickled checkpoint (*.bin)
    assert ModelConfig().trust_remote_code is False


def test_trust_remote_code_from_yaml_must_be_a_real_boolean(tmp_path):
    for text in ("model: {trust_remote_code: 'false'}\n", "model: {trust_remote_code: 1}\n"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(text)
        with pytest.raises(ValuemechError, match="trust_remote_code must be bool"):
            load_config(cfg)
    cfg.write_text("model: {trust_remote_code: true}\n")
    assert load_config(cfg).model.trust_remote_code is True
