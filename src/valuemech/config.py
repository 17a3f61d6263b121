"""Typed run configuration, presets (smoke, quick, paper) and YAML round-trip."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from valuemech.errors import ValuemechError
from valuemech.io import read_text


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: optional bounds (open or closed); NaN and infinities never."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        lo, hi = (f"{x:g}" if isinstance(x, float) else x for x in (self.lo, self.hi))
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'greater than' if self.lo_open else 'at least'} {lo}"
        if self.hi is not None:
            return f"{'less than' if self.hi_open else 'at most'} {hi}"
        return "a finite number"

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return self.hi is None or not (value > self.hi or (self.hi_open and value == self.hi))

    def check(self, where: str, value: Any) -> None:
        """Raise a one-line error naming ``where`` unless ``value`` (a number; other types pass) is in range."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.holds(value):
            shown = value if isinstance(value, float) or abs(value) < 10 ** 30 else f"{str(value)[:12]}..."
            raise ValuemechError(f"{where} must be {self}, not {shown}")


@dataclass(frozen=True)
class OneOf:
    """The strings a setting accepts."""

    choices: tuple[str, ...]

    def check(self, where: str, value: Any) -> None:
        if isinstance(value, str) and value not in self.choices:
            raise ValuemechError(f"{where} must be one of {', '.join(self.choices)}, not {short(value)}")


@dataclass(frozen=True)
class Matches:
    """Strings of a form (``what`` names it in the error)."""

    pattern: str
    what: str

    def check(self, where: str, value: Any) -> None:
        if isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise ValuemechError(f"{where} must be {self.what}, not {short(value)}")


#: A rule of what a setting accepts beyond its type (a field's ``metadata["allowed"]``, a judge's ``OPTIONS``).
Allowed = Range | OneOf | Matches

FINITE = Range()
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
POSITIVE = Range(0, lo_open=True)
PROBABILITY_MASS = Range(0, 1, lo_open=True)  # top_p: (0, 1]
SEED = Range(0, 2 ** 63 - 1)  # what torch, numpy and random all accept
N_BOOT = Range(1, 10 ** 6)  # bootstrap resamples (and permutations): each holds an array of the data's size
DTYPES = OneOf(("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto"))
DEVICE = Matches(r"cpu|mps|cuda(:\d+)?|xpu(:\d+)?", "cpu, cuda, cuda:N, mps or xpu")
HTTP_URL = Matches(r"https?://[^/\s]+\S*", "an http:// or https:// URL")


def bounded(default: Any, rule: Allowed) -> Any:
    """A dataclass field whose values must satisfy ``rule`` (checked by :func:`check_fields`)."""
    return field(default=default, metadata={"allowed": rule})


def one_of(default: str, *choices: str) -> Any:
    """A dataclass field that takes one of ``choices`` (checked by :func:`check_fields`)."""
    return bounded(default, OneOf(choices))


def check_value(rule: Allowed | None, where: str, value: Any) -> None:
    """``value`` against ``rule``: a number, string, list (each item) or mapping (each value)."""
    if rule is None:
        return
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
        rule.check(where, item)


def default_rule(annotation: str) -> Allowed | None:
    """The rule of a setting without one: floats are finite."""
    return FINITE if "float" in annotation else None


def check_fields(obj: Any, label: Callable[[dataclasses.Field], str]) -> None:
    """Every field of dataclass ``obj`` against its ``metadata["allowed"]`` rule (floats: finite);
    the error names ``label(field)``."""
    for f in dataclasses.fields(obj):
        check_value(f.metadata.get("allowed") or default_rule(str(f.type)), label(f), getattr(obj, f.name))


@dataclass
class ModelConfig:
    """Which model and how to load it."""

    name: str = "smollm2-135m"  # catalog name, "tiny-<family>", HF id or local directory
    dtype: str = bounded("auto", DTYPES)  # auto (native bf16 where the hardware has it; valuemech.hardware) | float32 | bfloat16 | float16
    device: str = bounded("cpu", DEVICE)  # cpu | cuda | cuda:N | mps
    device_map: str | None = None  # e.g. "auto" for models larger than one GPU
    threads: int | None = bounded(1, AT_LEAST_1)  # torch intra-op threads on CPU (None: torch's default)
    trust_remote_code: bool = False
    layers_path: str | None = None  # override: dotted path to the decoder block list
    mlp_down_path: str | None = None  # override: dotted path of down_proj inside a block


