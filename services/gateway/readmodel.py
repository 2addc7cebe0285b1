"""The gateway's read model of projects: a SQLite table folded from the PROJECTS stream."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes


class ProjectRow(SQLModel, table=True):
    __tablename__ = "projects"
    id: str = Field(primary_key=True)
    name: str = Field(index=True)
    description: str = ""
    task_type: str
    archived: bool = Field(default=False, index=True)
    version: int
    created_at: datetime = Field(index=True)
    updated_at: datetime
    created_by: str

    def public(self) -> dict[str, Any]:
        """What clients see of a project."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "task_type": self.task_type,
            "status": "archived" if self.archived else "active",
            "version": self.version,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "created_by": self.created_by,
        }


def iso(moment: datetime) -> str:
    # SQLite may hand back a naive time; every stored time is UTC.
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProjectsProjector(Decodes):
    name = "projects"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (ProjectRow.__table__,)  # type: ignore[attr-defined]
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[c.Event]) -> None:
        event = stored.event
        when = event.occurred_at
        if isinstance(event, c.ProjectCreated):
            db.add(
                ProjectRow(
                    id=event.project_id,
                    name=event.name,
                    description=event.description,
                    task_type=event.task_type,
                    version=1,
                    created_at=when,
                    updated_at=when,
                    created_by=event.actor,
                )
            )
            return
        row = await db.get(ProjectRow, event.project_id)
        if row is None:  # an event for a project this model never saw created: nothing to fold
            return
        match event:
            case c.ProjectRenamed():
                row.name = event.name
            case c.ProjectDescriptionUpdated():
                row.description = event.description
            case c.ProjectArchived():
                row.archived = True
            case c.ProjectRestored():
                row.archived = False
        # The project's own count of events, as its service counts them (If-Match compares it).
        row.version, row.updated_at = row.version + 1, when
        db.add(row)
