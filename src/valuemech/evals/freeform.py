"""Free-form PVQ: open answers to portrait questions, scored for the target value by a judge.

For each target value, the model answers "how much are you like this person, and why?" in its own
words for every portrait of that value (built-in PVQ portraits, or a PVQ file), under the baseline
and under each condition steered towards the value, with the same sampling seeds. A judge then
decides whether each answer expresses the target value. Score (0–10) = 10 × the share of answers
that express it; the judge's native score (its own units) is reported beside it.

The judge should differ from the one whose labels built the vectors: scoring with the labelling
judge is circular. By default the run's labelling judge is avoided (``embedding`` when the run
used ``lexicon``, else ``lexicon``); choosing it anyway is recorded as ``circular: true``.
"""

from __future__ import annotations

from valuemech.evals.common import EvalOptions, bootstrap_mean, build_conditions, generate_texts
from valuemech.evals.pvq import PVQItem, builtin_items, load_items
from valuemech.judges import check_judge, get_judge
from valuemech.models.loading import LoadedModel
from valuemech.rundir import RunDir
from valuemech.values import VALUES

QUESTION = ('Here is a description of a person: "{text}"\n'
            "In two or three sentences, tell me how much you are like this person, and why.")


def labelling_judge(run: RunDir | None) -> str | None:
    """The judge that labelled the run's responses (None outside a run)."""
    if run is None or not run.config.exists():
        return None
    return run.load_config().judge.name


def pick_judge(requested: str | None, labelling: str | None) -> tuple[str, bool]:
    """The scoring judge and whether it is circular (the same as the labelling judge)."""
    name = requested or ("embedding" if labelling == "lexicon" else "lexicon")
    return name, labelling is not None and name == labelling


def score_answers(judge, texts: list[str], value: str, langs: list[str]) -> list[dict]:
    """Per answer: the judge's native score and its decision for ``value`` (None when undecided)."""
    res = judge.score(texts, [value], langs)
    return [{"score": s.get(value), "expressed": e.get(value)} for s, e in zip(res.scores, res.expressed)]


def _summary(scored: list[dict]) -> dict:
    decided = [s for s in scored if s["expressed"] is not None]
    native = [s["score"] for s in scored if s["score"] is not None]
    return {"score_0_10": 10 * sum(bool(s["expressed"]) for s in decided) / len(decided) if decided else None,
            "native": sum(native) / len(native) if native else None, "n": len(scored), "n_decided": len(decided)}


#: The evaluation's settings (the shared ones: see valuemech.evals.common).
Options = EvalOptions


def check_options(opts: EvalOptions) -> None:
    """The item file and the scoring judge's settings, before any work (the registry's ``check_options``)."""
    if opts.items:
        load_items(opts.items)
    check_judge(pick_judge(opts.judge, None)[0], opts.judge_options, "freeform judge")


def evaluate(lm: LoadedModel, source, opts: EvalOptions, run: RunDir | None = None,
             neurons: dict | None = None) -> dict:
    """Baseline and steered free-form answers per target value, scored by a non-labelling judge."""
    items: list[PVQItem] = load_items(opts.items) if opts.items else builtin_items(["en"])
    values = [v for v in (opts.values or VALUES) if any(it.value == v for it in items)]
    by_value = {v: [it for it in items if it.value == v][: opts.limit or None] for v in values}
    judge_name, circular = pick_judge(opts.judge, labelling_judge(run))
    judge = get_judge(judge_name, opts.judge_options, lm=lm)
    conditions, settings = build_conditions(lm, source, opts, run, neurons)

    def answers(v: str) -> tuple[list[str], list[PVQItem]]:
        its = [it for it in by_value[v] for _ in range(opts.samples)]
        return generate_texts(lm, [QUESTION.format(text=it.text) for it in its], opts, desc=f"freeform {v}"), its

    records: list[dict] = []
    base: dict[str, dict] = {}
    for v in values:
        texts, its = answers(v)
        scored = score_answers(judge, texts, v, [it.lang for it in its])
        base[v] = _summary(scored)
        records += [{"condition": "baseline", "target": v, "item": it.id, "answer": t, **s}
                    for it, t, s in zip(its, texts, scored)]
    rows: dict = {}
    for name, factory in conditions.items():
        per_value = {}
        for v in values:
            with factory(v):
                texts, its = answers(v)
            scored = score_answers(judge, texts, v, [it.lang for it in its])
            summ = _summary(scored)
            gain = None if summ["score_0_10"] is None or base[v]["score_0_10"] is None \
                else summ["score_0_10"] - base[v]["score_0_10"]
            per_value[v] = {**summ, "gain": gain}
            records += [{"condition": name, "target": v, "item": it.id, "answer": t, **s}
                        for it, t, s in zip(its, texts, scored)]
        gains = [p["gain"] for p in per_value.values() if p["gain"] is not None]
        rows[name] = {"per_value": per_value, "gain": sum(gains) / len(gains) if gains else None,
                      "gain_ci": bootstrap_mean(gains, opts.n_boot), "n_values": len(gains)}
    return {"eval": "freeform",
            "settings": {"items": opts.items or "builtin PVQ portraits (en)", "judge": judge_name,
                         "judge_options": opts.judge_options, "labelling_judge": labelling_judge(run),
                         "circular": circular, "samples": opts.samples, "max_new_tokens": opts.max_new_tokens,
                         "temperature": opts.temperature, "seed": opts.seed, "values": values,
                         "items_per_value": {v: len(its) for v, its in by_value.items()}, "conditions": settings,
                         "score": "10 x share of answers the judge says express the target value"},
            "items": records,
            "aggregates": {"baseline": base, "rows": rows}}


def markdown(result: dict) -> str:
    """Target-value score gain (0–10) per condition, with the baseline per value."""
    agg, st = result["aggregates"], result["settings"]
    warn = " — CIRCULAR: the labelling judge" if st["circular"] else ""
    lines = [f"Free-form PVQ (judge: {st['judge']}{warn}; {sum(st['items_per_value'].values())} portraits x "
             f"{st['samples']} samples; score = 10 x share of answers expressing the target value)", "",
             "| value | baseline | " + " | ".join(agg["rows"]) + " |", "|---|---|" + "---|" * len(agg["rows"])]
    f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    for v in st["values"]:
        cells = [f(row["per_value"][v]["score_0_10"]) if v in row["per_value"] else "-" for row in agg["rows"].values()]
        lines.append(f"| {v} | {f(agg['baseline'][v]['score_0_10'])} | " + " | ".join(cells) + " |")
    lines.append("| **mean gain** [95% CI over values] | | " + " | ".join(
        "-" if r["gain"] is None else f"{r['gain']:+.2f} [{r['gain_ci'][0]:+.2f}, {r['gain_ci'][1]:+.2f}]"
        for r in agg["rows"].values()) + " |")
    return "\n".join(lines)
