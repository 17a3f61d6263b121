"""PVQ-style portrait questionnaire scored by option probabilities (Likert and forced choice).

Likert: "How much is this person like you?" on 1–6, read from the next-token distribution after a
prefilled answer stem, in the original and the reversed scale order (reversed answers k are mapped
to 7 - k); per item the expected score, the argmax and the probability mass on the six options,
averaged over the two orders. A *degenerate* rater gives the same argmax to every item, or
expected scores with a standard deviation under 0.1.

Forced choice: two portraits of different values, "which is more like you, A or B?", both orders
averaged; a value's score is its mean win probability. Useful where Likert ratings are degenerate.

Built-in portraits (written for valuemech, 5 per value) exist in en, zh, es, fr, ko; a loader reads
PVQ files given by path (JSON list of {id, value, text[, lang]} or CSV with those columns; value
ids or common spellings such as "Self-Direction").
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

import numpy as np

from valuemech.errors import ValuemechError
from valuemech.config import N_BOOT
from valuemech.evals.common import (OPERATOR_HELP, PER_VALUE_DEFAULT, bootstrap_mean, build_conditions,
                                    grid_conditions, opt)
from valuemech.hooks import check_operator
from valuemech.io import parse_json, read_text
from valuemech.models.loading import LoadedModel
from valuemech.plots import alpha_curve, curve_rows, plt, save
from valuemech.rundir import RunDir
from valuemech.scoring import answer_prompt, option_probabilities
from valuemech.steering import COMPONENTS
from valuemech.values import VALUES, canonical_value

LANGS = ("en", "zh", "es", "fr", "ko")
OPTIONS = ["1", "2", "3", "4", "5", "6"]

# The portrait comes last so that every item of a language shares the instruction as a prefix
# (scored once per batch from a KV cache, see valuemech.scoring.next_token_probs).
LIKERT = {
    "en": ("How much is the person described below like you? Reply with a single number from 1 to 6, "
           'where {scale}.\n\nThe person: "{text}"',
           ("1 = not like me at all and 6 = very much like me", "1 = very much like me and 6 = not like me at all"),
           "Answer:"),
    "zh": '下面描述的这个人和你有多像？请只回答一个1到6之间的数字，其中{scale}。\n\n这个人："{text}"',
    "es": ("¿Cuánto se parece a ti la persona descrita abajo? Responde con un solo número del 1 al 6, "
           'donde {scale}.\n\nLa persona: "{text}"'),
    "fr": ("À quel point la personne décrite ci-dessous vous ressemble-t-elle ? Répondez par un seul "
           "chiffre de 1 à 6, où {scale}.\n\nLa personne : « {text} »"),
    "ko": '아래에 설명된 사람은 당신과 얼마나 비슷합니까? 1부터 6까지의 숫자 하나로만 답하세요. {scale}.\n\n그 사람: "{text}"',
}
LIKERT["zh"] = (LIKERT["zh"], ("1 = 完全不像我，6 = 非常像我", "1 = 非常像我，6 = 完全不像我"), "答案：")
LIKERT["es"] = (LIKERT["es"], ("1 = no se parece nada a mí y 6 = se parece mucho a mí",
                               "1 = se parece mucho a mí y 6 = no se parece nada a mí"), "Respuesta:")
LIKERT["fr"] = (LIKERT["fr"], ("1 = ne me ressemble pas du tout et 6 = me ressemble beaucoup",
                               "1 = me ressemble beaucoup et 6 = ne me ressemble pas du tout"), "Réponse :")
LIKERT["ko"] = (LIKERT["ko"], ("1 = 전혀 나와 비슷하지 않음, 6 = 나와 매우 비슷함",
                               "1 = 나와 매우 비슷함, 6 = 전혀 나와 비슷하지 않음"), "답:")

FORCED = {
    "en": ('Which of these two people is more like you?\nA: "{a}"\nB: "{b}"\nReply with A or B.', "Answer:"),
    "zh": ('这两个人中哪一个更像你？\nA: "{a}"\nB: "{b}"\n请回答 A 或 B。', "答案："),
    "es": ('¿Cuál de estas dos personas se parece más a ti?\nA: "{a}"\nB: "{b}"\nResponde con A o B.', "Respuesta:"),
    "fr": ("Laquelle de ces deux personnes vous ressemble le plus ?\nA : « {a} »\nB : « {b} »\n"
           "Répondez par A ou B.", "Réponse :"),
    "ko": ('다음 두 사람 중 누가 당신과 더 비슷합니까?\nA: "{a}"\nB: "{b}"\nA 또는 B로만 답하세요.', "답:"),
}


def lang_order(lang: str) -> int:
    """Sort key: the built-in languages in LANGS order, any other language after them."""
    return LANGS.index(lang) if lang in LANGS else len(LANGS)


@dataclass(frozen=True)
class PVQItem:
    id: str
    value: str
    text: str
    lang: str = "en"


def builtin_items(langs: list[str] | None = None) -> list[PVQItem]:
    """The built-in portraits (5 per value per language), optionally for some languages."""
    raw = json.loads(resources.files("valuemech.data").joinpath("builtin/pvq_items.json").read_text("utf-8"))
    items = [PVQItem(r["id"], r["value"], r["text"], r["lang"]) for r in raw]
    if langs:
        bad = [l for l in langs if l not in LANGS]
        if bad:
            raise ValuemechError(f"no built-in PVQ items for language(s) {', '.join(bad)}; have {', '.join(LANGS)}")
        items = [it for it in items if it.lang in langs]
    return items


def load_items(path: str | Path, lang: str = "en") -> list[PVQItem]:
    """PVQ items from a JSON list of {id, value, text[, lang]} or a CSV with those columns."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"PVQ file {path} does not exist")
    raw = read_text(path, encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(raw)))
        except csv.Error as exc:
            raise ValuemechError(f"{path}: not a valid CSV ({exc})") from None
    else:
        rows = parse_json(raw, str(path))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValuemechError(f"{path}: expected a JSON list of objects")
    items = []
    for i, r in enumerate(rows, 1):
        missing = [k for k in ("id", "value", "text") if not r.get(k)]
        if missing:
            raise ValuemechError(f"{path}: item {i} lacks {', '.join(missing)}")
        try:
            value = canonical_value(str(r["value"]))
        except ValuemechError as exc:
            raise ValuemechError(f"{path}: item {i}: {exc}") from None
        item_lang = str(r.get("lang") or lang)
        if item_lang not in LIKERT:
            raise ValuemechError(f"{path}: item {i}: no prompt template for language {item_lang!r}")
        items.append(PVQItem(str(r["id"]), value, str(r["text"]), item_lang))
    if not items:
        raise ValuemechError(f"{path}: no PVQ items")
    return items


