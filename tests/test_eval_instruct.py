"""Instruction-following evaluation: the IFEval checker on hand-written responses, accuracy by hand, loaders, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import make_source

from valuemech.errors import ValuemechError
from valuemech.evals import common, instruct
from valuemech.evals.common import EvalOptions
from valuemech.evals.instruct import PromptScore, check, instruction_level, load_prompts, prompt_level, score_prompt
from valuemech.nltk_data import PUNKT_FILES


def rec(ids, kwargs=None, prompt="Do the task."):
    ids = [ids] if isinstance(ids, str) else ids
    return {"key": 1, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs or [{} for _ in ids]}


REPEAT = "Name three colours of the rainbow."
# (record, response, expected prompt_ok, expected per-instruction)
CASES = [
    (rec("length_constraints:number_words", [{"relation": "less than", "num_words": 5}]), "one two three four", True, [True]),
    (rec("length_constraints:number_words", [{"relation": "less than", "num_words": 5}]), "one two three four five", False, [False]),
    (rec("length_constraints:number_words", [{"relation": "at least", "num_words": 3}]), "a b c", True, [True]),
    (rec("detectable_format:number_bullet_lists", [{"num_bullets": 2}]), "* eggs\n* milk", True, [True]),
    (rec("detectable_format:number_bullet_lists", [{"num_bullets": 2}]), "* eggs\n* milk\n- bread", False, [False]),
    (rec("detectable_format:json_format"), '```json\n{"fruit": ["apple", "pear"]}\n```', True, [True]),
    (rec("detectable_format:json_format"), "Here it is: {\"fruit\": 1}", False, [False]),
    (rec("change_case:english_lowercase"), "the sea is calm and the sand is warm this morning.", True, [True]),
    (rec("change_case:english_lowercase"), "The sea is calm and the sand is warm this morning.", False, [False]),
    (rec("change_case:english_capital"), "FRESH BREAD EVERY MORNING FROM OUR OVEN TO YOUR TABLE.", True, [True]),
    (rec("change_case:english_capital"), "FRESH BREAD every MORNING.", False, [False]),
    (rec("punctuation:no_comma"), "Water it once a week and keep it in the light.", True, [True]),
    (rec("punctuation:no_comma"), "Water it once a week, then wait.", False, [False]),
    (rec("startend:end_checker", [{"end_phrase": "Any other questions?"}]), "Boil water. Add pasta. Any other questions?", True, [True]),
    (rec("startend:end_checker", [{"end_phrase": "Any other questions?"}]), "Any other questions? Boil water.", False, [False]),
    (rec("detectable_format:title"), "<<Autumn>>\nLeaves fall.", True, [True]),
    (rec("detectable_format:title"), "<< >>\nLeaves fall.", False, [False]),
    (rec("length_constraints:number_paragraphs", [{"num_paragraphs": 2}]), "Cats purr.\n***\nCats nap.", True, [True]),
    (rec("length_constraints:number_paragraphs", [{"num_paragraphs": 2}]), "Cats purr. Cats nap.", False, [False]),
    (rec("detectable_format:multiple_sections", [{"section_spliter": "SECTION", "num_sections": 2}]),
     "SECTION 1\nTent.\nSECTION 2\nFood.", True, [True]),
    (rec("detectable_format:multiple_sections", [{"section_spliter": "SECTION", "num_sections": 2}]),
     "SECTION 1\nTent and food.", False, [False]),
    (rec("language:response_language", [{"language": "fr"}]),
     "Bonjour ! Aujourd'hui il fait beau et le soleil brille sur toute la ville.", True, [True]),
    (rec("language:response_language", [{"language": "fr"}]),
     "Good morning! Today the weather is sunny and warm across the whole city.", False, [False]),
    (rec("detectable_content:number_placeholders", [{"num_placeholders": 2}]), "Dear [name], lunch at [time]?", True, [True]),
    (rec("detectable_content:number_placeholders", [{"num_placeholders": 2}]), "Dear [name], lunch at noon?", False, [False]),
    (rec("detectable_content:postscript", [{"postscript_marker": "P.S."}]), "Bring an umbrella.\nP.S. It will rain.", True, [True]),
    (rec("detectable_content:postscript", [{"postscript_marker": "P.S."}]), "Bring an umbrella. PS it will rain.", False, [False]),
    (rec("keywords:frequency", [{"keyword": "coffee", "relation": "at least", "frequency": 2}]), "Coffee first, coffee again.", True, [True]),
    (rec("keywords:frequency", [{"keyword": "coffee", "relation": "at least", "frequency": 2}]), "Coffee first, tea later.", False, [False]),
    (rec("keywords:forbidden_words", [{"forbidden_words": ["wheel"]}]), "The wheels turn.", True, [True]),
    (rec("keywords:forbidden_words", [{"forbidden_words": ["wheel"]}]), "The Wheel turns.", False, [False]),
    (rec("keywords:existence", [{"keywords": ["fold", "wing"]}]), "Fold the paper, then each wing.", True, [True]),
    (rec("keywords:existence", [{"keywords": ["fold", "wing"]}]), "Fold the paper twice.", False, [False]),
    (rec("keywords:letter_frequency", [{"letter": "z", "let_relation": "at least", "let_frequency": 3}]),
     "Lazy zebras doze.", True, [True]),
    (rec("keywords:letter_frequency", [{"letter": "z", "let_relation": "at least", "let_frequency": 3}]),
     "Lazy dogs doze.", False, [False]),
    # Punkt (the punkt_tab data written at set-up): "Dr." does not end a sentence, so 3 sentences < 4.
    (rec("length_constraints:number_sentences", [{"relation": "less than", "num_sentences": 4}]),
     "Clouds are water. Dr. Smith said so. They float.", True, [True]),
    (rec("length_constraints:number_sentences", [{"relation": "less than", "num_sentences": 4}]),
     "Clouds are water. They float. They move. They rain.", False, [False]),
    (rec("detectable_format:number_highlighted_sections", [{"num_highlights": 2}]), "*Dim lights* and *no screens*.", True, [True]),
    (rec("detectable_format:number_highlighted_sections", [{"num_highlights": 2}]), "*Dim lights* and no screens.", False, [False]),
    (rec("detectable_format:constrained_response"), "My answer is yes.", True, [True]),
    (rec("detectable_format:constrained_response"), "Yes, it is.", False, [False]),
    (rec("combination:two_responses"), "Goldie\n******\nBubbles", True, [True]),
    (rec("combination:two_responses"), "Goldie\n******\nGoldie", False, [False]),
    (rec("startend:quotation"), '"A busy station."', True, [True]),
    (rec("startend:quotation"), 'A "busy" station.', False, [False]),
    (rec("change_case:capital_word_frequency", [{"capital_relation": "at least", "capital_frequency": 2}]),
     "A STEEL bottle, LEAK-PROOF and light.", True, [True]),
    (rec("change_case:capital_word_frequency", [{"capital_relation": "at least", "capital_frequency": 2}]),
     "The STEEL bottle is light.", False, [False]),
    (rec("length_constraints:nth_paragraph_first_word",
         [{"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "finally"}]),
     "Boil the water.\n\nFinally, pour it.", True, [True]),
    (rec("length_constraints:nth_paragraph_first_word",
         [{"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "finally"}]),
     "Boil the water.\n\nThen pour it.", False, [False]),
    (rec("combination:repeat_prompt", [{"prompt_to_repeat": REPEAT}]), REPEAT + " Red, green and blue.", True, [True]),
    (rec("combination:repeat_prompt", [{"prompt_to_repeat": REPEAT}]), "Sure! " + REPEAT + " Red.", False, [False]),
    # several instructions: prompt-level needs all of them
    (rec(["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:number_bullet_lists"],
         [{}, {}, {"num_bullets": 2}]), "* wipe the counters every night\n* put dishes away after meals", True,
     [True, True, True]),
    (rec(["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:number_bullet_lists"],
         [{}, {}, {"num_bullets": 2}]), "* Wipe the counters, every night\n* put dishes away after meals", False,
     [False, False, True]),
    # an empty response follows nothing
    (rec(["punctuation:no_comma", "keywords:forbidden_words"], [{}, {"forbidden_words": ["x"]}]), "   ", False,
     [False, False]),
]


@pytest.mark.parametrize("record,response,ok,per", CASES)
def test_checker_table(record, response, ok, per):
    assert check(record, response) == (ok, per)


def test_accuracy_by_hand():
    # prompt A (2 instructions): both followed; B (2): one of two; C (1): none
    results = [[(True, [True, True])], [(False, [True, False])], [(False, [False])]]
    scores = [score_prompt(r) for r in results]
    assert scores[1] == PromptScore(followed=0, responses=1, passed=1, instructions=2)
    assert prompt_level(scores) == pytest.approx(1 / 3)
    assert instruction_level(scores) == pytest.approx(3 / 5)
    # two samples per prompt: A = {all, none of 2}, B = {all of 3, 2 of 3}
    two = [score_prompt([(True, [True, True]), (False, [False, False])]),
           score_prompt([(True, [True] * 3), (False, [True, True, False])])]
    assert two[0] == PromptScore(1, 2, 2, 4) and two[1] == PromptScore(1, 2, 5, 6)
    assert prompt_level(two) == pytest.approx(2 / 4)
    assert instruction_level(two) == pytest.approx(7 / 10)


def test_paired_difference_is_exact_and_zero_for_identical_rows():
    a = [PromptScore(1, 1, 2, 2), PromptScore(0, 1, 1, 2), PromptScore(1, 1, 1, 1)]
    b = [PromptScore(0, 1, 1, 2), PromptScore(0, 1, 1, 2), PromptScore(1, 1, 1, 1)]
    d = instruct._paired(a, b, n_boot=200)
    assert d["prompt_level"]["diff"] == pytest.approx(2 / 3 - 1 / 3)
    assert d["instruction_level"]["diff"] == pytest.approx(4 / 5 - 3 / 5)
    assert instruct._paired(a, a, n_boot=200)["prompt_level"]["ci"] == [0.0, 0.0]


def test_builtin_prompts():
    prompts = instruct.builtin_prompts()
    assert len(prompts) >= 60
    assert len({p.key for p in prompts}) == len(prompts)
    types = Counter(i for p in prompts for i in p.instruction_id_list)
    assert len(types) >= 20
    assert sum(len(p.instruction_id_list) > 1 for p in prompts) >= 15
    assert instruct.builtin_prompts(limit=5) == prompts[:5]


def _write(tmp_path, text, name="ifeval.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loader_reads_ifeval_format_with_null_kwargs(tmp_path):
    # google/IFEval on the hub carries every kwarg name, null where unused
    line = {"key": 1001, "prompt": "Write a riddle. Use fewer than 20 words.",
            "instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
            "kwargs": [{"relation": "less than", "num_words": 20, "num_bullets": None}, {"keywords": None}]}
    path = _write(tmp_path, json.dumps(line) + "\n\n" + json.dumps({**line, "key": 1002}) + "\n")
    prompts = load_prompts(path)
    assert [p.key for p in prompts] == [1001, 1002]
    assert prompts[0].kwargs == ({"relation": "less than", "num_words": 20}, {})
    assert check(prompts[0], "A short riddle") == (True, [True, True])


LOADER_ERRORS = [
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["format:haiku"], "kwargs": [{}]}\n',
     "unknown instruction id(s) 'format:haiku'"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]\n',
     "line 1 is not valid JSON"),
    ("", "no prompts"),
    ("\n  \n", "no prompts"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}\n',
     "kwargs must be a list of 1 objects"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5}]}\n',
     "lacks kwargs relation"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["length_constraints:number_words"], '
     '"kwargs": [{"num_words": 5, "relation": "around"}]}\n', "bad kwargs"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"colour": 1}]}\n',
     "bad kwargs"),
    ('{"key": 1, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}\n', "lacks a prompt"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": [], "kwargs": []}\n', "non-empty list"),
    ('{"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}\n' * 2,
     "duplicate key 1"),
    ('["not a record"]', "record 1: expected a JSON object"),
]


@pytest.mark.parametrize("text,message", LOADER_ERRORS)
def test_loader_errors_are_one_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValuemechError) as err:
        load_prompts(path)
    msg = str(err.value)
    assert message in msg and str(path) in msg and "\n" not in msg


def test_loader_missing_file(tmp_path):
    with pytest.raises(ValuemechError, match="does not exist"):
        load_prompts(tmp_path / "nope.jsonl")


def test_check_rejects_unknown_ids():
    with pytest.raises(ValuemechError, match="unknown instruction id"):
        check(rec("detectable_format:haiku"), "x")


_source = make_source


THREE = [
    {"key": 7, "prompt": "Write a short recipe for toast. Do not use any commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 8, "prompt": "List two fruits in all lowercase letters. Use fewer than 10 words.",
     "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "less than", "num_words": 10}]},
    {"key": 9, "prompt": "Give a title in <<double angular brackets>>.",
     "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]},
]


@pytest.fixture
def three(tmp_path):
    return str(_write(tmp_path, "".join(json.dumps(r) + "\n" for r in THREE)))


def test_evaluate_end_to_end(tiny_llama, three):
    opts = EvalOptions(items=three, alphas=[0.0, 2.0], max_new_tokens=8, n_boot=50, progress=False, batch_size=2)
    res = instruct.evaluate(tiny_llama, _source(tiny_llama), opts)
    json.dumps(res)
    names = ["baseline", "mean_delta@0", "random@0", "mean_delta@2", "random@2"]
    assert res["eval"] == "instruct" and list(res["aggregates"]) == names
    s = res["settings"]
    assert s["n_prompts"] == 3 and s["n_instructions"] == 4 and s["layer"] == tiny_llama.n_layers // 2
    assert s["conditions"]["random@2"]["direction"] == "random, norm of mean_delta"
    assert len(res["items"]) == 15
    by = {(it["condition"], it["key"]): it for it in res["items"]}
    for key in (7, 8, 9):
        base = by["baseline", key]["response"]
        assert by["mean_delta@0", key]["response"] == base
        assert by["random@0", key]["response"] == base
        item = by["mean_delta@2", key]
        assert (item["prompt_ok"], [i["ok"] for i in item["instructions"]]) == check(
            next(r for r in THREE if r["key"] == key), item["response"])
    assert any(by["mean_delta@2", k]["response"] != by["baseline", k]["response"] for k in (7, 8, 9))
    for name in names:
        agg = res["aggregates"][name]
        assert agg["prompt_level"]["n"] == 3 and agg["n_instructions"] == 4
        assert 0.0 <= agg["prompt_level"]["mean"] <= 1.0 and len(agg["instruction_level"]["ci"]) == 2
    zero = res["aggregates"]["mean_delta@0"]["vs_baseline"]
    assert zero["prompt_level"]["diff"] == 0.0 and zero["instruction_level"]["ci"] == [0.0, 0.0]
    assert "vs_random" in res["aggregates"]["mean_delta@2"] and "vs_random" not in res["aggregates"]["random@2"]
    md = instruct.markdown(res)
    assert "IF accuracy vs α" in md and "| mean_delta@2 | 2 |" in md and "| random@0 | 0 |" in md
    assert md.index("| baseline |") < md.index("| mean_delta@0 |") < md.index("| mean_delta@2 |") < md.index("| random@0 |")


def test_evaluate_aggregates_on_canned_responses(tiny_llama, three, monkeypatch):
    """With generation replaced by fixed texts, every number is a hand computation."""
    canned = {
        # key 7: no comma; key 8: lowercase and < 10 words; key 9: a title
        "baseline": ["Toast bread, add butter.", "apple and pear", "No title here."],
        "mean_delta@1": ["Toast bread and add butter.", "apple and pear", "<<Toast>>"],
    }
    seen = []

    def fake_generate(lm, users, opts, system_prompt=None, desc=""):
        name = desc.removeprefix("instruct ")
        seen.append(name)
        assert users == [r["prompt"] for r in THREE for _ in range(2)]
        return [t for t in canned[name] for _ in range(2)]

    monkeypatch.setattr(common, "generate_texts", fake_generate)
    opts = EvalOptions(items=three, alphas=[1.0], control=False, samples=2, n_boot=100, progress=False)
    res = instruct.evaluate(tiny_llama, _source(tiny_llama), opts)
    assert seen == ["baseline", "mean_delta@1"]
    base, steered = res["aggregates"]["baseline"], res["aggregates"]["mean_delta@1"]
    assert base["prompt_level"]["mean"] == pytest.approx(1 / 3)  # only key 8
    assert base["instruction_level"]["mean"] == pytest.approx(2 / 4)
    assert steered["prompt_level"]["mean"] == 1.0 and steered["instruction_level"]["mean"] == 1.0
    assert steered["vs_baseline"]["prompt_level"]["diff"] == pytest.approx(2 / 3)
    assert steered["vs_baseline"]["instruction_level"]["diff"] == pytest.approx(2 / 4)
    assert base["per_instruction"]["punctuation:no_comma"] == {"mean": 0.0, "n": 2}
    assert steered["prompt_level"]["ci"] == [1.0, 1.0]
    assert res["finding"]["mean_delta@1"]["beyond_random"] is None
    assert len(res["items"]) == 12 and {it["sample"] for it in res["items"]} == {0, 1}


def test_evaluate_limit(tiny_llama, three, monkeypatch):
    monkeypatch.setattr(common, "generate_texts", lambda lm, users, opts, system_prompt=None, desc="": ["x"] * len(users))
    res = instruct.evaluate(tiny_llama, _source(tiny_llama),
                            EvalOptions(items=three, limit=2, alphas=[], progress=False, n_boot=10))
    assert res["settings"]["n_prompts"] == 2 and list(res["aggregates"]) == ["baseline"]


def test_offline_import_and_fresh_punkt_data(tmp_path):
    """No network and no NLTK data: the module imports, writes punkt_tab into the cache, and counts sentences."""
    code = (
        "import socket\n"
        "def no_net(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = no_net; socket.create_connection = no_net\n"
        "from valuemech.evals import instruct\n"
        "r = {'key': 1, 'prompt': 'p', 'instruction_id_list': ['length_constraints:number_sentences', "
        "'change_case:capital_word_frequency'], 'kwargs': [{'relation': 'at least', 'num_sentences': 3}, "
        "{'capital_relation': 'less than', 'capital_frequency': 2}]}\n"
        "print(instruct.check(r, 'One. Two here. THREE now.'), instruct.check(r, 'Mr. Smith left. He ran.'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA",)}
    env |= {"HF_HUB_OFFLINE": "1", "VALUEMECH_CACHE": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(True, [True, True]) (False, [False, True])"
    assert sorted(p.name for p in (tmp_path / "nltk_data/tokenizers/punkt_tab/english").iterdir()) == sorted(
        PUNKT_FILES)
