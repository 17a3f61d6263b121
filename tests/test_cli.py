"""The CLI end to end on the smoke preset, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from valuemech.cli import app
from valuemech.io import read_jsonl

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert "Traceback" not in result.output and "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = invoke("run", "--preset", "smoke", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out, result


def test_smoke_run_writes_the_run_directory(smoke_run):
    out, result = smoke_run
    for name in ("config.yaml", "responses.jsonl", "labels.jsonl", "vectors.safetensors",
                 "components.safetensors", "decompose.json", "stages.json", "neurons.json"):
        assert (out / name).exists(), name
    responses = read_jsonl(out / "responses.jsonl")
    assert len(responses) == 12 * 4
    assert {r["condition"] for r in responses} == {"intrinsic", "prompted"}
    assert len(read_jsonl(out / "labels.jsonl")) == len(responses)
    summary = json.loads((out / "decompose.json").read_text())
    assert summary["values"] and "mean_delta" in summary
    assert "cos(v_int, v_prompt)" in result.stdout and "self_direction" in result.stdout
    neurons = json.loads((out / "neurons.json").read_text())
    for v in summary["values"]:
        kept = neurons["per_value"][v]["neurons"]
        assert len(kept) == 2 * 2  # 2 blocks x ceil(1% of 128 neurons)
        assert sum(sum(c) for c in neurons["per_value"][v]["counts_per_layer"].values()) == len(kept)
        assert all(1 <= len(n["top_tokens"]) <= 5 and {"token", "context", "activation"} <= set(n["top_tokens"][0])
                   for n in kept)
    # the evaluate stage wrote every evaluation the smoke preset lists, each with its settings and aggregates
    from valuemech.evals.registry import EVALS

    for name in EVALS:
        res = json.loads((out / "evals" / f"{name}.json").read_text())
        assert res["eval"] == name and res["settings"]["model_id"] and "aggregates" in res and res["items"]
    assert json.loads((out / "stages.json").read_text())["evaluate"]["evals"] == list(EVALS)


def test_rerun_skips_completed_stages_and_summary(smoke_run):
    out, _ = smoke_run
    before = (out / "responses.jsonl").read_bytes()
    result = invoke("run", "--preset", "smoke", "--out", out, "--quiet")
    assert result.exit_code == 0
    assert result.stderr.count("already complete") == 7
    assert (out / "responses.jsonl").read_bytes() == before
    assert invoke("summary", out).exit_code == 0
    assert invoke("decompose", "--run", out, "--force").exit_code == 0
    r = invoke("label", "--run", out)
    assert r.exit_code == 0 and "already complete" in r.stderr
    assert_one_line_error(invoke("label", "--run", out, "--judge", "lexicon"), "--run labels a run")
    assert_one_line_error(invoke("label", "--judge", "lexicon"), "give --run DIR")


def test_steer_shows_baseline_steered_and_control(smoke_run):
    out, _ = smoke_run
    r = invoke("steer", "--run", out, "--value", "power", "--component", "shared", "--alpha", "0.5",
               "--max-tokens", "6", "Should I ask for a raise?")
    assert r.exit_code == 0, r.output
    for word in ("baseline", "steered", "random control"):
        assert word in r.stdout
    assert_one_line_error(invoke("steer", "--run", out, "--value", "power", "--component", "sideways",
                                 "--alpha", "1", "hi"), "unknown component 'sideways'")
    assert_one_line_error(invoke("steer", "--run", out, "--value", "honour", "--component", "shared",
                                 "--alpha", "1", "hi"), "unknown value 'honour'")
    assert_one_line_error(invoke("steer", "--run", out, "--value", "power", "--component", "shared",
                                 "--layer", "7", "--alpha", "1", "hi"), "out of range")
    r = invoke("steer", "--run", out, "--value", "power,benevolence", "--operator", "ablate_add", "--alpha", "0.5",
               "--max-tokens", "4", "hi")
    assert r.exit_code == 0, r.output
    assert "ablate_add" in r.stdout and "shared.power+shared.benevolence" in r.stdout
    assert_one_line_error(invoke("steer", "--run", out, "--value", "power", "--operator", "subtract",
                                 "--alpha", "1", "hi"), "operator must be one of add, ablate, ablate_add")


def test_resume_with_another_model_is_refused(smoke_run):
    out, _ = smoke_run
    assert_one_line_error(invoke("run", "--preset", "smoke", "--model", "tiny-qwen2", "--out", out),
                          "made with model 'tiny-llama'")
    assert_one_line_error(invoke("run", "--preset", "smoke", "--seed", "9", "--out", out), "seed")


def test_bad_input_one_line_errors(tmp_path):
    assert_one_line_error(invoke("run", "--preset", "smoke", "--values", "power,honour", "--out", tmp_path / "a"),
                          "unknown value 'honour'")
    assert_one_line_error(invoke("run", "--preset", "smoke", "--model", "gpt5", "--out", tmp_path / "b"),
                          "unknown model 'gpt5'")
    bad = tmp_path / "q.txt"
    bad.write_text("just some words\n")
    assert_one_line_error(invoke("run", "--preset", "smoke", "--queries", bad, "--out", tmp_path / "c"),
                          "not a query file")
    nofield = tmp_path / "q.jsonl"
    nofield.write_text('{"body": "x"}\n')
    assert_one_line_error(invoke("run", "--preset", "smoke", "--queries", nofield, "--out", tmp_path / "d"),
                          "has no a text field")
    empty = tmp_path / "e.json"
    empty.write_text("[]")
    assert_one_line_error(invoke("run", "--preset", "smoke", "--queries", empty, "--out", tmp_path / "e"),
                          "empty")
    assert_one_line_error(invoke("run", "--preset", "nope"), "unknown preset")
    assert_one_line_error(invoke("extract", "--run", tmp_path / "nothing"), "not a run directory")


def test_every_subcommand_has_help():
    for cmd in (["--help"], ["run", "--help"], ["generate", "--help"],
                ["extract", "--help"], ["decompose", "--help"], ["summary", "--help"],
                ["models", "--help"], ["models", "list", "--help"], ["models", "pull", "--help"],
                ["neurons", "--help"], ["steer", "--help"], ["sweep", "--help"], ["serve", "--help"],
                ["label", "--help"], ["eval", "--help"], ["eval", "pvq", "--help"], ["eval", "circumplex", "--help"],
                ["judges", "--help"], ["judges", "evaluate", "--help"], ["judges", "calibrate", "--help"],
                ["judges", "table", "--help"]):
        result = invoke(*cmd)
        assert result.exit_code == 0 and "Usage" in result.output, cmd


def test_label_command_and_judge_errors(tmp_path):
    inp = tmp_path / "texts.jsonl"
    inp.write_text('{"text": "Family comes first; be loyal and kind."}\n{"id": "b", "text": ""}\n')
    out = tmp_path / "labels.jsonl"
    r = invoke("label", "--judge", "lexicon", "--input", inp, "--output", out)
    assert r.exit_code == 0, r.output
    rows = read_jsonl(out)
    assert [x["response_id"] for x in rows] == ["1", "b"] and rows[0]["expressed"]["benevolence"]
    assert_one_line_error(invoke("label", "--judge", "oracle", "--input", inp, "--output", out), "unknown judge 'oracle'")
    assert_one_line_error(invoke("label", "--judge", "llm", "--options", '{"api_key_env": "VM_NO_SUCH_KEY"}',
                                 "--input", inp, "--output", tmp_path / "x.jsonl"), "VM_NO_SUCH_KEY is not set")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    opts = json.dumps({"base_url": f"http://127.0.0.1:{dead}/v1", "api_key_env": None, "retries": 0,
                       "cache": str(tmp_path / "c.sqlite")})
    assert_one_line_error(invoke("label", "--judge", "llm", "--options", opts, "--input", inp,
                                 "--output", tmp_path / "y.jsonl"), "cannot reach")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": 1}\n')
    assert_one_line_error(invoke("label", "--judge", "lexicon", "--input", bad, "--output", out), "no 'text'")


def test_judges_evaluate_writes_report(tmp_path):
    out = tmp_path / "lex.json"
    r = invoke("judges", "evaluate", "--judge", "lexicon", "--n-boot", "20", "--out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["split"] == "test" and set(rep["per_value"]) and "f1_ci" in rep["macro"]
    assert rep["failures"].get("unsupported language es", 0) > 0  # Spanish items: no pyvalues dictionary


def test_sweep_pvq_and_circumplex_commands(smoke_run):
    out, _ = smoke_run
    r = invoke("sweep", "--run", out, "--components", "shared,mean_delta", "--alphas", "0,0.5", "--n-items", "8",
               "--quiet")
    assert r.exit_code == 0, r.output
    sw = json.loads((out / "evals" / "sweep.json").read_text())
    assert set(sw["curves"]) == {"shared", "mean_delta", "random"}
    zero = sw["curves"]["shared"]["1"][0]
    assert zero["alpha"] == 0 and zero["accuracy_drop"] == 0 and abs(zero["kl"]) < 1e-12
    assert sw["mc_scoring"] == "cloze" and sw["mc_items"].startswith("builtin")
    mmlu = out.parent / "mmlu"
    mmlu.mkdir(exist_ok=True)
    (mmlu / "geo_test.csv").write_text('"What orbits Earth?",Moon,Sun,Mars,Venus,A\n"Largest ocean?",Indian,Pacific,Arctic,Atlantic,B\n')
    r = invoke("sweep", "--run", out, "--components", "shared", "--alphas", "0.5", "--mmlu", mmlu,
               "--mc-scoring", "letter", "--quiet")
    assert r.exit_code == 0, r.output
    sw2 = json.loads((out / "evals" / "sweep.json").read_text())
    assert sw2["n_items"] == 2 and sw2["mc_scoring"] == "letter" and sw2["mc_items"] == str(mmlu)
    assert_one_line_error(invoke("sweep", "--run", out, "--mc-scoring", "vibes"), "--mc-scoring must be one of")
    r = invoke("sweep", "--run", out, "--components", "shared,mean_delta", "--alphas", "0,0.5", "--n-items", "8",
               "--quiet")  # back to the sweep the rest of this test reads
    assert r.exit_code == 0, r.output
    r = invoke("eval", "pvq", "--run", out, "--langs", "en,ko", "--values", "power,tradition",
               "--components", "shared,prompted", "--n-boot", "20", "--quiet")
    assert r.exit_code == 0, r.output
    pvq = json.loads((out / "evals" / "pvq.json").read_text())
    assert {"shared", "prompted", "neurons:shared", "random control"} <= set(pvq["rows"])
    assert set(pvq["rows"]["shared"]) == {"en", "ko", "mean"}
    r = invoke("eval", "pvq", "--run", out, "--langs", "fr", "--values", "power,tradition",
               "--components", "shared,prompted", "--n-boot", "20", "--quiet", "--out", "pvq_fr.json")
    assert r.exit_code == 0, r.output
    (out / "evals" / "pvq_enko.json").write_bytes((out / "evals" / "pvq.json").read_bytes())
    r = invoke("eval", "pvq", "--run", out, "--merge", "pvq_enko.json,pvq_fr.json", "--n-boot", "20",
               "--out", "pvq_all.json")
    assert r.exit_code == 0, r.output
    merged = json.loads((out / "evals" / "pvq_all.json").read_text())
    assert set(merged["rows"]["shared"]) == {"en", "ko", "fr", "mean"} and list(merged["baseline"]) == ["en", "fr", "ko"]
    assert_one_line_error(invoke("eval", "pvq", "--run", out, "--merge", "pvq.json,nope.json"), "no file 'nope.json'")
    r = invoke("eval", "pvq", "--run", out, "--langs", "en", "--values", "power", "--components", "shared",
               "--format", "forced", "--beta", "0", "--n-boot", "20", "--quiet")
    assert r.exit_code == 0, r.output
    assert "pvq_forced.json" in r.stdout.replace("\n", "")
    forced = json.loads((out / "evals" / "pvq_forced.json").read_text())
    assert set(forced["rows"]) == {"shared", "random control"} and "power" in forced["rows"]["shared"]["en"]["per_value"]
    r = invoke("eval", "pvq", "--run", out, "--langs", "en", "--values", "power", "--components", "shared",
               "--alphas", "0,0.5", "--n-boot", "20", "--quiet")
    assert r.exit_code == 0, r.output
    grid = json.loads((out / "evals" / "pvq_alpha.json").read_text())
    assert set(grid["rows"]) == {"shared@0", "shared@0.5", "random control@0", "random control@0.5"}
    # α = 0 changes nothing (up to float noise: the baseline is scored in other batches, with other padding)
    assert abs(grid["rows"]["shared@0"]["en"]["per_value"]["power"]["gain"]) < 1e-6
    assert grid["settings"]["shared@0.5"]["component"] == "shared" and grid["settings"]["shared@0.5"]["alpha"] == 0.5
    r = invoke("eval", "circumplex", "--run", out, "--n-permutations", "50")
    assert r.exit_code == 0, r.output
    assert "r2" in json.loads((out / "evals" / "circumplex.json").read_text())["shared"]
    md = invoke("eval", "markdown", "--run", out)
    assert md.exit_code == 0 and "PVQ target-value gain" in md.stdout and "Circumplex" in md.stdout
    assert "PVQ gain vs. α" in md.stdout
    rep = invoke("report", str(out), "--n-boot", "50")
    assert rep.exit_code == 0, rep.output
    for fig in ("guard.png", "pvq_gains.png", "pvq_forced_gains.png", "pvq_alpha.png", "circumplex.png"):
        assert (out / "figures" / fig).stat().st_size > 5000, fig
    page = (out / "report.html").read_text()
    assert "evals/pvq.json" not in page.split("Findings")[0]  # no longer listed as missing
    assert_one_line_error(invoke("sweep", "--run", out, "--components", "diagonal"), "unknown component 'diagonal'")
    assert_one_line_error(invoke("sweep", "--run", out, "--layers", "9"), "out of range")
    assert_one_line_error(invoke("eval", "pvq", "--run", out, "--langs", "de"), "no built-in PVQ items")
    assert_one_line_error(invoke("eval", "pvq", "--run", out, "--langs", "en", "--values", "power", "--components",
                                 "shared", "--beta", "0", "--no-control", "--out", "../x.json"), "--out must be a file name")


def test_eval_command_and_markdown(smoke_run):
    out, _ = smoke_run
    result = invoke("eval", "dilemmas", "--run", out, "--values", "power", "--components", "shared",
                    "--limit", "1", "--alpha", "0", "--no-control", "--quiet", "--n-boot", "20")
    assert result.exit_code == 0, result.output
    assert "Dilemma win rates" in result.stdout and "written:" in result.stdout
    res = json.loads((out / "evals" / "dilemmas.json").read_text())
    assert list(res["aggregates"]) == ["shared"] and res["settings"]["conditions"]["shared"]["alpha"] == 0.0
    md = invoke("eval", "markdown", "--run", out)
    assert md.exit_code == 0 and "### instruct" in md.stdout and "### jailbreak" in md.stdout
    bad = invoke("eval", "diversity", "--run", out, "--components", "sideways")
    assert bad.exit_code == 2 and "unknown component 'sideways'" in bad.stderr
    fixture = Path(__file__).parent / "fixtures" / "advbench_sample.csv"
    r = invoke("eval", "jailbreak", "--run", out, "--items", str(fixture), "--column", "target", "--limit", "1",
               "--alphas", "0", "--values", "power", "--no-control", "--max-new-tokens", "2", "--temperature", "0",
               "--n-boot", "20", "--quiet")
    assert r.exit_code == 0, r.output
    jb = json.loads((out / "evals" / "jailbreak.json").read_text())
    assert jb["settings"]["dataset"]["column"] == "target" and jb["items"][0]["request"].startswith("Sure, here is")
    assert_one_line_error(invoke("eval", "jailbreak", "--run", out, "--column", "goal"), "needs a dataset file")
