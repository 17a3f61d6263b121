"""Generation: job planning, EOS cutting, and resume after an interruption."""

from __future__ import annotations

import pytest
import torch

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


def test_temperature_top_p_matches_transformers_warpers():
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(6, 1, dtype=torch.long)
    for temperature, top_p in ((0.7, 0.9), (1.0, 0.5), (1.3, 0.99), (0.7, 1.0)):
        for trial in range(20):
            scores = torch.randn(6, 500, generator=g) * (1 + trial % 4)
            scores[0, :3] = scores[0, 3]  # ties, some of them across the cut
            scores[1, 10:] = scores[1, 5]
            scores[2, :50] = -float("inf")
            scores[3] = 0.0
            ref = TemperatureLogitsWarper(temperature)(ids, scores.clone()) if temperature != 1.0 else scores.clone()
            if top_p < 1.0:
                ref = TopPLogitsWarper(top_p)(ids, ref)
            proc = gen.TemperatureTopP(temperature, top_p)
            assert torch.equal(proc(ids, scores.clone()), ref)  # the batch (a tie: transformers' own)
            for i in range(6):  # row by row: rows 4 and 5 (no ties) take the fast path
                deferred = []
                if proc.reference is not None:
                    real = TopPLogitsWarper(top_p)
                    proc.reference = lambda a, b: deferred.append(1) or real(a, b)
                assert torch.equal(proc(ids[i:i + 1], scores[i:i + 1].clone()), ref[i:i + 1])
                if i >= 4:
                    assert not deferred


def test_sample_batch_matches_plain_generate(tiny_llama):
    lm = tiny_llama
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.7, top_p=0.9)
    prompts = [lm.prompt_ids(q.text, None) for q in QUERIES[:4]]
    ids, mask = gen.left_pad(prompts, lm.tokenizer.pad_token_id)
    torch.manual_seed(5)
    out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_p=0.9,
                            top_k=0, max_new_tokens=12, pad_token_id=lm.tokenizer.pad_token_id,
                            eos_token_id=lm.eos_ids)
    plain = [gen.cut_at_eos(row, lm.eos_ids) for row in out[:, ids.shape[1]:].tolist()]
    assert gen.sample_batch(lm, prompts, cfg, 5) == plain
