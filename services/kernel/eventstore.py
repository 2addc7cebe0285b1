"""The event store: JetStream streams, one subject per aggregate, append *is* publish.

``append`` is idempotent (``Nats-Msg-Id``) and optimistic (``Nats-Expected-Last-Subject-
Sequence``): a stale writer gets ``ConcurrencyConflict``, never a lost update. Several events of
one decision are written as one atomic batch. An aggregate's *version* is the stream sequence of
its last event (0 for none). Appends and loads ride out a NATS restart: a transient failure is
retried for up to ``retry_for`` seconds (``services.kernel.transient``). An append is a span
(``append <stream>``), and each event stores the trace context it was appended in, for the
projections that consume it to continue that trace.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from contracts import Message
from contracts.common import ID_PATTERN
from contracts.envelope import tag_of
from services.kernel import tracing
from services.kernel.telemetry import EVENTS_APPENDED, prime_stream
from services.kernel.transient import retry_transient

E = TypeVar("E", bound=Message)
log = logging.getLogger(__name__)

#: Server error codes a stale or already-committed append answers with.
_WRONG_LAST_SEQUENCE = 10071
_BATCH_DUPLICATE_ID = 10201

_TOKEN = re.compile(ID_PATTERN)

H_MSG_ID = "Nats-Msg-Id"
H_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
H_EVENT_TYPE = "Studio-Event-Type"
H_CORRELATION = "Studio-Correlation-Id"
H_CAUSATION = "Studio-Causation-Id"


class ConcurrencyConflict(Exception):
    """Another writer appended to the aggregate since ``expected`` was read."""

    def __init__(self, aggregate_id: str, expected: int) -> None:
        super().__init__(f"{aggregate_id} changed since version {expected}")
        self.aggregate_id = aggregate_id
        self.expected = expected


def check_id(aggregate_id: str) -> str:
    """An aggregate id becomes a subject token: refuse anything that could escape it."""
    if not _TOKEN.fullmatch(aggregate_id):
        raise ValueError(f"invalid aggregate id {aggregate_id!r}")
    return aggregate_id


@dataclass(frozen=True)
class StoredEvent(Generic[E]):
    sequence: int
    subject: str
    event: E
    headers: Mapping[str, str]


class EventStore(Generic[E]):
    """Appends and loads the events of one context's aggregates."""

    def __init__(
        self,
        nc: NATS,
        *,
        stream: str,
        subject: Callable[[str], str],
        event_type: Any,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.stream = stream
        self._subject = subject
        self._decoder: msgspec.json.Decoder[E] = msgspec.json.Decoder(event_type)
        #: How long an append or a load keeps trying while NATS is unreachable.
        self.retry_for = 60.0
        prime_stream(stream)

    def subject(self, aggregate_id: str) -> str:
        return self._subject(check_id(aggregate_id))

    def decode(self, data: bytes) -> E:
        return self._decoder.decode(data)

    async def version(self, aggregate_id: str) -> int:
        """The stream sequence of the aggregate's last event, 0 if it has none."""
        subject = self.subject(aggregate_id)
        return await retry_transient(
            lambda: self._version_once(subject), what=f"reading {subject}", retry_for=self.retry_for
        )

    async def _version_once(self, subject: str) -> int:
        try:
            msg = await self._js.get_last_msg(self.stream, subject, direct=True)
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def append(
        self,
        aggregate_id: str,
        events: Sequence[E],
        expected_version: int,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Store ``events`` after ``expected_version``; returns the last one's sequence.

        While NATS is unreachable (a restart, a leader election) the append is retried for up
        to ``retry_for`` seconds with the same message ids, so it is stored once.

        The events carry the trace context of the append's span: a child of the current span,
        or else of the one a ``traceparent`` in ``headers`` names.
        """
        if not events:
            return expected_version
        kind = tracing.SpanKind.PRODUCER
        context = tracing.parent(headers)
        with tracing.span(f"append {self.stream}", kind=kind, context=context) as s:
            if s.is_recording():
                s.set_attribute("messaging.system", "nats")
                s.set_attribute("messaging.destination.name", self.subject(aggregate_id))
                s.set_attribute("messaging.batch.message_count", len(events))
            sequence = await retry_transient(
                lambda: self._append_once(aggregate_id, events, expected_version, headers),
                what=f"append to {aggregate_id}",
                retry_for=self.retry_for,
            )
        # Here, not in each caller: every append path counts, once per stored event.
        EVENTS_APPENDED.labels(self.stream).inc(len(events))
        return sequence

    async def _append_once(
        self,
        aggregate_id: str,
        events: Sequence[E],
        expected_version: int,
        headers: Mapping[str, str] | None,
    ) -> int:
        subject = self.subject(aggregate_id)
        try:
            if len(events) == 1:
                ack = await self._js.publish(
                    subject,
                    msgspec.json.encode(events[0]),
                    headers=_headers(events[0], headers, expected_version),
                )
                return int(ack.seq)
            return await self._append_batch(subject, events, expected_version, headers)
        except BadRequestError as exc:
            if exc.err_code not in (_WRONG_LAST_SEQUENCE, _BATCH_DUPLICATE_ID):
                raise
            # A retry of an append that was stored but whose ack got lost looks stale too:
            # it is a success if our last message id is already there.
            stored = await self._find(aggregate_id, events[-1].message_id, expected_version)
            if stored is None:
                raise ConcurrencyConflict(aggregate_id, expected_version) from exc
            return stored

    async def _append_batch(
        self,
        subject: str,
        events: Sequence[E],
        expected_version: int,
        headers: Mapping[str, str] | None,
    ) -> int:
        """Atomic batch (nats-server ≥ 2.12): all events are stored, or none."""
        batch_id = uuid.uuid4().hex
        last = len(events)
        for i, event in enumerate(events, start=1):
            h = _headers(event, headers, expected_version if i == 1 else None)
            h |= {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if i < last:
                await self._nc.publish(subject, msgspec.json.encode(event), headers=h)
            else:
                h["Nats-Batch-Commit"] = "1"
                ack = await self._js.publish(subject, msgspec.json.encode(event), headers=h)
        return int(ack.seq)

    async def _find(self, aggregate_id: str, message_id: str, after: int) -> int | None:
        for stored in await self.load(aggregate_id, after=after):
            if stored.headers.get(H_MSG_ID) == message_id:
                return stored.sequence
        return None

    async def load(self, aggregate_id: str, after: int = 0) -> list[StoredEvent[E]]:
        """Every event of one aggregate with a sequence above ``after``, in order."""
        subject = self.subject(aggregate_id)
        return await retry_transient(
            lambda: self._load_once(subject, after),
            what=f"loading {subject}",
            retry_for=self.retry_for,
        )

    async def _load_once(self, subject: str, after: int) -> list[StoredEvent[E]]:
        last = await self._version_once(subject)
        if last <= after:
            return []
        sub = await self._js.subscribe(
            subject,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
            ),
        )
        out: list[StoredEvent[E]] = []
        try:
            while not out or out[-1].sequence < last:
                msg = await sub.next_msg(timeout=5.0)
                seq = msg.metadata.sequence.stream
                out.append(StoredEvent(seq, subject, self.decode(msg.data), msg.headers or {}))
        except TimeoutError as exc:
            raise TimeoutError(f"loading {subject} stalled at {len(out)} events") from exc
        finally:
            await sub.unsubscribe()
        return out


def _headers(
    event: Message, extra: Mapping[str, str] | None, expected: int | None
) -> dict[str, str]:
    h = {
        H_MSG_ID: event.message_id,
        H_EVENT_TYPE: tag_of(type(event)),
        H_CORRELATION: event.correlation_id,
        "Content-Type": "application/json",
    }
    if event.causation_id:
        h[H_CAUSATION] = event.causation_id
    if expected is not None:
        h[H_EXPECTED] = str(expected)
    if extra:
        h.update(extra)
    # The current span's context, or else the caller's own (see ``tracing.parent``).
    tracing.inject(h, tracing.parent(extra))
    return h
