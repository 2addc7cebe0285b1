"""What every background-job aggregate shares (an evaluation, an export): it is started once,
ends once (completed or failed) and refuses anything else with the kernel's ``Conflict``; and a
file's sha256 for checking a checkpoint against its record before it is trusted. Pure but for
the file read: imports ``services.kernel.domain`` only."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from services.kernel.domain import Conflict

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

E = TypeVar("E")
J = TypeVar("J", bound="DataclassInstance")


def start_once(state: Any, event: E, noun: str, job_id: str) -> list[E]:
    if state is not None:
        raise Conflict(f"{noun} {job_id} already exists")
    return [event]


def finish_running(state: Any, event: E, noun: str) -> list[E]:
    if state is None or state.status != "running":
        raise Conflict(f"that {noun} is not running")
    return [event]


def ended(state: J | None, status: str, **changes: Any) -> J | None:
    """A job's state once its outcome is stored; an outcome with no start before it (none is
    stored so, but ``evolve`` folds whatever it is given) changes nothing."""
    return replace(state, status=status, **changes) if state is not None else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
