"""The exporter's own read model: which exports each instance runs, so that an instance that
stopped can end the ones it left running. It is the kernel's job table, fed by the Export's
lifecycle; applied by the kernel's projection runner, which stores the stream position in the
same transaction. Imports ``contracts``, the domain and the kernel only.
"""

from __future__ import annotations

from contracts import exports as x
from services.exporter import domain
from services.kernel.jobs.table import JobTable


def export_jobs() -> JobTable:
    """Which exports this service runs, so that after a crash none stays running."""
    return JobTable("exporter-jobs", x.STREAM, x.EVENTS, x.Event, [domain.EXPORT])
