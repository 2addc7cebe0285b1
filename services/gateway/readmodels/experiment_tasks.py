"""An experiment as a task of the one task view (``tasks``): kind ``experiment``, its id the
experiment's, folded from the experiment's events on the TRAINING stream into the shared
``tasks`` table (the table and its status words are ``tasks``').

=============================  ==============================================================
the experiment's events        task status (its own state)
=============================  ==============================================================
``ExperimentCreated``          ``processing`` (running): its trials queue as runs at once
``ExperimentStopped``          ``cancelled`` (stopped): a user stopped it
``ExperimentResumed``          ``processing`` (running), its end and result cleared
``ExperimentCompleted``        ``completed``, its result the trials, the reason, the front
=============================  ==============================================================

``progress`` is the trials finished (completed, pruned or failed) of ``max_trials``.

Imports sqlmodel, ``contracts`` and the task view's table; nothing of the routes.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import experiments as e
from contracts import training as t
from services.gateway.readmodels.tasks import TABLES, _change, _finish, _start
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes

__all__ = ["ExperimentTasks"]

FINISHED = (e.TrialPruned, e.TrialCompleted, e.TrialFailed)


class ExperimentTasks(Decodes):
    name = "tasks-experiments"
    stream = t.STREAM
    filter_subject = t.EVENTS
    event_type = t.Event
    tables = TABLES

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        match event:
            case e.ExperimentCreated():
                task_id = event.experiment_id
                await _start(db, event, task_id, "experiment", "running", "processing")
                await _change(
                    db, event, task_id, project_id=event.project_id, total=event.max_trials
                )
            case e.TrialPruned() | e.TrialCompleted() | e.TrialFailed():
                row = await _change(db, event, event.experiment_id)
                if row is not None:
                    row.done += 1
            case e.ExperimentStopped():
                await _finish(db, event, event.experiment_id, "cancelled", state="stopped")
            case e.ExperimentResumed():
                changes = {"status": "processing", "state": "running", "finished_at": None}
                await _change(db, event, event.experiment_id, result=None, error=None, **changes)
            case e.ExperimentCompleted():
                await _finish(db, event, event.experiment_id, "completed", _result(event))


def _result(event: e.ExperimentCompleted) -> dict[str, Any]:
    experiment_id = event.experiment_id
    return {
        "experiment_id": experiment_id,
        "trials": event.trials,
        "reason": event.reason,
        "links": {"experiment": f"/api/v1/experiments/{experiment_id}"},
    }
