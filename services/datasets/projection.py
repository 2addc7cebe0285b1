"""The datasets service's own read model: the imports it runs, from its own stream, so that
after a crash it can find the imports it left unfinished. It is the kernel's job table, fed by
the import's lifecycle; applied by the kernel's projection runner, which stores the stream
position in the same transaction."""

from __future__ import annotations

from contracts import datasets as d
from services.datasets import domain
from services.kernel.jobs.table import JobTable


def import_jobs() -> JobTable:
    """Which imports each instance runs (``left_running``, ``running_elsewhere``)."""
    return JobTable("datasets-imports", d.STREAM, d.EVENTS, d.Event, [domain.IMPORT])