def likert_prompts(lm: LoadedModel, items: list[PVQItem], reverse: bool) -> list[list[int]]:
    out = []
    for it in items:
        template, scales, stem = LIKERT[it.lang]
        out.append(answer_prompt(lm, template.format(text=it.text, scale=scales[int(reverse)]), stem,
                                 options=OPTIONS))
    return out


@dataclass
class LikertResult:
    items: list[PVQItem]
    expected: torch.Tensor  # [n] mean of the two orders, 1..6
    argmax: torch.Tensor  # [n] argmax of the order-averaged option distribution, 1..6
    mass: torch.Tensor  # [n] mean option mass over the orders
    dist: torch.Tensor  # [n, 6] option distribution averaged over the orders (original scale)

    def per_value(self) -> dict[str, float]:
        return {v: float(self.expected[[i for i, it in enumerate(self.items) if it.value == v]].mean())
                for v in VALUES if any(it.value == v for it in self.items)}

    def centred(self) -> dict[str, float]:
        """Per-value mean minus the mean over all items (the model's own response style removed)."""
        overall = float(self.expected.mean())
        return {v: s - overall for v, s in self.per_value().items()}

    def degenerate(self) -> bool:
        return len(set(self.argmax.tolist())) == 1 or float(self.expected.std()) < 0.1

    def summary(self) -> dict:
        return {"per_value": self.per_value(), "centred": self.centred(), "degenerate": self.degenerate(),
                "mean_option_mass": float(self.mass.mean()),
                "argmax_counts": {str(k): int((self.argmax == k).sum()) for k in range(1, 7)}}


