"""Fault injection for tests: kill this process at an exact step of an epoch's boundary.

Inert unless the environment variable ``STUDIO_FAULT_POINT`` is set, which no deployment does.
It holds ``POINT:EPOCH`` (several joined by commas), and the trainer process kills itself with
SIGKILL — no cleanup, no last words, as a power cut or the OOM killer would — when it reaches
that point of that epoch. The points, in the order an epoch passes them:

``after_train_pass``        the epoch is trained and validated; nothing of it is written yet
``after_checkpoint_write``  its checkpoint file is on disk; not yet in the Object Store
``after_upload``            the file is in the Object Store too; its events are not stored yet
``after_append``            its events are stored; older files are not pruned yet

The reliability tests (``tests/reliability/test_training_faults.py``) kill the trainer at each
of them. Imports the standard library only.
"""

from __future__ import annotations

import os
import signal

ENV = "STUDIO_FAULT_POINT"
POINTS = ("after_train_pass", "after_checkpoint_write", "after_upload", "after_append")


def parse(spec: str) -> set[tuple[str, int]]:
    """``"after_upload:2,after_append:3"`` → {("after_upload", 2), ("after_append", 3)};
    ValueError for an unknown point or a bad epoch, so a mistyped test fails loudly."""
    points = set()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, epoch = item.partition(":")
        if point not in POINTS or not epoch.isdigit():
            raise ValueError(f"{ENV}: {item!r} is not POINT:EPOCH with POINT one of {POINTS}")
        points.add((point, int(epoch)))
    return points


#: The spec the composition root armed from its settings (``.env`` included); None: the env's.
_armed: set[tuple[str, int]] | None = None


def arm(spec: str) -> None:
    """Arms the points of ``spec`` (``settings.fault_point``); an empty spec arms none."""
    global _armed
    _armed = parse(spec)


def fault_point(point: str, epoch: int) -> None:
    """Kills this process if ``STUDIO_FAULT_POINT`` names ``point`` at ``epoch``; else nothing."""
    armed = _armed if _armed is not None else parse(os.environ.get(ENV) or "")
    if (point, epoch) in armed:
        os.kill(os.getpid(), signal.SIGKILL)
