"""A run's (or an experiment's) stored events and live progress, as one ordered feed.

Stored events come from JetStream from a sequence on, so a client that reconnects with the
last id it saw gets exactly what it missed, then live events; batch progress comes from core
NATS and carries no id. The same feed serves SSE and WebSocket clients.

A feed ends when every run it follows has reached its end (an ``Ending``): a run's end is its
``complete`` or ``error`` after its latest queueing, or, for a run already over when the client
connects, its last stored event. An experiment created as a search (a ``Search``) ends instead
at its own ``complete`` (``ExperimentCompleted``) after its latest creation or resumption; its
feed also carries its own events (``trial_started``, ``trial_pruned``, ``trial_completed``,
``trial_failed``, ``front_updated``, ...), each of its trials' run events names its ``trial``,
and a trial run's own end is a ``status`` (its trial's outcome is ``trial_completed``,
``trial_pruned`` or ``trial_failed``), so that ``complete`` means the search's end only. It
reads no database: a route reads what it needs in a short session first, so that open streams
never hold a pooled connection.

Stored events come through an ordered consumer made again as soon as the connection is back
from an outage (``Stored``): nats-py's own notices a consumer lost with its server only after
missed idle heartbeats, and live curves stalled that long (12 s) after each NATS restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from contracts import experiments as e
from contracts import training as c
from services.gateway.readmodels.training import STATUS_OF, RunRow
from services.kernel.transient import retry_transient

log = logging.getLogger(__name__)
KEEPALIVE_S = 15.0
#: How long a feed waits for its stream (a leader election, a node restarting) to answer.
FOLLOW_RETRY_S = 30.0
#: How often a feed looks whether its connection came back from an outage (one dict read).
RECONNECT_LOOK_S = 0.25
#: The ordered consumer's idle heartbeat: nats-py makes it again after two missed ones, for a
#: consumer lost while the connection stays (its stream's leader moved to another node).
IDLE_HEARTBEAT_S = 2.0
REFOLLOW_PAUSE_S = 1.0  # before a feed that failed to follow its stream again tries anew
NAMES: dict[str, str] = {
    "training.epoch_completed.v1": "epoch_end",
    "training.checkpoint_saved.v1": "checkpoint",
    "training.run_completed.v1": "complete",
    "training.run_failed.v1": "error",
    "training.evaluation_started.v1": "evaluation",
    "training.evaluation_completed.v1": "evaluation",
    "training.evaluation_failed.v1": "evaluation",
}
#: A search's own events (``contracts.experiments``); its end is ``complete``.
EXPERIMENT_NAMES: dict[str, str] = {
    "training.experiment_created.v1": "experiment_created",
    "training.trial_started.v1": "trial_started",
    "training.trial_pruned.v1": "trial_pruned",
    "training.trial_completed.v1": "trial_completed",
    "training.trial_failed.v1": "trial_failed",
    "training.front_updated.v1": "front_updated",
    "training.experiment_stopped.v1": "experiment_stopped",
    "training.experiment_resumed.v1": "experiment_resumed",
    "training.experiment_completed.v1": "complete",
    "training.trial_promoted.v1": "trial_promoted",
}
STATUS_BY_TAG = {t.__struct_config__.tag: s for t, s in STATUS_OF.items()}  # type: ignore[attr-defined]
FINAL = ("complete", "error")
#: Statuses a run stays in unless it is resumed: its stream ends there.
OVER = ("completed", "failed")
QUEUED = c.RunQueued.__struct_config__.tag
REQUEUED = (QUEUED, c.RunResumed.__struct_config__.tag)
OPENED = (e.ExperimentCreated.__struct_config__.tag, e.ExperimentResumed.__struct_config__.tag)
CLOSED = e.ExperimentCompleted.__struct_config__.tag


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
    name = NAMES.get(tag) or EXPERIMENT_NAMES.get(tag, "status")
    return Item(name, payload, msg.metadata.sequence.stream)


@dataclass
class Followed:
    """A run a feed follows, and whether the client has been given its end."""

    #: Its latest ``RunQueued``/``RunResumed``: a final event after it is the run's end.
    queued_seq: int
    #: For a run over when the client connected: its last stored event, the end of its feed.
    last_seq: int | None = None
    done: bool = False


@dataclass
class Search:
    """An experiment created as a search, as the read model shows it when a client connects."""

    #: Its ``ExperimentCreated``: its feed starts there.
    created_seq: int
    #: Its latest ``ExperimentCreated``/``ExperimentResumed``: a ``complete`` after it ends it.
    opened_seq: int
    #: Its ``ExperimentCompleted`` after ``opened_seq``, when it is over.
    completed_seq: int | None = None
    #: Its trials' run ids and trial numbers, known so far (the feed adds those it sees).
    trials: dict[str, int] = field(default_factory=dict)
    done: bool = False

    def see(self, item: Item) -> None:
        tag, seq = item.payload.get("type"), item.sequence
        if seq is None or seq <= self.opened_seq:
            return
        if tag in OPENED:
            self.opened_seq, self.done = seq, False  # resumed: it searches again
        elif tag == CLOSED:
            self.done = True


class Ending:
    """Decides when a feed is over: every run it follows has reached its end, or, for a
    search, the search has."""

    def __init__(self, experiment_id: str | None = None, search: Search | None = None) -> None:
        self.experiment_id = experiment_id
        self.search = search
        self.runs: dict[str, Followed] = {}

    def follow(self, row: RunRow, last_seq: int, after: int) -> None:
        if row.status in OVER:
            self.runs[row.run_id] = Followed(row.queued_seq, last_seq, done=last_seq <= after)
        else:
            self.runs[row.run_id] = Followed(row.queued_seq)

    def see(self, item: Item) -> None:
        if self.search is not None:
            self.search.see(item)
            return
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
        if self.search is not None:
            return self.search.done
        return bool(self.runs) and all(run.done for run in self.runs.values())


async def ending_of(
    js: JetStreamContext,
    rows: Sequence[RunRow],
    after: int,
    experiment_id: str | None = None,
    search: Search | None = None,
) -> tuple[Ending, int]:
    """The ``Ending`` of a feed of ``rows`` (read from the read model just now) for a client
    that has seen ``after``, and the sequence its stored events start after: the first event
    of its runs (of a ``search``: its creation), so that a client new to an old experiment
    does not read the whole stream."""
    if search is not None:
        search.done = search.completed_seq is not None and search.completed_seq <= after
        return Ending(experiment_id, search), max(after, search.created_seq - 1)
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

    async def look() -> Any:
        if first:
            return await js.get_msg(c.STREAM, seq=1, subject=subject, next=True, direct=True)
        return await js.get_last_msg(c.STREAM, subject, direct=True)

    try:
        msg = await retry_transient(look, what=f"reading {subject}", retry_for=FOLLOW_RETRY_S)
    except NotFoundError:
        return 1 if first else 0
    return int(msg.seq or 0)


#: What a feed makes of an item: the item to send (renamed, with more said), or None to skip it.
Shape = Callable[[Item], Item | None]
OnEvent = Callable[[Msg], Awaitable[None]]


class Stored:
    """A feed's stored events of ``subject`` after ``after``, each handed to ``on_event`` once
    and in order, through an ordered consumer that ``watch`` makes again from the last event
    handed on whenever the connection is back from an outage (the consumer, in memory on one
    replica, may have gone with its server). An event seen already (the last deliveries of the
    consumer it replaced) is dropped: the client sees no gap and no duplicate."""

    def __init__(self, nc: NATS, subject: str, after: int, on_event: OnEvent) -> None:
        self.nc, self.subject, self.last = nc, subject, after
        self._on_event = on_event
        self._sub: JetStreamContext.PushSubscription | None = None
        self._reconnects: int = nc.stats["reconnects"]

    async def _deliver(self, msg: Msg) -> None:
        sequence = msg.metadata.sequence.stream
        if sequence > self.last:
            await self._on_event(msg)
            self.last = sequence  # once handed on: one lost to a cancel comes again

    async def follow(self) -> None:
        """Subscribe from the event after the last one handed on (a stream electing its leader
        is waited for: the response has started, it cannot 503)."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.last + 1
        )
        self._sub = await retry_transient(
            lambda: self.nc.jetstream().subscribe(
                self.subject,
                cb=self._deliver,
                ordered_consumer=True,
                idle_heartbeat=IDLE_HEARTBEAT_S,
                config=config,
            ),
            what=f"following {self.subject}",
            retry_for=FOLLOW_RETRY_S,
        )

    async def watch(self) -> None:
        """Follow again each time the connection is back from an outage, until cancelled."""
        while True:
            await asyncio.sleep(RECONNECT_LOOK_S)
            reconnects = self.nc.stats["reconnects"]
            if reconnects == self._reconnects or not self.nc.is_connected:
                continue
            await self.close()
            try:
                await self.follow()
            except Exception as exc:  # the stream still out of reach: look again shortly
                log.warning("following %s again failed (%r); retrying", self.subject, exc)
                await asyncio.sleep(REFOLLOW_PAUSE_S)
                continue
            self._reconnects = reconnects

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def feed(
    nc: NATS,
    *,
    subject: str,
    progress: str,
    after: int,
    shape: Shape,
    ending: Ending,
) -> AsyncIterator[Item]:
    """Stored events of ``subject`` after ``after``, merged with live progress, in order, as
    ``shape`` makes them, until ``ending`` says the client has every run's end."""
    if ending.over:
        return
    queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=10_000)

    async def on_progress(msg: Msg) -> None:
        item = shape(Item("progress", msgspec.json.decode(msg.data)))
        if item is not None and not queue.full():
            queue.put_nowait(item)

    async def on_event(msg: Msg) -> None:
        item = shape(item_of(msg))
        if item is not None:
            await queue.put(item)

    live = await nc.subscribe(progress, cb=on_progress)
    stored = Stored(nc, subject, after, on_event)
    try:
        await stored.follow()
        watching = asyncio.create_task(stored.watch())
        try:
            async for item in _items(queue):
                yield item
                ending.see(item)
                if ending.over:
                    return
        finally:
            watching.cancel()
            await asyncio.wait([watching])  # it follows no more before the feed lets go
    finally:
        await stored.close()
        with contextlib.suppress(Exception):
            await live.unsubscribe()