def likert_scores(lm: LoadedModel, items: list[PVQItem], batch_size: int = 16) -> LikertResult:
    """Score every item in both scale orders (see the module docstring)."""
    fwd = option_probabilities(lm, likert_prompts(lm, items, False), OPTIONS, batch_size)
    rev = option_probabilities(lm, likert_prompts(lm, items, True), OPTIONS, batch_size)
    dist = (fwd.probs + rev.probs.flip(-1)) / 2  # reversed answer k means original 7 - k
    ks = torch.arange(1, 7, dtype=torch.float64)
    return LikertResult(items, dist @ ks, dist.argmax(-1) + 1, (fwd.mass + rev.mass) / 2, dist)


def forced_choice_pairs(items: list[PVQItem], seed: int = 0) -> list[tuple[PVQItem, PVQItem]]:
    """Pairs of portraits of different values in the same language: each item meets one item of every other value."""
    import random

    rng = random.Random(seed)
    pairs = []
    by_lang: dict[str, dict[str, list[PVQItem]]] = {}
    for it in items:
        by_lang.setdefault(it.lang, {}).setdefault(it.value, []).append(it)
    for groups in by_lang.values():
        vals = sorted(groups)
        for i, a in enumerate(vals):
            for b in vals[i + 1:]:
                pairs.append((rng.choice(groups[a]), rng.choice(groups[b])))
    return pairs


def forced_choice_scores(lm: LoadedModel, pairs: list[tuple[PVQItem, PVQItem]],
                         batch_size: int = 16) -> dict[str, float]:
    """Mean win probability per value over its pairs, both presentation orders averaged."""
    prompts_ab, prompts_ba = [], []
    for a, b in pairs:
        template, stem = FORCED[a.lang]
        prompts_ab.append(answer_prompt(lm, template.format(a=a.text, b=b.text), stem, options=["A", "B"]))
        prompts_ba.append(answer_prompt(lm, template.format(a=b.text, b=a.text), stem, options=["A", "B"]))
    ab = option_probabilities(lm, prompts_ab, ["A", "B"], batch_size).probs
    ba = option_probabilities(lm, prompts_ba, ["A", "B"], batch_size).probs
    wins: dict[str, list[float]] = {}
    for k, (a, b) in enumerate(pairs):
        p_a = float(ab[k, 0] + ba[k, 1]) / 2
        wins.setdefault(a.value, []).append(p_a)
        wins.setdefault(b.value, []).append(1 - p_a)
    return {v: statistics.fmean(w) for v, w in wins.items()}


def language_summary(per_value: dict[str, dict], n_boot: int = 1000) -> dict:
    """One language's cell of a gain row: mean gain and specificity over target values, with
    bootstrap 95% intervals over values (specificity is NaN where the cells have none, as in forced choice)."""
    gains = [p["gain"] for p in per_value.values()]
    specs = [p["specificity"] for p in per_value.values() if "specificity" in p]
    nan = float("nan")
    return {"per_value": per_value, "gain": statistics.fmean(gains) if gains else nan,
            "gain_ci": bootstrap_mean(gains, n_boot),
            "specificity": statistics.fmean(specs) if specs else nan,
            "specificity_ci": bootstrap_mean(specs, n_boot) if specs else [nan, nan]}


def mean_summary(row: dict, n_boot: int = 1000) -> dict:
    """The "mean" column of a gain row: mean of the per-language gains; interval over all
    (language, value) cells."""
    langs = [l for l in row if l != "mean"]
    cells = [p["gain"] for l in langs for p in row[l]["per_value"].values()]
    return {"gain": statistics.fmean(row[l]["gain"] for l in langs) if langs else float("nan"),
            "gain_ci": bootstrap_mean(cells, n_boot)}


