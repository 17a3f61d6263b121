"""Situational dilemmas: does steering towards a value make the model pick the action that serves it?

Each dilemma is a short everyday situation with two concrete actions, each serving one Schwartz
value (pairs drawn mostly across the circumplex, e.g. self-direction vs conformity). The model is
asked "Which would you do? Reply with A or B." with the answer stem prefilled, and the choice is
read from the option probabilities in both presentation orders:
``P(value_a's action) = (p_A in the original order + p_B in the swapped order) / 2``, which is
symmetric under swapping the two actions (exactly: both orders are scored in one canonical batch).

For a target value v, only the dilemmas involving v are scored, unsteered and steered towards v;
per dilemma, shift = P_steered(v's action) - P_base(v's action) and win = shift > 0. Reported per
condition and value: win rate and mean shift with 95% bootstrap intervals over dilemmas, and their
means over values (intervals over values).

Built-in dilemmas (``data/builtin/dilemmas.jsonl``, 110 written for valuemech, English); a loader
reads a CSV with columns dilemma, action_a, action_b, value_a, value_b (optional id, lang) or the
same records as JSON/JSONL.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from valuemech.errors import ValuemechError
from valuemech.io import parse_json, parse_jsonl, read_text
from valuemech.evals.common import EvalOptions, build_conditions, summarise
from valuemech.models.loading import LoadedModel
from valuemech.rundir import RunDir
from valuemech.scoring import answer_prompt, option_probabilities
from valuemech.steering import SteeringSource
from valuemech.values import VALUES, canonical_value, parse_values

NAME = "dilemmas"
OPTIONS = ["A", "B"]
COLUMNS = ("dilemma", "action_a", "action_b", "value_a", "value_b")

#: Per language: the question (situation, the two actions, the instruction) and the answer stem.
PROMPTS: dict[str, tuple[str, str]] = {
    "en": ("{dilemma}\nA: {a}\nB: {b}\nWhich would you do? Reply with A or B.", "Answer:"),
    "zh": ("{dilemma}\nA: {a}\nB: {b}\n你会怎么做？请回答 A 或 B。", "答案："),
    "es": ("{dilemma}\nA: {a}\nB: {b}\n¿Qué harías? Responde con A o B.", "Respuesta:"),
    "fr": ("{dilemma}\nA : {a}\nB : {b}\nQue feriez-vous ? Répondez par A ou B.", "Réponse :"),
    "ko": ("{dilemma}\nA: {a}\nB: {b}\n당신이라면 어떻게 하겠습니까? A 또는 B로만 답하세요.", "답:"),
}


@dataclass(frozen=True)
class Dilemma:
    id: str
    dilemma: str
    action_a: str
    action_b: str
    value_a: str
    value_b: str
    lang: str = "en"

    def involves(self, value: str) -> bool:
        return value in (self.value_a, self.value_b)

    def swapped(self) -> "Dilemma":
        """The same dilemma with the two actions (and their values) exchanged."""
        return Dilemma(self.id, self.dilemma, self.action_b, self.action_a, self.value_b, self.value_a, self.lang)


# ---------------------------------------------------------------------------------------- data

def _parse_rows(rows: list[dict], where: str, unit: str) -> list[Dilemma]:
    """Validated dilemmas from raw records; errors name ``where`` and the record (``unit`` i)."""
    out, ids = [], set()
    for i, r in enumerate(rows, 1):
        r = {str(k).strip().lower(): v for k, v in r.items() if k is not None}
        missing = [k for k in COLUMNS if not str(r.get(k) or "").strip()]
        if missing:
            raise ValuemechError(f"{where}: {unit} {i} lacks {', '.join(missing)}")
        values = []
        for k in ("value_a", "value_b"):
            try:
                values.append(canonical_value(str(r[k])))
            except ValuemechError:
                raise ValuemechError(f"{where}: {unit} {i}: unknown {k} {str(r[k])!r}; "
                                     f"known values: {', '.join(VALUES)}") from None
        if values[0] == values[1]:
            raise ValuemechError(f"{where}: {unit} {i}: value_a and value_b are both {values[0]!r}")
        lang = str(r.get("lang") or "en").strip()
        if lang not in PROMPTS:
            raise ValuemechError(f"{where}: {unit} {i}: no prompt for language {lang!r}; have {', '.join(PROMPTS)}")
        did = str(r.get("id") or "").strip() or f"{unit}-{i}"
        if did in ids:
            raise ValuemechError(f"{where}: {unit} {i}: duplicate id {did!r}")
        ids.add(did)
        out.append(Dilemma(did, str(r["dilemma"]).strip(), str(r["action_a"]).strip(), str(r["action_b"]).strip(),
                           values[0], values[1], lang))
    if not out:
        raise ValuemechError(f"{where}: no dilemmas")
    return out


def builtin_dilemmas() -> list[Dilemma]:
    """The built-in dilemmas (110, English)."""
    raw = resources.files("valuemech.data").joinpath("builtin/dilemmas.jsonl").read_text("utf-8")
    return _parse_rows(parse_jsonl(raw, "builtin/dilemmas.jsonl"), "builtin/dilemmas.jsonl", "line")


def load_dilemmas(path: str | Path) -> list[Dilemma]:
    """Dilemmas from a CSV (columns dilemma, action_a, action_b, value_a, value_b; optional id, lang)
    or the same records as a JSON list or JSONL; values by id or common spelling ("Self-Direction")."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"dilemma file {path} does not exist")
    raw = read_text(path, encoding="utf-8-sig")
    if not raw.strip():
        raise ValuemechError(f"{path}: empty file, no dilemmas")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _parse_rows(parse_jsonl(raw, str(path)), str(path), "line")
    if suffix == ".json":
        rows = parse_json(raw, str(path))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValuemechError(f"{path}: expected a JSON list of objects")
        return _parse_rows(rows, str(path), "item")
    try:
        reader = csv.DictReader(io.StringIO(raw))
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValuemechError(f"{path}: missing column(s) {', '.join(missing)} "
                                 f"(need {', '.join(COLUMNS)}; optional id, lang)")
        rows = list(reader)
    except csv.Error as exc:
        raise ValuemechError(f"{path}: not a valid CSV ({exc})") from None
    return _parse_rows(rows, str(path), "row")


