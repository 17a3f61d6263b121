"""The run directory: every path of it, and the one reader and writer of each artifact.

A run directory is the contract between the stages and with users (README, "The run directory").
Stages, evaluations, the report, the server and the CLI all go through :class:`RunDir`; nothing
else builds a path inside a run. Readers check the shape their callers rely on and fail with a
one-line error naming the file and the stage to rerun.

Every derived artifact records the fingerprints of the artifacts it was computed from
(:data:`LINEAGE`: ``inputs`` in its safetensors metadata or at the top of its JSON), and its
reader refuses it when they no longer match the files beside it (:meth:`RunDir.check_fresh`): a
stage never computes on an artifact that its upstream has since changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from valuemech.config import RunConfig, load_config
from valuemech.errors import ValuemechError
from valuemech.io import atomic_write_json, atomic_write_text, load_json, make_dir, read_text, sweep_orphan_temps

#: Config sections whose change invalidates a run directory's artifacts.
FROZEN = ("seed", "model", "data", "generation", "judge", "extract")
#: Keys of frozen sections that only say how to run (not what is computed): a resume may change them.
RUNTIME_KEYS = ("model.threads", "model.device", "model.device_map")
#: Derived artifacts (paths in a run; ``evals/`` for every evaluation result): the stage that writes
#: each and the artifacts it is computed from, whose fingerprints it records as ``inputs``.
LINEAGE: dict[str, tuple[str, tuple[str, ...]]] = {
    "vectors.safetensors": ("extract", ("responses.jsonl", "labels.jsonl")),
    "components.safetensors": ("decompose", ("vectors.safetensors",)),
    "decompose.json": ("decompose", ("vectors.safetensors",)),
    "neurons.json": ("neurons", ("components.safetensors", "responses.jsonl")),
    "evals/": ("evaluate", ("components.safetensors",)),
}
_FINGERPRINTS: dict[str, str] = {}  # sha256 of a safetensors file's bytes -> its content fingerprint


def fingerprint(path: Path) -> str:
    """What a derived artifact records of an input: sha256 (16 hex digits) of its bytes; of a
    safetensors file, of its parsed header (minus the writer's version) and data, after checking it
    with its reader (safetensors writes metadata keys in a per-process order, so equal content can
    have other bytes)."""
    from valuemech.io import read_bytes

    path = Path(path)
    data = read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix != ".safetensors":
        return digest[:16]
    if digest not in _FINGERPRINTS:
        _check_safetensors(path)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + n])
        meta = {k: v for k, v in header.pop("__metadata__", {}).items() if k != "library"}
        canon = json.dumps([header, meta], sort_keys=True).encode() + data[8 + n:]
        _FINGERPRINTS[digest] = hashlib.sha256(canon).hexdigest()[:16]
    return _FINGERPRINTS[digest]


def _check_safetensors(path: Path) -> None:
    """A one-line error naming ``path`` unless its reader accepts it."""
    if path.name == "vectors.safetensors":
        from valuemech.vectors import ValueVectors

        ValueVectors.load(path)
    else:
        from valuemech.decompose import Components

        Components.load(path)


def lineage(rel: str) -> tuple[str, tuple[str, ...]]:
    """``(stage, inputs)`` of the derived artifact at ``rel`` (relative to the run directory)."""
    return LINEAGE["evals/" if rel.startswith("evals/") else rel]


@dataclass
class RunDir:
    """Paths, readers and writers of one run directory (see the README's table)."""

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
    report_html = property(lambda self: self.root / "report.html")
    figures = property(lambda self: self.root / "figures")
    evals = property(lambda self: self.root / "evals")

    monitor_dir = property(lambda self: self.root / "monitor")

    def monitor_file(self, file: str) -> Path:
        """``monitor/<file>`` (a bare file name): the default outputs of ``valuemech monitor``."""
        if not file or "/" in file or "\\" in file or file.startswith("."):
            raise ValuemechError(f"not a file name under {self.monitor_dir}: {file!r}")
        return self.monitor_dir / file

    def monitor_stats(self, layer: int) -> Path:
        """``monitor/stats-block<l>.json``: the run's response statistics of the monitor's projections at block l."""
        return self.monitor_dir / f"stats-block{int(layer)}.json"

    def eval_path(self, file: str) -> Path:
        """``evals/<file>`` (``file`` a bare name such as ``pvq.json``; ``.json`` added when missing)."""
        if not file or "/" in file or "\\" in file or file.startswith("."):
            raise ValuemechError(f"not a file name under {self.evals}: {file!r}")
        return self.evals / (file if file.endswith(".json") else f"{file}.json")

    def artifacts(self) -> list[Path]:
        """The non-empty files a stage computed (every file but ``config.yaml``, ``stages.json`` and temp files)."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.rglob("*")) if p.is_file() and p.stat().st_size > 0
                and p not in (self.config, self.stages_json) and not p.name.endswith(".tmp")]

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as the report and error messages name it."""
        return Path(path).relative_to(self.root).as_posix()

    # readers ------------------------------------------------------------------------------
    def load_config(self) -> RunConfig:
        return load_config(self.config)

    def load_responses(self) -> list[dict]:
        from valuemech.generate import load_responses

        return load_responses(self.responses)

    def read_labels(self) -> list[dict]:
        """``labels.jsonl`` rows as written (checked)."""
        from valuemech.labels import read_labels

        return read_labels(self.labels)

    def load_labels(self) -> dict[str, dict[str, bool]]:
        return self.load_labels_and_judge()[0]

    def load_labels_and_judge(self) -> tuple[dict[str, dict[str, bool]], str | None]:
        from valuemech.labels import load_labels

        return load_labels(self.labels)

    def load_vectors(self):
        """``vectors.safetensors``, checked, and refused when computed from other responses or labels."""
        from valuemech.vectors import ValueVectors

        vv = ValueVectors.load(self.vectors)
        self.check_fresh(self.vectors)
        return vv

    def load_components(self):
        """``components.safetensors``, checked, and refused when computed from other vectors."""
        from valuemech.decompose import Components

        comps = Components.load(self.components)
        self.check_fresh(self.components)
        return comps

    def load_decomposition(self) -> dict:
        from valuemech.decompose import load_summary

        summary = load_summary(self.decompose_json)
        self.check_fresh(self.decompose_json)
        return summary

    def load_neurons(self) -> dict:
        from valuemech.neurons import load_neurons

        neurons = load_neurons(self.neurons_json)
        self.check_fresh(self.neurons_json)
        return neurons

    def load_eval(self, file: str) -> dict:
        """A result file under ``evals/`` (one-line error when unreadable or computed from other components)."""
        path = self.eval_path(file)
        result = load_json(path)
        self.check_fresh(path)
        return result

    def peek(self, path: Path) -> Any | None:
        """A JSON file's content, or None when it is missing or unreadable (for optional page parts)."""
        try:
            return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).exists() else None
        except (OSError, ValueError):
            return None

    def load_sweep(self) -> dict | None:
        """``evals/sweep.json`` checked for the shape its readers rely on, or None without one."""
        path = self.eval_path("sweep.json")
        if not path.exists():
            return None
        data = load_json(path)
        if not _is_sweep(data):
            raise ValuemechError(f"{path}: not a sweep result (rerun `valuemech sweep`)")
        return data

    def sweep_choice(self) -> dict:
        """``chosen`` of ``evals/sweep.json`` ({component: {layer, alpha, ...}}), or {} without a sweep."""
        sweep = self.load_sweep()
        return (sweep or {}).get("chosen") or {}

    def load_stages(self) -> dict:
        """``stages.json`` (wall times only: an unreadable one reads as empty)."""
        data = self.peek(self.stages_json)
        return data if isinstance(data, dict) else {}

    def model_name(self) -> str:
        return str(self.load_config().model.name)

    # lineage ------------------------------------------------------------------------------
    def inputs_of(self, artifact: str) -> dict[str, str]:
        """The fingerprints of ``artifact``'s inputs now (what a stage records as it writes it)."""
        return {name: fingerprint(self.root / name) for name in lineage(artifact)[1]}

    def recorded_inputs(self, path: Path) -> dict[str, str] | None:
        """The ``inputs`` a derived artifact recorded (None: written before valuemech recorded them)."""
        path = Path(path)
        stage = lineage(self.relative(path))[0]
        if path.suffix == ".safetensors":
            from valuemech.io import read_bytes

            data = read_bytes(path)
            try:
                meta = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
                raw = meta.get("inputs")
                rec = None if raw is None else json.loads(raw)
            except (ValueError, AttributeError):
                raise ValuemechError(f"{path}: not a readable safetensors file; rerun the {stage} stage") from None
        else:
            data = load_json(path)
            rec = data.get("inputs") if isinstance(data, dict) else None
        if rec is not None and not (isinstance(rec, dict) and all(isinstance(v, str) for v in rec.values())):
            raise ValuemechError(f"{path}: its record of inputs is damaged; rerun the {stage} stage")
        return rec

    def stale(self, path: Path, by_time: bool = True) -> str | None:
        """Why the derived artifact at ``path`` no longer matches its inputs, or None (also when it is
        missing). Without a record of its inputs: by modification time when ``by_time``, else None."""
        path = Path(path)
        if not path.exists():
            return None
        recorded = self.recorded_inputs(path)
        for name in lineage(self.relative(path))[1]:
            source = self.root / name
            if recorded is None:
                if by_time and source.exists() and source.stat().st_mtime_ns > path.stat().st_mtime_ns:
                    return f"{path} is older than {source}"
            elif not source.exists():
                return f"{path} was computed from {source}, which is missing"
            elif recorded.get(name) != fingerprint(source):
                {"responses.jsonl": self.load_responses, "labels.jsonl": self.read_labels}.get(name, dict)()
                return f"{path} was computed from another {source} (it changed since)"  # (a damaged one said so)
        return None

    def check_fresh(self, path: Path) -> None:
        """A one-line error naming the stage to rerun when ``path`` was computed from inputs that changed since."""
        why = self.stale(path, by_time=False)
        if why:
            stage = lineage(self.relative(path))[0]
            how = f"valuemech eval {path.stem} --run {self.root}" if stage == "evaluate" else \
                f"valuemech {stage} --run {self.root} --force"
            raise ValuemechError(f"{why}; rerun the {stage} stage ({how})")

    # writers ------------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config, cfg.to_yaml())

    def write_eval(self, file: str, result: dict) -> Path:
        path = self.eval_path(file)
        atomic_write_json(path, result)
        return path

    def record_stage(self, stage: str, seconds: float, **info: Any) -> None:
        data = self.load_stages()
        data[stage] = {"seconds": round(seconds, 2), **info}
        atomic_write_text(self.stages_json, json.dumps(data, indent=2) + "\n")

    def newer(self, a: Path, b: Path) -> bool:
        """Whether ``a`` exists and was written no earlier than ``b``."""
        return a.exists() and b.exists() and a.stat().st_mtime_ns >= b.stat().st_mtime_ns


def _is_sweep(data: object) -> bool:
    """The shape sweep readers rely on: ``chosen`` {component: null | point with layer} and ``curves``
    {component: {block: [point]}}, a point holding numbers alpha, accuracy_drop and kl."""
    def point(p: object) -> bool:
        return isinstance(p, dict) and all(isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
                                           for k in ("alpha", "accuracy_drop", "kl"))

    if not isinstance(data, dict) or "chosen" not in data or not isinstance(data["chosen"] or {}, dict) \
            or not isinstance(data.get("curves", {}), dict):
        return False
    chosen_ok = all(c is None or (point(c) and type(c.get("layer")) is int) for c in (data["chosen"] or {}).values())
    curves_ok = all(isinstance(by, dict) and all(isinstance(pts, list) and all(map(point, pts)) for pts in by.values())
                    for by in data.get("curves", {}).values())
    return chosen_ok and curves_ok


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def open_run(root: Path | str, cfg: RunConfig | None = None,
             check: Callable[[RunConfig], None] | None = None) -> tuple[RunDir, RunConfig]:
    """Open (or create) a run directory; with ``cfg``, check it agrees with a stored config.

    ``check`` validates a configuration before it is written (a new run, a run directory that holds
    no artifact yet, whose configuration ``cfg`` replaces, or a changed ``evaluate`` section):
    nothing is written when it raises.
    """
    run = RunDir(Path(root))
    if run.config.exists():
        for d in (run.root, run.evals, run.monitor_dir):  # temp files of writers killed mid-write
            if d.is_dir():
                sweep_orphan_temps(d)
        if cfg is not None and not run.artifacts() and read_text(run.config) != cfg.to_yaml():
            if check is not None:  # nothing computed yet: a corrected configuration replaces the stored one
                check(cfg)
            run.write_config(cfg)
            return run, cfg
        stored = load_config(run.config)
        if cfg is None:
            return run, stored
        old, new = stored.to_dict(), cfg.to_dict()
        if old["model"]["name"] != new["model"]["name"]:
            raise ValuemechError(
                f"run directory {run.root} was made with model {old['model']['name']!r}, not "
                f"{new['model']['name']!r}; use another --out")
        changed = [k for k in _diff(old, new) if k.split(".")[0] in FROZEN and k not in RUNTIME_KEYS]
        if changed:
            raise ValuemechError(f"run directory {run.root} has a different configuration "
                                 f"({', '.join(changed)}); use another --out")
        if old.get("evaluate") != new.get("evaluate"):  # evaluations can be added to a finished run
            if check is not None:
                check(cfg)
            stored.evaluate = cfg.evaluate
            run.write_config(stored)
        return run, stored
    if cfg is None:
        raise ValuemechError(f"{run.root} is not a run directory (no config.yaml)")
    if check is not None:
        check(cfg)
    make_dir(run.root)
    run.write_config(cfg)
    return run, cfg
