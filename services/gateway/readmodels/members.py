"""The gateway's read model of project members: who holds which role in which project, folded
from the member events of the PROJECTS stream, and the queries access checks read it with.

A project created before members existed has none: only site admins reach it. Imports
sqlmodel, ``contracts.projects`` and the kernel's projection plumbing; nothing of the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, delete, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from contracts import projects as c
from services.gateway.readmodels.base import iso, upsert
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes
from services.kernel.sqlite import Reader

__all__ = [
    "RANK",
    "MemberRow",
    "MembersProjector",
    "get_member",
    "list_members",
    "member_projects",
    "owners",
    "role_of",
    "roles_of",
]

#: Each role includes every role ranked below it.
RANK: Final = {"viewer": 1, "editor": 2, "owner": 3}


class MemberRow(SQLModel, table=True):
    __tablename__ = "project_members"
    project_id: str = Field(primary_key=True)
    user_id: str = Field(primary_key=True, index=True)
    role: str
    added_at: datetime
    added_by: str
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        """What clients see of a membership."""
        return {
            "project_id": self.project_id,
            "user_id": self.user_id,
            "role": self.role,
            "added_at": iso(self.added_at),
            "added_by": self.added_by,
            "updated_at": iso(self.updated_at),
        }


class MembersProjector(Decodes):
    name = "members"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (MemberRow.__table__,)  # type: ignore[attr-defined]
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[c.Event]) -> None:
        event = stored.event
        when = event.occurred_at
        if not isinstance(event, c.MemberAdded | c.MemberRoleChanged | c.MemberRemoved):
            return  # not a member event: nothing to fold
        key = (_TABLE.c.project_id == event.project_id) & (_TABLE.c.user_id == event.user_id)
        match event:
            case c.MemberAdded():
                row = {
                    "project_id": event.project_id,
                    "user_id": event.user_id,
                    "role": event.role,
                    "added_at": when,
                    "added_by": event.actor,
                    "updated_at": when,
                }
                # A replayed add after a rebuild lands on the same key (one plain upsert).
                await db.exec(upsert(_TABLE, row, ("project_id", "user_id")))
            case c.MemberRoleChanged():
                await db.exec(update(_TABLE).where(key).values(role=event.role, updated_at=when))
            case c.MemberRemoved():
                await db.exec(delete(_TABLE).where(key))


_TABLE: Table = MemberRow.__table__  # type: ignore[attr-defined]


# --- queries ----------------------------------------------------------------------------------


async def get_member(db: AsyncSession, *, project_id: str, user_id: str) -> MemberRow | None:
    return await db.get(MemberRow, (project_id, user_id))


async def list_members(db: AsyncSession, *, project_id: str) -> list[MemberRow]:
    """A project's members, owners first, then by user id."""
    rank = {role: -n for role, n in RANK.items()}
    query = select(MemberRow).where(col(MemberRow.project_id) == project_id)
    rows = list((await db.exec(query.order_by(col(MemberRow.user_id)))).all())
    return sorted(rows, key=lambda r: rank.get(r.role, 0))


async def owners(db: AsyncSession, *, project_id: str) -> int:
    """How many owners a project has."""
    rows = await list_members(db, project_id=project_id)
    return sum(1 for r in rows if r.role == "owner")


async def roles_of(db: AsyncSession, *, user_id: str, project_ids: Sequence[str]) -> dict[str, str]:
    """``user_id``'s role in each of ``project_ids`` it is a member of."""
    query = select(MemberRow).where(
        col(MemberRow.user_id) == user_id, col(MemberRow.project_id).in_(project_ids)
    )
    return {row.project_id: row.role for row in (await db.exec(query)).all()}


def role_of(reader: Reader, *, project_id: str, user_id: str) -> str | None:
    """``user_id``'s role in ``project_id``; None for a non-member (the lean path)."""
    found = reader.one(_ROLE_SQL, (project_id, user_id))
    return str(found[0]) if found else None


_ROLE_SQL = "SELECT role FROM project_members WHERE project_id = ? AND user_id = ?"


def member_projects(user_id: str) -> SelectOfScalar[str]:
    """The ids of the projects ``user_id`` is a member of, as a subquery for ``IN``."""
    return select(MemberRow.project_id).where(col(MemberRow.user_id) == user_id)
