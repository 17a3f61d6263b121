"""Helpers shared by the bench scripts (run as ``python bench/<script>.py``, so this is importable)."""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F


def load_avg() -> str:
    """The 1/5/15-minute load average, printed beside measurements on a shared machine."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """CPU count, model and bfloat16 flags, torch version and intra-op threads."""
    from valuemech.hardware import describe

    return f"nproc {os.cpu_count()}, {describe()}, torch {torch.__version__}, threads {torch.get_num_threads()}"


def best_of(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def linear_gflops(dtype: torch.dtype) -> float:
    x = torch.randn(2048, 576).to(dtype)
    w = torch.randn(1536, 576).to(dtype)
    return 2 * 2048 * 576 * 1536 / best_of(lambda: F.linear(x, w)) / 1e9


def flops_per_token(model: torch.nn.Module) -> int:
    """2 x the weights of every Linear layer (lm_head included): the matmul FLOPs of one token."""
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
