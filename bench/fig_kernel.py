"""Kernel figures: the event append against raw nats-py, and the codec against pydantic v2.

Append: ``EventStore.append`` of one ``EpochCompleted`` per new aggregate, 1 and 256 in flight,
against ``js.publish`` of the same bytes with the same headers (the message id, type,
correlation, expected sequence) to the same stream, interleaved. Codec: msgspec encode + decode
of a real event against a pydantic v2 model of the same shape. Imports nats-py, msgspec,
pydantic, ``contracts`` and ``services.kernel.eventstore``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
from pydantic import create_model

from bench.core import Row, interleave, median_ratio
from contracts import new_id
from contracts import training as c
from services.kernel.eventstore import EventStore, _headers
from tests.stream_helpers import epoch


def codec(args: Any) -> Row:
    event = epoch(new_id(), 3)
    data = msgspec.json.encode(event)
    decoder = msgspec.json.Decoder(c.Event)
    fields = {k: type(v) for k, v in msgspec.structs.asdict(event).items()}
    definitions: dict[str, Any] = {k: (t, ...) for k, t in fields.items()}
    model = create_model("EpochCompletedModel", **definitions)
    pyd = model.model_validate_json(data)
    n = 20_000

    def per_second(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return n / (time.perf_counter() - start)

    s, b = interleave(lambda: per_second(lambda: decoder.decode(msgspec.json.encode(event))),
                      lambda: per_second(lambda: model.model_validate_json(pyd.model_dump_json())),
                      args.rounds)  # fmt: skip
    us = 1e6 / sorted(s)[len(s) // 2]
    return Row("codec: encode+decode EpochCompleted", "msgs/s", s, b, median_ratio(s, b),
               "reported", f"msgspec {us:.2f} µs per message; baseline pydantic v2")  # fmt: skip


async def _rates(
    url: str, in_flight: int, count: int, rounds: int
) -> tuple[list[float], list[float]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    store: EventStore[Any] = EventStore(nc, stream=c.STREAM, subject=c.event_subject,
                                        event_type=c.Event)  # fmt: skip

    async def timed(one: Callable[[], Awaitable[object]]) -> float:
        gate = asyncio.Semaphore(in_flight)

        async def gated() -> None:
            async with gate:
                await one()

        start = time.perf_counter()
        await asyncio.gather(*(gated() for _ in range(count)))
        return count / (time.perf_counter() - start)

    async def studio_one() -> None:
        run_id = new_id()
        await store.append(run_id, [epoch(run_id, 1)], 0)

    async def raw_one() -> None:
        run_id = new_id()
        event = epoch(run_id, 1)
        await js.publish(c.event_subject(run_id), msgspec.json.encode(event),
                         headers=_headers(event, None, 0))  # fmt: skip

    s: list[float] = []
    b: list[float] = []
    await timed(raw_one)  # warm-up: connections, stream lookups
    for i in range(rounds):
        first, second = (raw_one, studio_one) if i % 2 == 0 else (studio_one, raw_one)
        for fn in (first, second):
            (s if fn is studio_one else b).append(await timed(fn))
    await nc.close()
    return s, b


def append(url: str, args: Any) -> list[Row]:
    rows = []
    for in_flight, count in ((1, args.events // 4), (256, args.events)):
        s, b = asyncio.run(_rates(url, in_flight, count, args.rounds))
        rows.append(Row(f"event append, {in_flight} in flight", "events/s", s, b,
                        median_ratio(s, b), "≥ 0.8",
                        f"{count} events per repeat; baseline raw js.publish, "
                        "same bytes+headers"))  # fmt: skip
    return rows
