"""The gateway's read model of projects: a SQLite table folded from the PROJECTS stream, and the
queries the routes read it with. The projector writes with plain SQL statements (no unit of
work: an event is one INSERT or one UPDATE); ``project_public`` is the hot read through the
kernel's lean ``Reader``. Imports sqlmodel, ``contracts.projects`` and the kernel's projection
plumbing; nothing of the routes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, func, insert, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.gateway.readmodels.base import Page, contains, iso
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes
from services.kernel.sqlite import Reader

__all__ = [
    "ProjectRow",
    "ProjectsProjector",
    "Sort",
    "exists",
    "get_project",
    "list_projects",
    "project_public",
]

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
            row = {
                "id": event.project_id,
                "name": event.name,
                "description": event.description,
                "task_type": event.task_type,
                "archived": False,
                "version": 1,
                "created_at": when,
                "updated_at": when,
                "created_by": event.actor,
            }
            await db.exec(insert(_TABLE).values(row))
            return
        changes: dict[str, Any] = {}
        match event:
            case c.ProjectRenamed():
                changes["name"] = event.name
            case c.ProjectDescriptionUpdated():
                changes["description"] = event.description
            case c.ProjectArchived():
                changes["archived"] = True
            case c.ProjectRestored():
                changes["archived"] = False
        # The project's own count of events, as its service counts them (If-Match compares it).
        # An event for a project this model never saw created matches no row: nothing to fold.
        changes |= {"version": _TABLE.c.version + 1, "updated_at": when}
        await db.exec(update(_TABLE).where(_TABLE.c.id == event.project_id).values(changes))


_TABLE: Table = ProjectRow.__table__  # type: ignore[attr-defined]
_PUBLIC_SQL = (
    "SELECT id, name, description, task_type, archived, version, created_at, updated_at,"
    " created_by FROM projects WHERE id = ?"
)


# --- queries ----------------------------------------------------------------------------------


async def get_project(db: AsyncSession, *, project_id: str) -> ProjectRow | None:
    return await db.get(ProjectRow, project_id)


def exists(reader: Reader, *, project_id: str) -> bool:
    """Whether this read model knows ``project_id`` (the lean path)."""
    return reader.one("SELECT 1 FROM projects WHERE id = ?", (project_id,)) is not None


def project_public(reader: Reader, *, project_id: str) -> dict[str, Any] | None:
    """What clients see of a project (``ProjectRow.public``), read through the lean path."""
    found = reader.one(_PUBLIC_SQL, (project_id,))
    if found is None:
        return None
    pid, name, description, task_type, archived, version, created, updated, by = found
    return {
        "id": pid,
        "name": name,
        "description": description,
        "task_type": task_type,
        "status": "archived" if archived else "active",
        "version": version,
        "created_at": iso(datetime.fromisoformat(created)),
        "updated_at": iso(datetime.fromisoformat(updated)),
        "created_by": by,
    }


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
