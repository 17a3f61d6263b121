"""Generation: job planning, EOS cutting, and resume after an interruption."""

from __future__ import annotations

import pytest

from valuemech import generate as gen
from valuemech.config import GenerationConfig
from valuemech.data import Query
from valuemech.data.templates import builtin_templates
from valuemech.io import read_jsonl
from valuemech.values import VALUES

QUERIES = [Query(f"q{i}", f"Question number {i} about {'life' * (i % 3 + 1)}?") for i in range(6)]


def test_plan_jobs_modes_and_determinism():
    t = builtin_templates()
    cfg = GenerationConfig(intrinsic_samples=2, prompted_samples=3, prompted_mode="random")
    jobs = gen.plan_jobs(QUERIES, t, cfg, seed=1)
    assert len(jobs) == 6 * (2 + 3)
    assert jobs == gen.plan_jobs(QUERIES, t, cfg, seed=1)
    other = gen.plan_jobs(QUERIES, t, cfg, seed=2)
    assert [j.prompted_value for j in jobs] != [j.prompted_value for j in other]
    for j in jobs:
        if j.condition == "prompted":
            assert j.system_prompt == t[j.prompted_value][j.template_index]
        else:
            assert j.system_prompt is None and j.prompted_value is None
    all_mode = gen.plan_jobs(QUERIES, t, GenerationConfig(intrinsic_samples=0, prompted_samples=1,
                                                         prompted_mode="all"), seed=0)
    assert len(all_mode) == 6 * len(VALUES)
    assert {j.prompted_value for j in all_mode} == set(VALUES)
    assert len({j.id for j in jobs}) == len(jobs)


def test_cut_at_eos():
    assert gen.cut_at_eos([5, 6, 2, 7, 2], [2]) == ([5, 6], "eos")
    assert gen.cut_at_eos([5, 6], [2]) == ([5, 6], "length")
    assert gen.cut_at_eos([2], [2, 3]) == ([], "eos")


def _run(lm, path, jobs, cfg):
    return gen.generate_responses(lm, jobs, cfg, seed=3, out_path=path, progress=False)


def _key(records):
    return sorted((r["id"], tuple(r["response_token_ids"]), r["response"]) for r in records)


def test_resume_after_interruption_yields_same_responses(tiny_llama, tmp_path, monkeypatch):
    lm = tiny_llama
    cfg = GenerationConfig(intrinsic_samples=2, prompted_samples=1, max_new_tokens=6, batch_size=4)
    jobs = gen.plan_jobs(QUERIES, builtin_templates(), cfg, seed=3)
    full = tmp_path / "full.jsonl"
    assert _run(lm, full, jobs, cfg) == len(jobs)
    reference = read_jsonl(full)

    # interrupted run: the third batch write dies, leaving half a line behind
    part = tmp_path / "part.jsonl"
    real_append = gen.append_jsonl
    calls = {"n": 0}

    def dying_append(path, records):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(path, "ab") as fh:
                fh.write(b'{"id": "trunc')
            raise KeyboardInterrupt
        real_append(path, records)

    monkeypatch.setattr(gen, "append_jsonl", dying_append)
    with pytest.raises(KeyboardInterrupt):
        _run(lm, part, jobs, cfg)
    monkeypatch.setattr(gen, "append_jsonl", real_append)
    assert 0 < len(read_jsonl(part)) < len(jobs)
    # drop one finished record from the middle too: resume must fill it from its batch
    lines = part.read_bytes().split(b"\n")
    part.write_bytes(b"\n".join(lines[:1] + lines[2:]))
    _run(lm, part, jobs, cfg)
    resumed = read_jsonl(part)
    assert len(resumed) == len({r["id"] for r in resumed}) == len(jobs)
    assert _key(resumed) == _key(reference)
    assert _run(lm, part, jobs, cfg) == 0  # complete: nothing more


def test_records_follow_the_run_directory_contract(tiny_llama, tmp_path):
    cfg = GenerationConfig(intrinsic_samples=1, prompted_samples=1, max_new_tokens=4, batch_size=8)
    jobs = gen.plan_jobs(QUERIES[:2], builtin_templates(), cfg, seed=0)
    _run(tiny_llama, tmp_path / "r.jsonl", jobs, cfg)
    for r in read_jsonl(tmp_path / "r.jsonl"):
        for key in ("id", "query_id", "condition", "prompted_value", "system_prompt", "query", "response",
                    "sample", "lang", "prompt_token_ids", "response_token_ids"):
            assert key in r
        if r["condition"] == "intrinsic":
            assert r["system_prompt"] == tiny_llama.default_system_prompt
            assert r["prompt_token_ids"] == tiny_llama.prompt_ids(r["query"], None)
        else:
            assert r["prompted_value"] in VALUES
            assert r["prompt_token_ids"] == tiny_llama.prompt_ids(r["query"], r["system_prompt"])
        assert tiny_llama.tokenizer.decode(r["response_token_ids"], skip_special_tokens=True) == r["response"]
