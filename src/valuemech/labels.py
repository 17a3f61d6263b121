"""The label stage: judge every response for every value, appended to ``labels.jsonl`` (resumable).

Each line records the sha256 of the text it judged (``text_sha256``), so a label is matched to its
response by id *and* content: a response edited after labelling is labelled again (the newest line
of an id counts), and :func:`match_problem` says when labels and responses are not one to one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from valuemech.errors import ValuemechError
from valuemech.io import append_jsonl, read_jsonl, repair_jsonl
from valuemech.judges.base import Judge
from valuemech.judges.evaluate import roc_auc
from valuemech.judges.random_judge import RandomJudge
from valuemech.values import VALUES


def label_records(judge: Judge, records: list[dict], out_path: Path, text_key: str = "response",
                  id_key: str = "id", batch_size: int = 64, progress: bool = True,
                  query_key: str = "query") -> int:
    """Label records not yet in ``out_path`` (or whose text changed since); return how many lines were written.

    Each record's ``query_key`` field (the query it answers, if any) goes to the judge beside the text.
    Output lines: ``{"response_id", "judge", "text_sha256", "scores": {value: float}, "expressed": {value: bool}}``.
    A ``labels.jsonl`` written by another judge is an error (use a new run directory).
    """
    out_path = Path(out_path)
    repair_jsonl(out_path)
    existing = read_labels(out_path)
    other = {r.get("judge") for r in existing} - {judge.name}
    if other:
        raise ValuemechError(f"{out_path} holds labels from judge {sorted(other)[0]!r}, "
                             f"not {judge.name!r}; use a new run directory")
    latest = latest_labels(existing)
    todo = [r for r in records if not _labels_text(latest.get(r[id_key]), r.get(text_key) or "")]
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="label", unit="resp",
               disable=not progress)
    written = 0
    for i in range(0, len(todo), batch_size):
        batch = todo[i: i + batch_size]
        result = judge.score([r.get(text_key) or "" for r in batch], VALUES,
                             [r.get("lang", "en") for r in batch], [r.get(query_key) or "" for r in batch])
        failures = result.failures or [{} for _ in batch]
        lines = []
        for r, s, e, f in zip(batch, result.scores, result.expressed, failures):
            line = {"response_id": r[id_key], "judge": judge.name, "text_sha256": text_digest(r.get(text_key) or ""),
                    "scores": {v: (None if x != x else x) for v, x in s.items()}, "expressed": e}
            if f:
                line["failures"] = f
            lines.append(line)
        append_jsonl(out_path, lines)
        written += len(lines)
        bar.update(len(lines))
    bar.close()
    return written


def text_digest(text: str) -> str:
    """What a label line records of the text it judged: sha256, 16 hex digits."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def latest_labels(rows: list[dict]) -> dict[str, dict]:
    """The newest line of every response id (a response labelled again after an edit)."""
    return {r["response_id"]: r for r in rows}


def _labels_text(row: dict | None, text: str) -> bool:
    """Whether label line ``row`` judged ``text`` (a line without ``text_sha256``: by id alone)."""
    return row is not None and row.get("text_sha256", text_digest(text)) == text_digest(text)


def match_problem(records: list[dict], rows: list[dict], where: Path | str = "labels.jsonl") -> str | None:
    """Why ``labels.jsonl`` rows do not label ``responses.jsonl`` records one to one (by id and text), or None."""
    latest = latest_labels(rows)
    ids = {r["id"] for r in records}
    extra = [i for i in latest if i not in ids]
    if extra:
        return (f"{where} labels {len(extra)} responses that the responses file does not hold (first: {extra[0]}); "
                "the responses were truncated or edited, or the labels belong to another run")
    changed = [r["id"] for r in records if r["id"] in latest and not _labels_text(latest[r["id"]], r.get("response") or "")]
    if changed:
        return f"{len(changed)} responses changed after {where} labelled them (first: {changed[0]})"
    missing = [r["id"] for r in records if r["id"] not in latest]
    if missing:
        return f"{where} labels {len(ids) - len(missing)} of {len(ids)} responses (first without a label: {missing[0]})"
    return None


