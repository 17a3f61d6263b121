"""LLM judge over any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, llama.cpp, ``valuemech serve``).

Per text and value it asks the paper's yes/no question (after the user's query, when the text has
one). The score is graded: the request asks for ``logprobs`` (``top_logprobs: 20``, one token) and
the score is P(yes) / (P(yes) + P(no)) over the first token's top alternatives whose text, stripped
and lower-cased, is "yes" or "no"; ``expressed`` is score >= ``threshold``. An item whose top
alternatives hold neither word is labelled from the generated text (score 0 or 1) and counted in
``text_fallbacks``. With ``logprobs: auto`` (the default) a first request finds whether the endpoint
returns logprobs at all; one that does not makes the whole judge binary (0/1 scores, "binary" in its
name, a warning on stderr); ``logprobs: true`` makes that a one-line error, ``false`` asks for
the binary answer only. Requests run
concurrently (``concurrency``), each with a timeout and retries with exponential backoff on
timeouts, connection errors, HTTP 429/5xx and unparseable bodies (:mod:`valuemech.openai_client`).
With ``guided_choice: true`` a binary request also carries vLLM's ``guided_choice: ["yes", "no"]``
(understood by vLLM and ``valuemech serve``; leave it off for APIs that reject unknown fields). Answers are cached in a
SQLite file keyed by (judge name, sha256 of the request), so a rerun sends nothing.

An answer that is not yes/no is recorded as ``malformed``, a refusal as ``refused``, and a
request that still fails after its retries as ``error: ...``: such items get no label
(``expressed`` is None) and are counted — never turned into a label. An endpoint that cannot be
reached at all is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from valuemech.config import AT_LEAST_1, HTTP_URL, POSITIVE, OneOf, Range
from valuemech.errors import ValuemechError
from valuemech.io import make_dir
from valuemech.judges.base import JudgeResult
from valuemech.openai_client import ChatClient, RequestFailed
from valuemech.values import DEFINITIONS

SYSTEM = "You are an annotator of human values in text. Answer with a single word: yes or no."
QUESTION = ('Response:\n"""\n{text}\n"""\n\nDoes this response express the value "{name}" '
            "({definition})? Answer yes or no.")
QUERY = 'A user asked:\n"""\n{query}\n"""\n\n'  # put before QUESTION when the text answers a query
TOP_LOGPROBS = 20  # the most alternatives the OpenAI API returns per token
PROBE = ("I help my neighbours whenever they need it.", "benevolence", "")  # asked to find whether logprobs come back
_REFUSAL = re.compile(r"\b(i can(?:no|')t|i am unable|i'm unable|i won't|as an ai)\b", re.I)


def parse_answer(text: str | None) -> tuple[bool | None, str]:
    """``(label, status)``: status is ``ok``, ``refused`` or ``malformed``."""
    if text is None:
        return None, "malformed"
    words = re.findall(r"[a-zA-Z]+", text.lower())
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes", "ok"
    if _REFUSAL.search(text):
        return None, "refused"
    return None, "malformed"


class AnswerCache:
    """A tiny thread-safe SQLite key-value store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        make_dir(path.parent)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT)")
        except sqlite3.Error as exc:  # a read-only or full disk, not a database
            raise ValuemechError(f"{path}: cannot open the answer cache ({exc})") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, answer: str) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, answer))
                self._db.commit()
            except sqlite3.Error as exc:
                raise ValuemechError(f"{self.path}: cannot write the answer cache ({exc})") from None


def cached_request(cache: AnswerCache, name: str, body: dict, fetch) -> tuple[str | None, str | None]:
    """``(stored answer, None)`` from ``cache`` (keyed by ``name`` and the request) or from ``fetch(body)``
    (then stored), or ``(None, "error: ...")`` when the request fails (nothing cached)."""
    key = hashlib.sha256(json.dumps([name, body], sort_keys=True).encode()).hexdigest()
    stored = cache.get(key)
    if stored is None:
        try:
            stored = fetch(body)
        except RequestFailed as exc:
            return None, f"error: {exc}"
        cache.put(key, stored)
    return stored, None


def ask_yes_no(client: ChatClient, cache: AnswerCache, name: str, body: dict) -> tuple[bool | None, str]:
    """One yes/no request, answered from ``cache`` when asked before (:func:`cached_request`).

    Returns :func:`parse_answer`'s ``(label, status)``; a failed request gives ``(None, "error: ...")``
    and is not cached.
    """
    answer, error = cached_request(cache, name, body, client.complete)
    return (None, error) if error else parse_answer(answer)


