"""Batched, resumable response generation in the intrinsic and prompted conditions.

Every response is a *job* with a stable id (``<query_id>/intrinsic/<k>`` or
``<query_id>/prompted/<value>/<k>``). Jobs are sorted by prompt length and cut into fixed
batches from the full plan; each batch samples under its own seed derived from the run seed
and its first job id. A resumed run therefore regenerates an unfinished batch exactly as the
uninterrupted run would have, and appends only the responses still missing.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TopPLogitsWarper

from valuemech.config import GenerationConfig
from valuemech import hooks
from valuemech.batching import cache_kwarg, common_prefix_len, left_pad, prefix_forward
from valuemech.data.queries import Query
from valuemech.errors import ValuemechError
from valuemech.io import append_jsonl, read_jsonl, repair_jsonl
from valuemech.models.loading import LoadedModel
from valuemech.values import VALUES


@dataclass
class Job:
    """One response to generate."""

    id: str
    query_id: str
    condition: str  # "intrinsic" | "prompted"
    prompted_value: str | None
    system_prompt: str | None  # the value template (prompted) or None (template default)
    template_index: int | None
    query: str
    sample: int
    lang: str


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a sha256 of the parts (stable across processes and Python versions)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def plan_jobs(queries: list[Query], templates: dict[str, list[str]], cfg: GenerationConfig,
              seed: int) -> list[Job]:
    """All responses of a run: k intrinsic samples per query, then the prompted ones.

    ``prompted_mode="random"`` draws the value per (query, sample) from a seeded generator, as
    in the paper; ``"all"`` prompts every value for every query. The template is drawn per job.
    """
    values = list(cfg.values or VALUES)
    jobs: list[Job] = []
    for q in queries:
        for k in range(cfg.intrinsic_samples):
            jobs.append(Job(f"{q.id}/intrinsic/{k}", q.id, "intrinsic", None, None, None, q.text, k, q.lang))
        for k in range(cfg.prompted_samples):
            if cfg.prompted_mode == "all":
                chosen = values
            else:
                chosen = [random.Random(stable_seed(seed, "value", q.id, k)).choice(values)]
            for value in chosen:
                pool = templates[value]
                t = random.Random(stable_seed(seed, "template", q.id, value, k)).randrange(len(pool))
                jobs.append(Job(f"{q.id}/prompted/{value}/{k}", q.id, "prompted", value, pool[t], t,
                                q.text, k, q.lang))
    return jobs


def _batches(jobs: list[Job], lengths: dict[str, int], batch_size: int) -> Iterator[list[Job]]:
    order = sorted(jobs, key=lambda j: (lengths[j.id], j.id))
    for i in range(0, len(order), batch_size):
        yield order[i: i + batch_size]


def cut_at_eos(ids: list[int], eos_ids: list[int]) -> tuple[list[int], str]:
    """Cut generated ids at the first end-of-sequence id; return ids and finish reason."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i], "eos"
    return ids, "length"


class TemperatureTopP(LogitsProcessor):
    """transformers' temperature then top-p warpers in one, with the same output, faster on CPU.

    ``TopPLogitsWarper`` sorts every row of the vocabulary with ``torch.sort`` (values and
    indices), about a fifth of the generate stage on CPU. Here the values are sorted with
    ``np.sort`` (several times faster, no indices), the same softmax and cumulative sum are taken
    over them, and the tokens removed are those below the first kept value; that is the set
    transformers removes unless the cut falls between two equal values, where this defers to
    ``TopPLogitsWarper`` itself. Off the CPU it always defers.
    """

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.reference = TopPLogitsWarper(top_p=self.top_p) if self.top_p < 1.0 else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:
            scores = scores / self.temperature  # as TemperatureLogitsWarper
        if self.reference is None:
            return scores
        if scores.device.type != "cpu" or scores.dim() != 2:
            return self.reference(input_ids, scores)
        sorted_scores = torch.from_numpy(np.sort(scores.numpy(), axis=-1))
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[..., -1:] = False  # min_tokens_to_keep = 1
        cut = remove.sum(dim=-1, keepdim=True)  # removed entries form a prefix (cumulative is monotone)
        first_kept = sorted_scores.gather(1, cut)
        last_removed = sorted_scores.gather(1, (cut - 1).clamp(min=0))
        if bool(((cut > 0) & (last_removed == first_kept)).any()):
            return self.reference(input_ids, scores)  # a tie across the cut: its index order decides
        return scores.masked_fill(scores < first_kept, -float("inf"))


