"""Reading a training checkpoint file back: the trainer resumes and evaluates from it, the
exporter exports it. The file is the trainer's (a dict with ``model`` state dict,
``hyperparameters``, ``classes``…); each reader names the keys it needs and the error it raises.
Imports torch only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def read_state(
    path: Path,
    required: Iterable[str],
    *,
    sha256: str | None = None,
    error: Callable[[str], Exception] = ValueError,
) -> dict[str, Any]:
    """The checkpoint's contents on the CPU. ``error`` when the file is missing, not (given
    ``sha256``, as the trainer announced it) that file, unreadable, or without a key of
    ``required``."""
    if not path.is_file():
        raise error(f"no checkpoint at {path}")
    # A flipped byte inside tensor data loads silently (torch checks no CRC): only the hash
    # the trainer published catches it.
    if sha256 is not None and sha256_of(path) != sha256:
        raise error(f"checkpoint {path} is corrupt: its sha256 is not {sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch
        raise error(f"checkpoint {path} is unreadable: {exc}") from exc
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise error(f"{path} is not a training checkpoint")
    return state


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
