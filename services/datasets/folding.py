"""The Dataset aggregate's repository: the kernel's ``Repository`` whose states keep their images
in the SQLite index (``spill.IndexFile``) and whose events are folded one at a time, read from
the stream a page of a few MB at a time (``PAGE_BYTES``), so that loading a dataset of 100,000
images holds one page of its events, whatever its size.

A fold and the position it reached are written in one transaction (``folds``): after a restart
a dataset is folded from there, not from its first event. Folds are serialised (one connection
writes the index); a load with nothing new to fold does not wait for them. Imports the
dataset's domain and ``spill``, the kernel's repository, retry and JetStream API prefix, and
nats-py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import replace

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts import datasets as c
from services.datasets import domain
from services.datasets.spill import IndexFile
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.natsauth import JS_API
from services.kernel.repository import Loaded, Repository
from services.kernel.transient import retry_transient

log = logging.getLogger(__name__)
#: A fold reads its events by pages of this many bytes (or ``PAGE_EVENTS`` events): it holds
#: one page, however many events the dataset has (the first event of a page always comes).
PAGE_BYTES = 2 * 1024 * 1024
PAGE_EVENTS = 512


class _Rest(msgspec.Struct):
    """A Dataset's state but its images, as a fold stores it beside the index."""

    imports: dict[str, str]
    splits: dict[str, str]
    duplicates: list[c.DuplicateRecord]
    corrupt: list[c.FileProblem]
    #: Stored before the reports were bounded: absent, the lists held every one.
    duplicates_total: int = 0
    corrupt_total: int = 0


def _encode(state: domain.Dataset) -> bytes:
    rest = _Rest(
        state.imports,
        state.splits,
        list(state.duplicates),
        list(state.corrupt),
        state.duplicates_total,
        state.corrupt_total,
    )
    return msgspec.json.encode(rest)


class FoldingRepository(Repository[domain.Dataset]):
    def __init__(
        self,
        store: EventStore[c.Event],
        index: IndexFile,
        js: JetStreamContext | None = None,
        *,
        cache_size: int = 10_000,
    ) -> None:
        super().__init__(store, domain.evolve, domain.Dataset(), cache_size=cache_size)
        self.index, self._js = index, js
        self._states: OrderedDict[str, Loaded[domain.Dataset]] = OrderedDict()
        self._folding = asyncio.Lock()
        #: Events folded, for tests and metrics: a load that finds nothing new folds none.
        self.folded = 0

    async def load(self, aggregate_id: str) -> Loaded[domain.Dataset]:
        last = await self.store.version(aggregate_id)
        loaded = self._known(aggregate_id, last)
        if loaded.position < last:
            async with self._folding:
                loaded = self._known(aggregate_id, last)  # another load may have folded it
                if loaded.position < last:
                    loaded = await retry_transient(
                        lambda: self._fold(aggregate_id, last),
                        what=f"folding dataset {aggregate_id}",
                        retry_for=60.0,
                    )
        self._states[aggregate_id] = loaded
        self._states.move_to_end(aggregate_id)
        while len(self._states) > self._cache_size:
            self._states.popitem(last=False)
        return loaded

    def _known(self, aggregate_id: str, last: int) -> Loaded[domain.Dataset]:
        """The dataset as last folded: in memory, else as the index file has it."""
        if (cached := self._states.get(aggregate_id)) is not None:
            return cached
        fresh = Loaded(domain.Dataset(images=self.index.index(aggregate_id)), 0, 0)
        stored = self.index.fold(aggregate_id)
        if stored is None:
            return fresh
        position, version, rest = stored
        if position > last:  # the stream was made anew under this folder: start over
            log.warning("the image index of %s is ahead of its stream: rebuilt", aggregate_id)
            self.index.clear(aggregate_id)
            return fresh
        r = msgspec.json.decode(rest, type=_Rest)
        state = replace(fresh.state, imports=r.imports, splits=r.splits,
                        duplicates=tuple(r.duplicates), corrupt=tuple(r.corrupt),
                        duplicates_total=max(r.duplicates_total, len(r.duplicates)),
                        corrupt_total=max(r.corrupt_total, len(r.corrupt)))  # fmt: skip
        return Loaded(state, position, version)

    async def _fold(self, aggregate_id: str, last: int) -> Loaded[domain.Dataset]:
        """The events after the known state, folded in one transaction with its position."""
        self._states.pop(aggregate_id, None)  # a retry starts again from what the file has
        state, seen, count = self._known(aggregate_id, last)
        with self.index.transaction():
            async for stored in self._events(aggregate_id, seen, last):
                state, seen = self._evolve(state, stored.event), stored.sequence
                count += 1
                self.folded += 1
            self.index.save_fold(aggregate_id, seen, count, _encode(state))
        return Loaded(state, seen, count)

    async def _events(self, aggregate_id: str, after: int, last: int) -> AsyncIterator[StoredEvent]:
        """The aggregate's events after ``after`` up to ``last``, one at a time, read a page
        (``PAGE_BYTES``) at a time: never the rest of the dataset's events at once."""
        if self._js is None:  # an in-memory store (tests): its list is already in memory
            for stored in await self.store.load(aggregate_id, after=after):
                yield stored
            return
        store = self.store
        assert isinstance(store, EventStore)
        subject = store.subject(aggregate_id)
        seq = after
        while seq < last:
            page = await _page(self._js, store.stream, subject, seq + 1)
            if not page:  # a replica not caught up yet: the fold is tried again
                raise TimeoutError(f"folding {subject}: no event after {seq} of {last} yet")
            while page and seq < last:
                msg = page.popleft()  # each raw event goes once it is decoded
                headers = msg.headers or {}
                seq = int(headers["Nats-Sequence"])
                yield StoredEvent(seq, subject, store.decode(msg.data), headers)


async def _page(js: JetStreamContext, stream: str, subject: str, start: int) -> deque[Msg]:
    """The subject's next events from ``start`` on, ``PAGE_EVENTS`` or ``PAGE_BYTES`` of them
    (at least one), by one batched direct get (nats-server 2.11+; nats-py has no call for it,
    so it is asked on the connection's own inbox). An ordered consumer would push every event
    left while the fold writes the first ones: an import's 100 batches of 1,000 images, whole.
    """
    nc: NATS = js._nc  # the JetStream context's connection (nats-py keeps it private)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = {"seq": start, "next_by_subj": subject, "batch": PAGE_EVENTS,
               "max_bytes": PAGE_BYTES}  # fmt: skip
    page: deque[Msg] = deque()
    try:
        await nc.publish(f"{JS_API}.DIRECT.GET.{stream}", msgspec.json.encode(request), inbox)
        while True:
            msg = await sub.next_msg(timeout=5.0)
            status = (msg.headers or {}).get("Status")
            if status is None:
                page.append(msg)
            elif status in ("204", "404"):  # the end of the page; nothing (left) to read
                return page
            else:
                raise TimeoutError(f"direct get of {subject} answered {status}")
    finally:
        await sub.unsubscribe()
