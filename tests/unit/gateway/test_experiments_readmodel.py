"""The gateway's read model of experiments and their task, folded from a search's events without
NATS: what a user reads of a search that pruned one trial, completed another, was stopped,
resumed and completed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts import experiments as e
from services.gateway.readmodels.experiment_tasks import ExperimentTasks
from services.gateway.readmodels.experiments import ExperimentRow, ExperimentsProjector, TrialRow
from services.gateway.readmodels.tasks import TaskRow
from services.kernel.sqlite import session
from tests.unit.gateway.fold import folded

SEARCH = "e" * 32


def created() -> e.ExperimentCreated:
    return e.ExperimentCreated(
        experiment_id=SEARCH,
        project_id="p" * 32,
        split_id="s" * 32,
        name="lr search",
        architecture_type="smallcnn",
        search_config={"learning_rate": e.FloatRange(low=1e-4, high=1e-1, log=True)},
        objectives=e.default_objectives(),
        max_trials=2,
        budget=e.Budget(epochs_per_trial=2),
        pruning=e.Pruning(),
        seed=1,
    )


def history() -> list[Any]:
    runs = [e.trial_run_id(SEARCH, n) for n in (0, 1)]
    return [
        created(),  # 1
        e.TrialStarted(SEARCH, 0, runs[0], {"model": "smallcnn", "learning_rate": 0.01}),
        e.TrialStarted(SEARCH, 1, runs[1], {"model": "smallcnn", "learning_rate": 0.09}),
        e.TrialPruned(SEARCH, 1, runs[1], 1, 0.4),
        e.TrialCompleted(SEARCH, 0, runs[0], {"val_accuracy": 0.9}),  # 5
        e.FrontUpdated(SEARCH, [0], {"val_accuracy": 0}, {"learning_rate": 1.0}),
        e.ExperimentStopped(SEARCH),
        e.ExperimentResumed(SEARCH),  # 8
        e.ExperimentCompleted(SEARCH, 2, "max_trials"),  # 9
    ]


async def test_a_search_reads_as_its_trials_front_and_end(tmp_path: Path):
    engine = await folded(tmp_path, ExperimentsProjector(), *history())
    async with session(engine) as db:
        row = await db.get(ExperimentRow, SEARCH)
        pruned = await db.get(TrialRow, (SEARCH, 1))
        best = await db.get(TrialRow, (SEARCH, 0))
    await engine.dispose()
    assert row is not None and pruned is not None and best is not None
    assert (row.status, row.reason, row.trials_started, row.trials_finished) == (
        "completed",
        "max_trials",
        2,
        2,
    )
    # its streams end at the complete after its latest resumption
    assert (row.created_seq, row.opened_seq, row.completed_seq) == (1, 8, 9)
    assert (row.front, row.best, row.importances) == (
        [0],
        {"val_accuracy": 0},
        {"learning_rate": 1.0},
    )
    assert row.search_config == {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "step": None, "log": True}
    }
    assert (pruned.state, pruned.pruned_epoch, pruned.pruned_value) == ("pruned", 1, 0.4)
    assert (best.state, best.values) == ("completed", {"val_accuracy": 0.9})
    shown = best.public()
    assert shown["metrics"] == {"val_accuracy": 0.9} and shown["run_id"] == e.trial_run_id(
        SEARCH, 0
    )


async def test_a_resumed_search_is_running_again_and_its_old_end_forgotten(tmp_path: Path):
    engine = await folded(tmp_path, ExperimentsProjector(), *history(), e.ExperimentResumed(SEARCH))
    async with session(engine) as db:
        row = await db.get(ExperimentRow, SEARCH)
    await engine.dispose()
    assert row is not None
    assert (row.status, row.reason, row.opened_seq, row.completed_seq) == (
        "running",
        None,
        10,
        None,
    )
    assert row.finished_at is None


async def test_a_search_whose_creation_this_read_model_never_saw_is_not_invented(tmp_path: Path):
    engine = await folded(tmp_path, ExperimentsProjector(), *history()[1:])
    async with session(engine) as db:
        assert await db.get(ExperimentRow, SEARCH) is None
        assert await db.get(TrialRow, (SEARCH, 0)) is None
    await engine.dispose()


async def test_a_search_is_one_task_moving_with_its_trials(tmp_path: Path):
    events = history()
    engine = await folded(tmp_path / "stopped", ExperimentTasks(), *events[:7])
    async with session(engine) as db:
        stopped = await db.get(TaskRow, SEARCH)
    await engine.dispose()
    assert stopped is not None
    assert (stopped.kind, stopped.status, stopped.state) == ("experiment", "cancelled", "stopped")
    assert (stopped.done, stopped.total, stopped.project_id) == (2, 2, "p" * 32)
    engine = await folded(tmp_path / "done", ExperimentTasks(), *events)
    async with session(engine) as db:
        done = await db.get(TaskRow, SEARCH)
    await engine.dispose()
    assert done is not None and (done.status, done.progress()) == ("completed", 1.0)
    assert done.result is not None and done.result["reason"] == "max_trials"
    assert done.result["links"]["experiment"] == f"/api/v1/experiments/{SEARCH}"
