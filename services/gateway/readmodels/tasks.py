"""The one task view: every background job of the studio (an import, a training run, an
evaluation, an export) as one row of one table, folded from the events its own context already
records. It is a projection, not a second source of truth: dropped and replayed like the others.

A task's id is its job's own id (``import_id``, ``run_id``, ``evaluation_id``, ``export_id``).
Its ``status`` is one of five words, mapped from each job's own states (``state`` keeps the
job's own word, as its own route shows it):

======================  =====================================  ===============================
kind                    the job's events (its own state)       task status
======================  =====================================  ===============================
``import``              ``ImportStarted`` (running),           ``processing`` (an import has
                        ``ImportValidated`` (importing)        no queue: it starts at once)
                        ``ImportCompleted`` (completed)        ``completed``
                        ``ImportFailed`` code ``CANCELLED``    ``cancelled``
                        ``ImportFailed`` (failed)              ``failed``
``training``            ``RunQueued``, ``RunResumed`` (queued) ``pending`` (waits for a device)
                        ``RunStarted`` (running),              ``processing``
                        ``RunStopRequested`` (stopping)
                        ``RunCompleted`` (completed)           ``completed``
                        ``RunStopped`` (stopped)               ``cancelled`` (a user stopped it)
                        ``RunFailed`` (failed)                 ``failed``
                        ``RunInterrupted`` (interrupted)       ``failed`` (code ``INTERRUPTED``;
                                                               one resumed by itself is
                                                               ``pending`` again at once)
``evaluation``          ``EvaluationStarted`` (running)        ``processing``
                        ``EvaluationCompleted`` / ``Failed``   ``completed`` / ``failed``
``export``              ``ExportRequested`` (running)          ``processing``
                        ``ExportCompleted`` / ``Failed``       ``completed`` / ``failed``
======================  =====================================  ===============================

``progress`` (0 to 1) is known for imports (images added of the files found) and runs (epochs
trained of epochs asked); an evaluation or an export has none until it completes (1). A resumed
run is ``pending`` again, its ``finished_at`` and ``error`` cleared, its ``started_at`` kept.
An ``experiment`` (a search; its trials are runs) is folded by ``experiment_tasks``.

Each stream is folded by a projector of its own into the one shared table (rows keyed by task
id, so a replay lands on the rows it wrote). Evaluations and exports name only their run: their
project is read from the runs read model when the task is read, since the EXPORTS stream is
projected independently of the TRAINING stream that says the run's project.

Imports sqlmodel, ``contracts`` and the kernel's projection plumbing; nothing of the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
from sqlalchemy import JSON, Table, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from services.gateway.readmodels.base import Page, iso
from services.gateway.readmodels.training.tables import RunRow
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes, Projector

__all__ = [
    "KINDS",
    "STATUSES",
    "TaskRow",
    "get_task",
    "list_tasks",
    "project_of_task",
    "task_link",
    "task_projectors",
]

Kind = Literal["import", "training", "evaluation", "export", "experiment"]
Status = Literal["pending", "processing", "completed", "failed", "cancelled"]
KINDS: Final = ("import", "training", "evaluation", "export", "experiment")
STATUSES: Final = ("pending", "processing", "completed", "failed", "cancelled")
#: Where a task is read: its ``check_url``.
CHECK_URL: Final = "/api/v1/tasks/{task_id}"


def task_link(task_id: str) -> dict[str, str]:
    """What every 202 answer adds to its data: the task's id and where to check on it."""
    return {"task_id": task_id, "check_url": CHECK_URL.format(task_id=task_id)}


class TaskRow(SQLModel, table=True):
    __tablename__ = "tasks"
    task_id: str = Field(primary_key=True)
    kind: str = Field(index=True)
    status: str = Field(index=True)
    #: The job's own word for its state (``queued``, ``stopping``, ``interrupted`` ...).
    state: str
    #: Known at the start for imports and runs; an evaluation's or export's is its run's.
    project_id: str | None = Field(default=None, index=True)
    run_id: str | None = Field(default=None, index=True)
    done: int = 0
    total: int | None = None
    created_at: datetime = Field(index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    result: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    actor: str = "anonymous"

    def progress(self) -> float | None:
        if self.status == "completed":
            return 1.0
        if not self.total:
            return None
        return round(min(1.0, self.done / self.total), 4)

    def public(self, project_id: str | None) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "status": self.status,
            "state": self.state,
            "progress": self.progress(),
            "project_id": project_id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at) if self.started_at else None,
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "updated_at": iso(self.updated_at),
            "result": self.result,
            "error": self.error,
            "created_by": self.actor,
            **task_link(self.task_id),
        }


