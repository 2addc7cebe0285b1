"""An event store in memory, for unit tests and examples: the guarantees of ``EventStore``.

``InMemoryEventStore`` answers exactly what the JetStream store answers, and one contract suite
(``tests/contract/eventstore_suite.py``) runs against both to keep it so:

- one stream: a single sequence shared by every aggregate, starting at 1; an aggregate's
  *version* is the sequence of its last event (0 for none);
- optimistic: an append names the version it decided on; any other writer in between makes it
  ``ConcurrencyConflict`` and nothing is stored;
- idempotent: a retried append whose last message id is already stored after the expected
  version answers that event's sequence; like JetStream's duplicate window (here unbounded), a
  single event whose message id the stream already holds is not stored again;
- atomic: the events of one append are stored all together or not at all;
- events are kept as their msgspec JSON and decoded on load, with the headers the JetStream
  store publishes (less its ``Nats-Batch-*`` transport headers), so an event that does not
  round-trip through its contract fails here too, at append time, before anything is stored.

Imports ``contracts`` and the JetStream store's vocabulary only: no NATS, no I/O, no waiting.
Appends are synchronous under their ``async`` surface, hence atomic on one event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from contracts import Message

# The header builder is shared, not copied: both stores must stamp the very same headers.
from services.kernel.eventstore import (
    H_MSG_ID,
    ConcurrencyConflict,
    StoredEvent,
    _headers,
    check_id,
)

E = TypeVar("E", bound=Message)


class InMemoryEventStore(Generic[E]):
    """Appends and loads the events of one context's aggregates, in memory."""

    def __init__(self, *, stream: str, subject: Callable[[str], str], event_type: Any) -> None:
        self.stream = stream
        self._subject = subject
        self._decoder: msgspec.json.Decoder[E] = msgspec.json.Decoder(event_type)
        #: The whole stream in order: sequence n is ``_log[n - 1]``.
        self._log: list[tuple[str, bytes, dict[str, str]]] = []
        self._last: dict[str, int] = {}  # subject → sequence of its last event
        self._by_subject: dict[str, list[int]] = {}  # subject → its sequences, in order
        self._ids: dict[str, int] = {}  # message id → sequence (the duplicate window)

    def subject(self, aggregate_id: str) -> str:
        return self._subject(check_id(aggregate_id))

    def decode(self, data: bytes) -> E:
        return self._decoder.decode(data)

    async def version(self, aggregate_id: str) -> int:
        """The stream sequence of the aggregate's last event, 0 if it has none."""
        return self._last.get(self.subject(aggregate_id), 0)

    async def load(self, aggregate_id: str, after: int = 0) -> list[StoredEvent[E]]:
        """Every event of one aggregate with a sequence above ``after``, in order."""
        subject = self.subject(aggregate_id)
        return [self._stored(seq) for seq in self._by_subject.get(subject, ()) if seq > after]

    async def append(
        self,
        aggregate_id: str,
        events: Sequence[E],
        expected_version: int,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Store ``events`` after ``expected_version``; returns the last one's sequence."""
        if not events:
            return expected_version
        subject = self.subject(aggregate_id)
        data = [self._round_trip(event) for event in events]
        if len(events) == 1 and events[0].message_id in self._ids:
            return self._ids[events[0].message_id]
        if self._last.get(subject, 0) != expected_version or self._reuses_ids(events):
            stored = self._find(subject, events[-1].message_id, expected_version)
            if stored is None:
                raise ConcurrencyConflict(aggregate_id, expected_version)
            return stored
        for i, (event, body) in enumerate(zip(events, data, strict=True)):
            h = _headers(event, headers, expected_version if i == 0 else None)
            self._log.append((subject, body, h))
            sequence = len(self._log)
            self._by_subject.setdefault(subject, []).append(sequence)
            self._ids.setdefault(event.message_id, sequence)
        self._last[subject] = len(self._log)
        return len(self._log)

    def events(self) -> list[StoredEvent[E]]:
        """Every event of the stream, of all aggregates, in the order they were stored."""
        return [self._stored(seq) for seq in range(1, len(self._log) + 1)]

    def _stored(self, sequence: int) -> StoredEvent[E]:
        subject, body, headers = self._log[sequence - 1]
        return StoredEvent(sequence, subject, self.decode(body), dict(headers))

    def _round_trip(self, event: E) -> bytes:
        """The event as stored; refused before anything is stored if it would not load."""
        body = msgspec.json.encode(event)
        self.decode(body)
        return body

    def _reuses_ids(self, events: Sequence[E]) -> bool:
        """A batch may neither repeat a message id nor carry one the stream already holds."""
        ids = [event.message_id for event in events]
        return len(set(ids)) < len(ids) or any(i in self._ids for i in ids)

    def _find(self, subject: str, message_id: str, after: int) -> int | None:
        for sequence in self._by_subject.get(subject, ()):
            if sequence > after and self._log[sequence - 1][2].get(H_MSG_ID) == message_id:
                return sequence
        return None
