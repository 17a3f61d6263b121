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

from valuemech.errors import ValuemechError
from valuemech.evals.common import bootstrap_mean
from valuemech.io import parse_json, read_text
from valuemech.models.loading import LoadedModel
from valuemech.scoring import answer_prompt, option_probabilities
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
