"""Background jobs, one shape for every context: an import, an evaluation, an export.

- ``decider``: the job decider (``Lifecycle``): started once, ended once while running. Pure.
- ``runner``: the job runner (``JobRunner``): claim, run with a heartbeat, record the outcome
  through the decider in the starting command's trace, reap what a stop left running.
- ``table``: the job projection: every job table's status transitions, written once.

This package's own module holds what is pure (the decider, re-exported) and a file's sha256
for checking an artifact against its record before it is trusted; the runner and the table
are imported by their module, so that a decider importing ``services.kernel.jobs`` stays pure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.kernel.jobs.decider import COMPLETED, FAILED, RUNNING, Lifecycle

__all__ = ["COMPLETED", "FAILED", "RUNNING", "Lifecycle", "sha256_file"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
