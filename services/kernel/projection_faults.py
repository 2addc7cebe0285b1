"""Fault injection for tests: kill this process at an exact step of a read model's rebuild.

Inert unless the environment variable ``STUDIO_READMODEL_FAULT`` is set, which no deployment
does. It holds ``POINT:N`` or ``POINT:WHO:N`` (several joined by commas): the process kills
itself with SIGKILL (no cleanup, no last words, as a power cut or the OOM killer would) the Nth
time it reaches that point (counting only the times ``WHO``, a projector group, reached it when
one is named). The points, in the order a rebuild passes them:

``aside_noted``       a file to set aside has its new name noted; nothing is moved yet
``aside_file_moved``  the file is moved aside; its WAL and shared memory are not yet
``aside_done``        all moved, the older copies pruned; the new file is not opened yet
``tables_ready``      the projection's start committed its DDL (tables created, projectors
                      given a table since started over); no event is applied yet
``batch_applied``     a batch's events are applied, in its transaction; its positions are not
                      stored yet, nothing committed
``batch_committed``   a batch and its positions are committed; not yet acknowledged
``caught_up``         a group's batch left nothing pending on its consumer (a replay done)

The reliability tests (``tests/reliability/test_schema_kills.py``) kill a projection process
at each of them. Imports the standard library only.
"""

from __future__ import annotations

import os
import signal

ENV = "STUDIO_READMODEL_FAULT"
POINTS = (
    "aside_noted",
    "aside_file_moved",
    "aside_done",
    "tables_ready",
    "batch_applied",
    "batch_committed",
    "caught_up",
)
#: How many times each (point, who) and each (point, "") was reached in this process.
_reached: dict[tuple[str, str], int] = {}


def fault_point(point: str, who: str = "") -> None:
    """Kills this process if ``STUDIO_READMODEL_FAULT`` names ``point`` (reached by ``who``)
    at the count it has reached now; else nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for key in {(point, ""), (point, who)}:
        _reached[key] = _reached.get(key, 0) + 1
    for armed_point, armed_who, times in parse(spec):
        if armed_point == point and _reached.get((point, armed_who)) == times:
            os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> list[tuple[str, str, int]]:
    """``"aside_done:1,batch_committed:recorder:3"`` → its (point, who, times); ValueError for
    an unknown point or a bad count, so a mistyped test fails loudly."""
    armed = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        point, who, times = parts[0], ":".join(parts[1:-1]), parts[-1]
        if point not in POINTS or len(parts) not in (2, 3) or not times.isdigit():
            raise ValueError(f"{ENV}: {item!r} is not POINT[:WHO]:N of {POINTS}")
        armed.append((point, who, int(times)))
    return armed
