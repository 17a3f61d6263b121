"""A small client for OpenAI-compatible ``/chat/completions`` endpoints: timeouts, retries, backoff.

Used by the ``llm`` judge and by the endpoint generation backend. Timeouts, connection errors,
HTTP 429/5xx and unparseable bodies are retried with exponential backoff; other 4xx answers are
a one-line error at once; a request that still fails raises :class:`RequestFailed` with the reason.
"""

from __future__ import annotations

import os
import threading
import time

import httpx

from valuemech.errors import ValuemechError


def check_key_env(api_key_env: str | None, who: str) -> str | None:
    """The API key from environment variable ``api_key_env`` (None without one); unset is a one-line error."""
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise ValuemechError(f"{who}: environment variable {api_key_env} is not set "
                             f"(set it, or use api_key_env: null for a keyless local server)")
    return key


class RequestFailed(Exception):
    """A request that failed after all its retries (the message says why)."""


class ChatClient:
    """POST chat requests to ``{base_url}/chat/completions``; thread-safe, counts attempts."""

    def __init__(self, base_url: str, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5, who: str = "endpoint") -> None:
        self.base_url = base_url.rstrip("/")
        self.key = check_key_env(api_key_env, who)
        self.timeout, self.retries, self.backoff = float(timeout), max(0, int(retries)), float(backoff)
        self.who = who
        self.attempts = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def complete(self, body: dict) -> str:
        """The first choice's message content, or :class:`RequestFailed` after the retries."""
        content = self.choice(body)["message"]["content"]
        return content if isinstance(content, str) else ""

    def choice(self, body: dict) -> dict:
        """The whole first choice (``message``, ``logprobs``, ``finish_reason``, ...), or
        :class:`RequestFailed` after the retries; one without a ``message`` mapping is unparseable."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            with self._lock:
                self.attempts += 1
            try:
                r = self._client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
            except httpx.ConnectError as exc:
                last = f"cannot connect ({exc.__class__.__name__})"
                continue
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g} s"
                continue
            except httpx.HTTPError as exc:
                last = exc.__class__.__name__
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code >= 400:
                raise ValuemechError(f"{self.who}: {self.base_url} answered HTTP {r.status_code}: "
                                     f"{' '.join(r.text[:200].split())}")
            try:
                choice = r.json()["choices"][0]
                choice["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                last = "unparseable response body"
                continue
            return choice
        raise RequestFailed(last)