@dataclass
class DataConfig:
    """Where queries and system-prompt templates come from."""

    queries: str = "builtin"  # "builtin" or a path (JSONL/CSV/ShareGPT/Value Portrait JSON)
    text_field: str | None = None  # field holding the query text (auto-detected if None)
    n_queries: int | None = bounded(None, AT_LEAST_1)  # subsample this many (seeded); None = all
    templates: str = "builtin"  # "builtin" or a JSON file {value: [template, ...]}


@dataclass
class GenerationConfig:
    """Response generation for both conditions."""

    intrinsic_samples: int = bounded(3, AT_LEAST_0)  # samples per query without a value instruction
    prompted_samples: int = bounded(1, AT_LEAST_0)  # samples per query (random mode) or per query x value (all mode)
    prompted_mode: str = one_of("random", "random", "all")  # "random": value drawn per (query, sample); "all": every value
    values: list[str] | str | None = None  # restrict prompted values (None = all 10; or a comma list)
    max_new_tokens: int = bounded(96, AT_LEAST_1)
    temperature: float = bounded(0.7, AT_LEAST_0)  # 0: greedy
    top_p: float = bounded(0.9, PROBABILITY_MASS)
    batch_size: int = bounded(16, AT_LEAST_1)
    backend: str = one_of("local", "local", "endpoint")  # "local": in-process model; "endpoint": an OpenAI-compatible server
    # endpoint settings (EndpointConfig): base_url, model, api_key_env (null: no key), timeout, retries, concurrency
    endpoint: dict[str, Any] = field(default_factory=dict)


@dataclass
class EndpointConfig:
    """``generation.endpoint``: the OpenAI-compatible server that generates when ``backend`` is ``endpoint``."""

    base_url: str = bounded("", HTTP_URL)  # http(s)://host[:port]/v1
    model: str = "default"  # the model name sent in each request
    api_key_env: str | None = None  # environment variable holding the API key (null: no key)
    timeout: float = bounded(120.0, POSITIVE)  # seconds per request
    retries: int = bounded(3, Range(0, 100))
    backoff: float = bounded(0.5, Range(0, 60))  # seconds before the first retry (doubling)
    concurrency: int = bounded(8, Range(1, 1024))  # requests in flight


def endpoint_settings(raw: dict[str, Any]) -> EndpointConfig:
    """``generation.endpoint`` checked: known keys, types, ranges, an http(s) base_url."""
    e = _merge(EndpointConfig(), raw, "generation.endpoint.")
    check_fields(e, lambda f: f"generation.endpoint.{f.name}")
    return e


@dataclass
class JudgeConfig:
    """The value-expression judge."""

    name: str = "lexicon"  # checked with its options by valuemech.judges.check_judge before a run starts
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExtractConfig:
    """Residual-stream extraction and difference in means."""

    batch_size: int = bounded(16, AT_LEAST_1)
    min_group: int = bounded(5, AT_LEAST_1)  # minimum responses on each side of a label for a vector


