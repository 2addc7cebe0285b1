"""Projection runner: folds a stream's events into a SQLite read model.

The projectors of one stream (and filter) share one durable pull consumer. Each batch it fetches
is one transaction: it takes the file's write turn, reads each projector's stored position (the
gateways of one workspace apply the same events to one file), lets each apply what it has not,
and stores their new positions, so an event is applied once. At start the consumer is realigned
to the lowest stored position (which is how a deleted read model rebuilds by replay); a
projector given a table since the file was written starts over (``sqlschema.stale``). A failing
projector fails the batch for its stream's others. ``health`` says whether each can update its
read model now (failing, stuck or not running), for ``/health`` to report.

This module is the consuming loop and the runner's face. The tables it keeps its positions in,
the start's DDL and the rebuild's reset are ``services.kernel.projection_tables``'s (its
``ProjectionPosition`` is re-exported here); the durable consumers, one per group, aligned to
the stored positions, are ``services.kernel.projection_consumers``'s. A process killed at any
moment (a SIGKILL, the OOM killer) leaves each batch applied with its positions or not at all:
the fault points (``services.kernel.projection_faults``) let the tests kill it at each.

Each projector's figures go to Prometheus: events applied, the position, and its lag (events on
its subjects not applied yet), from the pulled messages' pending count, or one look at its
consumer every ``LAG_EVERY_S`` while idle. A leader election or a node restart only pauses a
projector: it subscribes again from its stored position once NATS answers. Imports nats-py,
msgspec, SQLAlchemy/sqlmodel and the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kernel import projection_consumers as consumers
from services.kernel import projection_tables as tables
from services.kernel import pull, tracing
from services.kernel.eventstore import StoredEvent
from services.kernel.projection_consumers import Group
from services.kernel.projection_faults import fault_point
from services.kernel.projection_tables import ProjectionPosition
from services.kernel.sqlite import session
from services.kernel.telemetry import CONSUMER_LAG, EVENTS_CONSUMED, PROJECTION_POSITION
from services.kernel.transient import is_transient, retry_transient

log = logging.getLogger(__name__)

#: How often an idle projector looks at its consumer to refresh its lag.
LAG_EVERY_S = 5.0
#: Pause before a failed projector subscribes again from its stored position.
RESUME_S = 1.0
#: How long fetches meeting an election are retried on their subscription before subscribing
#: anew (whose 5 s JetStream calls, mid-election, came back up to 3.5 s after the new leader).
RIDE_OUT_S = 10.0
#: Bytes of events one fetch holds at most (a larger event comes alone, ``kernel.pull``): the
#: events a stream has waiting (an import's 100 batches of 1,000 images) never all at once.
FETCH_BYTES = 4 * 1024 * 1024


class Projector(Protocol):
    """Folds one stream's events into tables of its own."""

    name: str
    stream: str
    filter_subject: str
    #: The tables this projector owns: dropped and recreated on rebuild.
    tables: Sequence[Table]

    def decode(self, data: bytes) -> Any: ...

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None: ...


