"""Scaffolding of the projection tests against a real nats-server: the projects stream as an
event store, the base of a test projector of it (a subclass names itself, its tables and how it
applies an event), and a read-model file's test tables made up front.

Imports the kernel's event store, projection base and streams, and the projects contracts.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client as NATS
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from contracts import projects as c
from services.kernel.eventstore import EventStore
from services.kernel.projection import Decodes
from services.kernel.streams import StreamSpec, ensure_stream


async def projects_store(nc: NATS) -> EventStore[c.Event]:
    """The projects stream (made where missing) as an event store."""
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


class ProjectsProjector(Decodes):
    """A test projector of every projects event: a subclass gives its ``name``, its
    ``tables`` and ``apply``."""

    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = ()
    event_type = c.Event


async def make_tables(engine: AsyncEngine, *models: type[SQLModel]) -> None:
    """The tables of ``models`` in the engine's file, as a runner would find them."""
    tables = [model.__table__ for model in models]  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=tables)
