"""Checkpoint files in a run's work directory: one new file per epoch, hashed, read back.

Files before facts, never over them: each epoch's checkpoint is written under a name of its
own, ``epoch-NNNN-<sha256 prefix>.pt`` (content-addressed), fsynced, then renamed into place, so
writing epoch N+1 can never touch the file that the stored record of epoch N names. Which files
are kept is the caller's business: only it knows which epochs are stored (see ``prune``).

``last.pt`` and ``best.pt`` are symbolic links to the newest and the best file written, for a
person or a script looking at the folder. Nothing that an event names points at them, and the
trainer never reads them. Imports torch and ``services.vision`` only.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from services.trainer.engine.api import Checkpoint, CheckpointError
from services.vision.checkpoint import read_state, sha256_of

LAST = "last.pt"
BEST = "best.pt"
FORMAT = 1
REQUIRED = (
    "format", "model_name", "model", "optimizer", "scheduler", "scaler", "rng", "epoch",
    "best_epoch", "best_val_accuracy", "history", "hyperparameters", "classes",
)  # fmt: skip
#: An epoch's file: its epoch and the first 16 hex digits of its sha256.
EPOCH_FILE = re.compile(r"epoch-(\d{4,})-([0-9a-f]{16})\.pt")


def epoch_file_name(epoch: int, sha256: str) -> str:
    return f"epoch-{epoch:04d}-{sha256[:16]}.pt"


def write_checkpoints(state: dict[str, Any], workdir: Path, *, best: bool) -> list[Checkpoint]:
    """Writes ``state`` as a new epoch file (fsynced, renamed into place, directory fsynced);
    returns it as the ``last`` checkpoint, and as the ``best`` one too when ``best``."""
    tmp = workdir / f".epoch-{state['epoch']:04d}.tmp"
    try:
        with tmp.open("wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        digest, size = sha256_of(tmp), tmp.stat().st_size
        final = workdir / epoch_file_name(state["epoch"], digest)
        os.replace(tmp, final)
    except BaseException:
        # A full disk (ENOSPC) or any failure mid-write: no half file stays to fill the disk.
        tmp.unlink(missing_ok=True)
        raise
    _fsync(workdir)  # the rename itself survives a power cut only once the directory is
    _alias(final, workdir / LAST)
    written = [Checkpoint("last", final, digest, size)]
    if best:
        _alias(final, workdir / BEST)
        written.append(Checkpoint("best", final, digest, size))
    return written


def prune(workdir: Path, keep: Iterable[str]) -> list[Path]:
    """Removes every epoch file in ``workdir`` not named in ``keep`` (file names); returns them.

    Call it only once the records naming the kept files are stored: that is what makes the
    others (older epochs, or files of epochs a crash kept from being stored) safe to delete.
    """
    kept = set(keep)
    removed = []
    for path in sorted(workdir.glob("epoch-*.pt")):
        if EPOCH_FILE.fullmatch(path.name) and path.name not in kept:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents on the CPU; CheckpointError when missing or not one of ours."""
    state = read_state(path, REQUIRED, error=CheckpointError)
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {state['format']}, expected {FORMAT}")
    return state


def _alias(target: Path, alias: Path) -> None:
    """Points ``alias`` at ``target`` (a relative symlink; a copy where links are refused)."""
    tmp = alias.with_name(f".{alias.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target.name, tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, alias)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
