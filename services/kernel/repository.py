"""Aggregate repository: loads an aggregate's state from the event store, with a small cache.

The cache only ever holds state folded from *stored* events, and it is checked against the
stream on every load, so a second instance of a service writing the same aggregate is seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

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
        self._cache: OrderedDict[str, tuple[S, int]] = OrderedDict()
        self._cache_size = cache_size

    async def get(self, aggregate_id: str) -> tuple[S, int]:
        """The aggregate's current state and version (0: it has no events)."""
        version = await self.store.version(aggregate_id)
        state, seen = self._cache.get(aggregate_id, (self._initial, 0))
        if seen != version:
            if seen > version:  # cannot happen with an append-only stream; start over if it does
                state, seen = self._initial, 0
            for stored in await self.store.load(aggregate_id, after=seen):
                state, seen = self._evolve(state, stored.event), stored.sequence
        self._cache[aggregate_id] = (state, seen)
        self._cache.move_to_end(aggregate_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return state, seen
