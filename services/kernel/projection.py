"""Projection runner: folds a stream's events into a SQLite read model.

Each projector reads from its own durable pull consumer and records the stream position it has
applied in the same transaction as the update, so a redelivered event is applied once. The
SQLite position is the truth: at start the consumer is realigned to it, which is also how a
deleted read model rebuilds itself by replay. ``health`` says whether each projector can update
its read model now (failing, stuck or not running), for ``/health`` to report.

Each projector's figures go to Prometheus: events applied, the position, and its lag (events
stored on its subjects that it has not applied), refreshed from the pulled messages' pending
count, or by one look at its consumer every ``LAG_EVERY_S`` while idle: never a call per event.

A leader election or a node restart (a cluster) only pauses a projector: its loop subscribes
again from the stored position once NATS answers, and its consumer is replicated as its stream.
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
from nats.js import api
from nats.js.errors import NotFoundError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kernel import tracing
from services.kernel.eventstore import StoredEvent
from services.kernel.sqlite import session
from services.kernel.telemetry import CONSUMER_LAG, EVENTS_CONSUMED, PROJECTION_POSITION
from services.kernel.transient import is_transient, retry_transient

log = logging.getLogger(__name__)

#: How often an idle projector looks at its consumer to refresh its lag.
LAG_EVERY_S = 5.0
#: Pause before a failed projector subscribes again from its stored position.
RESUME_S = 1.0


class ProjectionPosition(SQLModel, table=True):
    __tablename__ = "projection_position"
    projector: str = Field(primary_key=True)
    stream: str
    position: int = 0
    events: int = 0


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
        self._prefix = _safe(consumer_prefix)
        self._batch = batch
        self._positions: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        #: A loop that has not come round for this long is stuck: an idle one comes round at
        #: every fetch timeout (2 s).
        self._stall_after = stall_after
        self._alive: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._service = service or consumer_prefix.split("-", 1)[0]
        #: When each projector's lag was last refreshed (monotonic).
        self._lag_at: dict[str, float] = {}

    async def start(self) -> None:
        async with self._engine.begin() as conn:
            await conn.run_sync(_create, [_table(ProjectionPosition)])
            for p in self._projectors:
                await conn.run_sync(_create, p.tables)
        for p in self._projectors:
            self._positions[p.name] = await self._stored_position(p)
            self._alive[p.name] = time.monotonic()
            self._prime(p)
            self._tasks.append(asyncio.create_task(self._run(p), name=f"projection:{p.name}"))

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
        or why not (``error``): its last attempt failed, it is stuck, or it is not running."""
        now, running = time.monotonic(), {t.get_name() for t in self._tasks if not t.done()}
        report: dict[str, dict[str, Any]] = {}
        for p in self._projectors:
            idle = now - self._alive.get(p.name, now)
            if f"projection:{p.name}" not in running:
                error: str | None = "not running"
            elif p.name in self._errors:
                error = self._errors[p.name]
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
        for p in self._projectors:
            info = await retry_transient(
                functools.partial(self._js.stream_info, p.stream),
                what=f"reading the end of {p.stream}",
                retry_for=timeout,
            )
            if not await self.wait_for(p.stream, info.state.last_seq, timeout):
                return False
        return True

    async def rebuild(self, timeout: float = 300.0) -> tuple[int, dict[str, int]]:
        """Drop every table, replay every stream from the start; returns (events, positions)."""
        await self.stop()
        async with self._engine.begin() as conn:
            for p in self._projectors:
                await conn.run_sync(_drop, p.tables)
                await conn.run_sync(_create, p.tables)
            await conn.execute(_table(ProjectionPosition).delete())
        self._positions.clear()
        await self.start()
        if not await self.caught_up(timeout):
            raise TimeoutError("the rebuild did not catch up in time")
        async with session(self._engine) as db:
            rows = (await db.exec(select(ProjectionPosition))).all()
        return sum(r.events for r in rows), {r.stream: r.position for r in rows}

    async def _stored_position(self, p: Projector) -> int:
        async with session(self._engine) as db:
            row = await db.get(ProjectionPosition, p.name)
        return row.position if row else 0

    def _labels(self, p: Projector) -> tuple[str, str, str]:
        return (self._service, p.name, p.stream)

    def _prime(self, p: Projector) -> None:
        """Every figure of ``p`` exists from the start: its position as stored, 0 consumed."""
        EVENTS_CONSUMED.labels(*self._labels(p))
        CONSUMER_LAG.labels(*self._labels(p))
        PROJECTION_POSITION.labels(*self._labels(p)).set(self._positions[p.name])

    def _set_lag(self, p: Projector, pending: int) -> None:
        CONSUMER_LAG.labels(*self._labels(p)).set(max(0, pending))
        self._lag_at[p.name] = time.monotonic()

    async def _look_at_lag(self, p: Projector, sub: Any) -> None:
        """Refresh the lag of an idle projector from its consumer, at most every
        ``LAG_EVERY_S``; a failed look only leaves the figure as it was."""
        if time.monotonic() - self._lag_at.get(p.name, 0.0) < LAG_EVERY_S:
            return
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # a figure, not the projection: it must not restart for it
            log.debug("projection %s: no lag figure (%s)", p.name, exc)
            self._lag_at[p.name] = time.monotonic()
            return
        self._set_lag(p, int(info.num_pending or 0) + int(info.num_ack_pending or 0))

    def _durable(self, p: Projector) -> str:
        return f"{self._prefix}-{_safe(p.name)}"

    async def _subscribe(self, p: Projector) -> Any:
        """(Re)create the durable consumer so that it delivers from the stored position on."""
        durable = self._durable(p)
        position = await self._stored_position(p)
        try:
            info = await self._js.consumer_info(p.stream, durable)
            aligned = info.ack_floor is not None and info.ack_floor.stream_seq == position
            if not aligned or info.num_ack_pending:
                await self._js.delete_consumer(p.stream, durable)
                raise NotFoundError
        except NotFoundError:
            await self._js.add_consumer(
                p.stream,
                api.ConsumerConfig(
                    durable_name=durable,
                    filter_subject=p.filter_subject,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=position + 1,
                    ack_policy=api.AckPolicy.ALL,
                    ack_wait=60.0,
                    inactive_threshold=7 * 24 * 3600.0,
                ),
            )
        return await self._js.pull_subscribe_bind(durable=durable, stream=p.stream)

    async def _run(self, p: Projector) -> None:
        while True:
            sub = None
            try:
                sub = await self._subscribe(p)
                await self._consume(p, sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the runner's loop guard: health shows it, the loop goes on
                self._errors[p.name] = f"{type(exc).__name__}: {exc}"
                # Order matters more than speed: start again from the stored position.
                if is_transient(exc):  # an election or a node restart: no bug to show
                    log.warning("projection %s waits for NATS (%r); resuming", p.name, exc)
                else:
                    log.exception("projection %s failed; restarting from its position", p.name)
                await asyncio.sleep(RESUME_S)
            finally:
                if sub is not None:
                    # A pull subscription left behind would hold the connection's drain.
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def _consume(self, p: Projector, sub: Any) -> None:
        while True:
            try:
                msgs = await sub.fetch(self._batch, timeout=2.0)
            except (NatsTimeoutError, TimeoutError):
                msgs = []
            if msgs:
                await self._apply(p, msgs)
                await msgs[-1].ack()
                # What the server still holds for this consumer after the last one applied.
                self._set_lag(p, int(msgs[-1].metadata.num_pending or 0))
            else:
                await self._look_at_lag(p, sub)
            self._alive[p.name] = time.monotonic()
            self._errors.pop(p.name, None)

    async def _apply(self, p: Projector, msgs: list[Msg]) -> None:
        async with session(self._engine) as db:
            row = await db.get(ProjectionPosition, p.name) or ProjectionPosition(
                projector=p.name, stream=p.stream
            )
            applied = 0
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq <= row.position:
                    continue  # redelivered: already applied
                stored = StoredEvent(seq, msg.subject, p.decode(msg.data), msg.headers or {})
                with _consuming(p, stored):  # in the trace the event was appended in
                    await p.apply(db, stored)
                row.position, row.events = seq, row.events + 1
                applied += 1
            db.add(row)
            await db.commit()
            position = row.position
        EVENTS_CONSUMED.labels(*self._labels(p)).inc(applied)
        PROJECTION_POSITION.labels(*self._labels(p)).set(position)
        async with self._changed:
            self._positions[p.name] = position
            self._changed.notify_all()


@contextlib.contextmanager
def _consuming(p: Projector, stored: StoredEvent[Any]) -> Iterator[None]:
    """The span of applying one event (``project <projector>``), child of the span that
    appended it; none while tracing is off, nor for an event stored in no trace (a root
    span per event replayed would be noise)."""
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


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined]


def _create(conn: Any, tables: Sequence[Table]) -> None:
    SQLModel.metadata.create_all(conn, tables=list(tables))


def _drop(conn: Any, tables: Sequence[Table]) -> None:
    SQLModel.metadata.drop_all(conn, tables=list(tables))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
