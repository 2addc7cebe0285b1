"""The trainer's read model: the queue of runs (in order) and which runs are active where; and
which evaluations each instance runs (the kernel's job table), to reap after a stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import training as c
from contracts.experiments import EXPERIMENT_EVENTS
from services.kernel.eventstore import StoredEvent
from services.kernel.jobs.table import JobTable
from services.kernel.projection import Decodes
from services.kernel.sqlite import session
from services.trainer import domain
from services.trainer.domain.evaluation import EVALUATION


class RunRow(SQLModel, table=True):
    __tablename__ = "trainer_runs"
    run_id: str = Field(primary_key=True)
    status: str = Field(index=True)
    #: The sequence of its latest RunQueued or RunResumed: the queue's order.
    queued_seq: int = Field(index=True)
    instance: str = ""
    lease: str = ""


_STATUS: dict[type, str] = {
    c.RunStopped: domain.STOPPED,
    c.RunCompleted: domain.COMPLETED,
    c.RunFailed: domain.FAILED,
    c.RunInterrupted: domain.INTERRUPTED,
    c.RunStopRequested: domain.STOPPING,
}


class Runs(Decodes):
    name = "trainer-runs"
    stream = c.STREAM
    filter_subject = c.EVENTS
    event_type = c.Event
    tables: Sequence[Table] = (RunRow.__table__,)  # type: ignore[attr-defined]

    def __init__(self, on_stop: Callable[[str], None]) -> None:
        self._on_stop = on_stop

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        if EVALUATION.owns(event) or isinstance(event, EXPERIMENT_EVENTS):
            return
        if isinstance(event, c.RunQueued):
            db.add(RunRow(run_id=event.run_id, status=domain.QUEUED, queued_seq=stored.sequence))
            return
        row = await db.get(RunRow, event.run_id)
        if row is None:
            return
        if isinstance(event, c.RunResumed):
            row.status, row.queued_seq = domain.QUEUED, stored.sequence
        elif isinstance(event, c.RunStarted):
            row.status, row.instance, row.lease = domain.RUNNING, event.instance, event.lease
        elif type(event) in _STATUS:
            row.status = _STATUS[type(event)]
            if isinstance(event, c.RunStopRequested):
                self._on_stop(event.run_id)
        db.add(row)


async def queued(db: AsyncSession) -> list[RunRow]:
    query = select(RunRow).where(col(RunRow.status) == domain.QUEUED)
    return list((await db.exec(query.order_by(col(RunRow.queued_seq)))).all())


async def active(db: AsyncSession) -> list[RunRow]:
    query = select(RunRow).where(col(RunRow.status).in_(domain.ACTIVE))
    return list((await db.exec(query)).all())


@dataclass(frozen=True)
class RunQueue:
    """The queue of runs as the read model ``db`` has it, and a wait for it to change."""

    db: AsyncEngine
    changed: Callable[[float], Awaitable[None]]

    async def waiting(self) -> list[str]:
        """The queued runs' ids, oldest first."""
        async with session(self.db) as db:
            return [row.run_id for row in await queued(db)]

    async def active(self) -> list[RunRow]:
        async with session(self.db) as db:
            return await active(db)

    async def wait(self, timeout: float) -> None:
        """Returns once the read model moved on, or after ``timeout`` seconds."""
        await self.changed(timeout)


def trainer_jobs() -> JobTable:
    """Which evaluations each instance runs, so that after a stop none stays running."""
    return JobTable("trainer-jobs", c.STREAM, c.EVENTS, c.Event, [EVALUATION])