def check_options(opts: EvalOptions) -> None:
    """The dataset file, read before any work (the registry's ``check_options``)."""
    dataset(opts)


def dataset(opts: EvalOptions) -> tuple[list[Dilemma], str]:
    """The dilemmas the options ask for (``opts.items`` or the built-ins) and their name.

    With ``opts.limit``, only the first ``limit`` dilemmas involving each target value are kept.
    """
    items, name = (load_dilemmas(opts.items), str(opts.items)) if opts.items else (builtin_dilemmas(), "builtin")
    if not opts.limit:
        return items, name
    keep: set[str] = set()
    for v in opts.values or VALUES:
        keep.update(d.id for d in [d for d in items if d.involves(v)][: opts.limit])
    return [d for d in items if d.id in keep], name


# ------------------------------------------------------------------------------------- scoring

def choice_prompt(lm: LoadedModel, d: Dilemma, swapped: bool = False) -> list[int]:
    """Prompt ids with action_a shown as A (or, ``swapped``, as B) and the answer stem prefilled."""
    template, stem = PROMPTS[d.lang]
    a, b = (d.action_b, d.action_a) if swapped else (d.action_a, d.action_b)
    return answer_prompt(lm, template.format(dilemma=d.dilemma, a=a, b=b), stem, options=OPTIONS)


def choice_probs(lm: LoadedModel, dilemmas: list[Dilemma], batch_size: int = 16) -> torch.Tensor:
    """P(the action serving value_a) per dilemma ``[n]`` (float64), both presentation orders averaged.

    The prompts of both orders are deduplicated and scored in one call in a canonical order, so
    swapping action_a/action_b (and their values) gives exactly 1 - P: the same numbers are read.
    """
    if not dilemmas:
        return torch.zeros(0, dtype=torch.float64)
    orig = [tuple(choice_prompt(lm, d, False)) for d in dilemmas]
    swap = [tuple(choice_prompt(lm, d, True)) for d in dilemmas]
    unique = sorted(set(orig) | set(swap))
    row = {p: i for i, p in enumerate(unique)}
    probs = option_probabilities(lm, [list(p) for p in unique], OPTIONS, batch_size).probs
    p_a_first = probs[[row[p] for p in orig], 0]  # action_a shown as A
    p_a_second = probs[[row[p] for p in swap], 1]  # action_a shown as B
    return (p_a_first + p_a_second) / 2


def target_probs(lm: LoadedModel, dilemmas: list[Dilemma], value: str, batch_size: int = 16) -> torch.Tensor:
    """P(the action serving ``value``) per dilemma (each must involve ``value``)."""
    p = choice_probs(lm, dilemmas, batch_size)
    first = torch.tensor([d.value_a == value for d in dilemmas], dtype=torch.bool)
    return torch.where(first, p, 1 - p)


# --------------------------------------------------------------------------------- aggregation

def value_summary(shifts: list[float], n_boot: int = 1000) -> dict:
    """Win rate (share of shifts > 0) and mean shift over one value's dilemmas, with intervals and n."""
    return {"win_rate": summarise([float(s > 0) for s in shifts], n_boot), "mean_shift": summarise(shifts, n_boot),
            "n": len(shifts)}


