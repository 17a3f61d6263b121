"""Markdown tables of a run's artifacts (sweep, PVQ, neurons, evaluations, circumplex).

Shared by ``valuemech eval markdown`` and the HTML report, so both always show the same numbers.
Each function takes the parsed artifact and returns Markdown (a heading, then tables).
"""

from __future__ import annotations

from pathlib import Path


def sweep_md(sw: dict) -> str:
    alphas = sw["alphas"]
    out = [f"### Capability guard (probe value {sw['probe_value']}; MC baseline accuracy "
           f"{sw['baseline_accuracy']:.3f} on {sw['n_items']} items, {sw.get('mc_scoring', 'letter')} scoring; "
           f"KL on {sw['n_texts']} neutral texts)", "",
           "| component | block | " + " | ".join(f"α={a:g}: drop / KL" for a in alphas) + " | chosen α |",
           "|---|---|" + "---|" * (len(alphas) + 1)]
    for comp, by_layer in sw["curves"].items():
        for layer, pts in by_layer.items():
            ch = sw["chosen"].get(comp)
            out.append(f"| {comp} | {layer} | " + " | ".join(f"{p['accuracy_drop']:+.1f} / {p['kl']:.3f}" for p in pts)
                       + f" | {'-' if ch is None else format(ch['alpha'], 'g')} |")
    return "\n".join(out)


def pvq_md(pvq: dict, forced: bool = False) -> str:
    unit = "forced-choice win probability" if forced else "6-point scale"
    langs = [k for k in next(iter(pvq["rows"].values())) if k != "mean"]
    out = [f"### PVQ target-value gain ({unit}; mean over values [95% bootstrap CI over values])", "",
           "| condition | setting | " + " | ".join(langs) + " | mean |", "|---|---|" + "---|" * (len(langs) + 1)]
    for name, row in pvq["rows"].items():
        setting = ", ".join(f"{k}={v}" for k, v in pvq["settings"].get(name, {}).items())
        out.append(f"| {name} | {setting} | " + " | ".join(
            f"{row[l]['gain']:+.3f} [{row[l]['gain_ci'][0]:+.3f}, {row[l]['gain_ci'][1]:+.3f}]" for l in langs + ["mean"])
            + " |")
    if forced:
        return "\n".join(out)
    out += ["", "Specificity (target change minus mean change on the other values):", "",
            "| condition | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for name, row in pvq["rows"].items():
        out.append(f"| {name} | " + " | ".join(f"{row[l]['specificity']:+.3f}" for l in langs) + " |")
    out += ["", "Baseline rater per language:", "", "| lang | degenerate | option mass | argmax counts (1..6) |",
            "|---|---|---|---|"]
    for l, b in pvq["baseline"].items():
        out.append(f"| {l} | {b['degenerate']} | {b['mean_option_mass']:.3f} | "
                   f"{' '.join(str(b['argmax_counts'][str(k)]) for k in range(1, 7))} |")
    return "\n".join(out)


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


def circumplex_md(cx: dict) -> str:
    out = [f"### Circumplex (block {cx['layer']})", "", "| axes | 2 PCs explain | Procrustes R² | permutation p |",
           "|---|---|---|---|"]
    for name in ("shared", "difference (control)"):
        c = cx[name]
        out.append(f"| {name} | {c['explained_2pc']:.3f} | {c['r2']:.3f} | {c['p_value']:.3f} |")
    return "\n".join(out)


def run_markdown(run_root: Path) -> str:
    """Every table the run has, in pipeline order (what ``valuemech eval markdown`` prints)."""
    from valuemech.evals.registry import EVALS, markdown as eval_md

    from valuemech.errors import ValuemechError
    from valuemech.io import load_json

    root = Path(run_root)
    ev = root / "evals"
    parts = []

    def part(path: Path, render) -> None:
        """Append ``render(parsed file)``; an unreadable file, or one of another shape, is a one-line error."""
        data = load_json(path)
        try:
            parts.append(render(data))
        except Exception as exc:  # the renderers index into the file: a damaged one fails somewhere inside
            why = " ".join(str(exc).split())[:80]
            raise ValuemechError(f"{path}: not the expected result format ({exc.__class__.__name__}: {why}); "
                                 "rerun the command that wrote it") from None

    if (ev / "sweep.json").exists():
        part(ev / "sweep.json", sweep_md)
    for fname, forced in (("pvq.json", False), ("pvq_forced.json", True), ("pvq_alpha.json", False)):
        if (ev / fname).exists():
            part(ev / fname, (lambda d, f=forced: pvq_md(d, f)) if fname != "pvq_alpha.json"
                 else (lambda d: "#### PVQ gain vs. α\n\n" + pvq_md(d)))
    if (root / "neurons.json").exists():
        part(root / "neurons.json", neurons_md)
    for name in EVALS:
        if (ev / f"{name}.json").exists():
            part(ev / f"{name}.json", lambda d, n=name: f"### {n}\n\n" + eval_md(n, d))
    if (ev / "circumplex.json").exists():
        part(ev / "circumplex.json", circumplex_md)
    return "\n\n".join(parts) + "\n"
