"""Checkpoint files in a run's work directory: written atomically, hashed, read back.

``best.pt`` is replaced before ``last.pt``: a crash between the two leaves a ``last.pt`` whose
epoch is retrained on resume, never one that names a best epoch with no file. Imports torch only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from services.trainer.engine.api import Checkpoint, CheckpointError

LAST = "last.pt"
BEST = "best.pt"
FORMAT = 1
REQUIRED = (
    "format", "model_name", "model", "optimizer", "scheduler", "scaler", "rng", "epoch",
    "best_epoch", "best_val_accuracy", "history", "hyperparameters", "classes",
)  # fmt: skip


def write_checkpoints(state: dict[str, Any], workdir: Path, *, best: bool) -> list[Checkpoint]:
    """Writes ``state`` as ``last.pt``, and as ``best.pt`` too when ``best``; both fsynced."""
    tmp = workdir / f"{LAST}.tmp"
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    digest, size = sha256_of(tmp), tmp.stat().st_size
    written = []
    if best:
        best_tmp = workdir / f"{BEST}.tmp"
        shutil.copyfile(tmp, best_tmp)
        _fsync(best_tmp)
        os.replace(best_tmp, workdir / BEST)
        written.append(Checkpoint("best", workdir / BEST, digest, size))
    os.replace(tmp, workdir / LAST)
    _fsync(workdir)  # the renames themselves survive a power cut only once the directory is
    return [Checkpoint("last", workdir / LAST, digest, size), *written]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents on the CPU; CheckpointError when missing or not one of ours."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from exc
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED):
        raise CheckpointError(f"{path} is not a training checkpoint")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {state['format']}, expected {FORMAT}")
    return state


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
