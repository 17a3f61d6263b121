"""``valuemech serve``: an OpenAI-compatible HTTP server over any model valuemech can load.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}`` (404 for a model it does not serve),
``POST /v1/chat/completions`` (``n``, ``stop``, ``max_completion_tokens``, ``seed`` (unseeded
sampling varies), ``stream`` with ``stream_options.include_usage``: token by token for one choice without ``stop``
or ``logprobs``, else one chunk per choice once generated; ``logprobs`` + ``top_logprobs`` (chat format, the model's distribution); ``tools``,
``response_format``, ``logit_bias`` and penalties are refused with 400, as is any other unknown key), ``GET /v1/stats`` (request and batch counts, for tests and load
scripts), ``GET /health``. Extensions to the chat request:

- ``guided_choice: ["yes", "no"]`` (as in vLLM): the answer is the choice with the highest total
  log-probability after the prompt (one forward pass, no sampling);
- ``steering: {"vector": "shared.power", "layer": 15, "alpha": 4.0, "relative": false,
  "positions": "all", "operator": "add"}``: adds ``alpha * vector[layer]`` (or ``alpha * R_l *
  unit(vector)`` when ``relative``) for this request only; vectors come from the run directory given
  at start-up (``vectors.safetensors`` names like ``intrinsic.power``, ``components.safetensors``
  names like ``shared.power`` or ``mean_delta``). ``vector`` may be a list, applied together (added
  as the sum, ablated as the span); ``operator`` ``ablate`` removes the residual's projection on the
  direction at every position (no ``alpha`` needed), ``ablate_add`` removes it and then adds;
- ``steering: {"neurons": "prompted.power", "beta": 3.0}``: multiplies the activations of one class
  (``shared`` / ``intrinsic`` / ``prompted``) of a value's neurons from the run's ``neurons.json``.

Concurrent requests are batched (``Batcher``): one worker thread owns the model and generates the
requests that arrived together (up to ``max_batch`` rows; ``n`` choices are ``n`` rows) in one
left-padded batch, each row with its own token budget, stop strings, sampling, seed, log-probabilities
(``generate.sample_rows``; when every row is unsteered, the head their prompts share is run once, as
for the ten questions an ``llm`` judge asks about one text) and its own steering: a vector
(``hooks.add_per_row``) or a neuron class with β (``hooks.scale_per_row``). Steering a row cannot carry (``ablate`` / ``ablate_add``,
``positions`` other than ``all``), ``guided_choice`` and token streaming run as a batch of their own,
under the request's hooks; so steering never leaks between requests.
Binds to 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Union

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from valuemech import hooks
from valuemech.config import GenerationConfig
from valuemech.errors import ValuemechError
from valuemech.batching import continuation_logliks
from valuemech.generate import Row, TokenLogprobs, sample_rows, stable_seed
from valuemech.models.loading import LoadedModel
from valuemech.neurons import NEURON_CLASSES
from valuemech.rundir import RunDir

MAX_BODY_BYTES = 1_000_000
GUIDED_LOGITS_BYTES = 2 * 1024 ** 3  # float32 logits of all guided choices of one request, at most
LOOPBACK = ("127.0.0.1", "localhost", "::1")
API_KEY_ENV = "VALUEMECH_API_KEY"
MAX_BATCH = 16  # rows generated together by default (--max-batch)
SHARE_PREFIX = 16  # unsteered rows of a batch whose prompts begin alike for this many tokens run that head once
MAX_BATCH_RANGE = (1, 256)
BATCH_WAIT_S = 0.005  # the worker gathers requests until none has come for this long ...
BATCH_WAIT_MAX_S = 0.1  # ... while fewer rows have come than were in flight (the last batch's clients come back)


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:8000`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Steering(BaseModel):
    """Either a vector (``vector``, ``layer``, ``alpha``) or a neuron class (``neurons``, ``beta``)."""

    model_config = ConfigDict(extra="forbid")  # a typo ("relativ") would steer differently than asked

    vector: Optional[Union[str, list[str]]] = None  # a list is applied together
    layer: Optional[int] = None
    alpha: Optional[float] = Field(None, allow_inf_nan=False)  # NaN/inf would poison every activation
    relative: bool = False
    positions: Literal["all", "prompt", "generated"] = "all"
    operator: Literal["add", "ablate", "ablate_add"] = "add"
    neurons: Optional[str] = None  # "<class>.<value>", class shared | intrinsic | prompted (neurons.json)
    beta: Optional[float] = Field(None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_kind(self) -> "Steering":
        if (self.vector is None) == (self.neurons is None):
            raise ValueError("steering needs exactly one of 'vector' (with layer, alpha) or 'neurons' (with beta)")
        if self.vector is not None and (self.layer is None or (self.alpha is None and self.operator != "ablate")):
            raise ValueError("steering with a vector needs 'layer' and 'alpha' ('alpha' may be left out for ablate)")
        if isinstance(self.vector, list) and not 1 <= len(self.vector) <= 32:
            raise ValueError("a list of steering vectors needs 1 to 32 names")
        if self.neurons is not None and self.beta is None:
            raise ValueError("steering with 'neurons' needs 'beta'")
        if self.neurons is not None and (self.operator != "add" or self.layer is not None or self.alpha is not None
                                         or self.relative):
            raise ValueError("steering with 'neurons' takes 'beta' (and 'positions'), not operator, layer, alpha "
                             "or relative")
        return self


UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias",
               "frequency_penalty", "presence_penalty", "parallel_tool_calls",
               "audio", "modalities", "prediction", "reasoning_effort", "web_search_options")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a parameter it would not honour is a 400, never ignored

    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1, le=4096)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = Field(None, ge=0, le=2 ** 63 - 1)  # what torch.manual_seed takes
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None  # accepted, not used
    guided_choice: Optional[list[str]] = Field(None, min_length=1, max_length=32)
    steering: Optional[Steering] = None

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: object) -> object:
        if isinstance(data, dict):
            bad = [k for k in UNSUPPORTED if k in data and data[k] not in (None, 0, False)]
            if bad:
                raise ValueError(f"unsupported parameter(s) {', '.join(bad)}: valuemech serve does not honour them")
        return data

    @model_validator(mode="after")
    def _checks(self) -> "ChatRequest":
        stops = self.stop_list()
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes 1 to 4 non-empty strings")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens differ; give one")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.logprobs and self.guided_choice:
            raise ValueError("logprobs is not available with guided_choice")
        if self.guided_choice and self.n != 1:
            raise ValueError("guided_choice answers one choice; n must be 1")
        return self

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 128


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


class VectorStore:
    """Named steering vectors ``[n_layers, hidden]`` of a run directory (its vectors and components)."""

    def __init__(self, run_dir: Path | None, lm: LoadedModel) -> None:
        from valuemech.steering import SteeringSource

        run = RunDir(run_dir) if run_dir is not None else None
        self.source = SteeringSource.from_run(run, lm) if run is not None else None
        self.neurons: dict | None = run.load_neurons() if run is not None and run.neurons_json.exists() else None
        self.vectors: dict[str, torch.Tensor] = {}
        if self.source is not None:
            self.vectors.update(self.source.vectors.vectors)
            if self.source.components is not None:
                self.vectors.update(self.source.components.tensors)

    def context(self, s: Steering | None, lm: LoadedModel):
        """The context manager that applies ``s`` (a vector or a neuron class) for one request."""
        from contextlib import nullcontext

        from valuemech.steering import scale_neuron_class

        if s is None:
            return nullcontext()
        if s.neurons is None:
            directions, added = self.resolve(s, lm)
            return hooks.apply_operator(lm, s.operator, directions, added, positions=s.positions)
        return scale_neuron_class(lm, self.neurons, *self.neuron_set(s), s.beta, positions=s.positions)

    def neuron_set(self, s: Steering) -> tuple[str, str]:
        """``(value, class)`` of a neuron steering request, checked against the run's neurons.json."""
        cls, _, value = s.neurons.partition(".")
        if self.neurons is None:
            raise HTTPException(400, "neuron steering needs neurons.json (start the server with --run DIR of a run "
                                     "that ran the neurons stage)")
        if cls not in NEURON_CLASSES or value not in self.neurons.get("per_value", {}):
            raise HTTPException(400, f"unknown neuron set {s.neurons!r}; use <shared|intrinsic|prompted>.<value> "
                                     f"with a value of neurons.json ({', '.join(self.neurons.get('per_value', {}))})")
        return value, cls

    def row_steering(self, s: Steering | None, lm: LoadedModel) -> tuple[dict | None, dict | None, bool]:
        """The request's steering for one batch row: ``(add, scale, batchable)``: a vector added at every
        position ``{layer: vector}`` or neuron factors ``{layer: [d_mlp]}`` (``hooks.scale_per_row``); not
        batchable when a row cannot carry it (``ablate`` / ``ablate_add``, ``positions`` other than all)."""
        if s is None:
            return None, None, True
        if s.positions != "all" or s.operator != "add":
            return None, None, False
        if s.neurons is not None:
            from valuemech.steering import neuron_class

            return None, hooks.neuron_factors(lm, neuron_class(self.neurons, *self.neuron_set(s)), s.beta), True
        _, added = self.resolve(s, lm)
        return {layer: torch.stack(vs).sum(0) for layer, vs in added.items()}, None, True

    def resolve(self, s: Steering, lm: LoadedModel) -> tuple[dict[int, list[torch.Tensor]], dict[int, list[torch.Tensor]]]:
        """The request's directions (for ablation) and scaled vectors (to add), ``{layer: [v, ...]}``."""
        from valuemech.steering import scaled

        names = [s.vector] if isinstance(s.vector, str) else list(s.vector)
        for name in names:
            if name not in self.vectors:
                known = ", ".join(sorted(self.vectors)[:8]) or "none (start the server with --run DIR)"
                raise HTTPException(400, f"unknown steering vector {name!r}; available: {known}")
        if not -lm.n_layers <= s.layer < lm.n_layers:
            raise HTTPException(400, f"steering layer {s.layer} out of range 0..{lm.n_layers - 1}")
        layer = s.layer % lm.n_layers
        rows = [self.vectors[n][layer] for n in names]
        if s.operator != "add" and all(float(r.norm()) == 0 for r in rows):
            raise HTTPException(400, f"cannot ablate a zero vector at layer {layer}")
        if s.operator == "ablate":
            return {layer: rows}, {}
        norm = None
        if s.relative:
            if self.source.vectors.residual_norm is None:
                raise HTTPException(400, "relative steering needs residual norms (vectors.safetensors)")
            norm = self.source.residual_norm(layer)
        return {layer: rows}, {layer: [scaled(r, s.alpha, s.relative, norm) for r in rows]}