@torch.no_grad()
def sample_batch(lm: LoadedModel, prompts: list[list[int]], cfg: GenerationConfig,
                 seed: int, streamer=None) -> list[tuple[list[int], str]]:
    """Sample continuations for left-padded prompts under one seed; ids cut at the first EOS
    (``streamer``: a transformers streamer fed each token as it is produced, batch of one)."""
    ids, mask = left_pad(prompts, lm.tokenizer.pad_token_id)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    torch.manual_seed(seed)
    do_sample = cfg.temperature > 0
    kwargs = dict(do_sample=do_sample, max_new_tokens=cfg.max_new_tokens,
                  pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=lm.eos_ids, streamer=streamer)
    if do_sample:  # temperature and top-p in one processor (transformers' order, faster top-p)
        kwargs.update(temperature=1.0, top_p=1.0, top_k=0,
                      logits_processor=LogitsProcessorList([TemperatureTopP(cfg.temperature, cfg.top_p)]))
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    out = lm.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    gen = out[:, ids.shape[1]:].tolist()
    return [cut_at_eos(row, lm.eos_ids) for row in gen]


@dataclass
class Row:
    """One row of a batch with its own settings: prompt ids, token budget, sampling (``temperature``
    0 is greedy), seed, stop strings, an addition to the residual stream ``{layer: vector}``, factors
    on MLP neurons ``{layer: [d_mlp]}`` and whether to record the tokens' log-probabilities."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    add: dict[int, torch.Tensor] | None = None
    scale: dict[int, torch.Tensor] | None = None  # {layer: factor [d_mlp]} on the MLP activations (neuron steering)
    logprobs: int | None = None  # None: none; k: each generated token's log-probability and the top k alternatives


class RowSampler(LogitsProcessor):
    """Samples each row with its own temperature, top-p and generator; greedy rows pass through.

    A sampled row's scores become ``-inf`` except the drawn token, so ``generate``'s greedy argmax
    takes it: one generation loop serves rows with different settings, and a row's draw depends on
    its own seed and distribution only, never on the rows beside it."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.warpers = [TemperatureTopP(r.temperature, r.top_p) if r.temperature > 0 else None for r in rows]
        self.generators: list[torch.Generator | None] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.generators:
            self.generators = [torch.Generator(device=scores.device).manual_seed(r.seed) for r in self.rows]
        out = scores
        for i, warp in enumerate(self.warpers):
            if warp is None:
                continue
            probs = warp(input_ids[i:i + 1], scores[i:i + 1]).softmax(-1)
            tok = torch.multinomial(probs, 1, generator=self.generators[i])[0, 0]
            out = out.clone() if out is scores else out
            out[i] = -float("inf")
            out[i, tok] = 0.0
        return out


class RowStops(StoppingCriteria):
    """Ends each row at its own token budget or first stop string, remembering where it ended."""

    def __init__(self, tokenizer, rows: list[Row], start: int) -> None:
        self.tokenizer, self.rows, self.start = tokenizer, rows, start
        self.ended: list[tuple[int, str] | None] = [None] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        n = input_ids.shape[1] - self.start
        for i, row in enumerate(self.rows):
            if self.ended[i] is not None:
                continue
            if row.stop and any(s in self.tokenizer.decode(input_ids[i, self.start:], skip_special_tokens=True)
                                for s in row.stop):
                self.ended[i] = (n, "stop")
            elif n >= row.max_new_tokens:
                self.ended[i] = (n, "length")
        return torch.tensor([e is not None for e in self.ended], device=input_ids.device)


