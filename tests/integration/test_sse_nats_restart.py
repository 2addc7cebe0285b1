"""A run's live feed (``training_streams``) across a restart of its nats-server, in process: the
feed follows again from the last event it delivered as soon as its connection is back, with no
gap and no duplicate, without waiting for nats-py's missed idle heartbeats (two of 5 s: live
curves stalled 10 to 20 s after each NATS restart). Imports the gateway's feed and the kernel's
embedded nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from contracts import training as c
from services.gateway import training_streams as ts
from services.kernel.nats_server import EmbeddedNats
from services.kernel.streams import StreamSpec, ensure_stream
from services.kernel.transient import retry_transient

pytestmark = pytest.mark.integration

RUN = "run-1"
#: Generous for a loaded machine: the feed's own recovery takes a fraction of a second.
DELIVERY_S = 30.0


@pytest.fixture
def no_heartbeat_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py's own recovery of an ordered consumer (after two missed idle heartbeats) is off:
    what remains to bring a feed back is the feed's own."""

    async def idle(self: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(JetStreamContext._JSI, "activity_check", idle)


async def publish(nc: NATS, epochs: range) -> list[int]:
    """Epochs of the run, stored; their stream sequences (a restarting stream is waited for)."""
    js, sequences = nc.jetstream(), []
    for epoch in epochs:
        body = {"type": "training.epoch_completed.v1", "run_id": RUN, "epoch": epoch}
        data = msgspec.json.encode(body)
        ack = await retry_transient(
            lambda data=data: js.publish(c.event_subject(RUN), data),  # type: ignore[misc]
            what="publishing",
            retry_for=DELIVERY_S,
        )
        sequences.append(ack.seq)
    return sequences


@contextlib.asynccontextmanager
async def following(nc: NATS) -> AsyncIterator[list[int]]:
    """A client of the run's feed from its start: the stream ids it was sent, as they come."""
    ending = ts.Ending()
    ending.runs[RUN] = ts.Followed(queued_seq=0)
    seen: list[int] = []

    async def read() -> None:
        async for item in ts.run_feed(nc, RUN, 0, ending):
            if item.sequence is not None:
                seen.append(item.sequence)

    task = asyncio.create_task(read())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DELIVERY_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_feed_follows_again_once_nats_is_back_with_no_gap_and_no_duplicate(
    nats_srv: EmbeddedNats, nc: NATS, no_heartbeat_recovery: None
) -> None:
    # given a run's feed that has delivered the run's first epochs
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    before = await publish(nc, range(1, 4))
    async with following(nc) as seen:
        await until(lambda: len(seen) >= len(before), "the first epochs")
        # when its nats-server dies and comes back (the feed's consumer, in memory, with it)
        reconnects = nc.stats["reconnects"]
        nats_srv.kill()
        await asyncio.to_thread(nats_srv.restart)
        back = lambda: nc.stats["reconnects"] > reconnects and nc.is_connected  # noqa: E731
        await until(back, "the connection back")
        # and the run stores more epochs, a burst of them at once
        after = await publish(nc, range(4, 24))
        # then the feed delivers them, with no nats-py heartbeat missed to bring it back
        await until(lambda: len(seen) >= len(before) + len(after), "the later epochs")
    # each once and in order: the client's ids leave no gap
    assert seen == before + after


async def test_a_feed_hands_on_each_event_once_when_two_consumers_deliver_it(
    nats_srv: EmbeddedNats, nc: NATS
) -> None:
    # given a feed's stored events followed twice over (a consumer replaced while the old one
    # still delivers: a server that kept it across its client's reconnection)
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    delivered: list[int] = []

    async def on_event(msg: Msg) -> None:
        delivered.append(msg.metadata.sequence.stream)

    stored = ts.Stored(nc, c.event_subject(RUN), 0, on_event)
    await stored.follow()
    old, stored._sub = stored._sub, None
    await stored.follow()
    subs = [old, stored._sub]
    try:
        # when the run stores epochs
        sequences = await publish(nc, range(1, 6))
        # and both consumers have delivered every one of them, and their callbacks have taken
        # each from their queues (a callback runs to its end once it took its message: the
        # feed's own never waits here), so nothing either received is still on its way
        both = lambda: all(  # noqa: E731
            sub is not None and sub.delivered >= len(sequences) and sub.pending_msgs == 0
            for sub in subs
        )
        await until(both, "both consumers' deliveries")
    finally:
        await stored.close()
        if old is not None:
            await old.unsubscribe()
    # then the feed handed each on once, in order
    assert delivered == sequences
