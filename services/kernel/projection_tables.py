"""The projection runner's tables: its position table, the start's DDL, the rebuild's reset,
and the position bookkeeping each batch does in its transaction.

``projection_position`` holds, per projector, how far it has applied its stream and how many
events that took: a batch reads the positions once it holds the file's write turn (``turn``,
then ``positions``), and stores the new ones with its rows (``advance``), in one transaction,
so an event is applied once whatever process applies it and whenever one dies. ``prepare`` is
the start's one transaction: it creates what the file lacks and starts over every projector
given a table since the file was written (``sqlschema.stale``: its tables, and those of the
projectors sharing one, dropped and created empty, their positions deleted), all or nothing,
so a process killed in it leaves the file as it was. ``reset`` empties every projector's
tables and positions for a rebuild. The consuming loop is ``services.kernel.projection``'s.

Imports SQLAlchemy, sqlmodel and the kernel's ``sqlschema``, ``sqlite`` and
``projection_faults`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, cast

from sqlalchemy import Table, inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel, select

from services.kernel import sqlschema
from services.kernel.projection_faults import fault_point
from services.kernel.sqlite import session

log = logging.getLogger(__name__)

#: How often the start's DDL is tried when another process's CREATE came between SQLAlchemy's
#: check and its own (two runners of one file starting at once).
START_TRIES = 5


class ProjectionPosition(SQLModel, table=True):
    __tablename__ = "projection_position"
    projector: str = Field(primary_key=True)
    stream: str
    position: int = 0
    events: int = 0


class Owner(Protocol):
    """What the bookkeeping needs of a projector: its name and the tables it owns."""

    name: str
    tables: Sequence[Table]


async def prepare(engine: AsyncEngine, projectors: Sequence[Owner]) -> None:
    """The start's DDL, one transaction: the position table and every projector's tables
    created where missing, and projectors given a table since started over (see above)."""
    for attempt in range(START_TRIES):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(create, [table(ProjectionPosition)])
                await conn.run_sync(_replay_new_tables, projectors)
                for p in projectors:
                    await conn.run_sync(create, p.tables)
            break
        except OperationalError as exc:  # another process of this file created it first
            if "already exists" not in str(exc) or attempt == START_TRIES - 1:
                raise
    fault_point("tables_ready")


def _replay_new_tables(conn: Any, projectors: Sequence[Owner]) -> None:
    """Projectors with a table the file lacks start over (``sqlschema.stale``)."""
    at = dict(conn.exec_driver_sql(_POSITIONS).all())
    tables_of = {p.name: [t.name for t in p.tables] for p in projectors}
    if not (replay := sqlschema.stale(tables_of, set(inspect(conn).get_table_names()), at)):
        return
    log.warning("the read model lacks tables of %s: replaying them", ", ".join(replay))
    again = [p for p in projectors if p.name in replay]
    drop(conn, list({t.name: t for p in again for t in p.tables}.values()))
    positions = table(ProjectionPosition)
    conn.execute(positions.delete().where(positions.c.projector.in_(replay)))


async def reset(engine: AsyncEngine, projectors: Sequence[Owner]) -> None:
    """Every projector's tables emptied (dropped, created) and every position deleted."""
    async with engine.begin() as conn:
        for p in projectors:
            await conn.run_sync(drop, p.tables)
            await conn.run_sync(create, p.tables)
        await conn.execute(table(ProjectionPosition).delete())


async def stored(engine: AsyncEngine) -> list[ProjectionPosition]:
    """Every projector's stored position, as committed now."""
    async with session(engine) as db:
        return list((await db.exec(select(ProjectionPosition))).all())


async def turn(conn: AsyncConnection) -> None:
    """Takes the file's write turn: another process may apply the same events to this file,
    so the positions a batch goes by are read once no other writer can change them."""
    await conn.exec_driver_sql(_TURN)


async def positions(conn: AsyncConnection) -> dict[str, int]:
    """Each projector's stored position, read in the caller's transaction."""
    return dict(cast(Any, await conn.exec_driver_sql(_POSITIONS)).all())


async def advance(conn: AsyncConnection, rows: Sequence[tuple[str, str, int, int]]) -> None:
    """Stores (projector, stream, new position, events applied) rows in the caller's
    transaction: the position replaced, the events added to the count."""
    if rows:
        await conn.exec_driver_sql(_ADVANCE, list(rows))


#: As the driver takes them (SQLAlchemy's building and compiling cost more than SQLite's work):
#: a write that takes the file's turn, the positions, each projector's new one and count.
_TURN, _POSITIONS = (
    "UPDATE projection_position SET position = position WHERE 0",
    "SELECT projector, position FROM projection_position",
)
_ADVANCE = (
    "INSERT INTO projection_position (projector, stream, position, events) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (projector) DO UPDATE SET position = excluded.position,"
    " events = projection_position.events + excluded.events"
)


def table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined]


def create(conn: Any, tables: Sequence[Table]) -> None:
    SQLModel.metadata.create_all(conn, tables=list(tables))


def drop(conn: Any, tables: Sequence[Table]) -> None:
    SQLModel.metadata.drop_all(conn, tables=list(tables))
