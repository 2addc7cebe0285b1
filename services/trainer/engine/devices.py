"""Choosing the device a run trains on, and what it reports about GPU memory.

Imports torch only.
"""

from __future__ import annotations

import re

import torch

_CUDA = re.compile(r"cuda(?::(\d+))?")


def pick_device(requested: str = "auto") -> str:
    """``cuda:0`` when CUDA is there and ``auto`` is asked, else ``cpu``; an explicit ``cpu`` or
    ``cuda:N`` is honoured, and refused with ValueError when that GPU does not exist."""
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    match = _CUDA.fullmatch(requested)
    if match is None:
        raise ValueError(f"unknown device {requested!r}; expected auto, cpu or cuda:N")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise ValueError(f"device {requested!r} is not available ({count} CUDA devices)")
    return f"cuda:{index}"


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.startswith("cuda") else None
