"""Interruption test: SIGKILL `valuemech run --preset smoke` at random moments, resume, compare.

1. One uninterrupted reference run (its ``stages.json`` gives each stage's duration).
2. ``--trials`` trials, each in a fresh run directory: start the run, SIGKILL it at a seeded random
   moment inside a target stage (the targets cycle through generate, label, extract, decompose,
   neurons, evaluate, report; see ``trigger``: the kill waits for a sign that the target stage is
   under way (lines in ``responses.jsonl``, or the run's own log lines), then a seeded random delay
   drawn from the stage's reference duration), rerun
   the same command (some trials kill the rerun again at a random time), and finally rerun it
   to completion.
3. ``--torn`` extra trials simulate a crash in the middle of an append (a power cut rather than a
   SIGKILL, which cannot split one ``write``): the run is killed, the last line of
   ``responses.jsonl`` or ``labels.jsonl`` is cut at a random byte, and the run is resumed.

Every finished trial is checked against the reference: each JSONL parses line by line, ends with a
newline, has no duplicate id (``responses.jsonl``: ``id``; ``labels.jsonl``: ``response_id``) and
is byte-identical to the reference; every tensor of ``vectors.safetensors`` and
``components.safetensors`` is bit-identical (``torch.equal``) with equal metadata; every
``evals/*.json`` of the reference is present and parses. Also recorded (not failures by
themselves): whether ``decompose.json``, ``neurons.json`` and the evaluation results (minus timings)
equal the reference, and temp files left behind by killed atomic writes.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/reliability_interrupt.py [--trials 20] [--seed 0]
Prints a table; writes JSON (default bench/results/reliability_interrupt.json). Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "label", "extract", "decompose", "neurons", "evaluate", "report")
JSONL_KEYS = {"responses.jsonl": "id", "labels.jsonl": "response_id"}
VOLATILE_KEYS = {"seconds"}  # wall-clock timings inside evals/*.json
POLL_S = 0.002


def valuemech_bin() -> str:
    exe = Path(sys.executable).with_name("valuemech")
    return str(exe) if exe.exists() else str(ROOT / ".venv" / "bin" / "valuemech")


def run_cmd(out: Path, extra: list[str]) -> list[str]:
    return [valuemech_bin(), "run", "--preset", "smoke", "--out", str(out), "--quiet", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


# Observing a run directory --------------------------------------------------------------------

def count_lines(path: Path) -> int:
    """Complete lines of a file (0 if missing)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def stage_from_log(log: str) -> str:
    """The stage a run was in when it stopped, from its stderr (``[stage] done`` / ``skipped`` lines)."""
    last = None
    for line in log.splitlines():
        for s in STAGES:
            if line.startswith(f"[{s}] done") or line.startswith(f"[{s}] already complete"):
                last = s
    if last is None:
        return "generate" if "loading model" in log else "startup"
    i = STAGES.index(last)
    return STAGES[i + 1] if i + 1 < len(STAGES) else "finished"


