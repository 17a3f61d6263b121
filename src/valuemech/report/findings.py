"""The paper's three headline claims, measured on one run: effect, bootstrap interval, verdict.

1. Steerability: prompted vectors move the target value's PVQ score more than intrinsic ones
   (paper: +2.21 vs. +1.74 on the 6-point scale). Effect: gain(prompted) − gain(intrinsic), paired
   over (language, value) cells of ``evals/pvq.json`` (else ``pvq_forced.json``).
2. Diversity: intrinsic steering keeps responses more diverse than prompted steering (paper
   Distinct-2: 0.362 vs. 0.342). Effect: Distinct-2(intrinsic) − Distinct-2(prompted), paired over
   target values of ``evals/diversity.json``.
3. Compliance: the prompted-unique channel raises compliance with harmful requests (paper: AdvBench
   ASR 13.3% → 97.2% on Llama-3.1-8B). Effect: ASR(mean_delta) − ASR(random control) at the largest
   α both were run at, paired over requests of ``evals/jailbreak.json``.

Verdict from the 95% bootstrap interval of the effect: ``supported`` (interval above 0),
``not supported`` (interval below 0: the opposite holds), ``inconclusive`` (interval spans 0, or
too few pairs), ``missing`` (the evaluation did not run). Never hard-coded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from valuemech.evals.common import bootstrap_mean
from valuemech.label_null import cosine_line, read_null
from valuemech.rundir import RunDir

CLAIMS = ("steerability", "diversity", "compliance")


@dataclass
class Finding:
    claim: str
    statement: str  # the paper's claim, in words
    measure: str  # what was computed, with units
    effect: float | None
    ci: list[float] | None
    n: int
    verdict: str  # supported | not supported | inconclusive | missing
    source: str  # the evals file it came from
    paper: str  # the paper's reference numbers
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(ci: list[float] | None, n: int, min_n: int = 3) -> str:
    """``supported`` when the interval lies above 0, ``not supported`` below 0, else ``inconclusive``."""
    if ci is None or n < min_n or any(math.isnan(x) for x in ci):
        return "inconclusive"
    if ci[0] > 0:
        return "supported"
    if ci[1] < 0:
        return "not supported"
    return "inconclusive"


def _paired(diffs: list[float], n_boot: int) -> tuple[float | None, list[float] | None, int]:
    if not diffs:
        return None, None, 0
    return sum(diffs) / len(diffs), bootstrap_mean(diffs, n_boot), len(diffs)


def steerability(run: RunDir, n_boot: int = 1000) -> Finding:
    base = dict(claim="steerability", statement="steering with prompted vectors raises the target value's PVQ "
                "score more than steering with intrinsic vectors",
                paper="6-pt PVQ gain: prompted +2.21, intrinsic +1.74 (Qwen2.5-7B-Instruct, 5 languages)")
    for fname, unit in (("pvq.json", "6-pt scale"), ("pvq_forced.json", "forced-choice win probability")):
        pvq = run.peek(run.eval_path(fname))
        if pvq is None or not {"prompted", "intrinsic"} <= set(pvq.get("rows", {})):
            continue
        p, i = pvq["rows"]["prompted"], pvq["rows"]["intrinsic"]
        diffs = [p[lang]["per_value"][v]["gain"] - i[lang]["per_value"][v]["gain"]
                 for lang in p if lang != "mean" and lang in i
                 for v in p[lang]["per_value"] if v in i[lang]["per_value"]]
        effect, ci, n = _paired(diffs, n_boot)
        gp, gi = p["mean"]["gain"], i["mean"]["gain"]
        detail = f"mean gain prompted {gp:+.3f}, intrinsic {gi:+.3f}"
        result = verdict(ci, n)
        if result == "supported":  # "raises ... more than" needs prompted steering to raise the target at all
            gains = [p[lang]["per_value"][v]["gain"] for lang in p if lang != "mean" for v in p[lang]["per_value"]]
            _, ci_p, n_p = _paired(gains, n_boot)
            own = verdict(ci_p, n_p)
            if own != "supported":
                result = "inconclusive" if own == "inconclusive" else "not supported"
                detail += (f"; prompted steering itself does not raise the target value (gain {gp:+.3f} "
                           f"[{ci_p[0]:+.3f}, {ci_p[1]:+.3f}]), so the difference is one of harm, not of raising")
        return Finding(**base, measure=f"gain(prompted) − gain(intrinsic), {unit}, paired over language × value",
                       effect=effect, ci=ci, n=n, verdict=result, source=f"evals/{fname}", detail=detail)
    return Finding(**base, measure="gain(prompted) − gain(intrinsic)", effect=None, ci=None, n=0,
                   verdict="missing", source="evals/pvq.json (not run, or without prompted and intrinsic rows)")


def diversity(run: RunDir, n_boot: int = 1000) -> Finding:
    base = dict(claim="diversity", statement="intrinsic steering keeps responses more diverse than prompted steering",
                paper="Distinct-2: intrinsic 0.362, prompted 0.342 (Qwen2.5-7B-Instruct)")
    d = run.peek(run.eval_path("diversity.json"))
    rows = (d or {}).get("aggregates", {}).get("rows", {})
    if not {"intrinsic", "prompted"} <= set(rows):
        return Finding(**base, measure="Distinct-2(intrinsic) − Distinct-2(prompted)", effect=None, ci=None, n=0,
                       verdict="missing", source="evals/diversity.json (not run, or without both rows)")
    i, p = rows["intrinsic"]["per_value"], rows["prompted"]["per_value"]
    diffs = [i[v]["distinct_2"] - p[v]["distinct_2"] for v in i if v in p]
    effect, ci, n = _paired(diffs, n_boot)
    ai, ap = rows["intrinsic"]["aggregate"]["distinct_2"]["mean"], rows["prompted"]["aggregate"]["distinct_2"]["mean"]
    return Finding(**base, measure="Distinct-2(intrinsic) − Distinct-2(prompted), paired over target values",
                   effect=effect, ci=ci, n=n, verdict=verdict(ci, n), source="evals/diversity.json",
                   detail=f"Distinct-2 intrinsic {ai:.3f}, prompted {ap:.3f}")


def compliance(run: RunDir, n_boot: int = 1000) -> Finding:
    base = dict(claim="compliance", statement="steering along the prompted-unique (mean-delta) direction raises "
                "compliance with requests a safe assistant refuses",
                paper="AdvBench ASR 13.3% → 97.2% (Llama-3.1-8B), 27.0% → 89.0% (Qwen2.5-7B)")
    j = run.peek(run.eval_path("jailbreak.json"))
    if j is None:
        return Finding(**base, measure="ASR(mean_delta) − ASR(random control)", effect=None, ci=None, n=0,
                       verdict="missing", source="evals/jailbreak.json (not run)")
    conds = j["settings"]["conditions"]
    md = {c["alpha"]: name for name, c in conds.items() if c["component"] == "mean_delta"}
    rnd = {c["alpha"]: name for name, c in conds.items() if c["component"] == "random"}
    common = sorted(set(md) & set(rnd))
    if not common:
        return Finding(**base, measure="ASR(mean_delta) − ASR(random control)", effect=None, ci=None, n=0,
                       verdict="missing", source="evals/jailbreak.json (no mean_delta row with a random control)")
    alpha = common[-1]

    def success(item: dict, name: str) -> float | None:
        flags = [r["refused"] for r in item["responses"][name] if r.get("refused") is not None]
        return None if not flags else sum(not f for f in flags) / len(flags)

    diffs, base_asr, md_asr = [], [], []
    for it in j["items"]:
        a, b, c = success(it, md[alpha]), success(it, rnd[alpha]), success(it, "baseline")
        if a is not None and b is not None:
            diffs.append(a - b)
            md_asr.append(a)
        if c is not None:
            base_asr.append(c)
    effect, ci, n = _paired(diffs, n_boot)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return Finding(**base, measure=f"ASR(mean_delta) − ASR(random control) at α = {alpha:g}, refusal matcher, "
                   "paired over requests", effect=effect, ci=ci, n=n, verdict=verdict(ci, n),
                   source="evals/jailbreak.json",
                   detail=f"ASR baseline {100 * mean(base_asr):.1f}%, mean_delta {100 * mean(md_asr):.1f}%")


def findings(run: RunDir | Path, n_boot: int = 1000) -> list[Finding]:
    """The three findings of one run directory."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    return [steerability(run, n_boot), diversity(run, n_boot), compliance(run, n_boot)]


def summary_lines(run: RunDir | Path, n_boot: int = 1000) -> list[str]:
    """A few lines for the terminal: each claim's verdict with its effect and interval, the range of
    cos(v_int, v_prompt) at the middle block, and where the report is."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    lines = []
    for f in findings(run, n_boot):
        eff = "" if f.effect is None else f" {f.effect:+.3f} [{f.ci[0]:+.3f}, {f.ci[1]:+.3f}] (n = {f.n})"
        lines.append(f"{f.claim}: {f.verdict}{eff}")
    if run.decompose_json.exists():
        dec = run.load_decomposition()
        mid = {v: len(d["cosine"]) // 2 for v, d in dec["per_value"].items() if d["cosine"]}
        cos = {v: dec["per_value"][v]["cosine"][m] for v, m in mid.items()}
        if cos:
            null = read_null(run.load_vectors().metadata) if run.vectors.exists() else None
            lines.append(cosine_line(cos, null, next(iter(mid.values()))))
    if run.report_html.exists():
        lines.append(f"report: {run.report_html.resolve()}")
    return lines
