"""The Run decider, given its stored events, when the trainer reports, then events or a refusal.

Pure: what the run may claim is what its stored epochs say, and a crash puts it back in the
queue by itself (unless told not to, or it keeps crashing).
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import msgspec
import pytest

from contracts import training as c
from services.trainer import domain

RUN = "r" * 32
ME = "trainer-a"


def queued(epochs: int = 3) -> c.RunQueued:
    return c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(epochs=epochs), classes=["a", "b"],
        train_images=10, val_images=4,
    )  # fmt: skip


def started(attempt: int = 1) -> c.RunStarted:
    return c.RunStarted(
        run_id=RUN, instance=ME, device="cpu", lease="slot", attempt=attempt, start_epoch=1
    )


def metrics(epoch: int, accuracy: float = 0.5) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=RUN, epoch=epoch, train_loss=1.0, val_loss=1.0, val_accuracy=accuracy,
        learning_rate=0.1, seconds=1.0, images_per_second=10.0,
    )  # fmt: skip


def saved(epoch: int, kind: str = "last") -> c.CheckpointSaved:
    name = f"runs/{RUN}/epoch-{epoch:04d}-{epoch:016x}.pt"
    return c.CheckpointSaved(
        run_id=RUN, epoch=epoch, kind=kind, sha256=f"{epoch:064x}", size=1, object_name=name
    )


ENVELOPE = {"message_id", "correlation_id", "causation_id", "actor", "occurred_at"}


def payloads(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Events compared on their payload: the handler stamps the envelope later."""
    return [
        (
            type(e).__name__,
            {k: v for k, v in msgspec.structs.asdict(e).items() if k not in ENVELOPE},
        )
        for e in events
    ]


def given(*events: c.Event) -> domain.State:
    return reduce(domain.evolve, events, None)


def trained(epochs_done: int, planned: int = 3) -> list[c.Event]:
    history: list[c.Event] = [queued(planned), started()]
    for e in range(1, epochs_done + 1):
        history += [metrics(e, accuracy=e / 10), saved(e), saved(e, "best")]
    return history


def test_an_epoch_is_stored_with_its_checkpoint_and_the_run_remembers_the_file() -> None:
    state = given(*trained(1))

    events = domain.epoch(state, ME, metrics(2), [saved(2), saved(2, "best")])

    assert payloads(events) == payloads([metrics(2), saved(2), saved(2, "best")])
    run = given(*trained(1), *events)
    assert run is not None and run.epochs_done == 2
    records = [run.last_checkpoint, run.best_checkpoint]
    assert payloads(records) == payloads([saved(2), saved(2, "best")])


def test_an_epoch_without_its_checkpoint_record_is_refused() -> None:
    with pytest.raises(domain.InvalidRun, match="without its checkpoint"):
        domain.epoch(given(*trained(1)), ME, metrics(2), [saved(1)])


def test_an_epoch_ahead_of_the_stored_history_is_refused() -> None:
    with pytest.raises(domain.RunConflict, match="epoch 3 follows epoch 1"):
        domain.epoch(given(*trained(1)), ME, metrics(3), [saved(3)])


def test_a_completion_short_of_the_planned_epochs_is_stored_as_a_failure() -> None:
    # The trainer claims 4 epochs; the store holds 1 of 3: the run has failed, loudly.
    claim = c.RunCompleted(run_id=RUN, epochs=4, best_epoch=1, best_val_accuracy=0.1)

    [event] = domain.finish(given(*trained(1)), ME, claim)

    assert isinstance(event, c.RunFailed) and event.code == "EPOCHS_MISSING"
    assert "1 of 3 are stored" in event.message


def test_a_completion_with_every_epoch_stored_completes() -> None:
    claim = c.RunCompleted(run_id=RUN, epochs=3, best_epoch=3, best_val_accuracy=0.3)

    assert payloads(domain.finish(given(*trained(3)), ME, claim)) == payloads([claim])


def test_an_early_stop_completes_with_fewer_epochs_than_planned() -> None:
    claim = c.RunCompleted(
        run_id=RUN, epochs=2, best_epoch=1, best_val_accuracy=0.1, early_stopped=True
    )

    assert payloads(domain.finish(given(*trained(2)), ME, claim)) == payloads([claim])


def test_a_stop_keeps_the_last_stored_epoch_whatever_the_trainer_says() -> None:
    [event] = domain.finish(given(*trained(2)), ME, c.RunStopped(run_id=RUN, epoch=3))

    assert payloads([event]) == payloads([c.RunStopped(run_id=RUN, epoch=2)])


def test_a_crash_puts_the_run_back_in_the_queue_in_the_same_append() -> None:
    events = domain.interrupt(given(*trained(1)), "its trainer died", auto_resume=True)

    assert payloads(events) == payloads(
        [
            c.RunInterrupted(run_id=RUN, reason="its trainer died"),
            c.RunResumed(run_id=RUN, epochs=3, automatic=True),
        ]
    )
    run = given(*trained(1), *events)
    assert run is not None and run.status == domain.QUEUED and run.epochs_done == 1


def test_without_auto_resume_a_crash_leaves_the_run_interrupted() -> None:
    events = domain.interrupt(given(*trained(1)), "its trainer died", auto_resume=False)

    assert payloads(events) == payloads([c.RunInterrupted(run_id=RUN, reason="its trainer died")])


def test_a_run_being_stopped_ends_stopped_when_its_trainer_crashes() -> None:
    history = [*trained(2), c.RunStopRequested(run_id=RUN)]

    events = domain.interrupt(given(*history), "its trainer died", auto_resume=True)

    assert payloads(events) == payloads([c.RunStopped(run_id=RUN, epoch=2)])


def test_a_run_that_keeps_crashing_without_progress_stops_resuming_itself() -> None:
    history = trained(1)
    for attempt in range(2, domain.AUTO_RESUME_LIMIT + 1):
        history += domain.interrupt(given(*history), "died", auto_resume=True)
        history.append(started(attempt))

    events = domain.interrupt(given(*history), "died", auto_resume=True)

    assert len(events) == 1 and isinstance(events[0], c.RunInterrupted)
    assert f"after {domain.AUTO_RESUME_LIMIT} interruptions" in events[0].reason


def test_a_stored_epoch_resets_the_count_of_crashes() -> None:
    history = trained(1)
    for attempt in range(2, domain.AUTO_RESUME_LIMIT + 1):
        history += domain.interrupt(given(*history), "died", auto_resume=True)
        history.append(started(attempt))
    history += [metrics(2), saved(2)]

    events = domain.interrupt(given(*history), "died", auto_resume=True)

    assert [type(e) for e in events] == [c.RunInterrupted, c.RunResumed]