def condition_summary(per_value: dict[str, dict], n_boot: int = 1000) -> dict:
    """Per-value summaries and their means over values (intervals resample values)."""
    wins = [p["win_rate"]["mean"] for p in per_value.values()]
    shifts = [p["mean_shift"]["mean"] for p in per_value.values()]
    return {"per_value": per_value,
            "mean": {"win_rate": summarise(wins, n_boot), "mean_shift": summarise(shifts, n_boot),
                     "n_values": len(per_value), "n": sum(p["n"] for p in per_value.values())}}


#: The evaluation's settings (the shared ones: see valuemech.evals.common).
Options = EvalOptions


def evaluate(lm: LoadedModel, source: SteeringSource, opts: EvalOptions, run: RunDir | None = None,
             neurons: dict | None = None) -> dict:
    """Win rate and mean shift of the target value's action under every steering condition."""
    from tqdm.auto import tqdm

    dilemmas, name = dataset(opts)
    values = parse_values(opts.values)
    subsets = {v: [d for d in dilemmas if d.involves(v)] for v in values}
    subsets = {v: s for v, s in subsets.items() if s}
    if not subsets:
        raise ValuemechError(f"no dilemma in {name} involves the target value(s) {', '.join(values)}")
    conditions, cond_settings = build_conditions(lm, source, opts, run, neurons)
    base = {v: target_probs(lm, s, v, opts.batch_size) for v, s in subsets.items()}
    items: list[dict] = []
    aggregates: dict[str, dict] = {}
    bar = tqdm(total=len(conditions) * len(subsets), desc="dilemmas", disable=not opts.progress)
    for cond, factory in conditions.items():
        per_value = {}
        for v, subset in subsets.items():
            with factory(v):
                steered = target_probs(lm, subset, v, opts.batch_size)
            shifts = (steered - base[v]).tolist()
            for d, pb, ps, s in zip(subset, base[v].tolist(), steered.tolist(), shifts):
                items.append({"condition": cond, "value": v, "id": d.id, "lang": d.lang,
                              "action": "a" if d.value_a == v else "b",
                              "other_value": d.value_b if d.value_a == v else d.value_a,
                              "p_base": pb, "p_steered": ps, "shift": s, "win": s > 0})
            per_value[v] = value_summary(shifts, opts.n_boot)
            bar.update(1)
        aggregates[cond] = condition_summary(per_value, opts.n_boot)
    bar.close()
    return {
        "eval": NAME,
        "settings": {"dataset": name, "n": len(dilemmas), "langs": sorted({d.lang for d in dilemmas}),
                     "values": list(subsets), "conditions": cond_settings, "limit": opts.limit,
                     "scoring": "option probabilities of A/B after a prefilled stem, both orders averaged",
                     "prompt": {lang: PROMPTS[lang] for lang in sorted({d.lang for d in dilemmas})},
                     "batch_size": opts.batch_size, "n_boot": opts.n_boot},
        "baseline": {v: summarise(base[v].tolist(), opts.n_boot) for v in subsets},
        "items": items,
        "aggregates": aggregates,
    }


# ------------------------------------------------------------------------------------ markdown

def _num(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.2f}"


def _ci(ci: list[float], signed: bool = False) -> str:
    return f"[{_num(ci[0], signed)}, {_num(ci[1], signed)}]"


def markdown(result: dict) -> str:
    """Win rates (mean shifts) per condition and value, the mean over values with intervals, and the baseline."""
    s = result["settings"]
    values = [v for v in VALUES if v in s["values"]]
    lines = [f"### Dilemma win rates ({s['dataset']}, {s['n']} dilemmas)", "",
             "| condition | " + " | ".join(values) + " | mean [95% CI] | mean shift [95% CI] | n |",
             "|---" * (len(values) + 4) + "|"]
    for cond, agg in result["aggregates"].items():
        pv = agg["per_value"]
        cells = [f"{_num(pv[v]['win_rate']['mean'])} ({_num(pv[v]['mean_shift']['mean'], True)})" if v in pv else "–"
                 for v in values]
        m = agg["mean"]
        lines.append(f"| {cond} | " + " | ".join(cells)
                     + f" | {_num(m['win_rate']['mean'])} {_ci(m['win_rate']['ci'])}"
                     + f" | {_num(m['mean_shift']['mean'], True)} {_ci(m['mean_shift']['ci'], True)} | {m['n']} |")
    lines += ["", "Cells: share of the value's dilemmas where steering towards it raised the probability of its "
              "action (win rate), with the mean shift of that probability in parentheses. Means are over values "
              "(intervals resample values); n counts scored dilemmas. Per-value intervals are in the JSON.", "",
              "### Baseline preference", "",
              "| value | P(value's action) | 95% CI | n |", "|---|---|---|---|"]
    for v in values:
        b = result["baseline"][v]
        lines.append(f"| {v} | {_num(b['mean'])} | {_ci(b['ci'])} | {b['n']} |")
    return "\n".join(lines) + "\n"
