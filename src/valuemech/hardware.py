"""What the machine computes fast: native bfloat16 on this CPU (or GPU), and the dtype ``auto`` resolves to.

CPUs of the same kind differ: with AVX512-BF16 or AMX (``avx512_bf16`` / ``amx_bf16`` in
``/proc/cpuinfo``) bfloat16 matmuls ran ~4x faster than float32 here; without them bfloat16 is
emulated and ~4x slower. ``auto`` therefore resolves, on the CPU, to ``bfloat16`` when the flags say
the CPU computes it natively *and* a short timed matmul confirms it (flags can lie in VMs), else to
``float32``; on CUDA to ``bfloat16`` where the GPU supports it (else ``float32``); elsewhere
``float32``. A run records the dtype it resolved to in ``config.yaml``.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """``/proc/cpuinfo`` (empty where there is none), read once per process."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags (first ``flags`` line of ``/proc/cpuinfo``; empty where there is none)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?")


def native_bf16_flags(flags: set[str] | None = None) -> bool:
    """Whether the flags claim native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    return bool(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def matmul_gflops(dtype: torch.dtype, n: int = 512, reps: int = 6) -> float:
    """Single-call GFLOP/s of an ``n x n`` matmul in ``dtype`` on the CPU (best of ``reps``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


@lru_cache(maxsize=1)
def bf16_confirmed() -> bool:
    """A timed check (~0.1 s, once per process): is a bfloat16 matmul at least as fast as a float32 one?"""
    return matmul_gflops(torch.bfloat16) >= matmul_gflops(torch.float32)


def auto_dtype(device: str = "cpu", flags: set[str] | None = None, confirm: bool = True) -> str:
    """The dtype ``auto`` means on ``device`` (see the module docstring); ``flags`` overrides /proc/cpuinfo."""
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    if device != "cpu":
        return "float32"
    if not native_bf16_flags(flags):
        return "float32"
    return "bfloat16" if (not confirm or bf16_confirmed()) else "float32"


def describe(flags: set[str] | None = None) -> str:
    """One line for benchmark output: the CPU model and its bfloat16 flags."""
    flags = cpu_flags() if flags is None else flags
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in BF16_FLAGS)
    return f"{cpu_model()}; {have}"