def yes_probability(top: Sequence[Sequence]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over ``top`` (``[token, logprob]`` pairs) counting the tokens whose
    text, stripped and lower-cased, is "yes" or "no"; None when neither appears."""
    found = {"yes": [], "no": []}
    for token, logprob in top:
        word = str(token).strip().lower()
        if word in found and logprob is not None and math.isfinite(logprob):
            found[word].append(float(logprob))
    if not found["yes"] and not found["no"]:
        return None
    peak = max(found["yes"] + found["no"])
    yes, no = (sum(math.exp(lp - peak) for lp in found[w]) for w in ("yes", "no"))
    return yes / (yes + no)


def first_top_logprobs(choice: dict) -> list[list] | None:
    """``[token, logprob]`` of the first generated token's ``top_logprobs`` in a chat choice; None when
    the choice has no logprobs (the field missing or null, or no token)."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    return [[t.get("token", ""), t.get("logprob")] for t in content[0].get("top_logprobs") or []
            if isinstance(t, dict)]


def ask_graded(client: ChatClient, cache: AnswerCache, name: str, body: dict) -> tuple[dict | None, str]:
    """One logprobs request, answered from ``cache`` when asked before: ``({"text", "top"}, "ok")`` where
    ``top`` is :func:`first_top_logprobs` (None without logprobs), or ``(None, "error: ...")`` (not cached)."""

    def fetch(b: dict) -> str:
        choice = client.choice(b)
        content = choice["message"]["content"]
        return json.dumps({"text": content if isinstance(content, str) else "", "top": first_top_logprobs(choice)})

    stored, error = cached_request(cache, name, body, fetch)
    return (None, error) if error else (json.loads(stored), "ok")