# --- projectors -------------------------------------------------------------------------------


#: Every projector of a stream's jobs writes the one shared ``tasks`` table.
TABLES: Sequence[Table] = (TaskRow.__table__,)  # type: ignore[attr-defined]


class ImportTasks(Decodes):
    name = "tasks-datasets"
    stream = d.STREAM
    filter_subject = d.EVENTS
    event_type = d.Event
    tables = TABLES

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        match event:
            case d.ImportStarted():
                await _start(db, event, event.import_id, "import", "running", "processing")
                await _change(db, event, event.import_id, project_id=event.dataset_id)
            case d.ImportValidated():
                await _change(db, event, event.import_id, state="importing", total=event.files)
            case d.ImagesAdded():
                row = await _change(db, event, event.import_id)
                if row is not None:
                    row.done += len(event.images)
            case d.ImportCompleted():
                await _finish(db, event, event.import_id, "completed", _import_result(event))
            case d.ImportFailed():
                cancelled = event.code == "CANCELLED"
                outcome = "cancelled" if cancelled else "failed"
                await _finish(db, event, event.import_id, outcome, error=_error(event))


class TrainingTasks(Decodes):
    """Runs and evaluations: both are recorded in the TRAINING stream."""

    name = "tasks-training"
    stream = t.STREAM
    filter_subject = t.EVENTS
    event_type = t.Event
    tables = TABLES

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        match event:
            case t.EvaluationStarted():
                await _start(db, event, event.evaluation_id, "evaluation", "running", "processing")
                await _change(db, event, event.evaluation_id, run_id=event.run_id)
            case t.EvaluationCompleted():
                result = {
                    "evaluation_id": event.evaluation_id,
                    "run_id": event.run_id,
                    "accuracy": event.metrics.get("accuracy"),
                    "links": {"evaluation": f"/api/v1/evaluation/{event.evaluation_id}"},
                }
                if event.metrics.get("task") == "detection":  # a detector has no accuracy
                    result |= {k: event.metrics.get(k) for k in ("map", "map50")}
                await _finish(db, event, event.evaluation_id, "completed", result)
            case t.EvaluationFailed():
                await _finish(db, event, event.evaluation_id, "failed", error=_error(event))
            case _:
                await _run(db, event)


class ExportTasks(Decodes):
    name = "tasks-exports"
    stream = x.STREAM
    filter_subject = x.EVENTS
    event_type = x.Event
    tables = TABLES

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        match event:
            case x.ExportRequested():
                await _start(db, event, event.export_id, "export", "running", "processing")
                await _change(db, event, event.export_id, run_id=event.run_id)
            case x.ExportCompleted():
                await _finish(db, event, event.export_id, "completed", _export_result(event))
            case x.ExportFailed():
                await _finish(db, event, event.export_id, "failed", error=_error(event))


def task_projectors() -> list[Projector]:
    """One per stream that records jobs, all into the one ``tasks`` table."""
    return [ImportTasks(), TrainingTasks(), ExportTasks()]


async def _run(db: AsyncSession, event: Any) -> None:
    """A run's events: queued (again) is pending, started is processing, then its outcome."""
    run_id = getattr(event, "run_id", "")
    match event:
        case t.RunQueued():
            await _start(db, event, run_id, "training", "queued", "pending", started=False)
            epochs = event.hyperparameters.epochs
            await _change(db, event, run_id, project_id=event.project_id, total=epochs)
            await _change(db, event, run_id, run_id=run_id)
        case t.RunResumed():
            await _change(db, event, run_id, state="queued", status="pending", total=event.epochs)
            await _change(db, event, run_id, finished_at=None, error=None, result=None)
        case t.RunStarted():
            row = await _change(db, event, run_id, state="running", status="processing")
            if row is not None and row.started_at is None:
                row.started_at = event.occurred_at
        case t.RunStopRequested():
            await _change(db, event, run_id, state="stopping")
        case t.EpochCompleted():
            await _change(db, event, run_id, done=event.epoch)
        case t.RunCompleted():
            await _finish(db, event, run_id, "completed", _run_result(run_id, event.epochs, event))
        case t.RunStopped():
            result = _run_result(run_id, event.epoch, None)
            await _finish(db, event, run_id, "cancelled", result, state="stopped")
        case t.RunFailed():
            await _finish(db, event, run_id, "failed", error=_error(event))
        case t.RunInterrupted():
            error = {"code": "INTERRUPTED", "message": event.reason}
            await _finish(db, event, run_id, "failed", error=error, state="interrupted")