#: Per generated token: its log-probability and the top alternatives ``[(token id, log-probability)]``.
TokenLogprobs = list[tuple[float, list[tuple[int, float]]]]


class RowLogprobs(LogitsProcessor):
    """Records, for the rows that ask (``Row.logprobs``), each generated token's log-probability under
    the model's distribution (float64 log-softmax of the step's logits, before any sampling warper)
    and the top ``k``; passes the scores on unchanged. A step's token is known at the next call (or,
    for the last step, from the output: ``finish``)."""

    def __init__(self, rows: list[Row]) -> None:
        self.want = [i for i, r in enumerate(rows) if r.logprobs is not None]
        self.top = [rows[i].logprobs for i in self.want]
        self.steps: dict[int, TokenLogprobs] = {i: [] for i in self.want}
        self.last: torch.Tensor | None = None  # [len(want), vocab] of the step whose token is not yet known

    def _settle(self, chosen: torch.Tensor) -> None:
        for j, i in enumerate(self.want):
            lp = self.last[j]
            alts = []
            if self.top[j]:
                vals, idx = lp.topk(self.top[j])
                alts = list(zip(idx.tolist(), vals.tolist()))
            self.steps[i].append((float(lp[int(chosen[i])]), alts))
        self.last = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            self._settle(input_ids[:, -1])
        if self.want:
            self.last = scores[self.want].double().log_softmax(-1).cpu()
        return scores

    def finish(self, last_tokens: torch.Tensor) -> None:
        if self.last is not None:
            self._settle(last_tokens)


#: A row's result: generated ids, ``eos`` | ``stop`` | ``length``, and its tokens' log-probabilities
#: (None unless the row asked).
RowResult = tuple[list[int], str, TokenLogprobs | None]


def _row_result(ids: list[int], ended: tuple[int, str] | None, eos_ids: list[int],
                logprobs: TokenLogprobs | None) -> RowResult:
    """A row's generated ids up to its end (EOS, a stop string or its budget), the reason, and the
    log-probabilities of those ids."""
    ids, why = cut_at_eos(ids[:ended[0]] if ended else ids, eos_ids)
    return ids, (why if why == "eos" or ended is None else ended[1]), (None if logprobs is None else logprobs[:len(ids)])


def _shared_prefix(lm: LoadedModel, rows: list[Row], at_least: int):
    """``(input_ids, attention_mask, cache)`` continuing the rows' common prompt prefix, run once, when it
    is ``at_least`` tokens long (``at_least`` > 0), every row is unsteered and the model's cache can be
    repeated over a batch; else None. Layout: the prefix, then each row's own rest left-padded, so the
    padding sits between them (masked; positions come from the mask, so a row's positions are those of
    its prompt alone)."""
    prompts = [r.prompt for r in rows]
    if at_least <= 0 or len(rows) < 2 or any(r.add or r.scale for r in rows):
        return None
    n = min(common_prefix_len(prompts), min(map(len, prompts)) - 1)  # every row keeps a token of its own
    if n < at_least:
        return None
    cache, _ = prefix_forward(lm, prompts[0][:n])
    if cache is None:
        return None
    cache.batch_repeat_interleave(len(rows))
    rest, rest_mask = left_pad([p[n:] for p in prompts], lm.tokenizer.pad_token_id)
    ids = torch.cat([torch.tensor([prompts[0][:n]] * len(rows), dtype=torch.long), rest], 1)
    mask = torch.cat([torch.ones(len(rows), n, dtype=torch.long), rest_mask], 1)
    return ids, mask, cache


