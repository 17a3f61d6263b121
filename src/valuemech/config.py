"""Typed run configuration, presets (smoke, quick, paper) and YAML round-trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from valuemech.errors import ValuemechError
from valuemech.io import read_text


@dataclass
class ModelConfig:
    """Which model and how to load it."""

    name: str = "smollm2-135m"  # catalog name, "tiny-<family>", HF id or local directory
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (native bf16 where the hardware has it; valuemech.hardware)
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    device_map: str | None = None  # e.g. "auto" for models larger than one GPU
    threads: int | None = 1  # torch intra-op threads on CPU (None: torch's default)
    trust_remote_code: bool = False
    layers_path: str | None = None  # override: dotted path to the decoder block list
    mlp_down_path: str | None = None  # override: dotted path of down_proj inside a block


@dataclass
class DataConfig:
    """Where queries and system-prompt templates come from."""

    queries: str = "builtin"  # "builtin" or a path (JSONL/CSV/ShareGPT/Value Portrait JSON)
    text_field: str | None = None  # field holding the query text (auto-detected if None)
    n_queries: int | None = None  # subsample this many (seeded); None = all
    templates: str = "builtin"  # "builtin" or a JSON file {value: [template, ...]}


@dataclass
class GenerationConfig:
    """Response generation for both conditions."""

    intrinsic_samples: int = 3  # samples per query without a value instruction
    prompted_samples: int = 1  # samples per query (random mode) or per query x value (all mode)
    prompted_mode: str = "random"  # "random": value drawn per (query, sample); "all": every value
    values: list[str] | str | None = None  # restrict prompted values (None = all 10; or a comma list)
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 16
    backend: str = "local"  # "local": in-process model; "endpoint": an OpenAI-compatible server
    # endpoint settings: base_url, model, api_key_env (null: no key), timeout, retries, concurrency
    endpoint: dict[str, Any] = field(default_factory=dict)


@dataclass
class JudgeConfig:
    """The value-expression judge."""

    name: str = "lexicon"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExtractConfig:
    """Residual-stream extraction and difference in means."""

    batch_size: int = 16
    min_group: int = 5  # minimum responses on each side of a label for a vector


@dataclass
class NeuronConfig:
    """Value-neuron selection."""

    k_percent: float = 1.0  # keep the top k% of neurons per block by projection norm
    max_angle: float = 30.0  # degrees: assign to the nearest axis only below this angle
    rank_by: str = "norm"  # "norm": projection norm (the paper's ranking); "cosine": share of the weight in the plane
    top_tokens: int = 5  # top-activating response tokens listed per kept neuron
    top_responses: int = 120  # stored responses scanned for them


@dataclass
class EvaluateConfig:
    """The ``evaluate`` stage: which evaluations run, with which options (see ``valuemech.evals.common.EvalOptions``)."""

    evals: list[str] = field(default_factory=list)  # names from valuemech.evals.registry.EVALS
    options: dict[str, Any] = field(default_factory=dict)  # options for every evaluation
    per_eval: dict[str, dict[str, Any]] = field(default_factory=dict)  # {name: options} overriding them


@dataclass
class RunConfig:
    """The fully resolved configuration written to ``config.yaml``."""

    preset: str = "quick"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    neurons: NeuronConfig = field(default_factory=NeuronConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


PRESETS: dict[str, dict[str, Any]] = {
    # A tiny random model: checks the plumbing in seconds; its vectors mean nothing.
    "smoke": {
        "model": {"name": "tiny-llama", "dtype": "float32"},
        "data": {"n_queries": 12},
        "generation": {"intrinsic_samples": 2, "prompted_samples": 2, "max_new_tokens": 12,
                       "batch_size": 8},
        "judge": {"name": "random", "options": {"rate": 0.4}},
        "extract": {"batch_size": 8, "min_group": 2},
        "evaluate": {"evals": ["sweep", "pvq", "value_portrait", "dilemmas", "freeform", "diversity", "instruct",
                               "jailbreak", "circumplex"],
                     "options": {"limit": 2, "values": ["power", "benevolence"], "components": ["prompted", "shared"],
                                 "alphas": [0.1], "max_new_tokens": 8, "n_boot": 50},
                     "per_eval": {"sweep": {"n_items": 8}, "pvq": {"langs": ["en"]},
                                  "circumplex": {"n_permutations": 50}}},
    },
    # The embedded SmolLM2 on a laptop CPU: every value gets responses on both sides.
    # auto: bfloat16 where the CPU computes it natively (AVX512-BF16/AMX), else float32 (docs/benchmarks.md).
    "quick": {
        "model": {"name": "smollm2-135m", "dtype": "auto", "threads": 2},
        "data": {"n_queries": 60},
        "generation": {"intrinsic_samples": 3, "prompted_samples": 3, "max_new_tokens": 64,
                       "batch_size": 32},
        "judge": {"name": "lexicon"},
        "extract": {"batch_size": 16, "min_group": 5},
        # `--evals all` runs these (1 h 45 min on one shared core here; docs/results-smollm2.md).
        "evaluate": {"evals": [],
                     "options": {"components": ["intrinsic", "prompted", "intrinsic_orth", "prompted_orth"],
                                 "alpha": 0.2, "alphas": [0.1, 0.2], "max_new_tokens": 64},
                     "per_eval": {"value_portrait": {"limit": 8, "values": ["self_direction", "hedonism", "power",
                                                                            "security", "benevolence"],
                                                     "components": ["intrinsic", "prompted", "intrinsic_orth",
                                                                    "prompted_orth", "shared"]},
                                  "dilemmas": {"limit": 8},
                                  "freeform": {"limit": 2},
                                  "diversity": {"limit": 10, "samples": 2, "values": ["power", "security", "benevolence"]},
                                  "instruct": {"limit": 30},
                                  "jailbreak": {"limit": 30, "temperature": 0.0, "max_new_tokens": 40, "alphas": [0.2],
                                                "values": ["power", "benevolence"]}}},
    },
    # The paper's scale (GPU): every query, every value prompted.
    "paper": {
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct", "dtype": "bfloat16", "device": "cuda",
                  "threads": None},
        "data": {"n_queries": None},
        "generation": {"intrinsic_samples": 5, "prompted_samples": 1, "prompted_mode": "all",
                       "max_new_tokens": 256, "batch_size": 32},
        "judge": {"name": "lexicon"},
        "extract": {"batch_size": 16, "min_group": 20},
    },
}


def _split(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def matches_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` (parsed YAML/JSON) fits a field annotation such as ``int | None`` or ``list[str]``."""
    for alt in _split(annotation, "|"):
        base, _, args = alt.partition("[")
        args = args[:-1]
        if base == "Any" or (base == "None" and value is None) or (base == "bool" and isinstance(value, bool)) \
                or (base == "str" and isinstance(value, str)):
            return True
        if isinstance(value, bool):
            continue  # YAML true/false is not a number
        if (base == "int" and isinstance(value, int)) or (base == "float" and isinstance(value, (int, float))):
            return True
        if base == "list" and isinstance(value, list) and all(matches_type(v, args or "Any") for v in value):
            return True
        if base == "dict" and isinstance(value, dict):
            key_t, val_t = _split(args, ",") if args else ("Any", "Any")
            if all(matches_type(k, key_t) and matches_type(v, val_t) for k, v in value.items()):
                return True
    return False


