"""Helpers shared by the bench scripts (run as ``python bench/<script>.py``, so this is importable)."""

from __future__ import annotations

import os

import torch


def load_avg() -> str:
    """The 1/5/15-minute load average, printed beside measurements on a shared machine."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """CPU count, model and bfloat16 flags, torch version and intra-op threads."""
    from valuemech.hardware import describe

    return f"nproc {os.cpu_count()}, {describe()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
