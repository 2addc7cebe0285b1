"""The exporter's own read model: which exports each instance runs, one method per event type,
so that an instance that stopped can end the ones it left running.

Applied by the kernel's projection runner, which stores the stream position in the same
transaction. Imports ``contracts`` and the kernel only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import exports as x
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes
from services.kernel.sqlite import session


class ExportJob(SQLModel, table=True):
    __tablename__ = "export_jobs"
    export_id: str = Field(primary_key=True)
    run_id: str
    instance: str = Field(index=True)
    status: str = Field(index=True)


class ExportJobs(Decodes):
    """Which exports this service runs, so that after a crash none stays running."""

    name = "exporter-jobs"
    stream = x.STREAM
    filter_subject = x.EVENTS
    event_type = x.Event
    tables: Sequence[Table] = (ExportJob.__table__,)  # type: ignore[attr-defined]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        match stored.event:
            case x.ExportRequested() as event:
                self.requested(db, event)
            case x.ExportCompleted() as event:
                await self.completed(db, event)
            case x.ExportFailed() as event:
                await self.failed(db, event)

    def requested(self, db: AsyncSession, event: x.ExportRequested) -> None:
        row = ExportJob(
            export_id=event.export_id,
            run_id=event.run_id,
            instance=event.instance,
            status="running",
        )
        db.add(row)

    async def completed(self, db: AsyncSession, event: x.ExportCompleted) -> None:
        await _ended(db, event.export_id)

    async def failed(self, db: AsyncSession, event: x.ExportFailed) -> None:
        await _ended(db, event.export_id)


async def _ended(db: AsyncSession, export_id: str) -> None:
    row = await db.get(ExportJob, export_id)
    if row is not None:
        row.status = "ended"
        db.add(row)


async def left_running(db: AsyncEngine, instance: str) -> list[tuple[str, str]]:
    """(export id, run id) of the exports ``instance`` runs, as far as the model has seen."""
    async with session(db) as s:
        query = select(ExportJob).where(
            col(ExportJob.instance) == instance, col(ExportJob.status) == "running"
        )
        return [(job.export_id, job.run_id) for job in (await s.exec(query)).all()]