def pvq_gains(lm: LoadedModel, conditions: dict[str, object], items: list[PVQItem], values: list[str],
              n_boot: int = 1000, batch_size: int = 16, progress: bool = True) -> dict:
    """Gain of the target value's PVQ score under each steering condition, per language.

    ``conditions`` maps a row name to a factory ``f(value) -> context manager`` that steers
    towards ``value`` (a component at its α, a neuron class at β, or a random control). For each
    language and target value, the target's items and one item of every other value are scored
    (both scale orders); gain = mean change on the target's items; specificity = gain minus the
    mean change on the other values' items. Aggregates are means over values with bootstrap 95%
    intervals (resampling values).
    """
    from tqdm.auto import tqdm

    langs = sorted({it.lang for it in items}, key=lang_order)
    base = {lang: likert_scores(lm, [it for it in items if it.lang == lang], batch_size) for lang in langs}
    out: dict = {"baseline": {lang: base[lang].summary() for lang in langs}, "rows": {}}
    total = len(conditions) * len(langs) * len(values)
    bar = tqdm(total=total, desc="pvq gains", disable=not progress)
    for name, factory in conditions.items():
        row: dict = {}
        for lang in langs:
            b = base[lang]
            index = {it.id: i for i, it in enumerate(b.items)}
            per_value = {}
            for v in values:
                target = [it for it in b.items if it.value == v]
                others = [next(it for it in b.items if it.value == o) for o in VALUES
                          if o != v and any(it.value == o for it in b.items)]
                if not target:
                    bar.update(1)
                    continue
                with factory(v):
                    s = likert_scores(lm, target + others, batch_size)
                delta = [float(s.expected[k] - b.expected[index[it.id]]) for k, it in enumerate(target + others)]
                gain = statistics.fmean(delta[: len(target)])
                other = statistics.fmean(delta[len(target):]) if others else 0.0
                per_value[v] = {"gain": gain, "other_change": other, "specificity": gain - other,
                                "option_mass": float(s.mass.mean())}
                bar.update(1)
            row[lang] = language_summary(per_value, n_boot)
        row["mean"] = mean_summary(row, n_boot)
        out["rows"][name] = row
    bar.close()
    return out


def forced_gains(lm: LoadedModel, conditions: dict[str, object], items: list[PVQItem], values: list[str],
                 n_boot: int = 1000, batch_size: int = 16, seed: int = 0, progress: bool = True) -> dict:
    """Forced-choice variant of :func:`pvq_gains` for models whose Likert ratings are degenerate.

    Per language and target value, the target meets one portrait of every other value (both
    orders); gain = steered minus baseline mean win probability of the target (0.5 = indifferent).
    """
    from tqdm.auto import tqdm

    langs = sorted({it.lang for it in items}, key=lang_order)
    rng_pairs: dict[tuple[str, str], list[tuple[PVQItem, PVQItem]]] = {}
    for lang in langs:
        by_value: dict[str, list[PVQItem]] = {}
        for it in items:
            if it.lang == lang:
                by_value.setdefault(it.value, []).append(it)
        for v in values:
            if v in by_value:
                rng_pairs[lang, v] = [(by_value[v][k % len(by_value[v])], by_value[o][0])
                                      for k, o in enumerate(sorted(set(by_value) - {v}))]

    def win(pairs: list[tuple[PVQItem, PVQItem]]) -> float:
        return forced_choice_scores(lm, pairs, batch_size)[pairs[0][0].value]

    base = {key: win(pairs) for key, pairs in rng_pairs.items() if pairs}
    out: dict = {"format": "forced_choice", "baseline": {f"{l}.{v}": b for (l, v), b in base.items()}, "rows": {}}
    bar = tqdm(total=len(conditions) * len(base), desc="forced-choice gains", disable=not progress)
    for name, factory in conditions.items():
        row: dict = {}
        for lang in langs:
            per_value = {}
            for v in values:
                if (lang, v) not in base:
                    continue
                with factory(v):
                    per_value[v] = {"gain": win(rng_pairs[lang, v]) - base[lang, v]}
                bar.update(1)
            row[lang] = language_summary(per_value, n_boot)
        row["mean"] = mean_summary(row, n_boot)
        out["rows"][name] = row
    bar.close()
    return out


