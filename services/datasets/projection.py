"""The datasets service's own read model: the imports it runs, from its own stream, so that
after a crash it can find the imports it left unfinished."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import datasets as d
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes


class ImportJob(SQLModel, table=True):
    __tablename__ = "import_jobs"
    import_id: str = Field(primary_key=True)
    dataset_id: str = Field(index=True)
    instance: str = Field(index=True)
    status: str = Field(index=True)


class ImportJobs(Decodes):
    name = "datasets-imports"
    stream = d.STREAM
    filter_subject = d.EVENTS
    tables: Sequence[Table] = (ImportJob.__table__,)  # type: ignore[attr-defined]
    event_type = d.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        if isinstance(event, d.ImportStarted):
            db.add(
                ImportJob(
                    import_id=event.import_id,
                    dataset_id=event.dataset_id,
                    instance=event.instance,
                    status="running",
                )
            )
        elif isinstance(event, d.ImportCompleted | d.ImportFailed):
            row = await db.get(ImportJob, event.import_id)
            if row is not None:
                row.status = "completed" if isinstance(event, d.ImportCompleted) else "failed"
                db.add(row)


async def unfinished(db: AsyncSession, instance: str) -> list[ImportJob]:
    """Imports this instance started and never ended: it was stopped while they ran."""
    query = select(ImportJob).where(
        col(ImportJob.instance) == instance, col(ImportJob.status) == "running"
    )
    return list((await db.exec(query)).all())
