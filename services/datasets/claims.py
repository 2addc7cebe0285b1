"""Claims on staged things: what tells a dead owner's leftovers from a live owner's files.

Several datasets instances may share one workspace (and its ``spill`` and ``staging`` folders),
so a sweep of what a crash left must never remove what a live process, of any instance, still
uses. Each staged thing (an import's staging file, an upload's folder) has a ``Claim``: an
exclusive ``flock`` on a lock file beside it, held by its owner for the thing's life, which the
kernel drops the moment the owning process dies, however it dies (SIGKILL included). A sweeper
removes a thing only while it holds the thing's claim itself (``sweep``), so never while its
owner lives; an owner waits a moment for a claim a sweeper holds. Imports the standard library.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Container
from pathlib import Path

#: The suffix of a claim's lock file, beside what it claims (``<import id>.lock``).
LOCK = ".lock"
#: How long an owner waits for a claim a sweeper holds (it removes a dead owner's leftovers).
CLAIM_WAIT_S = 5.0
_POLL_S = 0.02


class Claim:
    """An exclusive ``flock`` on a lock file, held from ``take`` until ``release`` or the death
    of the process (see the module). Its file is removed while it is held, and a taker checks
    that the file it locked is still the one at its path, so two never hold one claim."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def take(cls, path: Path, wait_s: float = 0.0) -> Claim | None:
        """The claim at ``path`` (its file made if need be); None when another holds it past
        ``wait_s`` seconds."""
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return None
                time.sleep(_POLL_S)
                continue
            if _same_file(path, fd):
                return cls(path, fd)
            os.close(fd)  # its holder released it (removed its file) meanwhile: take the new one

    def release(self) -> None:
        """Removes the lock file, then lets go (in that order: see ``take``)."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def _same_file(path: Path, fd: int) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def claim_of(thing: Path) -> Path:
    """The lock file of a staged file or folder: beside it, named after its stem."""
    return thing.with_name(thing.stem + LOCK)


def sweep(folder: Path, suffix: str, keep: Container[str] = ()) -> list[str]:
    """Removes the things of ``folder`` whose owner is dead (``<name><suffix>`` files, or the
    folders in it when ``suffix`` is empty), with their stray lock files, never one named in
    ``keep``; returns the names of the things removed. A live owner's claim is not waited for."""
    try:
        children = list(folder.iterdir())
    except FileNotFoundError:
        return []
    names = set()
    for child in children:
        if child.name.endswith(LOCK):
            names.add(child.name[: -len(LOCK)])
        elif suffix and child.name.endswith(suffix):
            names.add(child.name[: -len(suffix)])
        elif not suffix and child.is_dir() and not child.is_symlink():
            names.add(child.name)
    removed = []
    for name in sorted(names):
        if name in keep:
            continue
        claim = Claim.take(folder / f"{name}{LOCK}")
        if claim is None:
            continue  # its owner lives
        try:
            if _remove(folder / f"{name}{suffix}"):
                removed.append(name)
        finally:
            claim.release()
    return removed


def _remove(thing: Path) -> bool:
    if thing.is_dir() and not thing.is_symlink():
        shutil.rmtree(thing, ignore_errors=True)
        return True
    try:
        thing.unlink()
    except FileNotFoundError:
        return False
    return True
