"""Helpers shared by the bench scripts (run as ``python bench/<script>.py``, so this is importable)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def load_avg() -> str:
    """The 1/5/15-minute load average, printed beside measurements on a shared machine."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """CPU count and model, torch version and intra-op threads."""
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    return f"nproc {os.cpu_count()}, {cpu}, torch {torch.__version__}, threads {torch.get_num_threads()}"
