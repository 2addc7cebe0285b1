"""The Run decider, given its stored events, when a command or the trainer reports, then events
or a refusal.

Pure: what the run may claim is what its stored epochs say, and a crash puts it back in the
queue by itself (unless told not to, or it keeps crashing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from contracts import training as c
from services.trainer import domain
from tests.scenario import Decider, payload

RUNS: Decider[domain.State, c.Command, c.Event] = Decider(evolve=domain.evolve, initial=None)
given = RUNS.given
Decision = Callable[[domain.State], Sequence[c.Event]]

RUN = "r" * 32
ME = "trainer-a"


def queued(epochs: int = 3) -> c.RunQueued:
    return c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(epochs=epochs), classes=["a", "b"],
        train_images=10, val_images=4,
    )  # fmt: skip


def started(attempt: int = 1, start_epoch: int = 1) -> c.RunStarted:
    return c.RunStarted(
        run_id=RUN, instance=ME, device="cpu", lease="slot", attempt=attempt,
        start_epoch=start_epoch,
    )  # fmt: skip


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


def trained(epochs_done: int, planned: int = 3) -> list[c.Event]:
    history: list[c.Event] = [queued(planned), started()]
    for e in range(1, epochs_done + 1):
        history += [metrics(e, accuracy=e / 10), saved(e), saved(e, "best")]
    return history


def epoch(
    n: int, checkpoints: list[c.CheckpointSaved], instance: str = ME, accuracy: float = 0.5
) -> Decision:
    return lambda state: domain.epoch(state, instance, metrics(n, accuracy), checkpoints)


def finish(outcome: c.Event, instance: str = ME) -> Decision:
    return lambda state: domain.finish(state, instance, outcome)


def crash(auto_resume: bool = True, reason: str = "its trainer died") -> Decision:
    return lambda state: domain.interrupt(state, reason, auto_resume=auto_resume)


def claim(instance: str = ME) -> Decision:
    return lambda state: domain.claim(state, instance, "cpu", "slot")


def stop(state: domain.State) -> Sequence[c.Event]:
    return domain.stop(state, c.StopRun(run_id=RUN))


def resume(epochs: int | None = None) -> Decision:
    return lambda state: domain.resume(state, c.ResumeRun(run_id=RUN, epochs=epochs))


DONE = c.RunCompleted(run_id=RUN, epochs=3, best_epoch=3, best_val_accuracy=0.3)


# -- epochs ----------------------------------------------------------------------------------


def test_an_epoch_is_stored_with_its_checkpoint_and_the_run_remembers_the_file() -> None:
    storing = given(*trained(1)).when(epoch(2, [saved(2), saved(2, "best")]))

    storing.then(metrics(2), saved(2), saved(2, "best"))
    run = storing.after()
    assert run is not None and run.epochs_done == 2
    records = [run.last_checkpoint, run.best_checkpoint]
    assert [payload(r) for r in records if r] == [payload(saved(2)), payload(saved(2, "best"))]


def test_an_epoch_already_stored_is_stored_once() -> None:
    # a retried append after a crash: nothing new
    given(*trained(2)).when(epoch(2, [saved(2)])).then()


def test_an_epoch_without_its_checkpoint_record_is_refused() -> None:
    refusal = given(*trained(1)).when(epoch(2, [saved(1)])).then_refused(domain.InvalidRun)
    assert "without its checkpoint" in refusal.message


def test_an_epoch_ahead_of_the_stored_history_is_refused() -> None:
    refusal = given(*trained(1)).when(epoch(3, [saved(3)])).then_refused(domain.RunConflict)
    assert "epoch 3 follows epoch 1" in refusal.message


def test_only_the_trainer_running_the_run_may_store_its_epochs_or_end_it() -> None:
    elsewhere = given(*trained(1))
    elsewhere.when(epoch(2, [saved(2)], instance="trainer-b")).then_refused(domain.RunConflict)
    ended = c.RunStopped(run_id=RUN, epoch=1)
    elsewhere.when(finish(ended, instance="trainer-b")).then_refused(domain.RunConflict)
    given(*trained(1), ended).when(finish(ended)).then_refused(domain.RunConflict)


# -- its end ---------------------------------------------------------------------------------


def test_a_completion_short_of_the_planned_epochs_is_stored_as_a_failure() -> None:
    # The trainer claims 4 epochs; the store holds 1 of 3: the run has failed, loudly.
    claim_ = c.RunCompleted(run_id=RUN, epochs=4, best_epoch=1, best_val_accuracy=0.1)

    [event] = given(*trained(1)).when(finish(claim_)).decided()

    assert isinstance(event, c.RunFailed) and event.code == "EPOCHS_MISSING"
    assert "1 of 3 are stored" in event.message


def test_a_completion_with_every_epoch_stored_completes() -> None:
    claim_ = c.RunCompleted(run_id=RUN, epochs=3, best_epoch=3, best_val_accuracy=0.3)

    given(*trained(3)).when(finish(claim_)).then(claim_)


def test_an_early_stop_completes_with_fewer_epochs_than_planned() -> None:
    claim_ = c.RunCompleted(
        run_id=RUN, epochs=2, best_epoch=1, best_val_accuracy=0.1, early_stopped=True
    )

    given(*trained(2)).when(finish(claim_)).then(claim_)


def test_a_stop_keeps_the_last_stored_epoch_whatever_the_trainer_says() -> None:
    given(*trained(2)).when(finish(c.RunStopped(run_id=RUN, epoch=3))).then(
        c.RunStopped(run_id=RUN, epoch=2)
    )


# -- crashes ---------------------------------------------------------------------------------


def test_a_crash_puts_the_run_back_in_the_queue_in_the_same_append() -> None:
    crashing = given(*trained(1)).when(crash(auto_resume=True))

    crashing.then(
        c.RunInterrupted(run_id=RUN, reason="its trainer died"),
        c.RunResumed(run_id=RUN, epochs=3, automatic=True),
    )
    run = crashing.after()
    assert run is not None and run.status == domain.QUEUED and run.epochs_done == 1


def test_without_auto_resume_a_crash_leaves_the_run_interrupted() -> None:
    given(*trained(1)).when(crash(auto_resume=False)).then(
        c.RunInterrupted(run_id=RUN, reason="its trainer died")
    )


def test_a_run_being_stopped_ends_stopped_when_its_trainer_crashes() -> None:
    history = [*trained(2), c.RunStopRequested(run_id=RUN)]

    given(*history).when(crash(auto_resume=True)).then(c.RunStopped(run_id=RUN, epoch=2))


def test_a_crash_of_a_run_that_is_not_running_changes_nothing() -> None:
    given(queued()).when(crash()).then()
    given(*trained(3), DONE).when(crash()).then()


def crashed_until_the_limit(history: list[c.Event]) -> list[c.Event]:
    """``history`` and then crashes, each followed by a new start, up to the last allowed."""
    for attempt in range(2, domain.AUTO_RESUME_LIMIT + 1):
        history += given(*history).when(crash(reason="died")).decided()
        history.append(started(attempt))
    return history


def test_a_run_that_keeps_crashing_without_progress_stops_resuming_itself() -> None:
    history = crashed_until_the_limit(trained(1))

    events = given(*history).when(crash(reason="died")).decided()

    assert len(events) == 1 and isinstance(events[0], c.RunInterrupted)
    assert f"after {domain.AUTO_RESUME_LIMIT} interruptions" in events[0].reason


def test_a_stored_epoch_resets_the_count_of_crashes() -> None:
    history = [*crashed_until_the_limit(trained(1)), metrics(2), saved(2)]

    events = given(*history).when(crash(reason="died")).decided()

    assert [type(e) for e in events] == [c.RunInterrupted, c.RunResumed]


# -- queue, claim, stop, resume --------------------------------------------------------------


def test_a_run_is_queued_once() -> None:
    given().when(lambda state: domain.queue(state, queued())).then(queued())
    given(queued()).when(lambda state: domain.queue(state, queued())).then_refused(
        domain.RunConflict
    )


def test_a_queued_run_is_claimed_from_its_next_epoch() -> None:
    given(queued()).when(claim()).then(started())
    resumed = [*trained(1), c.RunStopped(run_id=RUN, epoch=1), c.RunResumed(run_id=RUN, epochs=3)]
    given(*resumed).when(claim()).then(started(attempt=2, start_epoch=2))


def test_only_a_queued_run_that_exists_can_be_claimed() -> None:
    given().when(claim()).then_refused(domain.RunNotFound)
    given(*trained(1)).when(claim("trainer-b")).then_refused(domain.RunConflict)


def test_a_stop_ends_a_queued_run_and_asks_a_running_one() -> None:
    given(queued()).when(stop).then(c.RunStopped(run_id=RUN, epoch=0))
    given(*trained(1)).when(stop).then(c.RunStopRequested(run_id=RUN))
    given(*trained(1), c.RunStopRequested(run_id=RUN)).when(stop).then()


def test_an_ended_run_or_none_cannot_be_stopped() -> None:
    given().when(stop).then_refused(domain.RunNotFound)
    given(*trained(1), c.RunStopped(run_id=RUN, epoch=1)).when(stop).then_refused(
        domain.RunConflict
    )


def test_an_ended_run_resumes_with_as_many_or_more_epochs() -> None:
    stopped = given(*trained(1), c.RunStopped(run_id=RUN, epoch=1))
    stopped.when(resume()).then(c.RunResumed(run_id=RUN, epochs=3))
    stopped.when(resume(5)).then(c.RunResumed(run_id=RUN, epochs=5))


def test_resume_refusals() -> None:
    given().when(resume()).then_refused(domain.RunNotFound)
    given(*trained(1)).when(resume()).then_refused(domain.RunConflict)  # still running
    stopped = given(*trained(1), c.RunStopped(run_id=RUN, epoch=1))
    stopped.when(resume(2)).then_refused(domain.InvalidRun, field="epochs")
    stopped.when(resume(1001)).then_refused(domain.InvalidRun, field="epochs")
    done = given(*trained(3), DONE)
    refusal = done.when(resume()).then_refused(domain.RunConflict)
    assert "raise epochs to train more" in refusal.message


def test_a_run_that_does_not_exist_stores_no_epoch_no_end_and_no_crash() -> None:
    given().when(epoch(1, [saved(1)])).then_refused(domain.RunNotFound)
    given().when(finish(DONE)).then_refused(domain.RunNotFound)
    given().when(crash()).then_refused(domain.RunNotFound)


def test_a_queued_run_stores_no_epoch_and_no_end() -> None:
    given(queued()).when(epoch(1, [saved(1)])).then_refused(domain.RunConflict)
    given(queued()).when(finish(DONE)).then_refused(domain.RunConflict)