async def _start(
    db: AsyncSession,
    event: Any,
    task_id: str,
    kind: str,
    state: str,
    status: str,
    *,
    started: bool = True,
) -> None:
    when = event.occurred_at
    row = TaskRow(
        task_id=task_id,
        kind=kind,
        status=status,
        state=state,
        created_at=when,
        started_at=when if started else None,
        updated_at=when,
        actor=event.actor,
    )
    await db.merge(row)


async def _change(db: AsyncSession, event: Any, task_id: str, **changes: Any) -> TaskRow | None:
    """The task's row with ``changes`` made, as of ``event``; ``None`` for a task never seen
    to start (its start is older than what this read model holds)."""
    row = await db.get(TaskRow, task_id)
    if row is None:
        return None
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = event.occurred_at
    db.add(row)
    return row


async def _finish(
    db: AsyncSession,
    event: Any,
    task_id: str,
    status: str,
    result: dict[str, Any] | None = None,
    *,
    error: dict[str, Any] | None = None,
    state: str | None = None,
) -> None:
    changes = {"status": status, "state": state or status, "finished_at": event.occurred_at}
    await _change(db, event, task_id, result=result, error=error, **changes)


def _error(failed: Any) -> dict[str, Any]:
    return {"code": failed.code, "message": failed.message}


def _import_result(event: d.ImportCompleted) -> dict[str, Any]:
    report = event.report
    return {
        "import_id": event.import_id,
        "dataset_id": event.dataset_id,
        "files": report.files,
        "imported": report.imported,
        "links": {
            "import": f"/api/v1/datasets/import/{event.import_id}",
            "dataset": f"/api/v1/datasets/{event.dataset_id}",
            "images": f"/api/v1/datasets/{event.dataset_id}/images",
        },
    }


def _run_result(run_id: str, epochs: int, done: t.RunCompleted | None) -> dict[str, Any]:
    best = (
        {"best_epoch": done.best_epoch, "best_val_accuracy": done.best_val_accuracy} if done else {}
    )
    return {
        "run_id": run_id,
        "epochs": epochs,
        **best,
        "links": {"run": f"/api/v1/training/runs/{run_id}"},
    }


def _export_result(event: x.ExportCompleted) -> dict[str, Any]:
    figures = msgspec.structs.asdict(event)
    shown = ("export_id", "run_id", "format", "file_name", "size", "sha256")
    return {key: figures[key] for key in shown} | {
        "links": {
            "export": f"/api/v1/export/{event.export_id}",
            "download": f"/api/v1/export/{event.export_id}/download",
        }
    }


# --- queries ----------------------------------------------------------------------------------


def _project() -> Any:
    """A task's project: its own, or (evaluations, exports) its run's."""
    return func.coalesce(col(TaskRow.project_id), col(RunRow.project_id))


def _with_project() -> Any:
    joined = col(RunRow.run_id) == col(TaskRow.run_id)
    return select(TaskRow, _project()).outerjoin(RunRow, joined)


async def get_task(db: AsyncSession, *, task_id: str) -> tuple[TaskRow, str | None] | None:
    """The task and its project; ``None`` for an id no job carries."""
    query = _with_project().where(col(TaskRow.task_id) == task_id)
    found = (await db.exec(query)).first()
    return (found[0], found[1]) if found else None


async def project_of_task(db: AsyncSession, *, task_id: str) -> str | None:
    found = await get_task(db, task_id=task_id)
    return found[1] if found else None


async def list_tasks(
    db: AsyncSession,
    *,
    kind: str | None = None,
    status: str | None = None,
    project_id: str | None = None,
    among: Any = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[tuple[TaskRow, str | None]]:
    """Tasks, newest first, filtered; ``among`` (a subquery of project ids) limits them to
    the projects a caller may read (``None``: every project's)."""
    query = _with_project()
    if kind:
        query = query.where(col(TaskRow.kind) == kind)
    if status:
        query = query.where(col(TaskRow.status) == status)
    if project_id:
        query = query.where(_project() == project_id)
    if among is not None:
        query = query.where(_project().in_(among))
    total = (await db.exec(select(func.count()).select_from(query.subquery()))).one()
    order = (col(TaskRow.created_at).desc(), col(TaskRow.task_id).desc())
    rows = (await db.exec(query.order_by(*order).offset(offset).limit(limit))).all()
    items = [(row, project) for row, project in rows]
    return Page(items, total, offset + len(items) < total)
