"""valuemech monitor: projections equal a hand computation from read_residuals; z-scores against the run; outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_source
from valuemech import hooks
from valuemech.cli import app
from valuemech.errors import ValuemechError
from valuemech.monitor import MONITOR_COMPONENTS, Axes, monitor, read, run_stats, to_items
from valuemech.rundir import RunDir
from valuemech.steering import SteeringSource

runner = CliRunner()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> RunDir:
    out = tmp_path_factory.mktemp("monitor") / "run"
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), "--quiet", "--evals", "none",
                              "--stages", "generate,label,extract,decompose"])
    assert res.exit_code == 0, res.output
    return RunDir(out)


def hand_projections(lm, prompt_ids: list[int], response_ids: list[int], layer: int, u: torch.Tensor) -> torch.Tensor:
    """h_t · u/|u| for the response tokens, from one unbatched forward read with hooks.read_residuals."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad(), hooks.read_residuals(lm, [layer]) as res:
        lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1])[None])
    h = res[layer][0, -len(response_ids):].double()
    return h @ (u.double() / u.double().norm())


def test_projections_equal_a_hand_computation(tiny_llama):
    lm = tiny_llama
    src = make_source(lm)
    axes = Axes.from_source(src, 1, ["power", "universalism"])
    assert axes.names == [(v, c) for v in ("power", "universalism") for c in MONITOR_COMPONENTS]
    records = [{"id": "a", "prompt": "What do you want from life?", "text": "To lead others and win."},
               {"id": "b", "text": "Care for nature."},
               {"id": "c", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}]
    items = to_items(lm, records)
    assert items[0].prompt_ids == lm.prompt_ids("What do you want from life?", None)
    assert items[0].response_ids == lm.tokenizer.encode("To lead others and win.", add_special_tokens=False)
    alone = [next(read(lm, [it], axes)) for it in items]  # one sequence, no padding: same residuals
    together = list(read(lm, items, axes, batch_size=3))  # left-padded batch: equal to float tolerance
    for it, one, many in zip(items, alone, together):
        assert one.item is it and many.item is it
        for k, (v, c) in enumerate(axes.names):
            hand = hand_projections(lm, it.prompt_ids, it.response_ids, 1, src.component(c, v)[1])
            # the residuals are bit-identical; only float64 summation order differs (one matrix product)
            assert torch.allclose(one.proj[:, k], hand, rtol=1e-12, atol=1e-14), (it.id, v, c)
            assert torch.allclose(many.proj[:, k], hand, rtol=1e-5, atol=1e-5)
        assert torch.equal(one.score, one.proj.mean(0))
    # prompted_unique is the negative of intrinsic_unique: so are the projections
    assert torch.equal(alone[0].proj[:, 2], -alone[0].proj[:, 1])


def test_z_scores_are_against_the_runs_own_responses(smoke, tiny_llama):
    lm = tiny_llama
    src = SteeringSource.from_run(smoke, lm)
    axes = Axes.from_source(src, 1)
    stats = run_stats(lm, smoke, src, axes)
    responses = [r for r in smoke.load_responses() if r["response_token_ids"]]
    per = [torch.stack([hand_projections(lm, r["prompt_token_ids"], r["response_token_ids"], 1, src.component(c, v)[1])
                        for v, c in axes.names], dim=1) for r in responses]
    pooled, means = torch.cat(per), torch.stack([p.mean(0) for p in per])
    assert stats.n_responses == len(responses) and stats.n_tokens == pooled.shape[0]
    for got, want in ((stats.token_mean, pooled.mean(0)), (stats.token_std, pooled.std(0)),
                      (stats.response_mean, means.mean(0)), (stats.response_std, means.std(0))):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)
    path = smoke.monitor_stats(1)
    stamp = path.stat().st_mtime_ns
    again = run_stats(lm, smoke, src, Axes.from_source(src, 1, ["power"]))  # from the stored file
    assert path.stat().st_mtime_ns == stamp
    power = [axes.names.index(("power", c)) for c in MONITOR_COMPONENTS]
    assert torch.allclose(again.token_mean, stats.token_mean[power], rtol=1e-12, atol=1e-15)
    # the run's own responses score 0 on average, with unit spread: 0 means "as in the run's responses"
    scored, _ = monitor(lm, smoke, src, responses, layer=1)
    z = torch.tensor([[s.row["z"][v][c] for v, c in axes.names] for s in scored])
    assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-6)
    assert torch.allclose(z.std(0), torch.ones(z.shape[1]), atol=1e-6)
    s = scored[0]
    k = axes.names.index(("power", "shared"))
    assert s.row["raw"]["power"]["shared"] == pytest.approx(float(per[0][:, k].mean()), rel=1e-6, abs=1e-9)
    assert torch.allclose(s.token_z[:, k], (per[0][:, k] - stats.token_mean[k]) / stats.token_std[k], atol=1e-6)
    assert len(s.tokens) == s.row["n_tokens"] == len(responses[0]["response_token_ids"])


