"""What every event store guarantees, written once and run against each store.

A test module subclasses ``EventStoreContract`` and provides two fixtures: ``store``, an empty
store of the projects stream, and ``stream_size``, an async callable answering how many
messages the whole stream holds. ``tests/integration/test_eventstore.py`` runs it against
JetStream on a real nats-server, ``tests/unit/test_memstore.py`` against the in-memory store,
so that the fake used by unit tests cannot drift from the real thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import projects as c
from services.kernel.eventstore import H_EVENT_TYPE, H_MSG_ID, ConcurrencyConflict

StreamSize = Callable[[], Awaitable[int]]

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def created(pid: str = "p1", mid: str = "m1", **envelope: Any) -> c.ProjectCreated:
    return c.ProjectCreated(project_id=pid, name="Cats", message_id=mid, occurred_at=T, **envelope)


def renamed(name: str, mid: str, pid: str = "p1") -> c.ProjectRenamed:
    return c.ProjectRenamed(project_id=pid, name=name, message_id=mid, occurred_at=T)


def transport_free(headers: Any) -> dict[str, str]:
    """The headers a store promises; JetStream's atomic-batch bookkeeping is its own affair."""
    return {k: v for k, v in headers.items() if not k.startswith("Nats-Batch-")}


class EventStoreContract:
    """Idempotent, optimistic, atomic appends on one stream sequence; subclass to run."""

    async def test_append_then_load_returns_the_events_with_their_headers(self, store):
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

    async def test_every_header_of_an_append_is_stored_with_its_events(self, store):
        # given a single event with its causes, then a batch, each with a trace header
        trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        first = created(correlation_id="req-1", causation_id="cmd-1")
        v1 = await store.append("p1", [first], 0, headers=trace)
        await store.append("p1", [renamed("A", "b1"), renamed("B", "b2")], v1, headers=trace)
        # then each event names itself and its causes; only an append's first event carries
        # the version it was decided on, and the extra headers ride on every event
        common = {"Content-Type": "application/json", **trace}
        assert [transport_free(s.headers) for s in await store.load("p1")] == [
            {
                H_MSG_ID: "m1",
                H_EVENT_TYPE: "projects.project_created.v1",
                "Studio-Correlation-Id": "req-1",
                "Studio-Causation-Id": "cmd-1",
                "Nats-Expected-Last-Subject-Sequence": "0",
                **common,
            },
            {
                H_MSG_ID: "b1",
                H_EVENT_TYPE: "projects.project_renamed.v1",
                "Studio-Correlation-Id": "",
                "Nats-Expected-Last-Subject-Sequence": str(v1),
                **common,
            },
            {
                H_MSG_ID: "b2",
                H_EVENT_TYPE: "projects.project_renamed.v1",
                "Studio-Correlation-Id": "",
                **common,
            },
        ]

    async def test_every_aggregate_shares_one_stream_sequence(self, store, stream_size):
        # when three aggregates are written in turn
        first = await store.append("p1", [created("p1", "a")], 0)
        second = await store.append("p2", [created("p2", "b")], 0)
        third = await store.append("p3", [created("p3", "c")], 0)
        batch = await store.append("p1", [renamed("X", "d"), renamed("Y", "e")], first)
        # then the sequence counts the stream, not the aggregate
        assert (first, second, third, batch) == (1, 2, 3, 5)
        assert [s.sequence for s in await store.load("p1")] == [1, 4, 5]
        assert [await store.version(p) for p in ("p1", "p2", "p3")] == [5, 2, 3]
        assert await stream_size() == 5

    async def test_a_retried_append_is_stored_once(self, store, stream_size):
        # given an append whose ack the writer never saw
        v1 = await store.append("p1", [created()], 0)
        # when the writer retries it with the same message id and the same expected version
        again = await store.append("p1", [created()], 0)
        # then it is a success that names the stored sequence, and the stream holds one message
        assert again == v1
        assert await stream_size() == 1

    async def test_a_retried_batch_is_stored_once(self, store, stream_size):
        v1 = await store.append("p1", [created()], 0)
        batch = [renamed("A", "b1"), renamed("B", "b2"), renamed("C", "b3")]
        first = await store.append("p1", batch, v1)
        again = await store.append("p1", batch, v1)
        assert again == first
        assert [s.event.name for s in await store.load("p1", after=v1)] == ["A", "B", "C"]
        assert await stream_size() == 4

    async def test_a_retry_after_others_wrote_still_answers_its_stored_sequence(
        self, store, stream_size
    ):
        # given a single append and a batch that were stored, then another writer's event
        v1 = await store.append("p1", [created()], 0)
        batch = [renamed("A", "b1"), renamed("B", "b2")]
        v3 = await store.append("p1", batch, v1)
        await store.append("p1", [renamed("C", "m9")], v3)
        # when both are retried at the versions they were first decided on
        # then each answers where it was stored, and nothing is stored again
        assert await store.append("p1", [created()], 0) == v1
        assert await store.append("p1", batch, v1) == v3
        assert await stream_size() == 4

    async def test_a_message_id_is_stored_once_per_stream(self, store, stream_size):
        # given an event stored under message id m1
        v1 = await store.append("p1", [created("p1", "m1")], 0)
        # when another aggregate's single event reuses the id, it is taken for that append
        assert await store.append("p2", [created("p2", "m1")], 0) == v1
        assert await store.version("p2") == 0
        # and a batch that carries it, or repeats an id of its own, is refused whole
        with pytest.raises(ConcurrencyConflict):
            await store.append("p3", [created("p3", "n1"), renamed("Q", "m1", "p3")], 0)
        with pytest.raises(ConcurrencyConflict):
            await store.append("p4", [created("p4", "d1"), renamed("Q", "d1", "p4")], 0)
        assert await store.load("p3") == await store.load("p4") == []
        assert await stream_size() == 1

    async def test_a_stale_writer_gets_a_conflict_and_nothing_is_stored(self, store, stream_size):
        v1 = await store.append("p1", [created()], 0)
        await store.append("p1", [renamed("Dogs", "m2")], v1)
        with pytest.raises(ConcurrencyConflict):
            await store.append("p1", [renamed("Birds", "m3")], v1)
        with pytest.raises(ConcurrencyConflict):
            await store.append("p1", [renamed("X", "m4"), renamed("Y", "m5")], v1)
        assert [s.event.name for s in await store.load("p1", after=v1)] == ["Dogs"]
        assert await stream_size() == 2

    async def test_a_stale_batch_is_a_retry_only_if_its_last_event_is_stored_after_its_version(
        self, store, stream_size
    ):
        # given a stored batch b1, b2 and one more event
        v1 = await store.append("p1", [created()], 0)
        v3 = await store.append("p1", [renamed("A", "b1"), renamed("B", "b2")], v1)
        v4 = await store.append("p1", [renamed("C", "m4")], v3)
        # when a batch shares only the first id, it is not a retry but a conflict
        with pytest.raises(ConcurrencyConflict) as conflict:
            await store.append("p1", [renamed("A", "b1"), renamed("Z", "b9")], v1)
        assert (conflict.value.aggregate_id, conflict.value.expected) == ("p1", v1)
        # nor when its last id was stored at or before the version it was decided on
        with pytest.raises(ConcurrencyConflict):
            await store.append("p1", [renamed("D", "n1"), renamed("B", "b2")], v3)
        assert await store.version("p1") == v4
        assert await stream_size() == 4

    async def test_only_the_last_version_is_the_right_expected_version(self, store, stream_size):
        v1 = await store.append("p1", [created()], 0)
        for aggregate, expected in (("p1", v1 + 1), ("p1", 0), ("p2", v1)):
            with pytest.raises(ConcurrencyConflict):
                await store.append(aggregate, [created(aggregate, f"x-{expected}")], expected)
        assert await stream_size() == 1

    async def test_concurrent_stale_appends_one_wins_the_rest_conflict(self, store):
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

    async def test_an_empty_append_stores_nothing_and_answers_the_expected_version(
        self, store, stream_size
    ):
        assert await store.append("p1", [], 7) == 7
        assert await store.version("p1") == 0
        assert await stream_size() == 0

    async def test_aggregates_are_independent_and_ids_cannot_escape_their_subject(self, store):
        await store.append("p1", [created("p1")], 0)
        await store.append("p2", [created("p2", "m9")], 0)
        assert [s.event.project_id for s in await store.load("p2")] == ["p2"]
        assert [s.subject for s in await store.load("p2")] == [c.event_subject("p2")]
        assert store.subject("p2") == c.event_subject("p2")
        assert await store.version("nobody") == 0
        assert await store.load("nobody") == []
        assert await store.load("p1", after=await store.version("p1")) == []
        for bad in ("a.b", "*", ">", "a b", "", "a\n", "x" * 129):
            with pytest.raises(ValueError):
                await store.append(bad, [created()], 0)
            with pytest.raises(ValueError):
                await store.version(bad)
            with pytest.raises(ValueError):
                await store.load(bad)
