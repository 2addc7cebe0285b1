"""Several projectors and an API writer on one read-model file, against a real nats-server:
none fails with ``database is locked`` nor restarts, and every event is applied once.

Found by the benchmarks: under load the gateway's projections failed with ``database is
locked`` and restarted (44 times in one run), and a request then read a read model that had
not applied its own command. Here SQLite's busy timeout is cut to 50 ms (what 5 s is on a
loaded machine) and every transaction spans event-loop turns, as on a busy gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import Table, update
from sqlmodel import Field, SQLModel, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel import sqlite as kernel_sqlite
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import ProjectionRunner
from services.kernel.sqlite import create_engine, session
from tests.projection_helpers import ProjectsProjector, make_tables, projects_store

pytestmark = pytest.mark.integration
PROJECTORS, PROJECTS, RENAMES = 4, 10, 9


class Applied(SQLModel, table=True):
    __tablename__ = "test_applied_by"
    projector: str = Field(primary_key=True)
    sequence: int = Field(primary_key=True)


class Note(SQLModel, table=True):
    """What an API request writes to the read model meanwhile (a key, a limit)."""

    __tablename__ = "test_api_note"
    n: int = Field(primary_key=True)


class Slow(ProjectsProjector):
    """Reads, yields to the loop, then writes: each batch's transaction spans loop turns."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        await db.get(Applied, (self.name, stored.sequence))
        await asyncio.sleep(0)
        db.add(Applied(projector=self.name, sequence=stored.sequence))
        await db.flush()


async def test_projectors_and_api_writes_share_a_file_without_locked(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kernel_sqlite, "BUSY_TIMEOUT_MS", 50)
    caplog.set_level(logging.WARNING, logger="services.kernel.projection")
    store = await projects_store(nc)
    engine = create_engine(tmp_path / "readmodel.db")
    await make_tables(engine, Applied, Note)
    projectors = [Slow(f"slow{i}") for i in range(PROJECTORS)]
    runner = ProjectionRunner(nc, engine, projectors, consumer_prefix="writers", batch=16)
    await runner.start()
    stop = asyncio.Event()

    async def api_writes() -> int:
        n = 0
        while not stop.is_set():
            async with session(engine) as db:
                db.add(Note(n=n))
                await db.flush()
                await asyncio.sleep(0.01)  # a request's transaction outlives a loop turn
                await db.commit()
            n += 1
        return n

    writer = asyncio.create_task(api_writes())
    try:
        last = 0
        for i in range(PROJECTS):
            pid = f"w{i}"
            v = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
            for j in range(RENAMES):
                v = await store.append(pid, [c.ProjectRenamed(project_id=pid, name=f"{j}")], v)
            last = max(last, (await nc.jetstream().stream_info(c.STREAM)).state.last_seq)
        assert await runner.wait_for(c.STREAM, last, timeout=60)
        # every event stored (this test's, and any an earlier test of the session left)
        events = (await nc.jetstream().stream_info(c.STREAM)).state.messages
    finally:
        stop.set()
        await runner.stop()
        (notes,) = await asyncio.gather(writer, return_exceptions=True)
    try:
        async with session(engine) as db:
            query = select(Applied.projector, func.count()).group_by("projector")
            per = (await db.exec(query)).all()
    finally:
        await engine.dispose()
    assert isinstance(notes, int), f"an API write failed: {notes!r}"
    assert events >= PROJECTS * (RENAMES + 1)
    assert dict(per) == {p.name: events for p in projectors}
    assert notes > 0
    failures = [r.getMessage() for r in caplog.records if r.name == "services.kernel.projection"]
    assert failures == []


class Counted(ProjectsProjector):
    """Adds one to a counter per event: applying an event twice shows."""

    name = "counted"
    tables: Sequence[Table] = (Note.__table__,)  # type: ignore[attr-defined]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        await db.exec(update(Note).values(n=Note.n + 1))


async def test_two_gateways_sharing_a_read_model_apply_each_event_once(
    nc: NATS, tmp_path: Path
) -> None:
    # given two runners on one file, as two gateways of one workspace, each with its consumer
    store = await projects_store(nc)
    path = tmp_path / "readmodel.db"
    engines = [create_engine(path), create_engine(path)]
    runners = [
        ProjectionRunner(nc, engine, [Counted()], consumer_prefix=f"shared-{i}", batch=4)
        for i, engine in enumerate(engines)
    ]
    await make_tables(engines[0], Note)
    async with session(engines[0]) as db:
        db.add(Note(n=0))
        await db.commit()
    try:
        for runner in runners:
            await runner.start()
        # when events arrive while both apply them
        for i in range(20):
            pid = f"s{i}"
            last = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
        for runner in runners:
            assert await runner.wait_for(c.STREAM, last, timeout=60)
        # then each event of the stream (this test's, and any earlier test's) was applied once
        events = (await nc.jetstream().stream_info(c.STREAM)).state.messages
        async with session(engines[0]) as db:
            (count,) = (await db.exec(select(Note.n))).all()
    finally:
        for runner in runners:
            await runner.stop()
        for engine in engines:
            await engine.dispose()
    assert count == events