@torch.no_grad()
def sample_rows(lm: LoadedModel, rows: list[Row], streamer=None, share_prefix: int = 0) -> list[RowResult]:
    """Generate every row in one left-padded batch with a KV cache, each with its own budget, sampling,
    seed, stop strings, addition (``hooks.add_per_row``), neuron factors (``hooks.scale_per_row``) and
    log-probabilities (``RowLogprobs``); returns ids, ``eos`` | ``stop`` | ``length`` and the
    log-probabilities (or None) per row. A row's result does not depend on the rows beside it (up to
    batch numerics). ``streamer``: as in ``sample_batch`` (a batch of one). ``share_prefix`` > 0: unsteered
    rows whose prompts begin with the same ``share_prefix`` or more tokens run that prefix once
    (``_shared_prefix``; no hooks may be active around the call, as they would see a batch of one)."""
    shared = _shared_prefix(lm, rows, share_prefix)
    extra = {}
    if shared is None:
        ids, mask = left_pad([r.prompt for r in rows], lm.tokenizer.pad_token_id)
    else:
        ids, mask, cache = shared
        extra[cache_kwarg(lm.model)] = cache
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    stops = RowStops(lm.tokenizer, rows, ids.shape[1])
    record = RowLogprobs(rows)
    adds, scales = [r.add for r in rows], [r.scale for r in rows]
    with hooks.add_per_row(lm, adds) if any(adds) else nullcontext(), \
            hooks.scale_per_row(lm, scales) if any(scales) else nullcontext():
        out = lm.model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, temperature=None, top_p=None, top_k=None,
            max_new_tokens=max(r.max_new_tokens for r in rows), pad_token_id=lm.tokenizer.pad_token_id,
            eos_token_id=lm.eos_ids, streamer=streamer,
            logits_processor=LogitsProcessorList([record, RowSampler(rows)]),
            stopping_criteria=StoppingCriteriaList([stops]), **extra)
    record.finish(out[:, -1])
    gen = out[:, ids.shape[1]:].tolist()
    return [_row_result(g, e, lm.eos_ids, record.steps.get(i)) for i, (g, e) in enumerate(zip(gen, stops.ended))]


class EndpointSampler:
    """Samples through an OpenAI-compatible server (vLLM, TGI, llama.cpp, ``valuemech serve``).

    Each job is one request with its own seed (derived from the run seed and the job id), so a
    resumed run asks for exactly the same completions. The server returns text, which is
    tokenised with the local tokenizer for extraction (the one place valuemech re-tokenises).
    """

    def __init__(self, cfg: GenerationConfig) -> None:
        from valuemech.config import endpoint_settings
        from valuemech.openai_client import ChatClient

        e = endpoint_settings(cfg.endpoint)
        self.model = e.model
        self.concurrency = e.concurrency
        self.client = ChatClient(e.base_url, e.api_key_env, e.timeout, e.retries, e.backoff, who="generation endpoint")
        self.cfg = cfg

    def __call__(self, lm: LoadedModel, batch: list[Job], seed: int) -> list[tuple[list[int], str]]:
        from concurrent.futures import ThreadPoolExecutor

        from valuemech.errors import ValuemechError
        from valuemech.openai_client import RequestFailed

        def one(job: Job) -> tuple[list[int], str]:
            messages = ([{"role": "system", "content": job.system_prompt}] if job.system_prompt else [])
            messages.append({"role": "user", "content": job.query})
            body = {"model": self.model, "messages": messages, "max_tokens": self.cfg.max_new_tokens,
                    "temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                    "seed": stable_seed(seed, "job", job.id) % (2**31)}
            try:
                text = self.client.complete(body)
            except RequestFailed as exc:
                raise ValuemechError(f"generation endpoint {self.client.base_url}: {exc}") from None
            ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
            return ids, ("length" if len(ids) >= self.cfg.max_new_tokens else "eos")

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, batch))


