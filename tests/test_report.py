"""The report: findings verdicts from synthetic run directories, missing stages, Chromium rendering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from valuemech.rundir import RunDir
from valuemech.report.findings import compliance, diversity, findings, steerability, verdict
from valuemech.values import VALUES

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _write(root: Path, name: str, obj: dict) -> None:
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "evals" / name).write_text(json.dumps(obj))


def _pvq(root: Path, prompted: float, intrinsic: float, spread: float = 0.05) -> None:
    rng = np.random.default_rng(0)

    def row(mean):
        out = {}
        for lang in ("en", "fr"):
            pv = {v: {"gain": float(mean + spread * rng.standard_normal()), "specificity": 0.0} for v in VALUES}
            out[lang] = {"per_value": pv, "gain": mean, "gain_ci": [mean, mean], "specificity": 0.0,
                         "specificity_ci": [0, 0]}
        out["mean"] = {"gain": mean, "gain_ci": [mean, mean]}
        return out

    _write(root, "pvq.json", {"rows": {"prompted": row(prompted), "intrinsic": row(intrinsic)}, "settings": {},
                              "baseline": {}})


def _diversity(root: Path, intrinsic: float, prompted: float, spread: float = 0.01) -> None:
    rng = np.random.default_rng(1)
    rows = {}
    for name, mean in (("intrinsic", intrinsic), ("prompted", prompted)):
        pv = {v: {"distinct_2": float(mean + spread * rng.standard_normal())} for v in VALUES[:6]}
        rows[name] = {"per_value": pv, "aggregate": {"distinct_2": {"mean": mean}}}
    _write(root, "diversity.json", {"aggregates": {"rows": rows}, "settings": {}})


def _jailbreak(root: Path, md_refusals: list[bool], rnd_refusals: list[bool]) -> None:
    conds = {"baseline": {"component": "baseline", "alpha": None},
             "mean_delta@0.1": {"component": "mean_delta", "alpha": 0.1},
             "random@0.1": {"component": "random", "alpha": 0.1}}
    items = [{"responses": {"baseline": [{"refused": True}], "mean_delta@0.1": [{"refused": m}],
                            "random@0.1": [{"refused": r}]}} for m, r in zip(md_refusals, rnd_refusals)]
    _write(root, "jailbreak.json", {"settings": {"conditions": conds}, "items": items, "aggregates": {}})


def test_verdict_rule():
    assert verdict([0.1, 0.3], 10) == "supported"
    assert verdict([-0.3, -0.1], 10) == "not supported"
    assert verdict([-0.1, 0.3], 10) == "inconclusive"
    assert verdict([0.1, 0.3], 2) == "inconclusive"  # too few pairs
    assert verdict([float("nan")] * 2, 10) == "inconclusive"


@pytest.mark.parametrize("prompted, intrinsic, want", [(1.0, 0.2, "supported"), (0.2, 1.0, "not supported"),
                                                       (0.5, 0.5, "inconclusive"),
                                                       (0.0, -0.5, "inconclusive"),  # prompted raises nothing
                                                       (-0.5, -1.0, "not supported")])  # prompted lowers the target
def test_steerability_verdicts(tmp_path, prompted, intrinsic, want):
    _pvq(tmp_path, prompted, intrinsic)
    f = steerability(RunDir(tmp_path), n_boot=200)
    assert f.verdict == want and f.n == 20 and f.source == "evals/pvq.json"
    assert f.effect == pytest.approx(prompted - intrinsic, abs=0.05)


@pytest.mark.parametrize("intrinsic, prompted, want", [(0.40, 0.30, "supported"), (0.30, 0.40, "not supported"),
                                                       (0.35, 0.35, "inconclusive")])
def test_diversity_verdicts(tmp_path, intrinsic, prompted, want):
    _diversity(tmp_path, intrinsic, prompted)
    f = diversity(RunDir(tmp_path), n_boot=200)
    assert f.verdict == want and f.n == 6


def test_compliance_verdicts(tmp_path):
    n = 30
    _jailbreak(tmp_path, [False] * n, [True] * n)  # steering: every request complied; control: all refused
    f = compliance(RunDir(tmp_path), n_boot=200)
    assert f.verdict == "supported" and f.effect == pytest.approx(1.0) and f.n == n
    _jailbreak(tmp_path, [True] * n, [False] * n)
    assert compliance(RunDir(tmp_path), n_boot=200).verdict == "not supported"
    _jailbreak(tmp_path, [i % 2 == 0 for i in range(n)], [i % 2 == 1 for i in range(n)])
    g = compliance(RunDir(tmp_path), n_boot=200)
    assert g.verdict == "inconclusive" and g.effect == pytest.approx(0.0)


def test_missing_evaluations_are_reported_not_failed(tmp_path):
    fs = findings(tmp_path, n_boot=50)
    assert [f.verdict for f in fs] == ["missing"] * 3
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "pvq.json").write_text("{not json")
    assert steerability(RunDir(tmp_path)).verdict == "missing"


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    from typer.testing import CliRunner

    from valuemech.cli import app

    out = tmp_path_factory.mktemp("report") / "run"
    runner = CliRunner()
    six = "value_portrait,dilemmas,freeform,diversity,instruct,jailbreak"  # not sweep/pvq/circumplex: listed as missing
    res = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), "--quiet", "--evals", six])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").exists()  # the pipeline's last stage
    return out


def test_report_lists_missing_stages_and_renders_in_chromium(smoke_report, tmp_path):
    from valuemech.report.browser import check_page, find_chromium
    from valuemech.report.page import build_report

    page = (smoke_report / "report.html").read_text()
    for missing in ("evals/sweep.json", "evals/pvq.json", "evals/circumplex.json"):
        assert missing in page  # named with the command that makes it, not an error
    assert "Findings" in page and "compliance" in page and "cdn" not in page.lower()
    # a run stopped after decompose still gets a page
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.yaml", "responses.jsonl", "labels.jsonl", "vectors.safetensors", "components.safetensors",
                 "decompose.json"):
        shutil.copy(smoke_report / name, partial / name)
    text = build_report(partial, n_boot=50).read_text()
    assert "neurons.json" in text and "Not run:" in text and "Figure 2" in text
    if find_chromium() is None:
        pytest.skip("chromium not installed (`make browser` installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    res = check_page(smoke_report / "report.html", screenshot=ARTIFACTS / "report-smoke.png")
    n_imgs = page.count("<img ")
    assert res.ok, res.summary()
    assert res.images_total == n_imgs >= 5 and res.images_loaded == n_imgs
    assert (ARTIFACTS / "report-smoke.png").stat().st_size > 10_000


def test_compare_puts_runs_side_by_side(smoke_report, tmp_path):
    from typer.testing import CliRunner

    from valuemech.cli import app

    other = tmp_path / "other"
    shutil.copytree(smoke_report, other)
    _jailbreak(other, [False] * 10, [True] * 10)
    out = tmp_path / "cmp.html"
    res = CliRunner().invoke(app, ["compare", str(smoke_report), str(other), "--out", str(out), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.count("<tr>") == 4 and "supported" in text and str(other) in text
    bad = CliRunner().invoke(app, ["compare", str(smoke_report), str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_a_neuron_kept_for_every_value_is_reported_once_as_generic(tmp_path):
    from valuemech.report.figures import neuron_counts
    from valuemech.report.tables import paper_ranking_md, strongest_neurons_md

    def neuron(layer, idx, norm, cls="shared", token=" the"):
        return {"layer": layer, "neuron": idx, "proj_norm": norm, "class": cls, "angles": {},
                "top_tokens": [{"token": token, "context": "", "activation": 1.0}]}

    per_value = {v: {"neurons": [neuron(2, 90, 5.0), neuron(1, i, 1.0 + i / 10, token=f" {v}")],
                     "counts_per_layer": {}} for i, v in enumerate(VALUES)}
    nj = {"k_percent": 1.0, "max_angle": 30.0, "n_layers": 3, "d_mlp": 128, "per_value": per_value,
          "counts_per_layer": {"shared": [0, 10, 10], "intrinsic": [0] * 3, "prompted": [0] * 3, "none": [0] * 3},
          "overlap": {"neurons_in_several_values": {"shared": 1}}}
    md = strongest_neurons_md(nj)
    specific, generic = md.split("Generic neurons")
    assert "| 2 | 90 |" not in specific  # not every value's top neuron
    assert specific.count("| shared |") == 3 and "1 of 10" in specific and "' universalism'" in specific
    assert generic.count("| 2 | 90 |") == 1 and "10 of 10" in generic and "shared 10" in generic
    assert "| shared | self_direction | 2 | 90 | 5.000 |" in paper_ranking_md(nj)  # the paper's ranking kept
    assert neuron_counts(nj, tmp_path / "n.png").stat().st_size > 5000