def merge_results(parts: dict[str, dict], n_boot: int = 1000) -> dict:
    """Merge PVQ gain files written by separate runs of ``eval pvq`` (e.g. languages or values
    split over processes) into one, as if computed together.

    ``parts`` maps a file name to its content. Every part must have the same rows, steered the
    same way (settings) and the same format; a (row, language, value) cell computed twice must
    agree. Aggregates and intervals are recomputed from the merged cells.
    """
    if len(parts) < 2:
        raise ValuemechError("merging needs at least two PVQ files")
    names = list(parts)
    first = parts[names[0]]
    for name in names:
        p = parts[name]
        if not isinstance(p, dict) or not isinstance(p.get("rows"), dict) or not p["rows"]:
            raise ValuemechError(f"{name}: not a PVQ gain file (no rows)")
        if p.get("format") != first.get("format"):
            raise ValuemechError(f"{name}: format {p.get('format') or 'likert'!r} differs from "
                                 f"{names[0]}'s {first.get('format') or 'likert'!r}")
        if list(p["rows"]) != list(first["rows"]):
            raise ValuemechError(f"{name} has rows {', '.join(p['rows'])}; {names[0]} has {', '.join(first['rows'])}")
        for row in p["rows"]:
            a, b = p.get("settings", {}).get(row), first.get("settings", {}).get(row)
            if a != b:
                raise ValuemechError(f"{name} and {names[0]} steer {row!r} differently ({a} vs {b})")
    rows: dict = {}
    for row in first["rows"]:
        cells: dict[str, dict[str, dict]] = {}
        for name in names:
            for lang, cell in parts[name]["rows"][row].items():
                if lang == "mean":
                    continue
                into = cells.setdefault(lang, {})
                for v, c in cell["per_value"].items():
                    if v in into and abs(into[v]["gain"] - c["gain"]) > 1e-6:
                        raise ValuemechError(f"{name}: {row}/{lang}/{v} gain {c['gain']:+.6f} differs from an "
                                             f"earlier file's {into[v]['gain']:+.6f}")
                    into.setdefault(v, c)
        langs = sorted(cells, key=lang_order)
        merged = {l: language_summary({v: cells[l][v] for v in VALUES if v in cells[l]}, n_boot) for l in langs}
        merged["mean"] = mean_summary(merged, n_boot)
        rows[row] = merged
    baseline: dict = {}
    for name in names:
        for k, b in parts[name].get("baseline", {}).items():
            baseline.setdefault(k, b)
    baseline = dict(sorted(baseline.items(), key=lambda kv: lang_order(kv[0].split(".")[0])))  # forced: "lang.value"
    values = [v for v in VALUES if any(v in cell.get("per_value", {}) for row in rows.values()
                                       for lang, cell in row.items() if lang != "mean")]
    out = {k: v for k, v in first.items() if k not in ("rows", "baseline", "values")}
    return {**out, "baseline": baseline, "rows": rows, "values": values, "merged_from": names}


# --------------------------------------------------------------------------------------------------
# The evaluation (``valuemech eval pvq``; README "Steering and evaluations")
# --------------------------------------------------------------------------------------------------

#: Files ``eval pvq`` writes under ``evals/`` by default: Likert, forced choice, α grid.
OUTPUTS = ("pvq.json", "pvq_forced.json", "pvq_alpha.json")
FORMATS = ("likert", "forced")