def _merge(base: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass ``base`` with ``updates`` applied; unknown keys and wrong types are errors."""
    names = {f.name: f for f in dataclasses.fields(base)}
    kwargs = {}
    for key, value in updates.items():
        if key not in names:
            raise ValuemechError(f"unknown config key {where}{key!r}; known: {', '.join(map(str, names))}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValuemechError(f"config key {where}{key} must be a mapping")
            value = _merge(current, value, f"{where}{key}.")
        elif not matches_type(value, str(names[key].type)):
            raise ValuemechError(f"config key {where}{key} must be {names[key].type}, not {type(value).__name__} "
                                 f"{_short(value)}")
        kwargs[key] = value
    return dataclasses.replace(base, **kwargs)


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def make_config(preset: str = "quick", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a config from a preset plus nested overrides (``{"model": {"name": ...}}``)."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValuemechError(f"unknown preset {_short(preset)}; choose from {', '.join(PRESETS)}")
    cfg = _merge(RunConfig(preset=preset), PRESETS[preset], "")
    if overrides:
        cfg = _merge(cfg, overrides, "")
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject settings that cannot work, naming the key. (The ``evaluate`` section's names and options
    are checked by the evaluation layer, ``valuemech.evals.registry.check_config``, before a run starts.)"""
    from valuemech.values import parse_values

    if cfg.model.dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
        raise ValuemechError(f"model.dtype must be auto, float32, bfloat16 or float16, not {cfg.model.dtype!r}")
    g = cfg.generation
    if g.backend not in ("local", "endpoint"):
        raise ValuemechError(f"generation.backend must be 'local' or 'endpoint', not {g.backend!r}")
    if g.backend == "endpoint" and not g.endpoint.get("base_url"):
        raise ValuemechError("generation.endpoint.base_url is required when generation.backend is 'endpoint'")
    if g.prompted_mode not in ("random", "all"):
        raise ValuemechError(f"generation.prompted_mode must be 'random' or 'all', not {g.prompted_mode!r}")
    for key in ("intrinsic_samples", "prompted_samples", "max_new_tokens", "batch_size"):
        if not isinstance(getattr(g, key), int) or getattr(g, key) < (0 if "samples" in key else 1):
            raise ValuemechError(f"generation.{key} must be a positive integer, not {getattr(g, key)!r}")
    if g.values is not None:
        g.values = parse_values(g.values)
    if cfg.data.n_queries is not None and cfg.data.n_queries < 1:
        raise ValuemechError("data.n_queries must be at least 1")
    if not 0 < cfg.neurons.k_percent <= 100:
        raise ValuemechError("neurons.k_percent must be in (0, 100]")
    if cfg.neurons.rank_by not in ("norm", "cosine"):
        raise ValuemechError(f"neurons.rank_by must be 'norm' or 'cosine', not {cfg.neurons.rank_by!r}")
    if not 0 < cfg.neurons.max_angle <= 90:
        raise ValuemechError("neurons.max_angle must be in (0, 90] degrees")
    if cfg.extract.min_group < 1:
        raise ValuemechError("extract.min_group must be at least 1")


def load_config(path: Path) -> RunConfig:
    """Read a ``config.yaml`` (a run's, or a user's file based on a preset)."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"config file {path} does not exist")
    text = read_text(path)
    try:
        raw = yaml.safe_load(text)
    # ValueError: an integer beyond Python's digit limit; OverflowError: a "\U..." escape beyond a C int
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        raise ValuemechError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ValuemechError(f"{path}: config must be a YAML mapping")
    preset = raw.pop("preset", "quick")
    try:
        return make_config(preset, raw)
    except ValuemechError as exc:
        raise ValuemechError(f"{path}: {exc}") from None
