"""The gateway's read model of projects: a SQLite table folded from the PROJECTS stream, and the
queries the routes read it with. Imports sqlmodel, ``contracts.projects`` and the kernel's
projection plumbing; nothing of the routes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.gateway.readmodels.base import Page, contains, iso
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes

__all__ = ["ProjectRow", "ProjectsProjector", "Sort", "get_project", "list_projects"]

Sort = Literal["created_at", "-created_at", "name", "-name", "updated_at", "-updated_at"]


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


# --- queries ----------------------------------------------------------------------------------


async def get_project(db: AsyncSession, *, project_id: str) -> ProjectRow | None:
    return await db.get(ProjectRow, project_id)


async def list_projects(
    db: AsyncSession,
    *,
    q: str | None,
    limit: int,
    offset: int,
    archived: bool | None,
    task_type: str | None = None,
    sort: Sort = "-created_at",
    among: Any = None,
) -> Page[ProjectRow]:
    """A page of projects in ``sort`` order (then by id); ``archived=None`` is both kinds;
    ``among`` (a subquery of project ids), only those."""
    query = select(ProjectRow)
    if among is not None:
        query = query.where(col(ProjectRow.id).in_(among))
    if archived is not None:
        query = query.where(col(ProjectRow.archived) == archived)
    if task_type:
        query = query.where(col(ProjectRow.task_type) == task_type)
    if q:
        query = query.where(contains(ProjectRow.name, q))
    total = (await db.exec(select(func.count()).select_from(query.subquery()))).one()
    column = col(getattr(ProjectRow, sort.lstrip("-")))
    order = column.desc() if sort.startswith("-") else column.asc()
    rows = await db.exec(query.order_by(order, col(ProjectRow.id)).offset(offset).limit(limit))
    return Page(list(rows.all()), total)
