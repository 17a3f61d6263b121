"""LLM judge over any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, llama.cpp, ``valuemech serve``).

Per text and value it asks the paper's binary question and reads "yes"/"no". Requests run
concurrently (``concurrency``), each with a timeout and retries with exponential backoff on
timeouts, connection errors, HTTP 429/5xx and unparseable bodies (:mod:`valuemech.openai_client`).
With ``guided_choice: true`` the request also carries vLLM's ``guided_choice: ["yes", "no"]``
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
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from valuemech.config import AT_LEAST_1, HTTP_URL, POSITIVE, Range
from valuemech.errors import ValuemechError
from valuemech.io import make_dir
from valuemech.judges.base import JudgeResult
from valuemech.openai_client import ChatClient, RequestFailed
from valuemech.values import DEFINITIONS

SYSTEM = "You are an annotator of human values in text. Answer with a single word: yes or no."
QUESTION = ('Response:\n"""\n{text}\n"""\n\nDoes this response express the value "{name}" '
            "({definition})? Answer yes or no.")
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


def ask_yes_no(client: ChatClient, cache: AnswerCache, name: str, body: dict) -> tuple[bool | None, str]:
    """One yes/no request, answered from ``cache`` (keyed by ``name`` and the request) when asked before.

    Returns :func:`parse_answer`'s ``(label, status)``; a failed request gives ``(None, "error: ...")``
    and is not cached.
    """
    key = hashlib.sha256(json.dumps([name, body], sort_keys=True).encode()).hexdigest()
    answer = cache.get(key)
    if answer is None:
        try:
            answer = client.complete(body)
        except RequestFailed as exc:
            return None, f"error: {exc}"
        cache.put(key, answer)
    return parse_answer(answer)


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
        self.name = f"{self.KIND}({model}@{self.client.base_url})"
        self._cache = AnswerCache(Path(cache) if cache else cache_root() / "judge_cache.sqlite")
        self.failures: dict[str, int] = {}  # answers other than ok, by kind, over every ask

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

    def ask(self, bodies: Sequence[dict], unreachable: str) -> list[tuple[bool | None, str]]:
        """:func:`ask_yes_no`'s ``(label, status)`` per body, ``concurrency`` at a time, counted in
        ``failures`` when not ok; when every request failed to connect, the one-line error ``unreachable``."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            answers = list(pool.map(lambda b: ask_yes_no(self.client, self._cache, self.name, b), bodies))
        if answers and all(s.startswith("error: cannot connect") for _, s in answers):
            raise ValuemechError(unreachable)
        for _, status in answers:
            if status != "ok":
                kind = status.split(":")[0]
                self.failures[kind] = self.failures.get(kind, 0) + 1
        return answers


class LLMJudge(YesNoEndpoint):
    """Binary value judge over an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    WHO, KIND = "llm judge", "llm"

    def _body(self, text: str, value: str) -> dict:
        q = QUESTION.format(text=text.strip(), name=value.replace("_", "-"),
                            definition=DEFINITIONS[value].rstrip(".").lower())
        return self.body(SYSTEM, q)

    def score(self, texts: Sequence[str], values: Sequence[str],
              langs: Sequence[str] | None = None, queries: Sequence[str] | None = None) -> JudgeResult:
        pairs = [(i, v) for i in range(len(texts)) for v in values]
        answers = self.ask([self._body(texts[i] or "", v) for i, v in pairs],
                           f"llm judge: cannot reach {self.client.base_url} "
                           f"({self.client.retries + 1} attempts per request)")
        scores = [dict() for _ in texts]
        expressed = [dict() for _ in texts]
        failures: list[dict[str, str]] = [dict() for _ in texts]
        for (i, v), (label, status) in zip(pairs, answers):
            expressed[i][v] = label
            scores[i][v] = float("nan") if label is None else float(label)
            if status != "ok":
                failures[i][v] = status
        return JudgeResult(scores, expressed, failures)
