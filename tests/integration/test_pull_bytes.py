"""A projector's fetch is bounded in bytes (``kernel.pull.fetch``): against a real nats-server,
a fetch of up to 256 messages of 100 KB brings what fits in ``max_bytes``, a message larger
than that comes alone, every message comes once and in order across fetches, and an idle
consumer's fetch waits for the next message (or says there was none); a fetch cancelled is
cancelled, even in the turn its message comes."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api

from services.kernel import pull

pytestmark = pytest.mark.integration
BIG = 100_000


async def consumer(nc: NATS, sizes: list[int]) -> object:
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="P", subjects=["p.>"]))
    for n, size in enumerate(sizes):
        await js.publish(f"p.{n % 3}", f"{n:04d}".encode() + b"x" * size)
    config = api.ConsumerConfig(durable_name="d", ack_policy=api.AckPolicy.ALL)
    await js.add_consumer("P", config)
    return await js.pull_subscribe_bind(durable="d", stream="P")


async def drained(sub: object, batch: int, max_bytes: int) -> list[list[int]]:
    """Every fetch's messages (their numbers) until the consumer has nothing left."""
    fetches: list[list[int]] = []
    while True:
        try:
            msgs = await pull.fetch(sub, batch, max_bytes, timeout=0.5)
        except NatsTimeoutError:
            return fetches
        assert len(msgs) == 1 or sum(len(m.data) for m in msgs) <= max_bytes
        fetches.append([int(m.data[:4]) for m in msgs])
        await msgs[-1].ack()


async def test_a_fetch_holds_what_fits_in_its_bytes_and_every_message_comes_once_in_order(
    nc: NATS,
):
    sizes = [10] * 5 + [BIG] * 10 + [3 * BIG] + [10] * 20
    sub = await consumer(nc, sizes)

    fetches = await drained(sub, 256, 250_000)

    assert [n for f in fetches for n in f] == list(range(len(sizes)))
    assert fetches[0] == [0, 1, 2, 3, 4, 5, 6]  # five small ones, then two of 100 KB
    assert [15] in fetches  # 300 KB: more than a fetch's bytes, so it comes alone
    assert fetches[-1] == list(range(16, 36))  # small ones: as many as the batch allows


async def test_an_idle_fetch_waits_for_the_next_message_or_says_there_was_none(nc: NATS):
    sub = await consumer(nc, [])
    with pytest.raises(NatsTimeoutError):
        await pull.fetch(sub, 256, 250_000, timeout=0.3)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await nc.jetstream().publish("p.1", b"0007late")

    publisher = asyncio.create_task(later())
    msgs = await pull.fetch(sub, 256, 250_000, timeout=10.0)
    await publisher
    assert [m.data for m in msgs] == [b"0007late"]


class Pending:
    """A pull subscription as ``pull.fetch`` sees it, whose requests go to one that never
    answers them."""

    def __init__(self, nc: NATS, sub: Subscription) -> None:
        self._nc, self._sub, self._nms, self._deliver = nc, sub, "silent.listener", sub.subject

    @property
    def pending_msgs(self) -> int:
        return self._sub.pending_msgs


async def test_a_fetch_cancelled_in_the_turn_its_message_comes_is_cancelled(nc: NATS):
    # nats-py waits with asyncio.wait_for, which (Python 3.11) returns a message that came in
    # the turn its task was cancelled and drops the cancel: a stopped projector ran on for ever
    await nc.subscribe("silent.listener")  # there, so that the server says no "no responders"
    sub = Pending(nc, await nc.subscribe(nc.new_inbox()))
    fetching = asyncio.create_task(pull.fetch(sub, 1, 1000, timeout=10.0))
    for _ in range(1000):  # until it waits for the answer to its request
        if sub._sub._pending_next_msgs_calls:
            break
        await asyncio.sleep(0.01)

    sub._sub._pending_queue.put_nowait(Msg(nc, subject=sub._deliver, data=b"0001"))
    fetching.cancel()

    with pytest.raises(asyncio.CancelledError):
        await fetching
