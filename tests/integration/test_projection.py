"""The projection runner against a real nats-server: applied once, in order, rebuildable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy import Table
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.sqlite import create_engine, session
from services.kernel.streams import StreamSpec, ensure_stream

pytestmark = pytest.mark.integration


class Seen(SQLModel, table=True):
    """One row per applied event: a second application of one event would fail the test."""

    __tablename__ = "test_seen"
    sequence: int = Field(primary_key=True)
    project_id: str
    kind: str


class Recorder(Decodes):
    name = "recorder"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (Seen.__table__,)  # type: ignore[attr-defined]
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        kind = type(stored.event).__name__
        db.add(Seen(sequence=stored.sequence, project_id=stored.event.project_id, kind=kind))


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
async def runner(nc: NATS, tmp_path: Path) -> AsyncIterator[ProjectionRunner]:
    engine = create_engine(tmp_path / "model.db")
    r = ProjectionRunner(nc, engine, [Recorder()], consumer_prefix="test")
    yield r
    await r.stop()
    await engine.dispose()


async def write(store: EventStore[c.Event], projects: int, renames: int) -> int:
    last = 0
    for i in range(projects):
        pid = f"p{i}"
        v = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
        for j in range(renames):
            v = await store.append(pid, [c.ProjectRenamed(project_id=pid, name=f"n{j}")], v)
        last = v
    return last


async def rows(runner: ProjectionRunner) -> list[tuple[int, str, str]]:
    async with session(runner._engine) as db:
        return [(r.sequence, r.project_id, r.kind) for r in (await db.exec(select(Seen))).all()]


async def test_every_event_is_applied_once_in_stream_order(store, runner):
    last = await write(store, projects=3, renames=4)
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=10)
    seen = await rows(runner)
    assert [s for s, _, _ in seen] == list(range(1, last + 1))


async def test_an_event_redelivered_after_a_lost_ack_is_applied_once(store, runner, monkeypatch):
    # given the first acks never reach the server (the update is committed, the ack is lost)
    lost = {"count": 0}
    real_ack = Msg.ack

    async def flaky_ack(self: Msg) -> None:
        if lost["count"] < 2:
            lost["count"] += 1
            raise ConnectionError("ack lost")
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", flaky_ack)
    last = await write(store, projects=2, renames=2)
    # when the runner starts over from what it stored, and more events arrive
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=15)
    more = await write_more(store)
    assert await runner.wait_for(c.STREAM, more, timeout=15)
    # then each event was applied exactly once (the primary key would have refused a second)
    assert lost["count"] == 2
    assert [s for s, _, _ in await rows(runner)] == list(range(1, more + 1))


async def write_more(store: EventStore[c.Event]) -> int:
    return await store.append("late", [c.ProjectCreated(project_id="late", name="n")], 0)


async def test_a_restarted_runner_resumes_from_its_stored_position(store, runner, nc, tmp_path):
    last = await write(store, projects=2, renames=1)
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=10)
    await runner.stop()
    newer = await write_more(store)
    again = ProjectionRunner(nc, runner._engine, [Recorder()], consumer_prefix="test")
    await again.start()
    try:
        assert again.position(c.STREAM) == last
        assert await again.wait_for(c.STREAM, newer, timeout=10)
    finally:
        await again.stop()
    assert [s for s, _, _ in await rows(runner)] == list(range(1, newer + 1))


async def test_a_rebuild_replays_everything_into_an_identical_model(store, runner):
    last = await write(store, projects=4, renames=3)
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=10)
    before = await rows(runner)
    events, positions = await runner.rebuild(timeout=30)
    assert (events, positions) == (last, {c.STREAM: last})
    assert await rows(runner) == before


async def test_a_deleted_model_file_is_rebuilt_by_replay_at_start(store, nc, tmp_path):
    last = await write(store, projects=2, renames=2)
    path = tmp_path / "gone.db"
    for _attempt in range(2):  # the second start finds no file, but the same durable consumer
        engine = create_engine(path)
        r = ProjectionRunner(nc, engine, [Recorder()], consumer_prefix="same")
        await r.start()
        assert await r.wait_for(c.STREAM, last, timeout=10)
        assert [s for s, _, _ in await rows(r)] == list(range(1, last + 1))
        await r.stop()
        await engine.dispose()
        path.unlink()


async def test_wait_for_gives_up_after_its_timeout(runner):
    await runner.start()
    assert not await runner.wait_for(c.STREAM, 10_000, timeout=0.2)


class Named(SQLModel, table=True):
    """A table the recorder's next version adds: each project's latest name."""

    __tablename__ = "test_named"
    project_id: str = Field(primary_key=True)
    name: str


class Writer(Decodes):
    """A second projector writing the recorder's table (it must start over with it)."""

    name = "writer"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (Seen.__table__,)  # type: ignore[attr-defined]
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        db.add(Seen(sequence=-stored.sequence, project_id=stored.event.project_id, kind="w"))


class RecorderWithNames(Recorder):
    """The recorder after an upgrade that gave it a table: it must hold every event's name."""

    tables: Sequence[Table] = (Seen.__table__, Named.__table__)  # type: ignore[attr-defined]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        await super().apply(db, stored)
        await db.merge(Named(project_id=stored.event.project_id, name=stored.event.name))


async def test_a_projector_that_gained_a_table_replays_into_it_and_its_sharers(store, nc, tmp_path):
    # given a read model written by two projectors of one table, past their first events
    last = await write(store, projects=2, renames=2)
    engine = create_engine(tmp_path / "model.db")
    try:
        before = ProjectionRunner(nc, engine, [Recorder(), Writer()], consumer_prefix="grow")
        await before.start()
        assert await before.wait_for(c.STREAM, last, timeout=10)
        await before.stop()

        # when the recorder's new version, with a table the file lacks, starts on that file
        projectors = [RecorderWithNames(), Writer()]
        upgraded = ProjectionRunner(nc, engine, projectors, consumer_prefix="grow")
        await upgraded.start()
        assert await upgraded.wait_for(c.STREAM, last, timeout=10)
        await upgraded.stop()

        # then it replayed from the start: the new table holds every project's latest name,
        # and the table it shares was rebuilt by both its writers, each event once
        async with session(engine) as db:
            names = {(n.project_id, n.name) for n in (await db.exec(select(Named))).all()}
        assert names == {("p0", "n1"), ("p1", "n1")}
        found = sorted(s for s, _, _ in await rows(upgraded))
        assert found == sorted([*range(1, last + 1), *(-s for s in range(1, last + 1))])
    finally:
        await engine.dispose()


async def test_runners_of_one_new_file_starting_at_once_all_start(store, nc, tmp_path):
    # given several processes' engines on one read-model file that does not exist yet
    last = await write(store, projects=1, renames=1)
    engines = [create_engine(tmp_path / "shared.db") for _ in range(6)]
    runners = [
        ProjectionRunner(nc, e, [Recorder()], consumer_prefix=f"r{n}")
        for n, e in enumerate(engines)
    ]
    try:
        # when they all start at once, then each creates or finds the tables, none fails
        await asyncio.gather(*(r.start() for r in runners))
        # and between them the events are applied to the file, each once
        for _ in range(200):
            if len(await rows(runners[0])) == last:
                break
            await asyncio.sleep(0.05)
        assert [s for s, _, _ in await rows(runners[0])] == list(range(1, last + 1))
    finally:
        for r in runners:
            await r.stop()
        for e in engines:
            await e.dispose()