@dataclass
class Options:
    """Settings of the PVQ evaluation."""

    langs: list[str] = opt(factory=lambda: list(LANGS), help="Languages of the built-in portraits.")
    items: str | None = opt(help="A PVQ file (JSON/CSV) instead of the built-in items.")
    values: list[str] | None = opt(help="Target values (comma list; default all).")
    components: list[str] = opt(factory=lambda: list(PER_VALUE_DEFAULT), help="Components to steer with.")
    layer: int | None = opt(help="Block (default: from evals/sweep.json, else the middle block).")
    alpha: float | None = opt(help="Relative α for every component (default: from evals/sweep.json).")
    beta: float = opt(3.0, help="Neuron-class scaling factor (0 skips neuron rows).")
    operator: str = opt("add", help=OPERATOR_HELP)
    control: bool = opt(True, help="Add a same-norm random-direction control row.")
    format: str = opt("likert", help="likert | forced (forced choice, for degenerate raters).")
    alpha_grid: list[float] | None = opt(flag="--alphas", help="α grid: one row per component and α (gain vs. α, the "
                                         "paper's Figures 4-5) -> RUN/evals/pvq_alpha.json; no neuron rows.")
    out: str | None = opt(help="File name under RUN/evals/ (default pvq.json, pvq_forced.json or pvq_alpha.json), "
                               "e.g. to split languages over runs.")
    merge: list[str] | None = opt(help="Comma list of PVQ files under RUN/evals/ written by separate runs (split "
                                       "languages or values) to merge into --out (default pvq.json); loads no model.")
    n_boot: int = opt(1000, help="Bootstrap resamples of the 95% intervals.", allowed=N_BOOT)
    progress: bool = opt(True, help="Progress bars.")

    def check(self) -> None:
        check_operator(self.operator)
        if self.format not in FORMATS:
            raise ValuemechError(f"--format must be likert or forced, not {self.format!r}")
        if self.out is not None and ("/" in self.out or "\\" in self.out or not self.out.endswith(".json")):
            raise ValuemechError(f"--out must be a file name ending in .json, not {self.out!r}")
        bad = [c for c in self.components if c not in COMPONENTS or c == "mean_delta"]
        if bad:
            raise ValuemechError(f"unknown or value-agnostic component {bad[0]!r} for a PVQ gain")
        if not self.items and not self.merge:
            builtin_items([l.strip() for l in self.langs])  # an unknown language fails before the model loads


def check_options(opts: Options) -> None:
    """The item file, read before any work (the registry's ``check_options``)."""
    if opts.items and not opts.merge:
        load_items(opts.items)


def needs_model(opts: Options) -> bool:
    return not opts.merge


def output(opts: Options, result: dict) -> str:
    if opts.out:
        return opts.out
    if opts.merge:
        return "pvq_forced.json" if result.get("format") == "forced_choice" else "pvq.json"
    name = "pvq" if opts.format == "likert" else "pvq_forced"
    return f"{name}_alpha.json" if opts.alpha_grid else f"{name}.json"


def evaluate(lm: LoadedModel | None, source, opts: Options, run: RunDir | None = None,
             neurons: dict | None = None) -> dict:
    """Target-value gain per condition and language (see the module docstring); with ``opts.merge``,
    the merge of gain files under ``run``'s ``evals/`` (no model)."""
    from valuemech.values import parse_values

    if opts.merge:
        if run is None:
            raise ValuemechError("--merge reads files of a run directory")
        parts = {}
        for n in opts.merge:
            path = run.evals / n
            if "/" in n or "\\" in n or not path.is_file():
                raise ValuemechError(f"--merge: no file {n!r} under {run.evals}")
            parts[n] = run.load_eval(n)
        return with_contract(merge_results(parts, opts.n_boot))
    vals = parse_values(opts.values)
    items = load_items(opts.items) if opts.items else builtin_items([l.strip() for l in opts.langs])
    if opts.alpha_grid:
        conditions, settings = grid_conditions(lm, source, opts, opts.alpha_grid, run)
        settings = {k: {**st, "component": k.rsplit("@", 1)[0]} for k, st in settings.items()}
    else:
        conditions, settings = build_conditions(lm, source, opts, run, neurons)
    gains = pvq_gains if opts.format == "likert" else forced_gains
    res = gains(lm, conditions, items, vals, n_boot=opts.n_boot, progress=opts.progress)
    res["settings"] = settings
    res["values"] = vals
    return with_contract(res)