async def _items(queue: asyncio.Queue[Item]) -> AsyncIterator[Item]:
    """The queue's items, and a keepalive after each ``KEEPALIVE_S`` without one."""
    while True:
        try:
            yield await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            yield Item("keepalive", {})


def run_feed(nc: NATS, run_id: str, after: int, ending: Ending) -> AsyncIterator[Item]:
    return feed(
        nc,
        subject=c.event_subject(run_id),
        progress=c.progress_subject(run_id),
        after=after,
        shape=lambda item: item if item.payload.get("run_id") == run_id else None,
        ending=ending,
    )


def experiment_feed(
    nc: NATS, experiment_id: str, runs: set[str], after: int, ending: Ending
) -> AsyncIterator[Item]:
    """Every run of an experiment: ``runs`` (known so far) and those queued into it later;
    for a search (``ending.search``), its own events too, its runs' told as its trials'."""
    search = ending.search

    def shape(item: Item) -> Item | None:
        payload = item.payload
        run_id, ours = payload.get("run_id"), payload.get("experiment_id") == experiment_id
        if ours and run_id is None:
            return item  # the search's own event
        if ours and isinstance(run_id, str):
            runs.add(run_id)
        if run_id not in runs:
            return None
        if search is None or payload.get("type") in EXPERIMENT_NAMES:
            if search is not None and ours and isinstance(payload.get("trial"), int):
                search.trials[payload["run_id"]] = payload["trial"]
            return item
        payload["trial"] = search.trials.get(payload["run_id"])
        # A trial's run ends as a status: ``complete`` is the search's end only.
        return Item("status", payload, item.sequence) if item.name in FINAL else item

    return feed(
        nc,
        subject=c.EVENTS,
        progress=c.progress_subject("*"),
        after=after,
        shape=shape,
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
