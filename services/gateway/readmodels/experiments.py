"""The gateway's read model of experiments (searches over models and hyperparameters): one row
per experiment (its spec, status, front, best trials and importances) and one per trial (its
parameters, state and objective values), folded from the experiment's events on the TRAINING
stream, and the queries the routes and streams read them with.

A trial is a run (``run_id``): its live figures (status, epochs, latest metrics) are the runs
read model's, joined when a trial is read. ``opened_seq`` is the stream sequence of the
experiment's latest ``ExperimentCreated``/``ExperimentResumed``: an ``ExperimentCompleted``
after it ends the experiment's streams, one before it belongs to the past.

Imports sqlmodel, ``contracts`` and the kernel's projection plumbing; nothing of the routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Table, func
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import experiments as e
from contracts import training as t
from services.gateway.readmodels.base import Page, iso
from services.gateway.readmodels.training.queries import latest_epochs
from services.gateway.readmodels.training.tables import RunRow
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes

__all__ = [
    "ExperimentRow",
    "ExperimentsProjector",
    "TrialRow",
    "experiment_detail",
    "get_experiment",
    "get_trial",
    "list_experiments",
    "trial_runs",
]

#: A trial's state after each of its events; ``queued`` is read from its run (see ``public``).
TRIAL_STATE: dict[type, str] = {
    e.TrialStarted: "running",
    e.TrialPruned: "pruned",
    e.TrialCompleted: "completed",
    e.TrialFailed: "failed",
}


class ExperimentRow(SQLModel, table=True):
    __tablename__ = "experiments"
    experiment_id: str = Field(primary_key=True)
    project_id: str = Field(index=True)
    split_id: str
    name: str
    architecture_type: str
    search_config: dict[str, Any] = Field(sa_type=JSON)
    objectives: list[Any] = Field(sa_type=JSON)
    max_trials: int
    budget: dict[str, Any] = Field(sa_type=JSON)
    pruning: dict[str, Any] = Field(sa_type=JSON)
    seed: int
    #: running | stopped | completed
    status: str = Field(index=True)
    reason: str | None = None
    trials_started: int = 0
    trials_finished: int = 0
    front: list[int] = Field(default_factory=list, sa_type=JSON)
    best: dict[str, int] = Field(default_factory=dict, sa_type=JSON)
    importances: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    created_seq: int
    opened_seq: int
    completed_seq: int | None = None
    created_at: datetime = Field(index=True)
    updated_at: datetime
    finished_at: datetime | None = None
    actor: str = "anonymous"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.experiment_id,
            "project_id": self.project_id,
            "split_id": self.split_id,
            "name": self.name,
            "architecture_type": self.architecture_type,
            "search_config": self.search_config,
            "objectives": self.objectives,
            "max_trials": self.max_trials,
            "budget": self.budget,
            "pruning": self.pruning,
            "seed": self.seed,
            "status": self.status,
            "reason": self.reason,
            "trials_started": self.trials_started,
            "trials_finished": self.trials_finished,
            "front": self.front,
            "best": self.best,
            "importances": self.importances,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "created_by": self.actor,
        }


class TrialRow(SQLModel, table=True):
    __tablename__ = "experiment_trials"
    experiment_id: str = Field(primary_key=True)
    trial: int = Field(primary_key=True)
    run_id: str = Field(index=True)
    params: dict[str, Any] = Field(sa_type=JSON)
    #: running | pruned | completed | failed
    state: str
    values: dict[str, float] | None = Field(default=None, sa_type=JSON)
    pruned_epoch: int | None = None
    pruned_value: float | None = None
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    promoted: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    started_at: datetime
    finished_at: datetime | None = None

    def public(self, run: RunRow | None = None, latest: Any = None) -> dict[str, Any]:
        """The trial, with its run's status and latest epoch's metrics when given."""
        state = self.state
        if state == "running" and run is not None and run.status in ("queued", "stopped"):
            state = run.status  # waits for a device as every run does, or was stopped
        figures = latest.public() if latest is not None else {}
        return {
            "trial": self.trial,
            "run_id": self.run_id,
            "params": self.params,
            "state": state,
            "values": self.values or {},
            # The run's latest figures, and the objectives' values once it completed.
            "metrics": {k: v for k, v in figures.items() if k != "epoch"} | (self.values or {}),
            "epoch": figures.get("epoch"),
            "message": self.error["message"] if self.error else None,
            "pruned_epoch": self.pruned_epoch,
            "pruned_value": self.pruned_value,
            "error": self.error,
            "promoted": self.promoted,
            "run_status": run.status if run else None,
            "epochs_done": run.epochs_done if run else 0,
            "best_val_accuracy": run.best_val_accuracy if run else None,
            "best_val_map": run.best_val_map if run else None,
            "latest": latest.public() if latest is not None else None,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
        }


class ExperimentsProjector(Decodes):
    name = "experiments"
    stream = t.STREAM
    filter_subject = t.EVENTS
    event_type = t.Event
    tables: Sequence[Table] = (
        ExperimentRow.__table__,  # type: ignore[attr-defined]
        TrialRow.__table__,  # type: ignore[attr-defined]
    )

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        if isinstance(event, e.ExperimentCreated):
            db.add(_created(event, stored.sequence))
            return
        if not isinstance(event, e.EXPERIMENT_EVENTS):
            return
        row = await db.get(ExperimentRow, getattr(event, "experiment_id", ""))
        if row is None:
            return  # its creation is older than this read model: nothing to fold into
        row.updated_at = event.occurred_at
        if isinstance(event, e.TrialStarted | e.TrialPruned | e.TrialCompleted | e.TrialFailed):
            await _trial(db, row, event)
        else:
            await _experiment(db, row, event, stored.sequence)
        db.add(row)


def _created(event: e.ExperimentCreated, sequence: int) -> ExperimentRow:
    return ExperimentRow(
        experiment_id=event.experiment_id,
        project_id=event.project_id,
        split_id=event.split_id,
        name=event.name,
        architecture_type=event.architecture_type,
        search_config=msgspec.to_builtins(event.search_config),
        objectives=msgspec.to_builtins(event.objectives),
        max_trials=event.max_trials,
        budget=msgspec.to_builtins(event.budget),
        pruning=msgspec.to_builtins(event.pruning),
        seed=event.seed,
        status="running",
        created_seq=sequence,
        opened_seq=sequence,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        actor=event.actor,
    )


async def _trial(db: AsyncSession, row: ExperimentRow, event: Any) -> None:
    if isinstance(event, e.TrialStarted):
        row.trials_started += 1
        trial = TrialRow(
            experiment_id=event.experiment_id,
            trial=event.trial,
            run_id=event.run_id,
            params=event.params,
            state="running",
            started_at=event.occurred_at,
        )
        await db.merge(trial)
        return
    found = await db.get(TrialRow, (event.experiment_id, event.trial))
    if found is None:
        return
    row.trials_finished += 1 if found.state == "running" else 0
    found.state, found.finished_at = TRIAL_STATE[type(event)], event.occurred_at
    match event:
        case e.TrialPruned():
            found.pruned_epoch, found.pruned_value = event.epoch, event.value
        case e.TrialCompleted():
            found.values = dict(event.values)
        case e.TrialFailed():
            found.error = {"code": event.code, "message": event.message}
    db.add(found)


async def _experiment(db: AsyncSession, row: ExperimentRow, event: Any, sequence: int) -> None:
    match event:
        case e.FrontUpdated():
            row.front, row.best = list(event.front), dict(event.best)
            row.importances = dict(event.importances)
        case e.ExperimentStopped():
            row.status = "stopped"
        case e.ExperimentResumed():
            row.status, row.reason, row.opened_seq = "running", None, sequence
            row.completed_seq = row.finished_at = None
        case e.ExperimentCompleted():
            row.status, row.reason, row.completed_seq = "completed", event.reason, sequence
            row.finished_at = event.occurred_at
        case e.TrialPromoted():
            found = await db.get(TrialRow, (event.experiment_id, event.trial))
            if found is not None:
                found.promoted = {
                    "evaluation_id": event.evaluation_id,
                    "export_id": event.export_id,
                }
                db.add(found)


# --- queries ----------------------------------------------------------------------------------


async def get_experiment(db: AsyncSession, *, experiment_id: str) -> ExperimentRow | None:
    return await db.get(ExperimentRow, experiment_id)


async def get_trial(db: AsyncSession, *, experiment_id: str, trial: int) -> TrialRow | None:
    return await db.get(TrialRow, (experiment_id, trial))


async def list_experiments(
    db: AsyncSession,
    *,
    project_id: str | None = None,
    status: str | None = None,
    among: Any = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[ExperimentRow]:
    """Experiments, newest first, of a project or in a status; ``among`` (a subquery of
    project ids), of those projects only."""
    query = select(ExperimentRow)
    if project_id:
        query = query.where(col(ExperimentRow.project_id) == project_id)
    if status:
        query = query.where(col(ExperimentRow.status) == status)
    if among is not None:
        query = query.where(col(ExperimentRow.project_id).in_(among))
    total = (await db.exec(select(func.count()).select_from(query.subquery()))).one()
    order = (col(ExperimentRow.created_at).desc(), col(ExperimentRow.experiment_id).desc())
    rows = list((await db.exec(query.order_by(*order).offset(offset).limit(limit))).all())
    return Page(rows, total, offset + len(rows) < total)


async def trial_runs(db: AsyncSession, *, experiment_id: str) -> dict[str, int]:
    """Each trial's run id and its trial number."""
    query = select(TrialRow.run_id, TrialRow.trial).where(
        col(TrialRow.experiment_id) == experiment_id
    )
    return dict((await db.exec(query)).all())


async def trials(db: AsyncSession, *, experiment_id: str) -> list[dict[str, Any]]:
    """The experiment's trials in order, each with its run's status and latest metrics."""
    query = select(TrialRow, RunRow).outerjoin(RunRow, col(RunRow.run_id) == col(TrialRow.run_id))
    query = query.where(col(TrialRow.experiment_id) == experiment_id)
    found = list((await db.exec(query.order_by(col(TrialRow.trial)))).all())
    latest = await latest_epochs(db, run_ids=[trial.run_id for trial, _ in found])
    return [trial.public(run, latest.get(trial.run_id)) for trial, run in found]


async def experiment_detail(db: AsyncSession, *, experiment_id: str) -> dict[str, Any] | None:
    """The experiment with its trials; ``None`` for an experiment never created (a run's
    implicit experiment has runs but no search)."""
    row = await get_experiment(db, experiment_id=experiment_id)
    if row is None:
        return None
    return row.public() | {"trials": await trials(db, experiment_id=experiment_id)}
