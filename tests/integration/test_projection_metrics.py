"""The kernel's bus metrics against a real nats-server: every append counted by stream, once;
each projector's events consumed, position and consumer lag, labelled by service, projector
and stream, there from its start and caught up with the stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel.eventstore import ConcurrencyConflict, EventStore, StoredEvent
from services.kernel.projection import ProjectionRunner
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from tests.integration.test_projection import Recorder

pytestmark = pytest.mark.integration

LABELS = {"service": "metrics", "projector": "recorder", "stream": c.STREAM}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def figure(name: str) -> float | None:
    return sample(name, **LABELS)


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Gated(Recorder):
    """Stops before applying ``stop_at`` until ``gate`` opens: a projector falling behind."""

    def __init__(self, stop_at: int) -> None:
        self.stop_at, self.gate, self.waiting = stop_at, asyncio.Event(), asyncio.Event()

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        if stored.sequence == self.stop_at:
            self.waiting.set()
            await self.gate.wait()
        await super().apply(db, stored)


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Any]:
    engine = create_engine(tmp_path / "model.db")
    yield engine
    await engine.dispose()


async def write(store: EventStore[c.Event], projects: int, first: int = 0) -> int:
    last = 0
    for i in range(first, first + projects):
        pid = f"m{i}"
        last = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
    return last


async def test_every_append_counts_each_event_stored_once(store: EventStore[c.Event]) -> None:
    # given the stream's series exists before any append
    before = sample("studio_events_appended_total", stream=c.STREAM)
    assert before is not None
    # when one event, then a batch of two, are stored, and a stale append is refused
    v = await store.append("a1", [c.ProjectCreated(project_id="a1", name="n")], 0)
    batch = [c.ProjectRenamed(project_id="a1", name=f"n{i}") for i in range(2)]
    await store.append("a1", batch, v)
    with pytest.raises(ConcurrencyConflict):
        await store.append("a1", [c.ProjectRenamed(project_id="a1", name="late")], v)
    # then three events are counted
    assert sample("studio_events_appended_total", stream=c.STREAM) == before + 3


async def test_a_projector_reports_what_it_consumed_its_position_and_no_lag(
    nc: NATS, store: EventStore[c.Event], engine: Any
) -> None:
    last = await write(store, projects=5)
    consumed = figure("studio_events_consumed_total") or 0.0
    runner = ProjectionRunner(nc, engine, [Recorder()], consumer_prefix="metrics-x1")
    try:
        await runner.start()
        # every figure exists from the start, labelled by the service its prefix names
        assert figure("studio_consumer_lag_events") is not None
        assert figure("studio_projection_position") is not None
        assert await runner.wait_for(c.STREAM, last, timeout=20)
        await until(lambda: figure("studio_projection_position") == last, "the position")
        assert figure("studio_events_consumed_total") == consumed + 5
        await until(lambda: figure("studio_consumer_lag_events") == 0, "no lag")
        # more events while it runs: consumed, position and lag follow
        last = await write(store, projects=3, first=5)
        assert await runner.wait_for(c.STREAM, last, timeout=20)
        await until(lambda: figure("studio_projection_position") == last, "the new position")
        assert figure("studio_events_consumed_total") == consumed + 8
    finally:
        await runner.stop()


async def test_a_projector_behind_the_stream_shows_its_lag_until_it_catches_up(
    nc: NATS, store: EventStore[c.Event], engine: Any
) -> None:
    # given six events, and a projector taking two at a time that stalls at the third
    last = await write(store, projects=6)
    gated = Gated(stop_at=3)
    runner = ProjectionRunner(nc, engine, [gated], consumer_prefix="metrics-x2", batch=2)
    try:
        await runner.start()
        await asyncio.wait_for(gated.waiting.wait(), 20)
        # then, stalled at the third, its lag is the four events it has not applied
        await until(lambda: figure("studio_consumer_lag_events") == 4, "a lag of 4")
        assert figure("studio_projection_position") == 2
        # when it goes on, then it catches up and its lag is 0
        gated.gate.set()
        assert await runner.wait_for(c.STREAM, last, timeout=20)
        await until(lambda: figure("studio_consumer_lag_events") == 0, "no lag")
        assert figure("studio_projection_position") == last
    finally:
        gated.gate.set()
        await runner.stop()