def read_labels(path: Path) -> list[dict]:
    """``labels.jsonl`` rows, checked for what readers use: ``response_id``, ``expressed`` {value id: bool | null},
    ``scores`` {value id: number | null} (when present)."""
    rows = read_jsonl(Path(path))
    for i, r in enumerate(rows, 1):
        rid, exp = r.get("response_id"), r.get("expressed")
        if not isinstance(rid, str) or not rid:
            raise ValuemechError(f"{path}: record {i} has no response_id")
        if not isinstance(exp, dict) or not all(k in VALUES and (x is None or isinstance(x, bool))
                                                for k, x in exp.items()):
            raise ValuemechError(f"{path}: record {i}: expressed must map value ids to true/false/null")
        if not _scores_ok(r.get("scores", {})):
            raise ValuemechError(f"{path}: record {i}: scores must map value ids to numbers or null")
        if not isinstance(r.get("judge", ""), str):
            raise ValuemechError(f"{path}: record {i}: judge must be a string")
        if not isinstance(r.get("text_sha256", ""), str):
            raise ValuemechError(f"{path}: record {i}: text_sha256 must be a string")
    return rows


def _scores_ok(scores: object) -> bool:
    """Whether a label line's ``scores`` is ``{value id: number | null}``."""
    return isinstance(scores, dict) and all(
        k in VALUES and (x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)))
        for k, x in scores.items())


def load_labels(path: Path) -> tuple[dict[str, dict[str, bool]], str | None]:
    """``({response_id: {value: expressed}}, judge name)`` from ``labels.jsonl``."""
    rows = read_labels(Path(path))
    labels = {r["response_id"]: r["expressed"] for r in rows}
    judges = {r.get("judge") for r in rows}
    return labels, (judges.pop() if len(judges) == 1 else None)


def following_rates(records: list[dict], labels: dict[str, dict[str, bool | None]]) -> dict[str, dict]:
    """Per value: how often responses express it when prompted with it, when prompted with another
    value, and unprompted (a judge-based measure of how well the model follows value prompts)."""

    def rate(rows: list[dict], value: str) -> float | None:
        decided = [labels[r["id"]][value] for r in rows if r["id"] in labels and labels[r["id"]].get(value) is not None]
        return sum(bool(x) for x in decided) / len(decided) if decided else None

    out = {}
    for v in VALUES:
        with_v = [r for r in records if r["condition"] == "prompted" and r["prompted_value"] == v]
        other = [r for r in records if r["condition"] == "prompted" and r["prompted_value"] not in (None, v)]
        intrinsic = [r for r in records if r["condition"] == "intrinsic"]
        out[v] = {"n_prompted_with": len(with_v), "prompted_with": rate(with_v, v),
                  "prompted_other": rate(other, v), "intrinsic": rate(intrinsic, v)}
    return out


#: The warning shown beside a judge-validity table whose mean AUC is near chance.
VALIDITY_WARNING = ("the judge barely tells prompted values apart (mean AUC below 0.6 or its interval includes 0.5): "
                    "value vectors may measure the judge's vocabulary, not the model's values")


