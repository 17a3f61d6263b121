"""``report.html``: the paper's results section for one run, and ``compare.html`` for several runs.

The page is self-contained and offline: inline CSS, no CDN, figures as ``figures/*.png`` beside it.
Every number comes from the run directory's artifacts (tables through :mod:`valuemech.report.tables`
and each evaluation's own ``markdown``); a stage or evaluation that did not run is listed as
missing, with the command that makes it, instead of failing.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import markdown as md

from valuemech.evals import registry
from valuemech.io import atomic_write_text
from valuemech.labels import judge_validity
from valuemech.label_null import cosine_line, read_null
from valuemech.report import figures, tables
from valuemech.report.browser import PAGE_ERROR_HOOK_JS, PAGE_PROBE_JS
from valuemech.report.findings import findings
from valuemech.rundir import RunDir

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.missing{color:#a33}.verdict-supported{color:#1a7f37;font-weight:600}
.verdict-not-supported{color:#b42318;font-weight:600}.verdict-inconclusive{color:#9a6700;font-weight:600}
.verdict-missing{color:#777}code{background:#f6f6f6;padding:0 3px}.small{font-size:.85em;color:#555}
"""

#: (artifact, command that makes it) of the stages, in pipeline order; the core evaluations follow (registry).
STAGE_ARTIFACTS = [
    ("responses.jsonl", "valuemech generate --run RUN"), ("labels.jsonl", "valuemech label --run RUN"),
    ("vectors.safetensors", "valuemech extract --run RUN"), ("components.safetensors", "valuemech decompose --run RUN"),
    ("neurons.json", "valuemech neurons --run RUN"),
]


#: The first screen: what the page is, and the limits of small models (docs/results-*.md).
INTRO = ("<p>This page runs the paper's method on one model: value vectors extracted from responses the model wrote "
         "with and without a value-priority system prompt, their shared and unique components and neurons, and the "
         "paper's three headline claims tested by steering with them (findings panel below, each with a 95% "
         "interval and a verdict). On the small embedded models (SmolLM2-135M, Qwen2.5-0.5B) none of the claims "
         "replicated: they barely follow value prompts, their questionnaire raters answer almost every item alike, "
         "and the lexicon judge is near chance on human-written text, so read a verdict together with the "
         "random-direction control rows and the judge's agreement "
         "(valuemech's README, section <i>Models</i>; docs/results-smollm2.md and docs/results-qwen0.5b.md "
         "in the valuemech repository).</p>")


def expected_artifacts() -> list[tuple[str, str]]:
    """Every artifact the findings need, with the command that makes it."""
    return STAGE_ARTIFACTS + [(f"evals/{ev.outputs()[0]}", f"valuemech eval {ev.name} --run RUN")
                              for ev in registry.REGISTRY if ev.core]


def _md(text: str) -> str:
    return md.markdown(text, extensions=["tables"])


def _img(path: Path | None, root: Path, alt: str) -> str:
    if path is None:
        return ""
    return f'<img src="{html.escape(path.relative_to(root).as_posix())}" alt="{html.escape(alt)}">'


def _fmt_effect(f: dict) -> str:
    if f["effect"] is None:
        return "—"
    lo, hi = f["ci"]
    return f"{f['effect']:+.3f} [{lo:+.3f}, {hi:+.3f}] (n = {f['n']})"


def findings_table(found: list[dict]) -> str:
    rows = "".join(
        f"<tr><td><b>{html.escape(f['claim'])}</b><br><span class='small'>{html.escape(f['statement'])}</span></td>"
        f"<td>{html.escape(f['measure'])}</td><td>{_fmt_effect(f)}<br><span class='small'>{html.escape(f['detail'])}"
        f"</span></td><td class='verdict-{f['verdict'].replace(' ', '-')}'>{f['verdict']}</td>"
        f"<td class='small'>{html.escape(f['paper'])} (paper)</td><td class='small'>{html.escape(f['source'])}</td></tr>"
        for f in found)
    return ("<table><tr><th>claim</th><th>measure</th><th>effect [95% CI]</th><th>verdict</th><th>paper</th>"
            f"<th>source</th></tr>{rows}</table>")


