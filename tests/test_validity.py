"""The judge-validity check: does the judge's score for the prompted value pick out responses prompted with it?"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from valuemech.labels import VALIDITY_WARNING, judge_validity
from valuemech.values import VALUES

#: (id, prompted value, scores for power, benevolence, security); every other value scores 0.
HAND = [("r1", "power", (0.9, 0.1, 0.2)), ("r2", "power", (0.4, 0.3, 0.5)),
        ("r3", "benevolence", (0.5, 0.8, 0.1)), ("r4", "benevolence", (0.2, 0.3, 0.6)),
        ("r5", "security", (0.4, 0.2, 0.7))]
# By hand (pairs positive > negative, ties 1/2): power {.9,.4} vs {.5,.2,.4}: (3 + 1.5) / 6 = 0.75;
# benevolence {.8,.3} vs {.1,.3,.2}: (3 + 2.5) / 6 = 11/12; security {.7} vs {.2,.5,.1,.6}: 4/4 = 1.
HAND_AUC = {"power": 0.75, "benevolence": 11 / 12, "security": 1.0}


def _record(rid: str, value: str | None, text: str = "") -> dict:
    return {"id": rid, "query_id": rid, "condition": "prompted" if value else "intrinsic", "prompted_value": value,
            "system_prompt": None, "query": "q", "response": text or f"response {rid}", "sample": 0, "lang": "en",
            "prompt_token_ids": [1], "response_token_ids": [2]}


def _label(rid: str, scores: dict[str, float]) -> dict:
    full = {v: float(scores.get(v, 0.0)) for v in VALUES}
    return {"response_id": rid, "judge": "hand", "scores": full, "expressed": {v: s >= 0.5 for v, s in full.items()}}


def hand_set() -> tuple[list[dict], list[dict]]:
    records = [_record(rid, v) for rid, v, _ in HAND] + [_record("i1", None)]  # the intrinsic one is left out
    labels = [_label(rid, dict(zip(("power", "benevolence", "security"), s))) for rid, _, s in HAND]
    labels.append(_label("i1", {"power": 1.0}))
    return records, labels


def perfect_set(per_value: int = 8) -> tuple[list[dict], list[dict]]:
    """Every value prompted ``per_value`` times; the judge scores 1 for the prompted value, 0 for the others."""
    records = [_record(f"{v}{k}", v, f"a reply about {v}, number {k}") for v in VALUES for k in range(per_value)]
    return records, [_label(r["id"], {r["prompted_value"]: 1.0}) for r in records]


def test_auc_equals_the_hand_computation():
    records, labels = hand_set()
    res = judge_validity(records, labels, n_boot=100)
    assert res["status"] == "ok" and res["n"] == 5 and res["judge"] == "hand"
    for v, auc in HAND_AUC.items():
        assert res["per_value"][v]["auc"] == pytest.approx(auc, abs=1e-12)
        assert res["per_value"][v]["n_prompted"] == (1 if v == "security" else 2)
    assert res["mean"]["auc"] == pytest.approx(8 / 9, abs=1e-12)
    lo, hi = res["mean"]["auc_ci"]
    assert lo <= hi <= 1.0
    others = [v for v in VALUES if v not in HAND_AUC]
    assert all(res["per_value"][v]["reason"] == "not prompted" and "auc" not in res["per_value"][v]
               for v in others)


def test_a_judge_that_scores_only_the_prompted_value_gives_one():
    records, labels = perfect_set()
    res = judge_validity(records, labels, n_boot=100)
    assert all(res["per_value"][v]["auc"] == 1.0 for v in VALUES)
    assert res["mean"]["auc"] == 1.0 and res["mean"]["auc_ci"] == [1.0, 1.0] and res["warning"] is None
    assert 0.3 < res["mean"]["random_auc"] < 0.7  # the random judge on the same texts: chance
    assert res["mean"]["random_auc_ci"][0] < 0.5 < res["mean"]["random_auc_ci"][1]


def test_a_judge_near_chance_is_warned_about():
    records, labels = perfect_set()
    flat = [_label(r["id"], {}) for r in records]  # every score 0: AUC 0.5 for every value
    res = judge_validity(records, flat, n_boot=50)
    assert res["mean"]["auc"] == 0.5 and res["warning"] == VALIDITY_WARNING


def test_runs_without_two_prompted_values_are_na_with_the_reason():
    records, labels = hand_set()
    only_power = [r for r in records if r["prompted_value"] in ("power", None)]
    res = judge_validity(only_power, labels, n_boot=10)
    assert res["status"] == "n/a" and "only power was prompted" in res["reason"]
    res = judge_validity([r for r in records if r["prompted_value"] is None], labels, n_boot=10)
    assert res["status"] == "n/a" and "no prompted responses" in res["reason"]
    assert judge_validity(records, [], n_boot=10)["status"] == "n/a"  # nothing labelled yet
    from valuemech.report.tables import validity_md, validity_rows

    assert validity_rows(res)[-1] == ["mean", "0", "n/a", "n/a"] and "n/a: no prompted responses" in validity_md(res)


def _synthetic_run(root: Path) -> Path:
    from valuemech.config import make_config
    from valuemech.rundir import RunDir

    run = RunDir(root)
    root.mkdir(parents=True)
    run.write_config(make_config("smoke"))
    records, labels = hand_set()
    run.responses.write_text("".join(json.dumps(r) + "\n" for r in records))
    run.labels.write_text("".join(json.dumps(r) + "\n" for r in labels))
    return root


def test_summary_prints_the_table(tmp_path, monkeypatch):
    from valuemech import cli

    monkeypatch.setattr(cli, "console", Console(width=200))
    res = CliRunner().invoke(cli.app, ["summary", str(_synthetic_run(tmp_path / "run")), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "does the judge tell prompted values apart" in res.output and "random-judge AUC" in res.output
    power = next(line for line in res.output.splitlines() if line.strip("│ ").startswith("power") and "0.75 [" in line)
    assert "│ 2 " in power or " 2 " in power
    mean = next(line for line in res.output.splitlines() if "mean" in line and "0.89 [" in line)
    assert "5" in mean
    assert "n/a (not prompted)" in res.output and "Warning" not in res.output


def test_report_renders_the_table(tmp_path):
    from valuemech.report.page import build_report

    page = build_report(_synthetic_run(tmp_path / "run"), n_boot=50).read_text()
    assert "does the judge tell prompted values apart?" in page
    assert "<td>power</td>" in page and "<td>0.75 [" in page and "<td>0.89 [" in page
    assert "n/a (not prompted)" in page


def test_a_label_line_with_scores_of_another_shape_is_a_one_line_error(tmp_path):
    from valuemech.errors import ValuemechError
    from valuemech.labels import read_labels

    path = tmp_path / "labels.jsonl"
    for scores in ('"high"', '{"power": "high"}', '{"kindness": 1.0}', '{"power": true}'):
        path.write_text('{"response_id": "r1", "expressed": {}, "scores": %s}\n' % scores)
        with pytest.raises(ValuemechError, match="scores must map value ids to numbers or null"):
            read_labels(path)
    path.write_text('{"response_id": "r1", "expressed": {}, "scores": {"power": null, "security": 1}}\n')
    assert read_labels(path)[0]["scores"]["security"] == 1