def _prompt_ids(lm: LoadedModel, messages: list[Message]) -> list[int]:
    """The chat template applied to ``messages``; a conversation the template refuses (roles out of
    the order it allows) is a 400."""
    from jinja2 import TemplateError

    msgs = [m.model_dump() for m in messages]
    if not lm.system_ok and msgs[0]["role"] == "system" and len(msgs) > 1:
        sys = msgs.pop(0)["content"]
        msgs[0] = {**msgs[0], "content": f"{sys}\n\n{msgs[0]['content']}"}
    try:
        text = lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except TemplateError as exc:
        raise HTTPException(400, f"messages: the model's chat template refuses them ({' '.join(str(exc).split())[:200]})")
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def choice_token_ids(lm: LoadedModel, choices: list[str]) -> list[list[int]]:
    """Each guided choice's token ids; an empty one is a 400."""
    conts = [lm.tokenizer.encode(c, add_special_tokens=False) for c in choices]
    if any(not c for c in conts):
        raise HTTPException(400, "guided_choice entries must be non-empty")
    return conts


def choice_logprobs(lm: LoadedModel, prompt: list[int], choices: list[str]) -> list[float]:
    """Total log-probability of each choice's tokens after ``prompt`` (one batched forward)."""
    return continuation_logliks(lm, [(prompt, c) for c in choice_token_ids(lm, choices)]).tolist()


