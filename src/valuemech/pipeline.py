"""Pipeline stages over a run directory: generate -> label -> extract -> decompose -> neurons -> evaluate -> report.

Each stage reads the previous stage's artifacts, skips work already done, and can run alone.
The run directory's ``config.yaml`` fixes the configuration; resuming with another model
(or other generation settings) is an error, never a silent mix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from valuemech.config import RunConfig, load_config
from valuemech.data import load_templates, select_queries
from valuemech.errors import ValuemechError
from valuemech.generate import generate_responses, load_responses, plan_jobs
from valuemech.io import atomic_write_text, sweep_orphan_temps
from valuemech.judges import get_judge
from valuemech.labels import label_records, load_labels, read_labels
from valuemech.models.loading import LoadedModel, load_model
from valuemech.values import VALUES
from valuemech.vectors import ValueVectors, extract_vectors

STAGES = ("generate", "label", "extract", "decompose", "neurons", "evaluate", "report")
#: Config sections whose change invalidates a run directory's artifacts.
_FROZEN = ("seed", "model", "data", "generation", "judge", "extract")


@dataclass
class RunDir:
    """Paths of a run directory (DESIGN §2)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config = property(lambda self: self.root / "config.yaml")
    responses = property(lambda self: self.root / "responses.jsonl")
    labels = property(lambda self: self.root / "labels.jsonl")
    vectors = property(lambda self: self.root / "vectors.safetensors")
    components = property(lambda self: self.root / "components.safetensors")
    decompose_json = property(lambda self: self.root / "decompose.json")
    stages_json = property(lambda self: self.root / "stages.json")
    neurons_json = property(lambda self: self.root / "neurons.json")

    def load_config(self) -> RunConfig:
        return load_config(self.config)

    def load_responses(self) -> list[dict]:
        return load_responses(self.responses)

    def load_labels(self) -> dict[str, dict[str, bool]]:
        return load_labels(self.labels)[0]

    def load_vectors(self) -> ValueVectors:
        return ValueVectors.load(self.vectors)

    def load_components(self):
        from valuemech.decompose import Components

        return Components.load(self.components)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def preflight(cfg: RunConfig) -> None:
    """Check what can be checked before anything is written: model name, queries, templates."""
    from valuemech.models.catalog import check_model_name

    check_model_name(cfg.model.name)
    select_queries(cfg.data.queries, cfg.data.n_queries, cfg.seed, cfg.data.text_field)
    load_templates(cfg.data.templates, cfg.generation.values)