def _response_problem(r: dict) -> str | None:
    """What is wrong with one ``responses.jsonl`` record for the stages that read it, or None."""
    def token_ids(x: object) -> bool:
        return isinstance(x, list) and all(type(t) is int and t >= 0 for t in x)

    if not isinstance(r.get("id"), str) or not r["id"]:
        return "has no id"
    if r.get("condition") not in ("intrinsic", "prompted"):
        return "has no condition (intrinsic or prompted)"
    if "prompted_value" not in r or (r["prompted_value"] is not None and r["prompted_value"] not in VALUES):
        return "has no prompted_value (a value id or null)"
    if not isinstance(r.get("response"), str):
        return "has no response text"
    if not isinstance(r.get("lang", "en"), str):
        return "has a lang that is not a string"
    if not token_ids(r.get("prompt_token_ids")) or not token_ids(r.get("response_token_ids")):
        return "has no prompt_token_ids / response_token_ids (lists of token ids)"
    if not isinstance(r.get("model_sha256", ""), (str, type(None))):
        return "has a model_sha256 that is not a string"
    return None


def load_responses(path: Path) -> list[dict]:
    """``responses.jsonl`` records, checked for the fields the later stages read (a missing file: [])."""
    records = read_jsonl(Path(path))
    for i, r in enumerate(records, 1):
        problem = _response_problem(r)
        if problem:
            raise ValuemechError(f"{path}: record {i} {problem}; the file is damaged "
                                 "(regenerate it in a new run directory)")
    return records


def generate_responses(lm: LoadedModel, jobs: list[Job], cfg: GenerationConfig, seed: int,
                       out_path: Path, progress: bool = True, extra: dict | None = None) -> int:
    """Generate every job not yet in ``out_path`` (JSONL), appending batch by batch; return count written.

    ``extra`` fields (e.g. the model's weights hash) are added to every record. With
    ``cfg.backend == "endpoint"`` the responses come from an OpenAI-compatible server.
    """
    out_path = Path(out_path)
    repair_jsonl(out_path)
    done = {r["id"] for r in load_responses(out_path)}
    todo = [j for j in jobs if j.id not in done]
    if not todo:
        return 0
    prompts = {j.id: lm.prompt_ids(j.query, j.system_prompt) for j in jobs}
    lengths = {k: len(v) for k, v in prompts.items()}
    endpoint = EndpointSampler(cfg) if cfg.backend == "endpoint" else None
    written = 0
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="generate", unit="resp",
               disable=not progress)
    for batch in _batches(jobs, lengths, cfg.batch_size):
        missing = [j for j in batch if j.id not in done]
        if not missing:
            continue
        if endpoint is not None:
            results = endpoint(lm, batch, seed)
        else:
            results = sample_batch(lm, [prompts[j.id] for j in batch], cfg, stable_seed(seed, "batch", batch[0].id))
        records = []
        for job, (resp_ids, finish) in zip(batch, results):
            if job.id in done:
                continue
            rec = asdict(job)
            if job.condition == "intrinsic":
                rec["system_prompt"] = lm.default_system_prompt
                rec["system_prompt_source"] = "template_default" if lm.default_system_prompt else None
            else:
                rec["system_prompt_source"] = "value_template"
            rec["response"] = lm.tokenizer.decode(resp_ids, skip_special_tokens=True)
            rec["backend"] = cfg.backend
            rec["finish_reason"] = finish
            rec["prompt_token_ids"] = prompts[job.id]
            rec["response_token_ids"] = resp_ids
            rec.update(extra or {})
            records.append(rec)
        append_jsonl(out_path, records)
        written += len(records)
        bar.update(len(records))
    bar.close()
    if endpoint is not None:
        endpoint.client.close()
    return written


@torch.no_grad()
def chat(lm: LoadedModel, query: str, system_prompt: str | None = None, max_new_tokens: int = 96,
         temperature: float = 0.0, seed: int = 0) -> str:
    """One reply to ``query`` (greedy by default); composes with any active hook context."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=1)
    ids, _ = sample_batch(lm, [lm.prompt_ids(query, system_prompt)], cfg, seed)[0]
    return lm.tokenizer.decode(ids, skip_special_tokens=True)