def _summary(run: RunDir, cfg: dict | None) -> str:
    items = []
    if cfg:
        items.append(f"model <code>{html.escape(str(cfg['model']['name']))}</code> ({cfg['model']['dtype']}, "
                     f"{cfg['model']['device']}); judge <code>{html.escape(cfg['judge']['name'])}</code>; seed "
                     f"{cfg['seed']}; preset {cfg.get('preset')}")
    out = "<p>" + "<br>".join(items) + "</p>"
    if run.vectors.exists():
        meta = run.load_vectors().metadata
        counts = json.loads(meta.get("counts", "{}"))
        out += (f"<p class='small'>model id {html.escape(meta.get('model_id', '?'))}; weights sha256 "
                f"<code>{html.escape(meta.get('weights_sha256', '?')[:16])}…</code>; {meta.get('n_layers', '?')} blocks; "
                f"library {html.escape(meta.get('library', '?'))}</p>")
        dec = run.peek(run.decompose_json)
        mid = int(meta.get("n_layers", 2)) // 2
        null = read_null(meta)
        per_null = null["per_value"] if null and null.get("layer") == mid else {}
        lines = ["| value | intrinsic (expressing / not) | prompted (expressing / not) | cos(v_int, v_prompt) @ block "
                 f"{mid} | random labels, 95% |", "|---|---|---|---|---|"]
        cos_by_value = {}
        for v in counts.get("intrinsic", {}):
            ci, cp = counts["intrinsic"].get(v, {}), counts.get("prompted", {}).get(v, {})
            cos = dec["per_value"][v]["cosine"][mid] if dec and v in dec.get("per_value", {}) else None
            if cos is not None:
                cos_by_value[v] = cos
            band = f"{per_null[v][0]:+.3f} … {per_null[v][1]:+.3f}" if v in per_null else "-"
            lines.append(f"| {v} | {ci.get('expressed', '-')} / {ci.get('not', '-')} | {cp.get('expressed', '-')} / "
                         f"{cp.get('not', '-')} | {'-' if cos is None else f'{cos:+.3f}'} | {band} |")
        out += _md("\n".join(lines))
        if cos_by_value:
            out += f"<p class='small'>{html.escape(cosine_line(cos_by_value, null, mid))}</p>"
    stages = run.load_stages()
    if stages:
        out += "<p class='small'>stage wall time: " + ", ".join(
            f"{k} {v.get('seconds', 0):.1f} s" for k, v in stages.items()) + "</p>"
    return out


def _validity(run: RunDir, n_boot: int) -> str:
    """The labels' validity check: does the judge's score pick out the prompted value? (empty without labels)"""
    if not (run.labels.exists() and run.responses.exists()):
        return ""
    result = judge_validity(run.load_responses(), run.read_labels(), n_boot=n_boot)
    return "<h3>Labels: does the judge tell prompted values apart?</h3>" + _md(tables.validity_md(result))


def _decompose(dec: dict) -> str:
    md_ = dec.get("mean_delta", {})
    expl = md_.get("explained") or []
    pc = md_.get("mean_pairwise_cosine") or []
    sv = [x for d in dec.get("per_value", {}).values() for x in d.get("shared_variance", [])]
    parts = []
    if expl:
        parts.append(f"mean-delta direction explains {min(expl):.1%}–{max(expl):.1%} of the ten deltas' second moment "
                     f"across blocks (paper: 48–68%); the deltas' mean pairwise cosine is {min(pc):+.3f}…{max(pc):+.3f} "
                     "(paper: 0.476).")
    if sv:
        parts.append(f"The shared SVD axis carries {min(sv):.1%}–{max(sv):.1%} of each (v_int, v_prompt) pair's "
                     "variance.")
    return "<p>" + " ".join(parts) + "</p>"


def _preflight(run: RunDir) -> None:
    """Read every artifact the page uses before writing anything: a damaged one is a one-line error naming it."""
    for path, load in ((run.config, run.load_config), (run.vectors, run.load_vectors),
                       (run.components, run.load_components), (run.decompose_json, run.load_decomposition),
                       (run.neurons_json, run.load_neurons)):
        if path.exists():
            load()
    tables.run_markdown(run)  # every evals/*.json in the shape its table needs
    for path in sorted(run.evals.glob("*.json")):
        run.check_fresh(path)  # and computed from the components beside it


def _evaluation_sections(run: RunDir, figs: Path) -> list[str]:
    """Each evaluation's figures and tables under its report section, in registry order; the
    evaluations that did not run are named with the command that makes them."""
    body: list[str] = []
    results = tables.eval_results(run)
    sections = list(dict.fromkeys(ev.section for ev in registry.REGISTRY))
    for section in sections:
        in_section = [(ev, path) for ev, path in results if ev.section == section]
        missing = [ev.name for ev in registry.REGISTRY if ev.section == section and not ev.core
                   and not any(e is ev for e, _ in in_section)]
        if not in_section and not missing:
            continue
        body.append(f"<h2>{html.escape(section)}</h2>")
        for ev, path in in_section:
            res = run.peek(path)
            if res is None:
                body.append(f"<p class='missing'>{html.escape(run.relative(path))} is unreadable</p>")
                continue
            if ev.section == "Evaluations" or path.name != ev.outputs()[0]:
                body.append(f"<h3>{html.escape(path.stem)}</h3>")
            body += [_img(f, run.root, path.stem) for f in registry.figures(ev.name, res, figs, path.stem)]
            body.append(_md(tables.render(ev, path, res)))
        if missing:
            body.append("<p class='missing'>Not run: " + ", ".join(f"<code>{n}</code>" for n in missing)
                        + f" (<code>valuemech eval NAME --run {html.escape(str(run.root))}</code>)</p>")
    return body


