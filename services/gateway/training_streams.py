"""A run's (or an experiment's) stored events and live progress, as one ordered feed.

Stored events come from JetStream from a sequence on, so a client that reconnects with the
last id it saw gets exactly what it missed, then live events; batch progress comes from core
NATS and carries no id. The same feed serves SSE and WebSocket clients.

A feed ends when every run it follows has reached its end (an ``Ending``): a run's end is its
``complete`` or ``error`` after its latest queueing, or, for a run already over when the client
connects, its last stored event. It reads no database: a route reads what it needs in a short
session first, so that open streams never hold a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from contracts import training as c
from services.gateway.readmodels.training import STATUS_OF, RunRow

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
#: Statuses a run stays in unless it is resumed: its stream ends there.
OVER = ("completed", "failed")
QUEUED = c.RunQueued.__struct_config__.tag
REQUEUED = (QUEUED, c.RunResumed.__struct_config__.tag)


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


@dataclass
class Followed:
    """A run a feed follows, and whether the client has been given its end."""

    #: Its latest ``RunQueued``/``RunResumed``: a final event after it is the run's end.
    queued_seq: int
    #: For a run over when the client connected: its last stored event, the end of its feed.
    last_seq: int | None = None
    done: bool = False


class Ending:
    """Decides when a feed is over: every run it follows has reached its end."""

    def __init__(self, experiment_id: str | None = None) -> None:
        self.experiment_id = experiment_id
        self.runs: dict[str, Followed] = {}

    def follow(self, row: RunRow, last_seq: int, after: int) -> None:
        if row.status in OVER:
            self.runs[row.run_id] = Followed(row.queued_seq, last_seq, done=last_seq <= after)
        else:
            self.runs[row.run_id] = Followed(row.queued_seq)

    def see(self, item: Item) -> None:
        run_id, seq, tag = item.payload.get("run_id"), item.sequence, item.payload.get("type")
        if seq is None or not isinstance(run_id, str):
            return  # live progress: no part of a run's stored history
        run = self.runs.get(run_id)
        if run is None:
            # A run queued into the experiment after the client connected: followed too.
            if tag == QUEUED and item.payload.get("experiment_id") == self.experiment_id:
                self.runs[run_id] = Followed(seq)
        elif tag in REQUEUED and seq > run.queued_seq:
            self.runs[run_id] = Followed(seq)  # resumed: it runs again
        elif run.last_seq is not None:
            run.done = run.done or seq >= run.last_seq
        elif item.name in FINAL and seq > run.queued_seq:
            run.done = True

    @property
    def over(self) -> bool:
        return bool(self.runs) and all(run.done for run in self.runs.values())


async def ending_of(
    js: JetStreamContext, rows: Sequence[RunRow], after: int, experiment_id: str | None = None
) -> tuple[Ending, int]:
    """The ``Ending`` of a feed of ``rows`` (read from the read model just now) for a client
    that has seen ``after``, and the sequence its stored events start after: the first event
    of its runs, so that a client new to an old experiment does not read the whole stream."""
    ending = Ending(experiment_id)
    lasts = await asyncio.gather(
        *(_seq(js, r.run_id, first=False) for r in rows if r.status in OVER)
    )
    by_run = dict(zip([r.run_id for r in rows if r.status in OVER], lasts, strict=True))
    for row in rows:
        ending.follow(row, by_run.get(row.run_id, 0), after)
    start = after
    if experiment_id is not None and rows:
        firsts = await asyncio.gather(*(_seq(js, r.run_id, first=True) for r in rows))
        start = max(after, min(firsts) - 1)
    return ending, start


async def _seq(js: JetStreamContext, run_id: str, *, first: bool) -> int:
    """The stream sequence of a run's first (or last) stored event."""
    subject = c.event_subject(run_id)
    try:
        if first:
            msg = await js.get_msg(c.STREAM, seq=1, subject=subject, next=True, direct=True)
        else:
            msg = await js.get_last_msg(c.STREAM, subject, direct=True)
    except NotFoundError:
        return 1 if first else 0
    return int(msg.seq or 0)


async def feed(
    nc: NATS,
    *,
    subject: str,
    progress: str,
    after: int,
    wanted: Callable[[dict[str, Any]], bool],
    ending: Ending,
) -> AsyncIterator[Item]:
    """Stored events of ``subject`` after ``after``, merged with live progress, in order,
    until ``ending`` says the client has every run's end."""
    if ending.over:
        return
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
            ending.see(item)
            if ending.over:
                return
    finally:
        for sub in (live, stored):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def run_feed(nc: NATS, run_id: str, after: int, ending: Ending) -> AsyncIterator[Item]:
    return feed(
        nc,
        subject=c.event_subject(run_id),
        progress=c.progress_subject(run_id),
        after=after,
        wanted=lambda payload: payload.get("run_id") == run_id,
        ending=ending,
    )


def experiment_feed(
    nc: NATS, experiment_id: str, runs: set[str], after: int, ending: Ending
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
        ending=ending,
    )


def sse(item: Item) -> bytes:
    if item.name == "keepalive":
        return b": keepalive\n\n"
    head = b"id: %d\n" % item.sequence if item.sequence is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (
        item.name.encode(),
        msgspec.json.encode(item.payload),
    )


def ws(item: Item) -> str:
    """A WebSocket TEXT frame: a browser's ``event.data`` is then a string for ``JSON.parse``."""
    payload = item.payload | ({"sequence": item.sequence} if item.sequence is not None else {})
    return msgspec.json.encode({"type": item.name, "payload": payload}).decode()
