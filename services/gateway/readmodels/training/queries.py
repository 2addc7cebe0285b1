"""What the routes read of training: a run, its detail (history and checkpoints), lists of runs,
the queue, an experiment's runs and their latest epochs, counts by status, evaluations.
Keyword-only, one session passed in; a missing row is ``None`` (the route says how to answer
it). Imports sqlmodel and this package's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway.readmodels.training.tables import (
    CheckpointRow,
    EpochRow,
    EvaluationRow,
    RunRow,
)


class Queue(NamedTuple):
    """Runs on a device now, and runs waiting for one, each in the order they were queued."""

    running: list[RunRow]
    waiting: list[RunRow]


async def get_run(db: AsyncSession, *, run_id: str) -> RunRow | None:
    return await db.get(RunRow, run_id)


async def queue_position(db: AsyncSession, *, run: RunRow) -> int:
    """Where a queued run waits: 1 when it is the next to start."""
    ahead = select(func.count()).where(
        col(RunRow.status) == "queued", col(RunRow.queued_seq) < run.queued_seq
    )
    return (await db.exec(ahead)).one() + 1


async def queue(db: AsyncSession) -> Queue:
    return Queue(await _in_status(db, ("running", "stopping")), await _in_status(db, ("queued",)))


async def list_runs(
    db: AsyncSession,
    *,
    project_id: str | None = None,
    experiment_id: str | None = None,
    status: str | None = None,
    limit: int,
    among: Any = None,
) -> list[RunRow]:
    """Runs, newest first, of a project, an experiment, in a status (each filter optional);
    ``among`` (a subquery of project ids), of those projects only."""
    query = select(RunRow)
    if among is not None:
        query = query.where(col(RunRow.project_id).in_(among))
    if project_id:
        query = query.where(col(RunRow.project_id) == project_id)
    if experiment_id:
        query = query.where(col(RunRow.experiment_id) == experiment_id)
    if status:
        query = query.where(col(RunRow.status) == status)
    return list((await db.exec(query.order_by(col(RunRow.created_at).desc()).limit(limit))).all())


async def run_detail(db: AsyncSession, *, run_id: str) -> dict[str, Any] | None:
    """A run as clients see it, with its full metric history and its checkpoints."""
    row = await db.get(RunRow, run_id)
    if row is None:
        return None
    epochs = await db.exec(
        select(EpochRow).where(col(EpochRow.run_id) == run_id).order_by(col(EpochRow.epoch))
    )
    checkpoints = await db.exec(select(CheckpointRow).where(col(CheckpointRow.run_id) == run_id))
    return row.public() | {
        "history": [e.public() for e in epochs.all()],
        "checkpoints": [k.public() for k in checkpoints.all()],
    }


async def experiment_runs(
    db: AsyncSession, *, experiment_id: str, project_id: str | None = None
) -> list[RunRow]:
    """An experiment's runs (of one project, if given) in the order they were queued."""
    query = select(RunRow).where(col(RunRow.experiment_id) == experiment_id)
    if project_id is not None:
        query = query.where(col(RunRow.project_id) == project_id)
    return list((await db.exec(query.order_by(col(RunRow.queued_seq)))).all())


async def latest_epochs(db: AsyncSession, *, run_ids: Sequence[str]) -> dict[str, EpochRow]:
    """Each run's latest completed epoch; a run with none is left out."""
    epochs = (await db.exec(select(EpochRow).where(col(EpochRow.run_id).in_(run_ids)))).all()
    latest: dict[str, EpochRow] = {}
    for e in epochs:
        if e.run_id not in latest or e.epoch > latest[e.run_id].epoch:
            latest[e.run_id] = e
    return latest


async def run_counts(db: AsyncSession, *, among: Any = None) -> dict[str, int]:
    """How many runs are in each status (a status no run is in is left out); ``among`` (a
    subquery of project ids), of those projects only."""
    query = select(RunRow.status, func.count())
    if among is not None:
        query = query.where(col(RunRow.project_id).in_(among))
    rows = await db.exec(query.group_by(RunRow.status))
    return dict(rows.all())


async def runs_using_split(db: AsyncSession, *, split_id: str) -> int:
    """How many runs, in any status, were queued on the split."""
    query = select(func.count()).where(col(RunRow.split_id) == split_id)
    return (await db.exec(query)).one()


async def get_evaluation(db: AsyncSession, *, evaluation_id: str) -> EvaluationRow | None:
    return await db.get(EvaluationRow, evaluation_id)


async def list_evaluations(db: AsyncSession, *, run_id: str) -> list[EvaluationRow]:
    """A run's evaluations, newest first."""
    query = select(EvaluationRow).where(col(EvaluationRow.run_id) == run_id)
    return list((await db.exec(query.order_by(col(EvaluationRow.started_at).desc()))).all())


async def _in_status(db: AsyncSession, statuses: tuple[str, ...]) -> list[RunRow]:
    query = select(RunRow).where(col(RunRow.status).in_(statuses))
    return list((await db.exec(query.order_by(col(RunRow.queued_seq)))).all())
