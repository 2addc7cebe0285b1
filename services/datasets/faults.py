"""Fault injection for tests: kill this datasets process right after one write of an import's
lease path, the way a power cut or the OOM killer would (SIGKILL: no cleanup, no last words).

Inert unless the environment variable ``STUDIO_IMPORT_FAULT`` is set, which no deployment does.
It names points (several joined by commas); the process kills itself when it first passes one:

``after_lease_acquire``    an import's lease is taken; its ``ImportStarted`` is not stored yet
``after_lease_renew``      the lease of a running import was renewed
``after_lease_release``    an import's lease was released, its outcome stored, its files gone
``after_reap_append``      a reaper stored ``ImportFailed`` for a gone instance's import; the
                           lease it took over is held, that import's files are still there
``after_staging_cleanup``  an ended import's staging file and upload folder were removed; its
                           lease is still held

The reliability tests (``tests/reliability/test_import_kills.py``) kill the datasets service at
each of them. Imports the standard library only.
"""

from __future__ import annotations

import os
import signal

ENV = "STUDIO_IMPORT_FAULT"
POINTS = (
    "after_lease_acquire",
    "after_lease_renew",
    "after_lease_release",
    "after_reap_append",
    "after_staging_cleanup",
)
_armed: frozenset[str] | None = None


def parse(spec: str) -> frozenset[str]:
    """``"after_lease_renew,after_reap_append"`` → those points; ValueError for an unknown one,
    so that a mistyped test fails loudly."""
    points = frozenset(filter(None, (part.strip() for part in spec.split(","))))
    unknown = sorted(points - set(POINTS))
    if unknown:
        raise ValueError(f"{ENV}: {', '.join(unknown)} not one of {', '.join(POINTS)}")
    return points


def arm() -> None:
    """Reads ``STUDIO_IMPORT_FAULT`` once (the composition root calls it at start)."""
    global _armed
    _armed = parse(os.environ.get(ENV) or "")


def armed(point: str) -> bool:
    if _armed is None:
        arm()
    assert _armed is not None
    return point in _armed


def fault_point(point: str) -> None:
    """Kills this process if ``point`` is armed; else nothing."""
    if armed(point):
        os.kill(os.getpid(), signal.SIGKILL)