def trigger(stage: str, out: Path, log_path: Path, n_responses: int, batch: int, eval_names: list[str],
            durations: dict[str, float], rng: random.Random):
    """When to kill inside ``stage``: a predicate that holds once the stage is under way, the longest
    random delay after it, and a description.

    generate: once ``responses.jsonl`` has k complete lines (k random, at least one batch still to
    come), then up to half a batch's time; evaluate: once the run logged ``[evaluate] <name> ...`` for
    a random evaluation, then up to half an evaluation's mean time; report: up to half its time after
    ``[evaluate] done``; the short stages in between: up to their whole reference time after the
    previous stage's ``[stage] done`` line (the stage starts right after it).
    """
    n_batches = -(-n_responses // batch)
    if stage == "generate":
        k = rng.randint(1, n_responses - batch)
        return (lambda: count_lines(out / "responses.jsonl") >= k), 0.5 * durations[stage] / n_batches, \
            f"responses>={k}"
    if stage == "evaluate":
        name = rng.choice(eval_names)
        mark, longest = f"[evaluate] {name} ...", 0.5 * durations[stage] / len(eval_names)
    else:
        mark = f"[{STAGES[STAGES.index(stage) - 1]}] done"
        longest = durations[stage] * (0.5 if stage == "report" else 1.0)

    def started() -> bool:
        try:
            return mark in log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return started, max(longest, 0.005), f"'{mark}'"


@dataclass
class Attempt:
    """One process of a trial: how it ended and where it was."""

    killed: bool
    rc: int | None
    seconds: float
    how: str  # the kill rule, or "to completion"
    stage: str  # from its log: the stage it was in when killed / "finished"


def start(out: Path, extra: list[str], log_path: Path) -> tuple[subprocess.Popen, object]:
    fh = open(log_path, "w")
    proc = subprocess.Popen(run_cmd(out, extra), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=fh)
    return proc, fh


def attempt(out: Path, extra: list[str], log_path: Path, cond=None, delay: float = 0.0,
            how: str = "to completion", timeout: float = 600.0) -> Attempt:
    """Run once; with ``cond``, SIGKILL ``delay`` seconds after ``cond()`` first holds (if still running)."""
    proc, fh = start(out, extra, log_path)
    t0 = time.perf_counter()
    killed = False
    try:
        if cond is not None:
            while proc.poll() is None and not cond():
                time.sleep(POLL_S)
            if proc.poll() is None:
                time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = True
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fh.close()
    log = log_path.read_text(errors="replace")
    return Attempt(killed, None if killed else rc, round(time.perf_counter() - t0, 2), how,
                   stage_from_log(log) if killed else ("finished" if rc == 0 else f"exit {rc}"))


# Checks -----------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_jsonl(path: Path) -> list[str]:
    """Problems of one JSONL file: partial last line, unparsable line, duplicate id."""
    data = path.read_bytes()
    problems = []
    if data and not data.endswith(b"\n"):
        problems.append(f"{path.name}: no final newline (truncated last line)")
    key = JSONL_KEYS.get(path.name)
    seen: set = set()
    for i, line in enumerate(data.splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{path.name}:{i}: not JSON")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path.name}:{i}: not an object")
        elif key is not None:
            if rec.get(key) in seen:
                problems.append(f"{path.name}:{i}: duplicate {key} {rec.get(key)!r}")
            seen.add(rec.get(key))
    return problems


def load_st(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def st_diff(a: Path, b: Path) -> list[str]:
    """Differences between two safetensors files: tensor names, bits of each tensor, metadata."""
    if not b.exists():
        return [f"{b.name} missing"]
    ta, ma = load_st(a)
    tb, mb = load_st(b)
    out = []
    if set(ta) != set(tb):
        out.append(f"{b.name}: tensor names differ")
    out += [f"{b.name}: {k} differs" for k in sorted(set(ta) & set(tb))
            if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    drop = lambda m: {k: v for k, v in m.items() if not any(w in k for w in ("time", "date", "created"))}  # noqa: E731
    if drop(ma) != drop(mb):
        out.append(f"{b.name}: metadata differs ({sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))})")
    return out


def strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def check_run(ref: Path, out: Path) -> dict:
    """Compare a finished trial directory with the reference; ``failures`` decide pass/fail."""
    failures: list[str] = []
    notes: list[str] = []
    jsonls = sorted(p.relative_to(ref) for p in ref.rglob("*.jsonl"))
    for rel in sorted(set(jsonls) | {p.relative_to(out) for p in out.rglob("*.jsonl")}):
        if not (out / rel).exists():
            failures.append(f"{rel} missing")
            continue
        failures += check_jsonl(out / rel)
        if (ref / rel).exists() and sha256(ref / rel) != sha256(out / rel):
            failures.append(f"{rel}: not byte-identical to the reference "
                            f"({count_lines(out / rel)} vs {count_lines(ref / rel)} lines)")
    for name in ("vectors.safetensors", "components.safetensors"):
        failures += st_diff(ref / name, out / name)
    evals_equal = True
    for p in sorted((ref / "evals").glob("*.json")):
        q = out / "evals" / p.name
        try:
            got = json.loads(q.read_text())
        except FileNotFoundError:
            failures.append(f"evals/{p.name} missing")
            continue
        except json.JSONDecodeError:
            failures.append(f"evals/{p.name} does not parse")
            continue
        if strip_volatile(got) != strip_volatile(json.loads(p.read_text())):
            evals_equal = False
            notes.append(f"evals/{p.name} differs from the reference")
    same = {}
    for name in ("decompose.json", "neurons.json"):
        same[name] = (out / name).exists() and sha256(out / name) == sha256(ref / name)
        if not same[name]:
            notes.append(f"{name} differs from the reference")
    if not (out / "report.html").exists():
        failures.append("report.html missing")
    litter = sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp"))
    return {"ok": not failures, "failures": failures, "notes": notes, "evals_equal": evals_equal,
            "decompose_equal": same["decompose.json"], "neurons_equal": same["neurons.json"],
            "tmp_files_left": litter}


# Trials -----------------------------------------------------------------------------------------

@dataclass
class Trial:
    index: int
    kind: str  # "sigkill" | "torn"
    target: str
    attempts: list[Attempt] = field(default_factory=list)
    check: dict = field(default_factory=dict)
    torn: str = ""

    @property
    def kills(self) -> int:
        return sum(a.killed for a in self.attempts)


def finish(tr: Trial, out: Path, extra: list[str], logs: Path, ref: Path, max_tries: int = 3) -> None:
    """Rerun to completion (a failed rerun is retried up to ``max_tries``), then compare."""
    for k in range(max_tries):
        a = attempt(out, extra, logs / f"t{tr.index:02d}-final{k}.log")
        tr.attempts.append(a)
        if a.rc == 0:
            break
    tr.check = check_run(ref, out) if tr.attempts[-1].rc == 0 else {
        "ok": False, "failures": [f"resumed run exited {tr.attempts[-1].rc}: "
                                  + (logs / f"t{tr.index:02d}-final{k}.log").read_text()[-400:]],
        "notes": [], "evals_equal": False, "decompose_equal": False, "neurons_equal": False, "tmp_files_left": []}


def sigkill_trial(i: int, target: str, rng: random.Random, work: Path, ref: Path, extra: list[str],
                  durations: dict[str, float], n_resp: int, batch: int, eval_names: list[str],
                  ref_wall: float, extra_kills: int) -> Trial:
    out = work / f"trial{i:02d}"
    logs = work / "logs"
    tr = Trial(i, "sigkill", target)
    log0 = logs / f"t{i:02d}-kill0.log"
    cond, longest, desc = trigger(target, out, log0, n_resp, batch, eval_names, durations, rng)
    delay = rng.uniform(0.0, longest)
    tr.attempts.append(attempt(out, extra, log0, cond, delay, f"{desc} +{delay * 1000:.0f} ms"))
    for k in range(extra_kills):  # kill the resumed run again, at a random time
        delay = rng.uniform(0.0, ref_wall)
        tr.attempts.append(attempt(out, extra, logs / f"t{i:02d}-kill{k + 1}.log", lambda: True, delay,
                                   f"resume +{delay:.2f} s"))
    finish(tr, out, extra, logs, ref)
    return tr


def torn_trial(i: int, which: str, rng: random.Random, work: Path, ref: Path, extra: list[str],
               n_resp: int) -> Trial:
    """Kill after ``which`` (responses/labels) has lines, cut its last line at a random byte, resume."""
    out = work / f"trial{i:02d}"
    logs = work / "logs"
    tr = Trial(i, "torn", which)
    path = out / f"{which}.jsonl"
    if which == "responses":
        k = rng.randint(2, n_resp - 1)
        cond, desc = (lambda: count_lines(path) >= k), f"responses>={k}"
    else:
        cond, _, desc = trigger("extract", out, logs / f"t{i:02d}-kill0.log", n_resp, 8, [], {"extract": 0.0}, rng)
    tr.attempts.append(attempt(out, extra, logs / f"t{i:02d}-kill0.log", cond, 0.0, desc))
    data = path.read_bytes()
    start_last = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = rng.randint(start_last + 1, len(data) - 1)  # inside the last line, never at its newline
    path.write_bytes(data[:cut])
    tr.torn = f"{which}.jsonl cut at byte {cut} of {len(data)} (last line {start_last}..{len(data) - 1})"
    finish(tr, out, extra, logs, ref)
    return tr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="SIGKILL trials.")
    ap.add_argument("--torn", type=int, default=2, help="Extra trials with a torn last JSONL line.")
    ap.add_argument("--seed", type=int, default=0, help="Seed of the kill schedule.")
    ap.add_argument("--n-queries", type=int, default=None, help="Passed to valuemech run (smoke default: 12).")
    ap.add_argument("--work", type=Path, default=None, help="Work directory (default: a temp dir, removed).")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "reliability_interrupt.json")
    args = ap.parse_args()
    extra = [] if args.n_queries is None else ["--n-queries", str(args.n_queries)]
    work = args.work or Path(tempfile.mkdtemp(prefix="valuemech-interrupt-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t_all = time.perf_counter()

    ref = work / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    a = attempt(ref, extra, work / "logs" / "ref.log")
    if a.rc != 0:
        print((work / "logs" / "ref.log").read_text()[-2000:])
        return 1
    stages = json.loads((ref / "stages.json").read_text())
    durations = {s: stages[s]["seconds"] for s in STAGES}
    n_resp = count_lines(ref / "responses.jsonl")
    batch = 8  # smoke preset's generation.batch_size
    eval_names = sorted(p.stem for p in (ref / "evals").glob("*.json"))
    startup = a.seconds - sum(durations.values())
    print(f"reference: {a.seconds:.1f} s wall ({startup:.1f} s start-up), {n_resp} responses, "
          f"stages {json.dumps(durations)}", flush=True)

    targets = [STAGES[i % len(STAGES)] for i in range(args.trials)]
    rng.shuffle(targets)
    trials: list[Trial] = []
    for i, target in enumerate(targets):
        extra_kills = rng.choice([0, 0, 0, 1])
        tr = sigkill_trial(i, target, rng, work, ref, extra, durations, n_resp, batch, eval_names,
                           a.seconds, extra_kills)
        trials.append(tr)
        print(f"trial {i:2d} {target:9s} kills {tr.kills} at {[x.stage for x in tr.attempts if x.killed]} "
              f"-> {'ok' if tr.check['ok'] else 'FAIL ' + '; '.join(tr.check['failures'][:3])}", flush=True)
    for j in range(args.torn):
        i = args.trials + j
        tr = torn_trial(i, ("responses", "labels")[j % 2], rng, work, ref, extra, n_resp)
        trials.append(tr)
        print(f"trial {i:2d} torn {tr.target}: {tr.torn} -> "
              f"{'ok' if tr.check['ok'] else 'FAIL ' + '; '.join(tr.check['failures'][:3])}", flush=True)

    # Table ------------------------------------------------------------------------------------
    kills_by_stage: dict[str, int] = {}
    for tr in trials:
        for x in tr.attempts:
            if x.killed:
                kills_by_stage[x.stage] = kills_by_stage.get(x.stage, 0) + 1
    n_fail = sum(not t.check["ok"] for t in trials)
    print("\n| trial | kind | target | kills (stage at kill) | resumed runs | result | evals = ref | temp files left |")
    print("|---|---|---|---|---|---|---|---|")
    for tr in trials:
        stages_killed = ", ".join(x.stage for x in tr.attempts if x.killed) or "-"
        print(f"| {tr.index} | {tr.kind} | {tr.target} | {tr.kills} ({stages_killed}) | "
              f"{len(tr.attempts) - 1} | {'pass' if tr.check['ok'] else 'FAIL'} | "
              f"{'yes' if tr.check['evals_equal'] else 'no'} | {len(tr.check['tmp_files_left'])} |")
    total_kills = sum(t.kills for t in trials)
    print(f"\ntrials: {len(trials)} ({args.trials} SIGKILL + {args.torn} torn-line); kills: {total_kills}; "
          f"kills per stage: {json.dumps(kills_by_stage)}; failures: {n_fail}; "
          f"wall: {time.perf_counter() - t_all:.0f} s")
    result = {
        "command": ("HF_HUB_OFFLINE=1 .venv/bin/python bench/reliability_interrupt.py " + " ".join(sys.argv[1:])).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "seed": args.seed,
        "reference": {"wall_s": a.seconds, "startup_s": round(startup, 2), "stages_s": durations,
                      "responses": n_resp, "evals": eval_names},
        "trials": len(trials), "sigkill_trials": args.trials, "torn_trials": args.torn,
        "kills": total_kills, "kills_per_stage": kills_by_stage, "failures": n_fail,
        "evals_equal_to_reference": sum(t.check["evals_equal"] for t in trials),
        "trials_with_temp_files_left": sum(bool(t.check["tmp_files_left"]) for t in trials),
        "wall_s": round(time.perf_counter() - t_all, 1),
        "per_trial": [{**asdict(t), "kills": t.kills} for t in trials],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.json}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