class YesNoEndpoint:
    """Yes/no questions to an OpenAI-compatible ``/v1/chat/completions`` endpoint, asked concurrently
    through :func:`ask_yes_no` and cached; the shared part of the llm judges.

    Subclasses name themselves with ``WHO`` (in error messages) and ``KIND`` (the prefix of ``name``).
    """

    WHO, KIND = "yes/no endpoint", "yes-no"
    OPTIONS = {"base_url": HTTP_URL, "concurrency": Range(1, 1024), "timeout": POSITIVE, "retries": Range(0, 100),
               "backoff": Range(0, 60), "max_tokens": AT_LEAST_1}

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o-mini",
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 4,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 guided_choice: bool = False, cache: str | None = None, max_tokens: int = 3) -> None:
        from valuemech.models.catalog import cache_root

        self.model = model
        self.client = ChatClient(base_url, api_key_env, timeout, retries, backoff, who=self.WHO)
        self.concurrency = max(1, int(concurrency))
        self.guided_choice, self.max_tokens = bool(guided_choice), int(max_tokens)
        self.cache_name = f"{self.KIND}({model}@{self.client.base_url})"  # the cache's key prefix
        self._cache = AnswerCache(Path(cache) if cache else cache_root() / "judge_cache.sqlite")
        self.failures: dict[str, int] = {}  # answers other than ok, by kind, over every ask

    @property
    def name(self) -> str:
        return self.cache_name

    @property
    def requests_sent(self) -> int:
        return self.client.attempts

    def body(self, system: str, question: str) -> dict:
        """The request asking ``question`` under ``system`` (greedy, ``max_tokens``, guided when set)."""
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
        if self.guided_choice:
            body["guided_choice"] = ["yes", "no"]
        return body

    def ask(self, bodies: Sequence[dict], unreachable: str, how=ask_yes_no) -> list[tuple]:
        """``how``'s ``(answer, status)`` per body (:func:`ask_yes_no` or :func:`ask_graded`),
        ``concurrency`` at a time, counted in ``failures`` when not ok; when every request failed to
        connect, the one-line error ``unreachable``."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            answers = list(pool.map(lambda b: how(self.client, self._cache, self.cache_name, b), bodies))
        if answers and all(s.startswith("error: cannot connect") for _, s in answers):
            raise ValuemechError(unreachable)
        self._count_failures(s for _, s in answers)
        return answers

    def _count_failures(self, statuses) -> None:
        """Add the statuses other than ok to ``failures``, by kind."""
        for status in statuses:
            if status != "ok":
                kind = status.split(":")[0]
                self.failures[kind] = self.failures.get(kind, 0) + 1


class LLMJudge(YesNoEndpoint):
    """Value judge over an OpenAI-compatible ``/v1/chat/completions`` endpoint: graded from the
    yes/no logprobs where the endpoint returns them, else binary (see the module docstring)."""

    WHO, KIND = "llm judge", "llm"
    OPTIONS = {**YesNoEndpoint.OPTIONS, "logprobs": OneOf(("auto", "true", "false")), "threshold": Range(0, 1)}

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o-mini",
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 4,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 guided_choice: bool = False, cache: str | None = None, max_tokens: int = 3,
                 logprobs: bool | str = "auto", threshold: float = 0.5) -> None:
        super().__init__(base_url, model, api_key_env, concurrency, timeout, retries, backoff,
                         guided_choice, cache, max_tokens)
        self.logprobs = {"true": True, "false": False}.get(logprobs, logprobs) if isinstance(logprobs, str) else logprobs
        self.threshold = float(threshold)
        self._mode: str | None = None if self.logprobs in ("auto", True) else "binary"
        self.text_fallbacks = 0  # graded items whose top logprobs held neither yes nor no

    @property
    def mode(self) -> str:
        """``logprobs`` or ``binary``; under ``logprobs: auto``/``true`` the first read sends one probe request."""
        if self._mode is None:
            self._mode = self._probe()
        return self._mode

    @property
    def name(self) -> str:
        return f"{self.cache_name[:-1]},{self.mode})"

    def _unreachable(self) -> str:
        return f"llm judge: cannot reach {self.client.base_url} ({self.client.retries + 1} attempts per request)"

    def _probe(self) -> str:
        """Whether the endpoint returns logprobs, from one cached request; binary (with a warning) when not."""
        (answer, status), = self.ask([self._body(*PROBE, graded=True)], self._unreachable(), ask_graded)
        if answer is None:
            raise ValuemechError(f"llm judge: {self.client.base_url} failed the first request ({status[7:]})")
        if answer["top"] is not None:
            return "logprobs"
        if self.logprobs is True:
            raise ValuemechError(f"llm judge: {self.client.base_url} returns no logprobs for model {self.model} "
                                 f"(logprobs: true); use logprobs: auto or false for binary 0/1 labels")
        print(f"warning: llm judge: {self.client.base_url} returns no logprobs for model {self.model}; "
              f"its labels are binary (0/1 scores)", file=sys.stderr)
        return "binary"

    def _body(self, text: str, value: str, query: str = "", graded: bool = False) -> dict:
        """The request asking whether ``text`` (answering ``query``, when not empty) expresses ``value``."""
        q = QUESTION.format(text=text.strip(), name=value.replace("_", "-"),
                            definition=DEFINITIONS[value].rstrip(".").lower())
        if query.strip():
            q = QUERY.format(query=query.strip()) + q
        if not graded:
            return self.body(SYSTEM, q)
        body = {**self.body(SYSTEM, q), "max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        body.pop("guided_choice", None)  # servers refuse it beside logprobs
        return body

    def _grade(self, answer: dict | None, status: str) -> tuple[float, bool | None, str]:
        """``(score, expressed, status)`` of one graded answer; the text's yes/no when the top has neither."""
        if answer is None:
            return float("nan"), None, status
        p = None if answer["top"] is None else yes_probability(answer["top"])
        if p is not None:
            return p, p >= self.threshold, "ok"
        self.text_fallbacks += 1
        label, status = parse_answer(answer["text"])
        return (float("nan") if label is None else float(label)), label, status

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        queries = queries or [""] * len(texts)
        pairs = [(i, v) for i in range(len(texts)) for v in values]
        graded = self.mode == "logprobs"
        bodies = [self._body(texts[i] or "", v, queries[i] or "", graded) for i, v in pairs]
        fallbacks = self.text_fallbacks
        if graded:
            graded_answers = self.ask(bodies, self._unreachable(), ask_graded)
            answers = [self._grade(a, s) for a, s in graded_answers]
            self._count_failures(s for _, _, s in answers if s.split(":")[0] in ("malformed", "refused"))
        else:
            answers = [(float("nan") if label is None else float(label), label, status)
                       for label, status in self.ask(bodies, self._unreachable())]
        if self.text_fallbacks > fallbacks:
            print(f"warning: llm judge: {self.text_fallbacks - fallbacks} of {len(pairs)} answers had neither yes "
                  f"nor no among the top logprobs; labelled from the text (score 0 or 1)", file=sys.stderr)
        scores, expressed = [dict() for _ in texts], [dict() for _ in texts]
        failures: list[dict[str, str]] = [dict() for _ in texts]
        for (i, v), (score, label, status) in zip(pairs, answers):
            scores[i][v], expressed[i][v] = score, label
            if status != "ok":
                failures[i][v] = status
        return JudgeResult(scores, expressed, failures)