def logprobs_content(lm: LoadedModel, ids: list[int], lps: TokenLogprobs) -> list[dict]:
    """OpenAI's chat ``logprobs.content``: per generated token its string, log-probability, bytes and
    alternatives, from the model's distribution (before temperature) recorded while generating
    (``generate.RowLogprobs``)."""
    def entry(tok: int, logprob: float) -> dict:
        text = lm.tokenizer.decode([tok])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return [{**entry(t, lp), "top_logprobs": [entry(a, alp) for a, alp in alts]} for t, (lp, alts) in zip(ids, lps)]


class TokenQueue:
    """A transformers streamer that hands each generated token id (batch of one) to an iterator."""

    def __init__(self) -> None:
        import queue

        self.queue: "queue.Queue[int | None]" = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first put is the prompt
            self.prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            self.queue.put(int(tok))

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self):
        while (tok := self.queue.get(timeout=600)) is not None:
            yield tok


@dataclass
class Job:
    """Work for the model: ``rows`` to batch with other jobs' rows, or ``alone``, a call run by itself."""

    rows: list[Row] = field(default_factory=list)
    alone: Optional[Callable[[], object]] = None
    future: Future = field(default_factory=Future)


class Batcher:
    """One worker thread owns the model. It takes the first waiting job, gathers the jobs that arrive
    soon after (``gather``) up to ``max_batch`` rows, and generates their rows together (``sample_rows``,
    in chunks of ``max_batch``); a job ``alone`` runs by itself. Step-level batching: a request that
    arrives while a batch runs waits for the next one."""

    def __init__(self, lm: LoadedModel, max_batch: int = MAX_BATCH, wait_s: float = BATCH_WAIT_S,
                 max_wait_s: float = BATCH_WAIT_MAX_S) -> None:
        self.lm, self.max_batch, self.wait_s, self.max_wait_s = lm, max_batch, wait_s, max_wait_s
        self.last_rows = 0  # rows of the last batch: clients likely to send their next requests at once
        self.waiting_rows = 0  # rows queued, not yet taken
        self.arriving = 0  # chat requests received, not yet validated and queued (``arrive``)
        self.count_lock = threading.Lock()
        self.queue: "queue.Queue[Job]" = queue.Queue()
        self.stats = {"batches": 0, "batched_rows": 0, "largest_batch": 0}
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    def submit(self, job: Job) -> Future:
        """Queue ``job``; its future holds the rows' ``(ids, finish)`` or the call's return value."""
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.loop, name="valuemech-batcher", daemon=True)
                self.thread.start()
        with self.count_lock:
            self.waiting_rows += len(job.rows)
        self.queue.put(job)
        return job.future

    def arrive(self, step: int) -> None:
        """Count a chat request received (+1) or done arriving (-1: queued, refused or answered)."""
        with self.count_lock:
            self.arriving += step

    def take(self, timeout: float | None = None) -> Job:
        """The next queued job (``queue.Empty`` after ``timeout`` seconds)."""
        job = self.queue.get(timeout=timeout)
        with self.count_lock:
            self.waiting_rows -= len(job.rows)
        return job

    def gather(self) -> list[Job]:
        """The first waiting job and those arriving after it, up to ``max_batch`` rows, for at most
        ``max_wait_s``: until none has come for ``wait_s`` while no request is still arriving (being
        read or validated) and as many rows have come as were in flight when the last batch ended (its
        rows, whose clients are sending their next requests, plus the rows queued meanwhile): so
        concurrent clients fall into step instead of trickling into small batches. After an idle
        spell nobody is expected back."""
        expected = self.last_rows + self.waiting_rows
        t0 = time.monotonic()
        jobs = [self.take()]
        start = last = time.monotonic()
        expected = 0 if start - t0 > self.max_wait_s else min(expected, self.max_batch)
        rows = len(jobs[0].rows)
        while jobs[0].alone is None and rows < self.max_batch:
            now = time.monotonic()
            if now >= start + self.max_wait_s or (rows >= expected and not self.arriving and now >= last + self.wait_s):
                break
            try:
                jobs.append(self.take(timeout=min(self.wait_s, start + self.max_wait_s - now)))
            except queue.Empty:
                continue
            rows, last = rows + len(jobs[-1].rows), time.monotonic()
        if jobs[0].alone is None:
            self.last_rows = min(rows, self.max_batch)
        return jobs

    def loop(self) -> None:
        """Run jobs forever: the batchable ones together, then each one to run alone."""
        while True:
            jobs = self.gather()
            self.run_rows([j for j in jobs if j.alone is None])
            for job in (j for j in jobs if j.alone is not None):
                self.settle([job], job.alone)

    def run_rows(self, jobs: list[Job]) -> None:
        """Generate the jobs' rows in batches of at most ``max_batch`` and hand each job its rows."""
        owners = [(job, k) for job in jobs for k in range(len(job.rows))]
        results: dict[int, list] = {id(job): [None] * len(job.rows) for job in jobs}
        failed: set[int] = set()
        for i in range(0, len(owners), self.max_batch):
            chunk = owners[i:i + self.max_batch]
            try:
                out = self.generate([job.rows[k] for job, k in chunk])
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
                for job in {id(j): j for j, _ in chunk}.values():
                    if id(job) not in failed:
                        failed.add(id(job))
                        job.future.set_exception(exc)
                continue
            for (job, k), res in zip(chunk, out):
                results[id(job)][k] = res
        for job in jobs:
            if id(job) not in failed:
                job.future.set_result(results[id(job)])

    def generate(self, rows: list[Row]) -> list[tuple[list[int], str]]:
        """One batch on the model (counted in ``stats``)."""
        self.stats["batches"] += 1
        self.stats["batched_rows"] += len(rows)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(rows))
        return sample_rows(self.lm, rows, share_prefix=SHARE_PREFIX)

    @staticmethod
    def settle(jobs: list[Job], call: Callable[[], object]) -> None:
        """Run ``call`` and give its value (or its exception) to the jobs."""
        try:
            value = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job in jobs:
            job.future.set_result(value)


