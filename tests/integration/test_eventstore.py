"""The event store against a real nats-server: idempotent, optimistic, atomic appends.

The store's contract is written once in ``tests/contract/eventstore_suite.py`` and runs here
against JetStream (and against the in-memory store in ``tests/unit/test_memstore.py``); what
only JetStream does, its atomic-batch headers, is tested below it.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from contracts import projects as c
from services.kernel.eventstore import EventStore
from services.kernel.streams import StreamSpec, ensure_stream
from tests.contract.eventstore_suite import EventStoreContract, StreamSize, created, renamed

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
def stream_size(nc: NATS) -> StreamSize:
    async def size() -> int:
        info = await nc.jetstream().stream_info(c.STREAM)
        return int(info.state.messages)

    return size


class TestJetStreamEventStore(EventStoreContract):
    """The shared contract, on JetStream."""


async def test_a_batch_is_one_atomic_jetstream_batch_committed_by_its_last_event(store):
    # given a decision of three events
    v1 = await store.append("p1", [created()], 0)
    await store.append("p1", [renamed("A", "b1"), renamed("B", "b2"), renamed("C", "b3")], v1)
    # then they were published as one batch: one id, numbered, committed by the last
    headers = [s.headers for s in await store.load("p1", after=v1)]
    assert len({h["Nats-Batch-Id"] for h in headers}) == 1
    assert [h["Nats-Batch-Sequence"] for h in headers] == ["1", "2", "3"]
    assert [h.get("Nats-Batch-Commit") for h in headers] == [None, None, "1"]
    assert "Nats-Batch-Id" not in (await store.load("p1"))[0].headers
