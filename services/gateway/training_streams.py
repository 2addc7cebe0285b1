"""A run's (or an experiment's) stored events and live progress, as one ordered feed.

Stored events come from JetStream from a sequence on, so a client that reconnects with the
last id it saw gets exactly what it missed, then live events; batch progress comes from core
NATS and carries no id. The same feed serves SSE and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from contracts import training as c
from services.gateway.training_model import STATUS_OF

KEEPALIVE_S = 15.0
NAMES: dict[str, str] = {
    "training.epoch_completed.v1": "epoch_end",
    "training.checkpoint_saved.v1": "checkpoint",
    "training.run_completed.v1": "complete",
    "training.run_failed.v1": "error",
    "training.evaluation_started.v1": "evaluation",
    "training.evaluation_completed.v1": "evaluation",
    "training.evaluation_failed.v1": "evaluation",
}
STATUS_BY_TAG = {t.__struct_config__.tag: s for t, s in STATUS_OF.items()}  # type: ignore[attr-defined]
FINAL = ("complete", "error")


@dataclass(frozen=True)
class Item:
    name: str  # status | progress | epoch_end | checkpoint | complete | error | keepalive
    payload: dict[str, Any]
    sequence: int | None = None


def item_of(msg: Msg) -> Item:
    payload = msgspec.json.decode(msg.data)
    tag = payload.get("type", "")
    if tag in STATUS_BY_TAG:
        payload["status"] = STATUS_BY_TAG[tag]
    return Item(NAMES.get(tag, "status"), payload, msg.metadata.sequence.stream)


async def feed(
    nc: NATS,
    *,
    subject: str,
    progress: str,
    after: int,
    wanted: Callable[[dict[str, Any]], bool],
    until_final: bool,
) -> AsyncIterator[Item]:
    """Stored events of ``subject`` after ``after``, merged with live progress, in order."""
    queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=10_000)

    async def on_progress(msg: Msg) -> None:
        payload = msgspec.json.decode(msg.data)
        if wanted(payload) and not queue.full():
            queue.put_nowait(Item("progress", payload))

    async def on_event(msg: Msg) -> None:
        item = item_of(msg)
        if wanted(item.payload):
            await queue.put(item)

    live = await nc.subscribe(progress, cb=on_progress)
    stored = await nc.jetstream().subscribe(
        subject,
        cb=on_event,
        ordered_consumer=True,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
        ),
    )
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield Item("keepalive", {})
                continue
            yield item
            if until_final and item.name in FINAL:
                return
    finally:
        for sub in (live, stored):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def run_feed(nc: NATS, run_id: str, after: int) -> AsyncIterator[Item]:
    return feed(
        nc,
        subject=c.event_subject(run_id),
        progress=c.progress_subject(run_id),
        after=after,
        wanted=lambda payload: payload.get("run_id") == run_id,
        until_final=True,
    )


def experiment_feed(
    nc: NATS, experiment_id: str, runs: set[str], after: int
) -> AsyncIterator[Item]:
    """Every run of an experiment: ``runs`` (known so far) and those queued into it later."""

    def wanted(payload: dict[str, Any]) -> bool:
        if payload.get("experiment_id") == experiment_id:
            runs.add(payload["run_id"])
        return payload.get("run_id") in runs

    return feed(
        nc,
        subject=c.EVENTS,
        progress=c.progress_subject("*"),
        after=after,
        wanted=wanted,
        until_final=False,
    )


def sse(item: Item) -> bytes:
    if item.name == "keepalive":
        return b": keepalive\n\n"
    head = b"id: %d\n" % item.sequence if item.sequence is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (
        item.name.encode(),
        msgspec.json.encode(item.payload),
    )


def ws(item: Item) -> bytes:
    payload = item.payload | ({"sequence": item.sequence} if item.sequence is not None else {})
    return msgspec.json.encode({"type": item.name, "payload": payload})