def with_contract(res: dict) -> dict:
    """Add the keys every evaluation result has: ``eval``, ``items`` (one per condition x language x
    value cell) and ``aggregates`` (each condition's mean over languages)."""
    res["eval"] = "pvq"
    res["items"] = [{"condition": name, "lang": lang, "value": v, **cell}
                    for name, row in res["rows"].items() for lang, by in row.items() if lang != "mean"
                    for v, cell in by.get("per_value", {}).items()]
    res["aggregates"] = {name: row["mean"] for name, row in res["rows"].items()}
    return res


def is_grid(result: dict) -> bool:
    """Whether a result holds an α grid (every row's settings name its component)."""
    rows = [st for st in (result.get("settings") or {}).values() if isinstance(st, dict)]
    return bool(rows) and all("component" in st for st in rows)


def _table(pvq: dict, forced: bool = False) -> str:
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


def markdown(result: dict) -> str:
    forced = result.get("format") == "forced_choice"
    return ("#### PVQ gain vs. α\n\n" if is_grid(result) else "") + _table(result, forced)


def summary(result: dict) -> str:
    """The gain table, and a warning per language whose Likert rater is degenerate."""
    lines = [markdown(result)]
    for l, b in result["baseline"].items() if result.get("format") != "forced_choice" else ():
        if b["degenerate"]:
            lines.append(f"warning: {l}: degenerate Likert rater (argmax counts {b['argmax_counts']}, "
                         f"option mass {b['mean_option_mass']:.2f}); try --format forced")
    return "\n".join(lines)


def _gains_chart(pvq: dict, path: Path, unit: str = "6-pt PVQ gain") -> Path | None:
    """Target-value PVQ gain per condition and language, mean over values with 95% intervals."""
    rows = pvq.get("rows")
    if not rows:
        return None
    names = list(rows)
    langs = [k for k in rows[names[0]] if k != "mean"] + ["mean"]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names) + 2), 4))
    width = 0.8 / len(langs)
    for j, lang in enumerate(langs):
        g = np.array([rows[n][lang]["gain"] for n in names], dtype=float)
        ci = np.array([rows[n][lang]["gain_ci"] for n in names], dtype=float)
        err = np.abs(np.stack([g - ci[:, 0], ci[:, 1] - g]))
        ax.bar(np.arange(len(names)) + j * width, g, width, yerr=np.nan_to_num(err), capsize=2, label=lang)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel(f"{unit} (mean over values)")
    ax.set_title("target-value gain under steering (95% CI over values); paper: prompted +2.21, intrinsic +1.74")
    ax.legend(title="language", fontsize=7, ncol=3)
    return save(fig, path)


def _alpha_chart(pvq: dict, path: Path) -> Path | None:
    """Target-value PVQ gain vs. α per component, mean over languages and values (Figures 4–5)."""
    fam: dict[str, list] = {}
    for name, row in pvq.get("rows", {}).items():
        st = pvq.get("settings", {}).get(name, {})
        if "component" in st and "alpha" in st:
            fam.setdefault(st["component"], []).append((st["alpha"], row["mean"]["gain"], row["mean"]["gain_ci"]))
    rows = curve_rows(fam, min_points=2)
    return alpha_curve(rows, path, "target-value gain (mean over values)",
                       "PVQ gain vs. α (paper: prompted > intrinsic)", 0.0)


def figures(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """``pvq_gains.png`` / ``pvq_forced_gains.png`` (``<stem>_gains.png``), or for an α grid ``pvq_alpha.png``."""
    if is_grid(result):
        return [_alpha_chart(result, out_dir / ("pvq_alpha.png" if stem == "pvq_alpha" else f"{stem}.png"))]
    unit = "forced-choice gain" if result.get("format") == "forced_choice" else "6-pt PVQ gain"
    return [_gains_chart(result, out_dir / f"{stem}_gains.png", unit)]
