"""ARCHITECTURE.md's example evaluation, registered from outside the package and run on the smoke run:
its CLI subcommand, its file under evals/, `eval markdown` and the report all come from one registry line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def example_eval(tmp_path, monkeypatch):
    """The doc's first Python block as a module on sys.path, registered (and unregistered afterwards)."""
    from valuemech.evals import registry

    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert 25 <= len(code.strip().splitlines()) <= 35  # "a 30-line example"
    (tmp_path / "vm_example_kl.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "REGISTRY", list(registry.REGISTRY))
    monkeypatch.setattr(registry, "EVALS", dict(registry.EVALS))
    ev = registry.register(registry.Evaluation("next_token_kl", "vm_example_kl", "KL of next-token distributions."))
    yield ev
    sys.modules.pop("vm_example_kl", None)


def test_the_documented_example_evaluation_runs_end_to_end(example_eval, tmp_path, monkeypatch):
    from valuemech import cli
    from valuemech.report import page
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(cli.app, ["run", "--preset", "smoke", "--out", str(run), "--quiet", "--evals", "none"])
    assert res.exit_code == 0, res.output
    eval_app = next(g.typer_instance for g in cli.app.registered_groups if g.name == "eval")
    monkeypatch.setattr(eval_app, "registered_commands", list(eval_app.registered_commands))
    cli._eval_command(example_eval)  # what the CLI does for every registry line at import
    res = runner.invoke(cli.app, ["eval", "next_token_kl", "--run", str(run), "--components", "shared",
                                  "--values", "power", "--alpha", "0", "--n-boot", "20", "--quiet"])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "evals" / "next_token_kl.json").read_text())
    assert out["eval"] == "next_token_kl" and out["settings"]["model_id"] and len(out["items"]) == 2 * 2
    # α = 0 adds a zero vector: the distribution does not move at all
    assert out["aggregates"]["shared"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert out["aggregates"]["random control"]["mean"] == pytest.approx(0.0, abs=1e-12)
    md = runner.invoke(cli.app, ["eval", "markdown", "--run", str(run)])
    assert md.exit_code == 0 and "### next_token_kl" in md.stdout and "KL(base ‖ steered)" in md.stdout
    html = page.build_report(run, n_boot=20).read_text()
    assert "next_token_kl" in html and "KL(base ‖ steered)" in html
    # and the evaluate stage runs it from a config line
    (run / "evals" / "next_token_kl.json").unlink()
    res = runner.invoke(cli.app, ["run", "--preset", "smoke", "--out", str(run), "--quiet", "--evals", "next_token_kl",
                                  "--stages", "evaluate"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "evals" / "next_token_kl.json").read_text())["eval"] == "next_token_kl"
    bad = runner.invoke(cli.app, ["run", "--preset", "smoke", "--out", str(run), "--quiet", "--evals", "nope"])
    assert bad.exit_code == 2 and "unknown evaluation 'nope'" in bad.stderr