def judge_validity(records: list[dict], label_rows: list[dict], n_boot: int = 200, seed: int = 0) -> dict:
    """How well the judge's score for value v picks out responses prompted with v among all prompted
    responses (per value ROC-AUC, their mean with a 95% bootstrap interval over responses), beside the
    ``random`` judge's on the same texts (chance). Measures the model's prompt following and the judge
    together. ``status`` is ``"n/a"`` with a ``reason`` when fewer than two values were prompted."""
    latest = latest_labels(label_rows)
    prompted = [r for r in records if r.get("condition") == "prompted" and r.get("prompted_value") in VALUES
                and r["id"] in latest]
    counts = {v: sum(r["prompted_value"] == v for r in prompted) for v in VALUES}
    values = [v for v in VALUES if counts[v]]
    out: dict = {"status": "n/a", "reason": None, "n": len(prompted), "n_boot": n_boot, "warning": None,
                 "judge": next(iter({latest[r["id"]].get("judge") for r in prompted}), None),
                 "per_value": {v: {"n_prompted": counts[v], "reason": None if counts[v] else "not prompted"}
                               for v in VALUES}}
    if not prompted:
        out["reason"] = "no prompted responses with labels in this run"
        return out
    if len(values) < 2:
        out["reason"] = f"only {values[0]} was prompted in this run: no other prompted value to tell it apart from"
        return out
    judged = _score_matrix([latest[r["id"]].get("scores") or {} for r in prompted], values)
    chance = _score_matrix(RandomJudge().score([r.get("response") or "" for r in prompted], values).scores, values)
    target = np.array([[r["prompted_value"] == v for v in values] for r in prompted])
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(prompted), len(prompted)) for _ in range(n_boot)]
    out["mean"] = {}
    for key, scores in (("auc", judged), ("random_auc", chance)):
        per_value, mean = _auc_with_intervals(target, scores, draws)
        for v, (auc, ci) in zip(values, per_value):
            out["per_value"][v].update({key: auc, f"{key}_ci": ci})
        out["mean"].update({key: mean[0], f"{key}_ci": mean[1]})
    m = out["mean"]
    near_chance = not (m["auc_ci"][0] > 0.5 or m["auc_ci"][1] < 0.5)  # NaN interval: near chance too
    out.update(status="ok", warning=VALIDITY_WARNING if near_chance or not m["auc"] >= 0.6 else None)
    return out


def _auc_with_intervals(target: np.ndarray, scores: np.ndarray, draws: list[np.ndarray]
                        ) -> tuple[list[tuple[float, list[float]]], tuple[float, list[float]]]:
    """Per column ``(AUC, 95% interval)`` and ``(mean AUC over columns, its interval)``, resampling rows by ``draws``."""
    point = _aucs(target, scores)
    boots = np.array([_aucs(target[idx], scores[idx]) for idx in draws]).reshape(len(draws), len(point))
    means = np.array([_nanmean(row) for row in boots])
    return [(a, _interval(boots[:, j])) for j, a in enumerate(point)], (_nanmean(point), _interval(means))


def _score_matrix(scores: list[dict], values: list[str]) -> np.ndarray:
    """``[responses, values]`` float scores; a missing or undecided score is NaN (left out of that value)."""
    return np.array([[np.nan if s.get(v) is None else float(s[v]) for v in values] for s in scores], dtype=np.float64)


def _aucs(target: np.ndarray, scores: np.ndarray) -> list[float]:
    """Per column: ROC-AUC of the scores for the target column, over rows whose score is not NaN."""
    keep = ~np.isnan(scores)
    return [roc_auc(target[keep[:, j], j], scores[keep[:, j], j]) for j in range(scores.shape[1])]


def _nanmean(xs) -> float:
    arr = np.asarray(xs, dtype=np.float64)
    return float(np.nanmean(arr)) if (~np.isnan(arr)).any() else float("nan")


def _interval(samples: np.ndarray) -> list[float]:
    """95% percentile interval of the non-NaN samples (NaN, NaN without any)."""
    arr = samples[~np.isnan(samples)]
    return [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))] if len(arr) else [float("nan")] * 2


def read_label_input(path: Path) -> list[dict]:
    """Texts to label from a JSONL file of ``{"text": ..., "id"?: ..., "query"?: ...}`` (ids default to line numbers)."""
    path = Path(path)
    if not path.is_file():
        raise ValuemechError(f"input file {path} does not exist")
    records = read_jsonl(path)
    if not records:
        raise ValuemechError(f"{path}: no records")
    for i, r in enumerate(records):
        if not isinstance(r.get("text"), str):
            raise ValuemechError(f"{path}: record {i + 1} has no 'text' string")
        if r.get("query") is not None and not isinstance(r["query"], str):
            raise ValuemechError(f"{path}: record {i + 1}: 'query' must be a string")
        r.setdefault("id", str(i + 1))
        r["id"] = str(r["id"])
    return records