class Decodes:
    """Base of a projector: set ``event_type`` (a tagged union) and get ``decode`` for it."""

    event_type: ClassVar[Any]
    _decoder: ClassVar[msgspec.json.Decoder[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._decoder = msgspec.json.Decoder(cls.event_type)

    def decode(self, data: bytes) -> Any:
        return self._decoder.decode(data)


class ProjectionRunner:
    def __init__(
        self,
        nc: NATS,
        engine: AsyncEngine,
        projectors: Sequence[Projector],
        *,
        consumer_prefix: str,
        batch: int = 256,
        stall_after: float = 30.0,
        service: str | None = None,
    ) -> None:
        """``service`` labels the metrics; by default the ``consumer_prefix`` up to its first
        ``-`` (services name their consumers ``<service>-<instance>``)."""
        self._js = nc.jetstream()
        self._engine = engine
        self._projectors = list(projectors)
        self._group_of: dict[str, str] = {}
        self._prefix = consumers.safe(consumer_prefix)
        self._batch = batch
        self._positions: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        #: A loop not come round for this long is stuck (an idle one does every 2 s fetch).
        self._stall_after = stall_after
        self._alive: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._service = service or consumer_prefix.split("-", 1)[0]
        self._lag_at: dict[str, float] = {}

    async def start(self) -> None:
        await tables.prepare(self._engine, self._projectors)
        stored = {r.projector: r.position for r in await self._stored()}
        for group in consumers.grouped(self._projectors):
            for p in group.projectors:
                self._group_of[p.name] = group.name
                self._positions[p.name] = stored.get(p.name, 0)
                self._prime(p)
            self._alive[group.name] = time.monotonic()
            task = asyncio.create_task(self._run(group), name=f"projection:{group.name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def position(self, stream: str) -> int:
        """How far every projector of ``stream`` has applied it."""
        mine = [self._positions.get(p.name, 0) for p in self._projectors if p.stream == stream]
        return min(mine, default=0)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per projector: its stream, and whether it can update the read model now (``ok``)
        or why not (``error``): its consumer's last batch failed, is stuck, or is not running."""
        now, running = time.monotonic(), {t.get_name() for t in self._tasks if not t.done()}
        report: dict[str, dict[str, Any]] = {}
        for p in self._projectors:
            group = self._group_of.get(p.name, p.name)
            idle = now - self._alive.get(group, now)
            if f"projection:{group}" not in running:
                error: str | None = "not running"
            elif group in self._errors:
                error = self._errors[group]
            elif idle > self._stall_after:
                error = f"stuck: no progress for {idle:.0f}s"
            else:
                error = None
            report[p.name] = {"stream": p.stream, "ok": error is None, "error": error}
        return report

    async def wait_for(self, stream: str, sequence: int, timeout: float) -> bool:
        """Wait until the read model has applied ``stream`` up to ``sequence``."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.position(stream) >= sequence), timeout
                )
            except TimeoutError:
                return False
        return True

    async def caught_up(self, timeout: float) -> bool:
        """Wait until every stream is applied up to its last sequence now."""
        for stream in dict.fromkeys(p.stream for p in self._projectors):
            info = await retry_transient(
                functools.partial(self._js.stream_info, stream),
                what=f"reading the end of {stream}",
                retry_for=timeout,
            )
            if not await self.wait_for(stream, info.state.last_seq, timeout):
                return False
        return True

    async def rebuild(self, timeout: float = 300.0) -> tuple[int, dict[str, int]]:
        """Drop every table, replay every stream from the start; returns (events, positions)."""
        await self.stop()
        await tables.reset(self._engine, self._projectors)
        self._positions.clear()
        await self.start()
        if not await self.caught_up(timeout):
            raise TimeoutError("the rebuild did not catch up in time")
        rows = await self._stored()
        return sum(r.events for r in rows), {r.stream: r.position for r in rows}

    async def _stored(self) -> list[ProjectionPosition]:
        return await tables.stored(self._engine)

    def _labels(self, p: Projector) -> tuple[str, str, str]:
        return (self._service, p.name, p.stream)

    def _prime(self, p: Projector) -> None:
        """Every figure of ``p`` exists from the start: its position as stored, 0 consumed."""
        EVENTS_CONSUMED.labels(*self._labels(p))
        CONSUMER_LAG.labels(*self._labels(p))
        PROJECTION_POSITION.labels(*self._labels(p)).set(self._positions[p.name])

    def _set_lag(self, what: Projector | Group, pending: int) -> None:
        for p in what.projectors if isinstance(what, Group) else [what]:
            CONSUMER_LAG.labels(*self._labels(p)).set(max(0, pending))
        self._lag_at[what.name] = time.monotonic()

    async def _look_at_lag(self, what: Projector | Group, sub: Any) -> None:
        """Refresh an idle consumer's lag, at most every ``LAG_EVERY_S`` (a failure keeps it)."""
        if time.monotonic() - self._lag_at.get(what.name, 0.0) < LAG_EVERY_S:
            return
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # a figure, not the projection: it must not restart for it
            log.debug("projection %s: no lag figure (%s)", what.name, exc)
            self._lag_at[what.name] = time.monotonic()
            return
        self._set_lag(what, int(info.num_pending or 0) + int(info.num_ack_pending or 0))

    def _durable(self, name: str) -> str:
        return f"{self._prefix}-{consumers.safe(name)}"

    async def _subscribe(self, group: Group) -> Any:
        """Bind to the group's consumer, delivering from its lowest stored position."""
        stored = {r.projector: r.position for r in await self._stored()}
        position = min(stored.get(p.name, 0) for p in group.projectors)
        return await consumers.subscribe(self._js, group, self._durable(group.name), position)

    async def _run(self, group: Group) -> None:
        await consumers.retire(self._js, group, self._durable)
        while True:
            sub = None
            try:
                sub = await self._subscribe(group)
                await self._consume(group, sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the runner's loop guard: health shows it, the loop goes on
                self._errors[group.name] = f"{type(exc).__name__}: {exc}"
                if is_transient(exc):  # an election or a node restart: no bug to show
                    log.warning("projection %s waits for NATS (%r); resuming", group.name, exc)
                else:
                    log.exception("projection %s failed; restarting from its position", group.name)
                await asyncio.sleep(RESUME_S)
            finally:
                if sub is not None:
                    # A pull subscription left behind would hold the connection's drain.
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def _consume(self, group: Group, sub: Any) -> None:
        failing_since: float | None = None
        while True:
            try:
                msgs = await pull.fetch(sub, self._batch, FETCH_BYTES, timeout=2.0)
            except (NatsTimeoutError, TimeoutError):
                msgs = []
            except Exception as exc:  # an election: the next leader serves this subscription
                failing_since = failing_since or time.monotonic()
                if not is_transient(exc) or time.monotonic() - failing_since > RIDE_OUT_S:
                    raise
                await asyncio.sleep(0.25)
                continue
            failing_since = None
            if msgs:
                await self._apply(group, msgs)
                await msgs[-1].ack()
                # What the server still holds for this consumer after the last one applied.
                pending = int(msgs[-1].metadata.num_pending or 0)
                self._set_lag(group, pending)
                if not pending:
                    fault_point("caught_up", group.name)
            else:
                await self._look_at_lag(group, sub)
            self._alive[group.name] = time.monotonic()
            self._errors.pop(group.name, None)

    async def _apply(self, group: Group, msgs: list[Msg]) -> None:
        """One transaction: each projector applies the events it has not and stores its place."""
        ps = group.projectors
        applied = {p.name: 0 for p in ps}
        async with session(self._engine) as db:
            # The write turn, then the positions: another gateway may apply these to this file.
            await tables.turn(conn := await db.connection())
            at = await tables.positions(conn)
            positions = {p.name: at.get(p.name, 0) for p in ps}
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                for p in ps:
                    if seq <= positions[p.name]:
                        continue  # redelivered: already applied
                    stored = StoredEvent(seq, msg.subject, p.decode(msg.data), msg.headers or {})
                    with _consuming(p, stored):  # in the trace the event was appended in
                        await p.apply(db, stored)
                    positions[p.name] = seq
                    applied[p.name] += 1
            fault_point("batch_applied", group.name)  # its positions not stored yet
            rows = [(p.name, p.stream, positions[p.name], applied[p.name]) for p in ps]
            await tables.advance(conn, [row for row in rows if row[3]])
            await db.commit()
        fault_point("batch_committed", group.name)
        for p in ps:
            EVENTS_CONSUMED.labels(*self._labels(p)).inc(applied[p.name])
            PROJECTION_POSITION.labels(*self._labels(p)).set(positions[p.name])
        async with self._changed:
            self._positions.update(positions)
            self._changed.notify_all()


@contextlib.contextmanager
def _consuming(p: Projector, stored: StoredEvent[Any]) -> Iterator[None]:
    """The span of applying one event (``project <projector>``), child of the span that appended
    it; none while tracing is off, nor for an event stored in no trace (noise on a replay)."""
    if not tracing.enabled() or tracing.TRACEPARENT not in stored.headers:
        yield
        return
    parent = tracing.extract(stored.headers)
    kind = tracing.SpanKind.CONSUMER
    with tracing.span(f"project {p.name}", kind=kind, context=parent) as span:
        span.set_attribute("messaging.system", "nats")
        span.set_attribute("messaging.destination.name", stored.subject)
        span.set_attribute("studio.stream", p.stream)
        span.set_attribute("studio.sequence", stored.sequence)
        yield