def create_app(lm: LoadedModel, run_dir: Path | None = None, model_name: str | None = None,
               max_body: int = MAX_BODY_BYTES, api_key: str | None = None,
               allowed_hosts: tuple[str, ...] | None = None, max_batch: int = MAX_BATCH) -> FastAPI:
    """The FastAPI application (see the module docstring). With ``api_key``, every route but
    ``/health`` needs ``Authorization: Bearer <key>`` (401); with ``allowed_hosts``, a request whose
    ``Host`` names another host is a 421 (DNS rebinding against a loopback server); ``max_batch``: the
    most rows generated together (1: one request at a time)."""
    import secrets

    app = FastAPI(title="valuemech serve")
    name = model_name or lm.name
    store = VectorStore(run_dir, lm)
    batcher = Batcher(lm, check_max_batch(max_batch))
    app.state.batcher = batcher  # for tests and load scripts
    stats = {"chat_completions": 0, "models": 0, "rejected": 0}

    @app.middleware("http")
    async def door(request: Request, call_next):
        if allowed_hosts is not None and host_name(request.headers.get("host", "")) not in allowed_hosts:
            stats["rejected"] += 1
            return JSONResponse({"error": {"message": "Host header not allowed (this server answers "
                                                      f"{', '.join(allowed_hosts)} only)"}}, status_code=421)
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                stats["rejected"] += 1
                return JSONResponse({"error": {"message": "missing or wrong API key (Authorization: Bearer <key>)",
                                               "type": "invalid_request_error"}}, status_code=401)
        return await limit_body(request, call_next)

    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            stats["rejected"] += 1
            return JSONResponse({"error": {"message": f"request body over {max_body} bytes"}}, status_code=413)
        if length is None and request.method == "POST":  # a chunked body would bypass the size limit
            stats["rejected"] += 1
            return JSONResponse({"error": {"message": "a request body needs a Content-Length header"}}, status_code=411)
        if request.method != "POST" or request.url.path != "/v1/chat/completions":
            return await call_next(request)
        batcher.arrive(1)  # the worker waits for it a little (Batcher.gather)
        request.state.arriving = True
        try:
            return await call_next(request)
        finally:
            arrived(request)

    def arrived(request: Request) -> None:
        """The request is queued for the model or refused: the worker need not wait for it any more."""
        if getattr(request.state, "arriving", False):
            request.state.arriving = False
            batcher.arrive(-1)

    @app.exception_handler(ValuemechError)
    async def valuemech_error(_request: Request, exc: ValuemechError):  # a request the run cannot serve
        stats["rejected"] += 1
        return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, status_code=400)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the framework's (a body that does not parse)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        stats["rejected"] += 1
        return JSONResponse({"error": {"message": exc.detail, "type": "invalid_request_error"}},
                            status_code=exc.status_code)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        stats["rejected"] += 1
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": {"message": f"{where}: {first.get('msg', 'invalid request')}",
                                       "type": "invalid_request_error"}}, status_code=400)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/stats")
    def get_stats():
        return {**stats, **batcher.stats}

    card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "valuemech"}

    @app.get("/v1/models")
    def models():
        stats["models"] += 1
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str):
        stats["models"] += 1
        if model_id != name:
            raise HTTPException(404, f"model {model_id!r} is not served here; this server serves {name!r}")
        return card

    def stream_tokens(req: ChatRequest, row: Row, hooked: Callable) -> StreamingResponse:
        """Server-sent events as tokens are produced (one choice, no stop strings, no logprobs), run as a
        batch of its own."""
        streamer = TokenQueue()
        prompt = row.prompt

        def work() -> list:
            try:
                with hooked():
                    return sample_rows(lm, [row], streamer=streamer)
            finally:
                streamer.end()  # the reader never waits on a generation that failed

        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        include_usage = req.stream_options is not None and req.stream_options.include_usage

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name, "choices": choices}
            if include_usage:
                c["usage"] = usage
            return f"data: {json.dumps(c)}\n\n"

        def events():
            future = batcher.submit(Job(alone=work))
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            ids, sent = [], ""
            for tok in streamer:
                ids.append(tok)
                text = lm.tokenizer.decode(ids, skip_special_tokens=True)
                if text.startswith(sent) and len(text) > len(sent) and not text.endswith("\ufffd"):
                    yield chunk([{"index": 0, "delta": {"content": text[len(sent):]}, "finish_reason": None}])
                    sent = text
            try:
                ids, why, _ = future.result()[0]
            except Exception:  # noqa: BLE001 - the stream has begun; say so in it
                yield f"data: {json.dumps({'error': {'message': 'generation failed'}})}\n\n"
                return
            text = lm.tokenizer.decode(ids, skip_special_tokens=True)  # what a non-streamed reply says
            if text != sent:  # a held-back partial character, or a decode that rewrote earlier text
                tail = text[len(sent):] if text.startswith(sent) else text
                yield chunk([{"index": 0, "delta": {"content": tail}, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "length" if why == "length" else "stop"}])
            if include_usage:
                yield chunk([], {"prompt_tokens": len(prompt), "completion_tokens": len(ids),
                                 "total_tokens": len(prompt) + len(ids)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def alone(call: Callable[[], object]):
        """Run ``call`` on the model as a batch of its own and return its value."""
        return batcher.submit(Job(alone=call)).result()

    def complete(req: ChatRequest, rows: list[Row], batchable: bool, hooked: Callable) -> list[tuple]:
        """The rows' ``(text, finish_reason, logprobs, tokens)``: batched with other requests' rows when
        ``batchable``, else a batch of their own under the request's hooks."""
        def hooked_rows() -> list:
            with hooked():
                return sample_rows(lm, rows)

        results = batcher.submit(Job(rows=rows)).result() if batchable else alone(hooked_rows)
        out = []
        for ids, why, lps in results:
            text, stopped = apply_stop(lm.tokenizer.decode(ids, skip_special_tokens=True), req.stop_list())
            out.append((text, "length" if why == "length" and not stopped else "stop",
                        None if lps is None else logprobs_content(lm, ids, lps), len(ids)))
        return out

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):
        stats["chat_completions"] += 1
        if req.model is not None and req.model != name:
            raise HTTPException(404, f"model {req.model!r} is not served here; this server serves {name!r}")
        prompt = _prompt_ids(lm, req.messages)
        max_new = req.new_tokens()
        ctx = getattr(lm.model.config, "max_position_embeddings", None)  # attention cost grows with its square
        longest = max(map(len, choice_token_ids(lm, req.guided_choice))) if req.guided_choice else 0
        new = f"the longest guided choice ({longest} tokens)" if req.guided_choice else f"max_tokens {max_new}"
        if ctx and len(prompt) + (longest if req.guided_choice else max_new) > ctx:
            raise HTTPException(400, f"prompt of {len(prompt)} tokens + {new} exceeds the model's context of {ctx} tokens")
        if req.guided_choice:
            need = len(req.guided_choice) * (len(prompt) + longest) * len(lm.tokenizer) * 4
            if need > GUIDED_LOGITS_BYTES:
                raise HTTPException(400, f"guided_choice would need {need / 1024 ** 3:.1f} GiB of logits "
                                         f"(limit {GUIDED_LOGITS_BYTES / 1024 ** 3:.0f} GiB); use fewer or shorter "
                                         "choices or a shorter prompt")
        # validated here, before waiting for the model; hooks go on only when entered, on the worker
        add, scale, batchable = store.row_steering(req.steering, lm)

        def hooked():
            return nullcontext() if req.steering is None else store.context(req.steering, lm)

        hooked()
        arrived(request)
        seed = req.seed if req.seed is not None else int.from_bytes(uuid.uuid4().bytes[:8], "little") >> 1
        rows = [Row(prompt, max_new, req.temperature, req.top_p, seed if i == 0 else stable_seed(seed, "choice", i),
                    req.stop_list(), add, scale, (req.top_logprobs or 0) if req.logprobs else None)
                for i in range(req.n)]
        if req.stream and req.n == 1 and not req.guided_choice and not req.logprobs and not req.stop:
            return stream_tokens(req, rows[0], nullcontext if batchable else hooked)
        if req.guided_choice:
            def guided() -> list[float]:
                with hooked():
                    return choice_logprobs(lm, prompt, req.guided_choice)

            scores = alone(guided)
            text = req.guided_choice[max(range(len(scores)), key=scores.__getitem__)]
            choices = [(text, "stop", None, len(lm.tokenizer.encode(text, add_special_tokens=False)))]
        else:
            choices = complete(req, rows, batchable, hooked)
        n_out = sum(c[3] for c in choices)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                         "logprobs": None if lp is None else {"content": lp},
                         "finish_reason": finish} for i, (text, finish, lp, _n) in enumerate(choices)],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": n_out,
                      "total_tokens": len(prompt) + n_out},
        }
        if not req.stream:
            return body
        include_usage = req.stream_options is not None and req.stream_options.include_usage

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            c = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                 "model": name, "choices": choices}
            if include_usage:
                c["usage"] = usage
            return f"data: {json.dumps(c)}\n\n"

        def events():
            for i, (text, finish, _lp, _n) in enumerate(choices):
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])
                yield chunk([{"index": i, "delta": {}, "finish_reason": finish}])
            if include_usage:
                yield chunk([], body["usage"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def check_max_batch(value: int) -> int:
    """``value`` if it is a whole number of rows in ``MAX_BATCH_RANGE``, else a one-line error."""
    lo, hi = MAX_BATCH_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValuemechError(f"max_batch must be an integer from {lo} to {hi}, not {value!r}")
    return value


def serve(lm: LoadedModel, host: str = "127.0.0.1", port: int = 8000, run_dir: Path | None = None,
          model_name: str | None = None, api_key: str | None = None, max_batch: int = MAX_BATCH) -> None:
    """Run the server until interrupted (``api_key`` or ``$VALUEMECH_API_KEY``; a loopback bind answers
    loopback ``Host`` names only; a wider bind without a key is warned about)."""
    import os
    import warnings

    import uvicorn

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    loopback = is_loopback(host)
    if not loopback and api_key is None:
        warnings.warn(f"valuemech serve binds to {host} without an API key: anyone who reaches it can use the "
                      f"model (set --api-key or ${API_KEY_ENV})", stacklevel=2)
    app = create_app(lm, run_dir, model_name, api_key=api_key, allowed_hosts=LOOPBACK if loopback else None,
                     max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="info")
