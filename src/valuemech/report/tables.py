"""Markdown tables of a run's artifacts: the neurons, and every evaluation's (through the registry).

Shared by ``valuemech eval markdown`` and the HTML report, so both always show the same numbers.
Each function takes the parsed artifact and returns Markdown (a heading, then tables).
"""

from __future__ import annotations

from pathlib import Path

from valuemech.errors import ValuemechError
from valuemech.evals import registry
from valuemech.evals.registry import Evaluation
from valuemech.io import load_json
from valuemech.rundir import RunDir


def neurons_md(nj: dict) -> str:
    counts = nj["counts_per_layer"]
    out = [f"### Value neurons (top {nj['k_percent']:g}% per block by projection, angle < {nj['max_angle']:g}°; "
           "summed over values)", "", "| block | " + " | ".join(counts) + " |", "|---|" + "---|" * len(counts)]
    for l in range(nj["n_layers"]):
        out.append(f"| {l} | " + " | ".join(str(counts[c][l]) for c in counts) + " |")
    out += ["", "Totals: " + ", ".join(f"{c} {sum(v)}" for c, v in counts.items())
            + f"; neurons kept for several values: {nj['overlap']['neurons_in_several_values']}"]
    return "\n".join(out)


def strongest_neurons_md(nj: dict, per_class: int = 3) -> str:
    """The strongest kept neurons of each class (by projection norm) with their top-activating tokens."""
    rows = [(v, n) for v, d in nj.get("per_value", {}).items() for n in d["neurons"]]
    out = ["| class | value | block | neuron | projection norm | top tokens |", "|---|---|---|---|---|---|"]
    for cls in ("shared", "intrinsic", "prompted"):
        best = sorted((r for r in rows if r[1]["class"] == cls), key=lambda r: -r[1]["proj_norm"])[:per_class]
        for v, n in best:
            toks = ", ".join(repr(t["token"]) for t in n.get("top_tokens", [])[:5]).replace("|", "\\|")
            out.append(f"| {cls} | {v} | {n['layer']} | {n['neuron']} | {n['proj_norm']:.3f} | {toks} |")
    return "\n".join(out)


def eval_results(run: RunDir) -> list[tuple[Evaluation, Path]]:
    """Every evaluation result file the run has (each evaluation's default files), in registry order."""
    return [(ev, run.eval_path(f)) for ev in registry.REGISTRY for f in ev.outputs() if run.eval_path(f).exists()]


def render(ev: Evaluation, path: Path, data: object) -> str:
    """``markdown`` of one result file; a file of another shape is a one-line error naming it."""
    try:
        return ev.load().markdown(data)
    except Exception as exc:  # the renderers index into the file: a damaged one fails somewhere inside
        why = " ".join(str(exc).split())[:80]
        raise ValuemechError(f"{path}: not the expected result format ({exc.__class__.__name__}: {why}); "
                             "rerun the command that wrote it") from None


def run_markdown(run: RunDir | Path) -> str:
    """Every table the run has (what ``valuemech eval markdown`` prints): neurons, then each evaluation's."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    parts = []
    if run.neurons_json.exists():
        parts.append(neurons_md(run.load_neurons()))
    for ev, path in eval_results(run):
        heading = "" if ev.section != "Evaluations" else f"### {ev.name}\n\n"
        parts.append(heading + render(ev, path, load_json(path)))
    return "\n\n".join(parts) + "\n"