def build_report(run_root: Path | RunDir, n_boot: int = 1000) -> Path:
    """Write ``report.html`` and ``figures/*.png`` into the run directory; return the page's path."""
    run = run_root if isinstance(run_root, RunDir) else RunDir(run_root)
    root = run.root
    _preflight(run)
    figs = run.figures
    cfg = run.load_config().to_dict() if run.config.exists() else None
    found = [f.to_dict() for f in findings(run, n_boot)]
    body = [f"<h1>valuemech report: {html.escape(str((cfg or {}).get('model', {}).get('name', root.name)))}</h1>",
            f"<p class='small'>run directory <code>{html.escape(str(root.resolve()))}</code>; written "
            f"{time.strftime('%Y-%m-%d %H:%M')}. Every number below is read from this directory's files.</p>",
            INTRO]
    missing = [(a, c.replace("RUN", str(root))) for a, c in expected_artifacts() if not (root / a).exists()]
    if missing:
        body.append("<div class='missing'><b>Missing stages (their sections are left out):</b><ul>" + "".join(
            f"<li><code>{html.escape(a)}</code> — make it with <code>{html.escape(c)}</code></li>" for a, c in missing)
            + "</ul></div>")
    body += ["<h2>Findings: the paper's headline claims on this model</h2>", findings_table(found),
             _img(figures.findings_chart(found, figs / "findings.png"), root, "findings"),
             "<p class='small'>Verdicts come from the 95% bootstrap interval of each effect: supported (above 0), "
             "not supported (below 0), inconclusive (spans 0 or too few pairs), missing (not run).</p>",
             "<h2>Pipeline summary</h2>", _summary(run, cfg), _validity(run, n_boot)]
    dec = run.peek(run.decompose_json)
    if dec:
        body += ["<h2>Intrinsic vs. prompted vectors (Figure 2)</h2>",
                 _img(figures.cosine_heatmap(dec, figs / "cosine_heatmap.png"), root, "cosine heatmap"), _decompose(dec)]
    nj = run.peek(run.neurons_json)
    if nj:
        body += ["<h2>Value neurons (Figure 3)</h2>", _img(figures.neuron_counts(nj, figs / "neurons.png"), root, "neurons"),
                 _md(tables.strongest_neurons_md(nj)),
                 "<details><summary>the paper's ranking: largest projection norm per class</summary>",
                 _md(tables.paper_ranking_md(nj)), "</details><details><summary>counts per block</summary>",
                 _md(tables.neurons_md(nj)), "</details>"]
    body += _evaluation_sections(run, figs)
    page = html_page("valuemech report", "\n".join(b for b in body if b))
    atomic_write_text(run.report_html, page)
    return run.report_html


def html_page(title: str, body: str) -> str:
    """A self-contained page: the report's CSS, the error hook first in <head>, the load probe last."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style>{PAGE_ERROR_HOOK_JS}</head><body>{body}{PAGE_PROBE_JS}</body></html>")


def build_compare(run_roots: list[Path], out: Path, n_boot: int = 1000) -> Path:
    """One page with the findings of several runs side by side (one column per run)."""
    from valuemech.errors import ValuemechError

    runs = [RunDir(r) for r in run_roots]
    for r in runs:
        if not r.config.exists():
            raise ValuemechError(f"{r.root} is not a run directory (no config.yaml)")
    names = [r.model_name() for r in runs]
    per_run = [[f.to_dict() for f in findings(r, n_boot)] for r in runs]
    head = "".join(f"<th>{html.escape(n)}<br><span class='small'>{html.escape(str(r.root))}</span></th>"
                   for n, r in zip(names, runs))
    rows = []
    for k, claim in enumerate(per_run[0]):
        cells = "".join(f"<td>{_fmt_effect(fs[k])}<br><span class='verdict-{fs[k]['verdict'].replace(' ', '-')}'>"
                        f"{fs[k]['verdict']}</span><br><span class='small'>{html.escape(fs[k]['detail'])}</span></td>"
                        for fs in per_run)
        rows.append(f"<tr><td><b>{claim['claim']}</b><br><span class='small'>{html.escape(claim['measure'])}</span>"
                    f"<br><span class='small'>paper: {html.escape(claim['paper'])}</span></td>{cells}</tr>")
    body = (f"<h1>valuemech: findings across {len(runs)} runs</h1><table><tr><th>claim</th>{head}</tr>"
            + "".join(rows) + "</table><p class='small'>Each cell: effect [95% bootstrap CI] (n), verdict. "
            "Per-run details: each run's report.html.</p>")
    out = Path(out)
    atomic_write_text(out, html_page("valuemech compare", body))
    return out
