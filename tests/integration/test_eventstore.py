"""The event store against a real nats-server: idempotent, optimistic, atomic appends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from contracts import projects as c
from services.kernel.eventstore import H_EVENT_TYPE, H_MSG_ID, ConcurrencyConflict, EventStore
from services.kernel.streams import StreamSpec, ensure_stream

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def created(pid: str = "p1", mid: str = "m1") -> c.ProjectCreated:
    return c.ProjectCreated(project_id=pid, name="Cats", message_id=mid, occurred_at=T)


def renamed(name: str, mid: str, pid: str = "p1") -> c.ProjectRenamed:
    return c.ProjectRenamed(project_id=pid, name=name, message_id=mid, occurred_at=T)


async def test_append_then_load_returns_the_events_with_their_headers(store, nc):
    # given an empty store, when two appends follow each other
    v1 = await store.append("p1", [created()], 0)
    v2 = await store.append("p1", [renamed("Dogs", "m2")], v1)
    # then load replays both, in order, with type and message id headers
    loaded = await store.load("p1")
    assert [s.sequence for s in loaded] == [v1, v2]
    assert [s.event for s in loaded] == [created(), renamed("Dogs", "m2")]
    assert loaded[1].headers[H_MSG_ID] == "m2"
    assert loaded[1].headers[H_EVENT_TYPE] == "projects.project_renamed.v1"
    assert await store.version("p1") == v2
    assert await store.load("p1", after=v1) == loaded[1:]


async def test_a_retried_append_is_stored_once(store, nc):
    # given an append whose ack the writer never saw
    v1 = await store.append("p1", [created()], 0)
    # when the writer retries it with the same message id and the same expected version
    again = await store.append("p1", [created()], 0)
    # then it is a success that names the stored sequence, and the stream holds one message
    assert again == v1
    info = await nc.jetstream().stream_info(c.STREAM)
    assert info.state.messages == 1


async def test_a_retried_batch_is_stored_once(store, nc):
    v1 = await store.append("p1", [created()], 0)
    batch = [renamed("A", "b1"), renamed("B", "b2"), renamed("C", "b3")]
    first = await store.append("p1", batch, v1)
    again = await store.append("p1", batch, v1)
    assert again == first
    assert [s.event.name for s in await store.load("p1", after=v1)] == ["A", "B", "C"]


async def test_a_stale_writer_gets_a_conflict_and_nothing_is_stored(store, nc):
    v1 = await store.append("p1", [created()], 0)
    await store.append("p1", [renamed("Dogs", "m2")], v1)
    with pytest.raises(ConcurrencyConflict):
        await store.append("p1", [renamed("Birds", "m3")], v1)
    with pytest.raises(ConcurrencyConflict):
        await store.append("p1", [renamed("X", "m4"), renamed("Y", "m5")], v1)
    assert [s.event.name for s in await store.load("p1", after=v1)] == ["Dogs"]


async def test_concurrent_stale_appends_one_wins_the_rest_conflict(store, nc):
    # given one project at version v1, when ten writers append from v1 at once
    v1 = await store.append("p1", [created()], 0)
    results = await asyncio.gather(
        *(store.append("p1", [renamed(f"n{i}", f"w{i}")], v1) for i in range(10)),
        return_exceptions=True,
    )
    # then exactly one is stored and every other writer got a conflict
    wins = [r for r in results if isinstance(r, int)]
    assert len(wins) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if not isinstance(r, int))
    assert len(await store.load("p1")) == 2


async def test_aggregates_are_independent_and_ids_cannot_escape_their_subject(store, nc):
    await store.append("p1", [created("p1")], 0)
    await store.append("p2", [created("p2", "m9")], 0)
    assert [s.event.project_id for s in await store.load("p2")] == ["p2"]
    assert await store.version("nobody") == 0
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            await store.append(bad, [created()], 0)
