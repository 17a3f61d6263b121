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
from valuemech.neurons import generic_neurons, values_per_neuron
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


def _tokens(n: dict) -> str:
    return ", ".join(repr(t["token"]) for t in n.get("top_tokens", [])[:5]).replace("|", "\\|")


def strongest_neurons_md(nj: dict, per_class: int = 3) -> str:
    """The most value-specific kept neurons of each class, then the generic ones (kept for most values)
    once each, with their top-activating tokens (the paper's ranking: :func:`paper_ranking_md`).

    Value-specific: not generic (:func:`valuemech.neurons.generic_neurons`), ranked by how few values
    a neuron is kept for, then by projection norm.
    """
    kept_for = values_per_neuron(nj)
    generic = generic_neurons(nj)
    n_values = len(nj.get("per_value", {}))
    rows = [(v, n) for v, d in nj.get("per_value", {}).items() for n in d["neurons"]]
    key = lambda n: (int(n["layer"]), int(n["neuron"]))  # noqa: E731
    out = ["Most value-specific neurons of each class (neurons kept for most values are listed once below):", "",
           "| class | value | block | neuron | kept for (values) | projection norm | top tokens |",
           "|---|---|---|---|---|---|---|"]
    for cls in ("shared", "intrinsic", "prompted"):
        specific = [r for r in rows if r[1]["class"] == cls and key(r[1]) not in generic]
        best = sorted(specific, key=lambda r: (len(kept_for[key(r[1])]), -r[1]["proj_norm"]))[:per_class]
        for v, n in best:
            out.append(f"| {cls} | {v} | {n['layer']} | {n['neuron']} | {len(kept_for[key(n)])} of {n_values} | "
                       f"{n['proj_norm']:.3f} | {_tokens(n)} |")
    if generic:
        out += ["", f"Generic neurons: kept for at least {max(2, -(-n_values // 2))} of the {n_values} values "
                f"({len(generic)} neurons; the first {min(len(generic), 2 * per_class)} by how many values they top):",
                "", "| block | neuron | kept for (values) | class per value | top tokens |", "|---|---|---|---|---|"]
        first = {key(n): n for _, n in rows}
        classes = {}
        for v, n in rows:
            classes.setdefault(key(n), []).append(n["class"])
        for k, vs in sorted(generic.items(), key=lambda kv: (-len(kv[1]), kv[0]))[: 2 * per_class]:
            mix = ", ".join(f"{c} {classes[k].count(c)}" for c in dict.fromkeys(classes[k]))
            out.append(f"| {k[0]} | {k[1]} | {len(vs)} of {n_values} | {mix} | {_tokens(first[k])} |")
    return "\n".join(out)


def paper_ranking_md(nj: dict, per_class: int = 3) -> str:
    """The paper's ranking: the kept neurons of each class with the largest projection norm (generic ones included)."""
    rows = [(v, n) for v, d in nj.get("per_value", {}).items() for n in d["neurons"]]
    out = ["| class | value | block | neuron | projection norm | top tokens |", "|---|---|---|---|---|---|"]
    for cls in ("shared", "intrinsic", "prompted"):
        best = sorted((r for r in rows if r[1]["class"] == cls), key=lambda r: -r[1]["proj_norm"])[:per_class]
        for v, n in best:
            out.append(f"| {cls} | {v} | {n['layer']} | {n['neuron']} | {n['proj_norm']:.3f} | {_tokens(n)} |")
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


#: Columns of the judge-validity table (:func:`validity_rows`), shared by ``valuemech summary`` and the report.
VALIDITY_COLUMNS = ("value", "n prompted", "AUC [95% CI]", "random-judge AUC [95% CI]")


def _auc_cell(auc: float | None, ci: list[float] | None) -> str:
    if auc is None or auc != auc:
        return "n/a"
    return f"{auc:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def validity_rows(result: dict) -> list[list[str]]:
    """One row per value, then the mean, of :func:`valuemech.labels.judge_validity` (``n/a (why)`` where none)."""
    rows = []
    for v, d in result["per_value"].items():
        cells = [f"n/a ({d['reason']})" if d.get("reason") else _auc_cell(d.get(k), d.get(f"{k}_ci"))
                 for k in ("auc", "random_auc")]
        rows.append([v, str(d["n_prompted"]), *cells])
    m = result.get("mean", {})
    rows.append(["mean", str(result["n"]), *[_auc_cell(m.get(k), m.get(f"{k}_ci")) for k in ("auc", "random_auc")]])
    return rows


def validity_notes(result: dict) -> list[str]:
    """What the table measures, then why it is n/a or the near-chance warning (plain lines)."""
    notes = [f"ROC-AUC of the judge's score for each value: responses prompted with it against responses prompted "
             f"with another value, and their mean over the prompted values ({result['n']} prompted responses, "
             f"{result['n_boot']} bootstrap resamples). It measures the model's prompt following and the judge "
             "together; the random judge scoring the same texts is chance."]
    if result["status"] != "ok":
        notes.append(f"n/a: {result['reason']}.")
    elif result["warning"]:
        notes.append(f"Warning: {result['warning']}.")
    return notes


def validity_md(result: dict) -> str:
    """The judge-validity table as Markdown, with its notes."""
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(VALIDITY_COLUMNS) + " |", "|---" * len(VALIDITY_COLUMNS) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in validity_rows(result)]
    notes = [f"**{n}**" if n.startswith("Warning") else n for n in validity_notes(result)]
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)
