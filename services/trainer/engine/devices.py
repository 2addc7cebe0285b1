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


def pick_devices(requested: str = "auto", count: int | None = None) -> list[str]:
    """The devices a trainer lends to runs. ``count`` (``STUDIO_TRAINER_DEVICES``) of them from
    the one ``pick_device`` chooses on: CPU "devices" are ranks sharing the cores, GPUs follow
    one another (``cuda:1`` and 2 means cuda:1 and cuda:2). Without ``count``: every GPU for
    ``auto`` on CUDA, else the one device. ValueError for GPUs that are not there."""
    first = pick_device(requested)
    if first == "cpu":
        return ["cpu"] * (count or 1)
    available = torch.cuda.device_count()
    start = int(first.split(":")[1])
    if count is None:
        count = available if requested == "auto" else 1
    if start + count > available:
        raise ValueError(f"{count} devices from {first} asked, but {available} CUDA devices exist")
    return [f"cuda:{i}" for i in range(start, start + count)]
