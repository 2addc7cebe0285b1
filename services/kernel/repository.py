"""Aggregate repository: loads an aggregate's state from the event store, with a small cache.

The cache only ever holds state folded from *stored* events, and it is checked against the
stream on every load, so a second instance of a service writing the same aggregate is seen.

Two numbers describe where an aggregate is: its ``position``, the stream sequence of its last
event (the optimistic-concurrency token an append is checked against), and its ``version``,
how many events it has (1, 2, 3 …), which is what users see and send back in ``If-Match``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from services.kernel.eventstore import StoredEvent

S = TypeVar("S")


class EventStorePort(Protocol):
    async def version(self, aggregate_id: str) -> int: ...

    async def load(self, aggregate_id: str, after: int = 0) -> Sequence[StoredEvent[Any]]: ...

    async def append(
        self,
        aggregate_id: str,
        events: Sequence[Any],
        expected_version: int,
        headers: Mapping[str, str] | None = None,
    ) -> int: ...


class Loaded(NamedTuple, Generic[S]):
    state: S
    #: The stream sequence of the aggregate's last event (0: none), to append after.
    position: int
    #: How many events the aggregate has: 1 once created, one more with every event.
    version: int


class Repository(Generic[S]):
    def __init__(
        self,
        store: EventStorePort,
        evolve: Callable[[S, Any], S],
        initial: S,
        *,
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self._evolve = evolve
        self._initial = initial
        self._cache: OrderedDict[str, Loaded[S]] = OrderedDict()
        self._cache_size = cache_size

    async def get(self, aggregate_id: str) -> tuple[S, int]:
        """The aggregate's current state and position (0: it has no events)."""
        state, position, _ = await self.load(aggregate_id)
        return state, position

    async def load(self, aggregate_id: str) -> Loaded[S]:
        """The aggregate's current state, position and version."""
        last = await self.store.version(aggregate_id)
        state, seen, count = self._cache.get(aggregate_id, Loaded(self._initial, 0, 0))
        if seen != last:
            if seen > last:  # cannot happen with an append-only stream; start over if it does
                state, seen, count = self._initial, 0, 0
            for stored in await self.store.load(aggregate_id, after=seen):
                state, seen = self._evolve(state, stored.event), stored.sequence
                count += 1
        loaded = self._cache[aggregate_id] = Loaded(state, seen, count)
        self._cache.move_to_end(aggregate_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return loaded
