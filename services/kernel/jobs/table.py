"""The one job projection: a job row's status from its events, written once for every job table.

Two kinds of read model keep jobs:

- a service's own, to find after a stop the jobs it left running: ``JobTable``, a projector of
  every kind of job of one stream into one ``jobs`` table (kind, id, parent, instance, status),
  read by ``left_running`` and ``running_elsewhere``;
- the gateway's, one table per kind with what clients see: ``fold_job`` adds a job's row at
  its start (``running``, with what the start says in the row's fields of the same names)
  and ends it at its outcome (``completed`` or ``failed``, its time, the failure's code and
  message); the caller adds what else its outcome says.

Applied by the kernel's projection runner, which stores the stream position in the same
transaction. Imports sqlmodel and the kernel only: the events' types come from the lifecycles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kernel.eventstore import StoredEvent
from services.kernel.jobs.decider import RUNNING, Lifecycle
from services.kernel.sqlite import session

Row = TypeVar("Row", bound=SQLModel)


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    kind: str = Field(primary_key=True)
    job_id: str = Field(primary_key=True)
    parent_id: str
    instance: str = Field(index=True)
    status: str = Field(index=True)


class JobTable:
    """The jobs of one stream, by kind: where each runs and whether it still does."""

    tables: Sequence[Table] = (JobRow.__table__,)  # type: ignore[attr-defined]

    def __init__(
        self,
        name: str,
        stream: str,
        filter_subject: str,
        event_type: Any,
        kinds: Sequence[Lifecycle],
    ) -> None:
        self.name, self.stream, self.filter_subject = name, stream, filter_subject
        self.kinds = list(kinds)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(event_type)

    def decode(self, data: bytes) -> Any:
        return self._decoder.decode(data)

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        for life in self.kinds:
            if isinstance(event, life.started):
                db.add(_started(life, event))
            elif life.is_outcome(event):
                row = await db.get(JobRow, (life.noun, life.job_id(event)))
                if row is not None:
                    row.status = life.evolve(row.status, event) or row.status
                    db.add(row)


def _started(life: Lifecycle, event: Any) -> JobRow:
    return JobRow(
        kind=life.noun,
        job_id=life.job_id(event),
        parent_id=life.parent_id(event),
        instance=event.instance,
        status=RUNNING,
    )


async def left_running(db: AsyncEngine, kind: str, instance: str) -> list[tuple[str, str]]:
    """(job id, parent id) of the jobs of ``kind`` that ``instance`` runs, as far as the read
    model has seen: after a stop, those it left running."""
    async with session(db) as s:
        query = select(JobRow).where(
            col(JobRow.kind) == kind,
            col(JobRow.instance) == instance,
            col(JobRow.status) == RUNNING,
        )
        return [(row.job_id, row.parent_id) for row in (await s.exec(query)).all()]


async def running_elsewhere(db: AsyncEngine, kind: str, instance: str) -> set[str]:
    """The ids of the jobs of ``kind`` that another instance runs."""
    async with session(db) as s:
        query = select(JobRow.job_id).where(
            col(JobRow.kind) == kind,
            col(JobRow.instance) != instance,
            col(JobRow.status) == RUNNING,
        )
        return set((await s.exec(query)).all())


def started_row(model: type[Row], event: Any, status: str = "status") -> Row:
    """A job's row from its start: every field of ``model`` that the event has by name (its
    ids, what it was asked, who asked), running since the event's time."""
    fields = {name: getattr(event, name) for name in model.model_fields if hasattr(event, name)}
    return model(**fields, **{status: RUNNING, "started_at": event.occurred_at})


async def fold_job(
    db: AsyncSession, model: type[Row], life: Lifecycle, event: Any, *, status: str = "status"
) -> Row | None:
    """Folds a job's event into its row in ``model``: its start adds its ``started_row``; its
    outcome ends the row (its ``status``, ``finished_at``, and the failure's ``error``) and
    returns it, for the caller to add what else the outcome says. ``None`` for a start, for no
    event of the job, and for a job the model never saw start."""
    if isinstance(event, life.started):
        db.add(started_row(model, event, status))
        return None
    if not life.is_outcome(event):
        return None
    found = await db.get(model, life.job_id(event))
    if found is None:
        return None
    setattr(found, status, life.evolve(getattr(found, status), event))
    found.finished_at = event.occurred_at
    if isinstance(event, life.failed):
        found.error = _error(event)
    db.add(found)
    return found


def _error(failed: Any) -> dict[str, Any]:
    return {"code": failed.code, "message": failed.message}