@dataclass
class NeuronConfig:
    """Value-neuron selection."""

    k_percent: float = bounded(1.0, Range(0, 100, lo_open=True))  # keep the top k% of neurons per block by projection norm
    max_angle: float = bounded(30.0, Range(0, 90, lo_open=True))  # degrees: assign to the nearest axis only below this angle
    rank_by: str = one_of("norm", "norm", "cosine")  # "norm": projection norm (the paper's ranking); "cosine": share of the weight in the plane
    top_tokens: int = bounded(5, AT_LEAST_0)  # top-activating response tokens listed per kept neuron
    top_responses: int = bounded(120, AT_LEAST_0)  # stored responses scanned for them


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
    seed: int = bounded(0, SEED)
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
        # What the report's findings panel needs, at sizes measured to keep `make demo` near ten minutes here
        # (docs/benchmarks.md, "make demo"): the guard sweep, English PVQ on intrinsic and prompted vectors with the
        # random control (steerability), diversity (intrinsic vs. prompted), jailbreak (mean-delta vs. the random
        # control), the circumplex. `--evals all` runs all nine (1 h 45 min on one shared core; docs/results-smollm2.md).
        "evaluate": {"evals": ["sweep", "pvq", "diversity", "jailbreak", "circumplex"],
                     "options": {"components": ["intrinsic", "prompted", "intrinsic_orth", "prompted_orth"],
                                 "alpha": 0.2, "alphas": [0.1, 0.2], "max_new_tokens": 64},
                     "per_eval": {"sweep": {"n_items": 16, "components": ["intrinsic", "prompted"],
                                            "alphas": [0.1, 0.2]},
                                  "pvq": {"langs": ["en"], "components": ["intrinsic", "prompted"], "beta": 0.0},
                                  "value_portrait": {"limit": 8, "values": ["self_direction", "hedonism", "power",
                                                                            "security", "benevolence"],
                                                     "components": ["intrinsic", "prompted", "intrinsic_orth",
                                                                    "prompted_orth", "shared"]},
                                  "dilemmas": {"limit": 8},
                                  "freeform": {"limit": 2},
                                  "diversity": {"limit": 4, "samples": 2, "values": ["power", "security", "benevolence"],
                                                "components": ["intrinsic", "prompted"]},
                                  "instruct": {"limit": 30},
                                  "jailbreak": {"limit": 16, "temperature": 0.0, "max_new_tokens": 40, "alphas": [0.2],
                                                "values": ["power", "benevolence"]}}},
    },
    # The paper's scale (GPU): every query, every value prompted.
    "paper": {
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct", "dtype": "bfloat16", "device": "cuda",
                  "threads": None},
        "data": {"n_queries": None},
        "generation": {"intrinsic_samples": 5, "prompted_samples": 1, "prompted_mode": "all",
                       "max_new_tokens": 256, "batch_size": 32},
        # The paper's labeller: GPT-4o-mini, graded by its yes/no logprobs (binary where none come back).
        "judge": {"name": "llm", "options": {"model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
                                             "logprobs": "auto"}},
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


def check_call(fn: Callable, options: Any, where: str, allowed: dict[str, Allowed] | None = None,
               skip: tuple[str, ...] = ("self",)) -> None:
    """``options`` fit ``fn``'s keyword parameters (names, annotated types) and ``allowed``, without calling it.

    For the options of a class built from a mapping (a judge); numbers inside lists and mapping
    values are checked against the range too, and a float is always finite.
    """
    import inspect

    if not isinstance(options, dict):
        raise ValuemechError(f"{where} options must be a mapping, not {type(options).__name__}")
    params = {n: p for n, p in inspect.signature(fn).parameters.items()
              if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for key, value in options.items():
        if key not in params:
            raise ValuemechError(f"{where}: unknown option {short(key)}; known: {', '.join(params) or 'none'}")
        want = params[key].annotation
        want = want if isinstance(want, str) else getattr(want, "__name__", str(want))
        if not matches_type(value, want):
            raise ValuemechError(f"{where} option {key} must be {want}, not {type(value).__name__} {short(value)}")
        check_value((allowed or {}).get(key) or default_rule(want), f"{where} option {key}", value)


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
                                 f"{short(value)}")
        kwargs[key] = value
    return dataclasses.replace(base, **kwargs)


def short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def make_config(preset: str = "quick", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a config from a preset plus nested overrides (``{"model": {"name": ...}}``)."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValuemechError(f"unknown preset {short(preset)}; choose from {', '.join(PRESETS)}")
    cfg = _merge(RunConfig(preset=preset), PRESETS[preset], "")
    if overrides:
        cfg = _merge(cfg, overrides, "")
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject settings that cannot work, naming the key: every number in its field's range, every choice
    among its field's choices. (Names that need a lower layer, the judge, the model and the ``evaluate``
    section, are checked by ``valuemech.pipeline.preflight`` before a run starts.)"""
    from valuemech.values import parse_values

    check_fields(cfg, lambda f: f"config key {f.name}")
    for section in ("model", "data", "generation", "extract", "neurons"):
        check_fields(getattr(cfg, section), lambda f, s=section: f"config key {s}.{f.name}")
    g = cfg.generation
    if g.backend == "endpoint" or g.endpoint:
        if g.backend == "endpoint" and not g.endpoint.get("base_url"):
            raise ValuemechError("generation.endpoint.base_url is required when generation.backend is 'endpoint'")
        endpoint_settings(g.endpoint)
    if g.values is not None:
        g.values = parse_values(g.values)


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
