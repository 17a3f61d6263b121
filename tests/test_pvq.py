"""PVQ (valuemech.evals.pvq): item loaders, gains, forced-choice gains and merging of partial runs."""

from __future__ import annotations

import pytest
from conftest import make_source as _source

from valuemech.errors import ValuemechError
from valuemech.steering import steer


def test_pvq_and_mmlu_loaders(tmp_path):
    from valuemech.evals.capability import load_mmlu_csv
    from valuemech.evals.pvq import load_items

    p = tmp_path / "pvq.csv"
    p.write_text("id,value,text\n1,Self-Direction,They think for themselves.\n2,UNIVERSALISM,They protect nature.\n")
    assert [i.value for i in load_items(p)] == ["self_direction", "universalism"]
    j = tmp_path / "pvq.json"
    j.write_text('[{"id": "x", "value": "Honour", "text": "t"}]')
    with pytest.raises(ValuemechError, match="unknown value 'Honour'"):
        load_items(j)
    m = tmp_path / "astronomy_test.csv"
    m.write_text('"What orbits Earth?",Moon,Sun,Mars,Venus,A\n')
    assert load_mmlu_csv(m)[0].answer == 0
    m.write_text("q,a,b,c\n")
    with pytest.raises(ValuemechError, match="row 1"):
        load_mmlu_csv(m)


def test_pvq_gains_zero_for_identity_conditions(tiny_llama):
    from contextlib import nullcontext

    from valuemech.evals.pvq import builtin_items, pvq_gains

    items = [it for it in builtin_items(["en", "fr"]) if it.value in ("power", "tradition", "security")]
    res = pvq_gains(tiny_llama, {"none": lambda v: nullcontext()}, items, ["power", "tradition"],
                    n_boot=20, progress=False)
    for lang in ("en", "fr"):
        # other batch composition: float32 rounding only
        assert res["rows"]["none"][lang]["gain"] == pytest.approx(0.0, abs=1e-6)
        assert set(res["rows"]["none"][lang]["per_value"]) == {"power", "tradition"}
    src = _source(tiny_llama)
    big = pvq_gains(tiny_llama, {"shared": lambda v: steer(tiny_llama, src, "shared", v, 1, 2.0)},
                    items[:15], ["power"], n_boot=20, progress=False)
    assert big["rows"]["shared"]["en"]["gain"] != 0.0


def test_merged_pvq_parts_equal_the_joint_computation(tiny_llama):
    """Languages and values split over separate runs, merged: the same cells, aggregates and intervals."""
    from valuemech.evals.pvq import builtin_items, merge_results, pvq_gains

    src = _source(tiny_llama)
    items = [it for it in builtin_items(["en", "ko"]) if it.value in ("power", "tradition", "security")]
    conds = {"shared": lambda v: steer(tiny_llama, src, "shared", v, 1, 2.0)}
    run = lambda its, vals: pvq_gains(tiny_llama, conds, its, vals, n_boot=50, progress=False)  # noqa: E731
    joint = run(items, ["power", "tradition"])
    en = [it for it in items if it.lang == "en"]
    ko = [it for it in items if it.lang == "ko"]
    parts = {"a.json": run(en, ["power", "tradition"]), "b.json": run(ko, ["tradition"]),
             "c.json": run(ko, ["power", "tradition"])}  # ko/tradition twice: must agree
    merged = merge_results(parts, n_boot=50)
    for lang in ("en", "ko", "mean"):
        j, m = joint["rows"]["shared"][lang], merged["rows"]["shared"][lang]
        assert m["gain"] == pytest.approx(j["gain"], abs=1e-9)
        assert m["gain_ci"] == pytest.approx(j["gain_ci"], abs=1e-9)
    assert merged["rows"]["shared"]["ko"]["specificity"] == pytest.approx(joint["rows"]["shared"]["ko"]["specificity"])
    assert list(merged["baseline"]) == ["en", "ko"] and merged["values"] == ["power", "tradition"]
    assert merged["merged_from"] == ["a.json", "b.json", "c.json"]
    bad = {**parts["c.json"], "rows": {"shared": {**parts["c.json"]["rows"]["shared"]}}}
    bad["rows"]["shared"]["ko"] = {**bad["rows"]["shared"]["ko"], "per_value": {
        **bad["rows"]["shared"]["ko"]["per_value"], "tradition": {"gain": 9.0, "specificity": 0.0}}}
    with pytest.raises(ValuemechError, match="differs from an earlier file"):
        merge_results({"a.json": parts["b.json"], "d.json": bad})
    with pytest.raises(ValuemechError, match="steer 'shared' differently"):
        merge_results({"a.json": {**parts["a.json"], "settings": {"shared": {"alpha": 0.1}}},
                       "b.json": {**parts["b.json"], "settings": {"shared": {"alpha": 0.2}}}})
    with pytest.raises(ValuemechError, match="has rows"):
        merge_results({"a.json": parts["a.json"], "b.json": {**parts["b.json"], "rows": {"other": {}}}})
    with pytest.raises(ValuemechError, match="at least two"):
        merge_results({"a.json": parts["a.json"]})


def test_forced_gains_zero_for_identity(tiny_llama):
    from contextlib import nullcontext

    from valuemech.evals.pvq import builtin_items, forced_gains

    items = [it for it in builtin_items(["en"]) if it.value in ("power", "tradition", "security")]
    res = forced_gains(tiny_llama, {"none": lambda v: nullcontext()}, items, ["power", "security"],
                       n_boot=20, progress=False)
    assert res["rows"]["none"]["en"]["gain"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < res["baseline"]["en.power"] < 1.0