def open_run(root: Path, cfg: RunConfig | None = None) -> tuple[RunDir, RunConfig]:
    """Open (or create) a run directory; with ``cfg``, check it agrees with a stored config."""
    run = RunDir(root)
    if run.config.exists():
        for d in (run.root, run.root / "evals"):  # temp files of writers killed mid-write
            if d.is_dir():
                sweep_orphan_temps(d)
        stored = load_config(run.config)
        if cfg is None:
            return run, stored
        old, new = stored.to_dict(), cfg.to_dict()
        if old["model"]["name"] != new["model"]["name"]:
            raise ValuemechError(
                f"run directory {run.root} was made with model {old['model']['name']!r}, not "
                f"{new['model']['name']!r}; use another --out")
        changed = [k for k in _diff(old, new) if k.split(".")[0] in _FROZEN
                   and k not in ("model.threads", "model.device", "model.device_map")]
        if changed:
            raise ValuemechError(f"run directory {run.root} has a different configuration "
                                 f"({', '.join(changed)}); use another --out")
        if old.get("evaluate") != new.get("evaluate"):  # evaluations can be added to a finished run
            stored.evaluate = cfg.evaluate
            atomic_write_text(run.config, stored.to_yaml())
        return run, stored
    if cfg is None:
        raise ValuemechError(f"{run.root} is not a run directory (no config.yaml)")
    preflight(cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    return run, cfg


def _record_stage(run: RunDir, stage: str, seconds: float, **info) -> None:
    try:  # wall times only: an unreadable stages.json is started afresh
        data = json.loads(run.stages_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data[stage] = {"seconds": round(seconds, 2), **info}
    atomic_write_text(run.stages_json, json.dumps(data, indent=2) + "\n")


def _check_model_identity(run: RunDir, lm: LoadedModel, records: list[dict] | None = None) -> None:
    """Refuse responses generated by another model (``records``: the already-read responses)."""
    for rec in (run.load_responses() if records is None else records)[:1]:
        if rec.get("model_sha256") not in (None, lm.weights_sha256):
            raise ValuemechError(f"{run.responses} was generated by another model "
                                 f"(weights {rec['model_sha256'][:12]}, loaded {lm.weights_sha256[:12]})")


def stage_generate(run: RunDir, cfg: RunConfig, lm: LoadedModel, progress: bool = True) -> int:
    queries = select_queries(cfg.data.queries, cfg.data.n_queries, cfg.seed, cfg.data.text_field)
    templates = load_templates(cfg.data.templates, cfg.generation.values)
    jobs = plan_jobs(queries, templates, cfg.generation, cfg.seed)
    _check_model_identity(run, lm)
    return generate_responses(lm, jobs, cfg.generation, cfg.seed, run.responses, progress,
                              extra={"model_sha256": lm.weights_sha256})


def stage_label(run: RunDir, cfg: RunConfig, progress: bool = True,
                model: Callable[[], LoadedModel] | None = None) -> int:
    records = run.load_responses()
    if not records:
        raise ValuemechError(f"{run.responses} is missing or empty (run the generate stage)")
    lm = model() if cfg.judge.name == "self" and model is not None else None
    judge = get_judge(cfg.judge.name, cfg.judge.options, lm=lm)
    return label_records(judge, records, run.labels, progress=progress)


def stage_extract(run: RunDir, cfg: RunConfig, lm: LoadedModel, progress: bool = True) -> ValueVectors:
    records = run.load_responses()
    if not records:
        raise ValuemechError(f"{run.responses} is missing or empty (run the generate stage)")
    _check_model_identity(run, lm, records)
    labels, judge = load_labels(run.labels)
    vv = extract_vectors(lm, records, labels, judge or cfg.judge.name, cfg.extract.batch_size,
                         cfg.extract.min_group, progress)
    vv.save(run.vectors)
    return vv


def stage_decompose(run: RunDir) -> dict:
    from valuemech.decompose import write_decomposition

    return write_decomposition(ValueVectors.load(run.vectors), run.components, run.decompose_json)


def stage_neurons(run: RunDir, cfg: RunConfig, lm: LoadedModel, progress: bool = True) -> dict:
    from valuemech.io import atomic_write_json
    from valuemech.neurons import neurons_report

    comps = run.load_components()
    from valuemech.vectors import check_artifact_model
    check_artifact_model(comps.metadata, lm, "components.safetensors")
    n = cfg.neurons
    report = neurons_report(lm, comps, run.load_responses(), n.k_percent, n.max_angle,
                            n.top_tokens, n.top_responses, progress, n.rank_by)
    atomic_write_json(run.neurons_json, report)
    return report


def stage_evaluate(run: RunDir, cfg: RunConfig, lm: LoadedModel, progress: bool = True,
                   log: Callable[[str], None] = print) -> list[str]:
    """Run the configured evaluations not yet done (``evals/<name>.json`` older than the components)."""
    from valuemech.evals.registry import make_options, run_eval
    from valuemech.steering import SteeringSource

    source = SteeringSource.from_run(run.root, lm)
    done = []
    for name in cfg.evaluate.evals:
        if _eval_done(run, name):
            continue
        opts = make_options({**cfg.evaluate.options, **cfg.evaluate.per_eval.get(name, {})})
        opts.progress = progress
        log(f"[evaluate] {name} ...")
        run_eval(name, lm, source, opts, run.root)
        done.append(name)
    return done


def _eval_done(run: RunDir, name: str) -> bool:
    from valuemech.evals.registry import eval_path

    path = eval_path(run.root, name)
    return path.exists() and run.components.exists() and _newer(path, run.components)


def _complete(run: RunDir, stage: str, cfg: RunConfig) -> bool:
    """Whether a stage's artifacts are already complete (so it is skipped)."""
    if stage == "generate":
        queries = select_queries(cfg.data.queries, cfg.data.n_queries, cfg.seed, cfg.data.text_field)
        templates = load_templates(cfg.data.templates, cfg.generation.values)
        want = {j.id for j in plan_jobs(queries, templates, cfg.generation, cfg.seed)}
        return want <= {r["id"] for r in run.load_responses()}
    if stage == "label":
        have = {r["response_id"] for r in read_labels(run.labels)}
        return bool(have) and {r["id"] for r in run.load_responses()} <= have
    if stage == "extract":
        return run.vectors.exists() and _newer(run.vectors, run.labels)
    if stage == "decompose":
        return run.components.exists() and _newer(run.components, run.vectors)
    if stage == "neurons":
        return run.neurons_json.exists() and _newer(run.neurons_json, run.components)
    if stage == "evaluate":
        return all(_eval_done(run, name) for name in cfg.evaluate.evals)
    if stage == "report":
        page = run.root / "report.html"
        return page.exists() and all(_newer(page, f) for f in [*run.root.glob("*.*"), *run.root.glob("evals/*.json")]
                                     if f.name not in ("report.html", "stages.json"))
    raise ValuemechError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def _newer(a: Path, b: Path) -> bool:
    return a.stat().st_mtime_ns >= b.stat().st_mtime_ns


@dataclass
class Pipeline:
    """Runs stages in order on one run directory, loading the model only if a stage needs it."""

    run: RunDir
    cfg: RunConfig
    lm: LoadedModel | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def model(self) -> LoadedModel:
        if self.lm is None:
            self.log(f"loading model {self.cfg.model.name} ...")
            self.lm = load_model(self.cfg.model)
        return self.lm

    def run_stage(self, stage: str, force: bool = False) -> None:
        if stage not in STAGES:
            raise ValuemechError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if not force and _complete(self.run, stage, self.cfg):
            self.log(f"[{stage}] already complete, skipped")
            return
        t0 = time.perf_counter()
        if stage == "generate":
            n = stage_generate(self.run, self.cfg, self.model(), self.progress)
            info = {"written": n}
        elif stage == "label":
            info = {"written": stage_label(self.run, self.cfg, self.progress, self.model)}
        elif stage == "extract":
            vv = stage_extract(self.run, self.cfg, self.model(), self.progress)
            info = {"vectors": len(vv.vectors), "skipped": json.loads(vv.metadata["skipped"])}
            for key, c in info["skipped"].items():
                self.log(f"[extract] no vector for {key}: {c['expressed']} expressing vs "
                         f"{c['not']} not (min_group={self.cfg.extract.min_group})")
        elif stage == "decompose":
            stage_decompose(self.run)
            info = {}
        elif stage == "evaluate":
            info = {"evals": stage_evaluate(self.run, self.cfg, self.model(), self.progress, self.log)}
        elif stage == "report":
            from valuemech.report.page import build_report

            info = {"page": str(build_report(self.run.root))}
        else:
            report = stage_neurons(self.run, self.cfg, self.model(), self.progress)
            info = {"classified": {c: sum(report["counts_per_layer"][c]) for c in report["counts_per_layer"]}}
        dt = time.perf_counter() - t0
        self.timings[stage] = dt
        _record_stage(self.run, stage, dt, **info)
        self.log(f"[{stage}] done in {dt:.1f} s")

    def run_all(self, stages: tuple[str, ...] = STAGES, force: bool = False) -> None:
        for stage in stages:
            self.run_stage(stage, force)


def summary_rows(run: RunDir, layer: int | None = None) -> tuple[list[dict], int | None]:
    """Per value: label counts per condition and cos(v_int, v_prompt) at ``layer`` (default: middle)."""
    counts: dict = {}
    cos: dict = {}
    n_layers = None
    if run.vectors.exists():
        vv = ValueVectors.load(run.vectors)
        counts = vv.counts
        n_layers = int(vv.metadata["n_layers"])
    if run.decompose_json.exists():
        from valuemech.decompose import load_summary

        summary = load_summary(run.decompose_json)
        cos = {v: d["cosine"] for v, d in summary["per_value"].items()}
    if layer is None and n_layers:
        layer = n_layers // 2
    rows = []
    for v in VALUES:
        row = {"value": v}
        for c in ("intrinsic", "prompted"):
            cc = counts.get(c, {}).get(v)
            row[c] = f"{cc['expressed']}/{cc['not']}" if cc else "-"
        row["cosine"] = cos[v][layer] if v in cos and layer is not None and layer < len(cos[v]) else None
        rows.append(row)
    return rows, layer


def run_pipeline(cfg: RunConfig, out: Path | str, lm: LoadedModel | None = None,
                 stages: tuple[str, ...] = STAGES, progress: bool = True) -> RunDir:
    """Python API: run ``stages`` for ``cfg`` in ``out`` (resuming what is there); return the RunDir.

    Pass an already loaded ``lm`` to reuse it (its name should match ``cfg.model.name``).
    """
    run, cfg = open_run(Path(out), cfg)
    Pipeline(run, cfg, lm=lm, progress=progress).run_all(stages)
    return run
