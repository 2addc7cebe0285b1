"""The gateway's read model of exports (state, file, sha256, parity and latency figures) and the
queries the routes read it with. Imports sqlmodel, ``contracts.exports`` and the kernel's
projection plumbing; nothing of the routes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Table
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import exports as x
from services.gateway.readmodels.base import iso
from services.gateway.readmodels.training.tables import RunRow
from services.kernel.eventstore import StoredEvent
from services.kernel.jobs import Lifecycle
from services.kernel.jobs.table import fold_job
from services.kernel.projection import Decodes

__all__ = ["ExportRow", "ExportsProjector", "get_export", "list_exports"]

EXPORT = Lifecycle(*x.EXPORT_JOB)


class ExportRow(SQLModel, table=True):
    __tablename__ = "exports"
    export_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    status: str
    format: str
    checkpoint: str
    checkpoint_epoch: int
    checkpoint_sha256: str
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    parity: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    latency: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    bundle_size: int | None = None
    bundle_sha256: str | None = None
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    started_at: datetime
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"export_id", "started_at", "finished_at"})
        return {"id": self.export_id, **data} | {
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
        }


class ExportsProjector(Decodes):
    name = "exports"
    stream = x.STREAM
    filter_subject = x.EVENTS
    event_type = x.Event
    tables: Sequence[Table] = (ExportRow.__table__,)  # type: ignore[attr-defined]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        row = await fold_job(db, ExportRow, EXPORT, event)
        if row is None:
            return
        row.parity = msgspec.to_builtins(event.parity)
        if isinstance(event, x.ExportCompleted):
            row.file_name, row.size, row.sha256 = event.file_name, event.size, event.sha256
            row.latency = msgspec.to_builtins(event.latency)
            row.bundle_size, row.bundle_sha256 = event.bundle_size, event.bundle_sha256


# --- queries ----------------------------------------------------------------------------------


async def get_export(db: AsyncSession, *, export_id: str) -> ExportRow | None:
    return await db.get(ExportRow, export_id)


async def list_exports(
    db: AsyncSession, *, run_id: str | None = None, project_id: str | None = None
) -> list[ExportRow]:
    """A run's exports, or every export of a project's runs, newest first."""
    query = select(ExportRow)
    if run_id:
        query = query.where(col(ExportRow.run_id) == run_id)
    if project_id:
        runs = select(RunRow.run_id).where(col(RunRow.project_id) == project_id)
        query = query.where(col(ExportRow.run_id).in_(runs))
    return list((await db.exec(query.order_by(col(ExportRow.started_at).desc()))).all())
