"""What every background-job aggregate shares (an evaluation, an export): it is started once,
ends once (completed or failed) and refuses anything else; and a file's sha256 for checking a
checkpoint against its record before it is trusted."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, TypeVar

from contracts import common

E = TypeVar("E")


class Refused(Exception):
    """A job's refusal, answered with its code (and the HTTP status when the code alone does
    not say)."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 0):
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status


def start_once(state: Any, event: E, noun: str, job_id: str) -> list[E]:
    if state is not None:
        raise Refused(common.CONFLICT, f"{noun} {job_id} already exists")
    return [event]


def finish_running(state: Any, event: E, noun: str) -> list[E]:
    if state is None or state.status != "running":
        raise Refused(common.CONFLICT, f"that {noun} is not running")
    return [event]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