def test_cli_monitor_writes_scores_html_and_table(smoke, tmp_path):
    out, page = tmp_path / "scores.jsonl", tmp_path / "view.html"
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n"
                           for i, t in enumerate(["I will lead the team.", "Help the neighbours.", "Keep the old ways."])))
    r = runner.invoke(app, ["monitor", "--run", str(smoke.root), "--input", str(inp), "--out", str(out),
                            "--html", str(page), "--value", "power", "--quiet"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == ["r0", "r1", "r2"]
    assert set(rows[0]["z"]["power"]) == set(MONITOR_COMPONENTS) and rows[0]["block"] == 1
    assert "most power-laden responses" in r.stdout
    text = page.read_text()
    assert "monitor-data" in text and "<select id='mv'>" in text and "http" not in text.split("</style>", 1)[1]
    r = runner.invoke(app, ["monitor", "--run", str(smoke.root), "--text", "Order and safety first.", "--quiet"])
    assert r.exit_code == 0, r.output
    assert smoke.monitor_file("text.jsonl").exists() and smoke.monitor_file("text.html").exists()
    for args, needle in ((["--quiet"], "exactly one of --text and --input"),
                         (["--text", "x", "--component", "mean_delta"], "--component must be one of"),
                         (["--text", "x", "--values", "honour"], "unknown value")):
        r = runner.invoke(app, ["monitor", "--run", str(smoke.root), *args])
        assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_monitor_page_renders_in_chromium(smoke, tiny_llama, tmp_path):
    from valuemech.report.browser import check_page, find_chromium
    from valuemech.report.monitor_page import write_monitor_page

    if find_chromium() is None:
        pytest.skip("chromium not installed (`make browser` installs Debian's chromium)")
    src = SteeringSource.from_run(smoke, tiny_llama)
    scored, stats = monitor(tiny_llama, smoke, src, [{"text": "Tradition & <family> \"first\""}, {"text": "Win."}])
    page = write_monitor_page(tmp_path / "m.html", scored, stats, "tradition")
    res = check_page(page, screenshot=tmp_path / "m.png")
    assert res.ok, res.summary()


def test_bad_records_are_one_line_errors(tiny_llama):
    src = make_source(tiny_llama)
    with pytest.raises(ValuemechError, match="needs 'text', 'response' or 'messages'"):
        to_items(tiny_llama, [{"id": "x", "body": "hi"}])
    with pytest.raises(ValuemechError, match="must end with an assistant message"):
        to_items(tiny_llama, [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValuemechError, match="empty"):
        to_items(tiny_llama, [{"text": ""}])
    with pytest.raises(ValuemechError, match="needs components"):
        Axes.from_source(SteeringSource(src.vectors, None), 1)


def test_auc_interval_matches_the_rank_sum_auc():
    import numpy as np

    from valuemech.judges.evaluate import roc_auc
    from valuemech.monitor import auc_interval

    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    s = np.round(rng.normal(size=60) + y, 1)  # ties included
    auc, ci = auc_interval(y, s, n_boot=300)
    assert auc == pytest.approx(roc_auc(y, s), abs=1e-12) and ci[0] <= auc <= ci[1]
    assert math.isnan(auc_interval(np.ones(5, bool), np.arange(5.0))[0])  # one class: undefined


def test_validation_holds_back_whole_queries(smoke, tmp_path):
    from valuemech.monitor import validation_markdown

    out = tmp_path / "val.json"
    r = runner.invoke(app, ["monitor", "--run", str(smoke.root), "--validate", "--n-boot", "50", "--out", str(out),
                            "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    labelled = [x for x in smoke.load_responses() if x["response_token_ids"]]
    held = set(res["held_queries"])
    assert len(held) == res["n_held_queries"] == 6 and res["block"] == 1
    assert res["n_test"] == sum(str(x["query_id"]) in held for x in labelled)
    assert res["n_build"] + res["n_test"] == len(labelled)
    for per in res["per_value"].values():
        for c in MONITOR_COMPONENTS:
            a = per[c]["all"]
            assert a["auc"] is None or math.isnan(a["auc"]) or 0.0 <= a["auc"] <= 1.0
            assert a["n"] <= res["n_test"] and a["n"] == per[c]["intrinsic"]["n"] + per[c]["prompted"]["n"]
    assert "| value | AUC shared |" in validation_markdown(res)
    r = runner.invoke(app, ["monitor", "--run", str(smoke.root), "--validate", "--text", "x"])
    assert r.exit_code == 2 and "leave out --text" in r.stderr
