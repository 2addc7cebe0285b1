"""The gateway's read model of runs, folded from events without NATS: what a user reads about a
run that a crash interrupted and the trainer resumed by itself."""

from __future__ import annotations

from pathlib import Path

from contracts import training as c
from services.gateway.readmodels.training import RunRow, TrainingProjector
from services.kernel.sqlite import session
from tests.unit.gateway.fold import folded

RUN = "r" * 32


async def fold(tmp_path: Path, *events: c.Event) -> RunRow:
    engine = await folded(tmp_path, TrainingProjector(), *events)
    async with session(engine) as db:
        row = await db.get(RunRow, RUN)
    await engine.dispose()
    assert row is not None
    return row


def history() -> list[c.Event]:
    return [
        c.RunQueued(
            run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
            hyperparameters=c.Hyperparameters(epochs=3), classes=["a", "b"],
            train_images=8, val_images=2,
        ),
        c.RunStarted(
            run_id=RUN, instance="t1", device="cpu", lease="slot", attempt=1, start_epoch=1
        ),
        c.RunInterrupted(run_id=RUN, reason="its trainer's lease expired"),
    ]  # fmt: skip


async def test_a_run_the_trainer_resumed_by_itself_says_why(tmp_path: Path):
    resumed = c.RunResumed(run_id=RUN, epochs=3, automatic=True)
    row = await fold(tmp_path, *history(), resumed)
    assert row.status == "queued"
    assert row.message == "resumed by itself after: its trainer's lease expired"


async def test_a_run_resumed_by_a_user_or_started_again_has_no_stale_message(tmp_path: Path):
    by_user = await fold(tmp_path / "user", *history(), c.RunResumed(run_id=RUN, epochs=3))
    assert by_user.message is None
    started = c.RunStarted(
        run_id=RUN, instance="t2", device="cpu", lease="slot", attempt=2, start_epoch=1
    )
    again = await fold(
        tmp_path / "again", *history(), c.RunResumed(run_id=RUN, epochs=3, automatic=True), started
    )
    assert (again.status, again.message, again.attempt) == ("running", None, 2)
