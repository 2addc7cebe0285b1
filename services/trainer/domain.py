"""The Run aggregate as a pure decider: queued → running → completed, stopped, failed or
interrupted, and back to queued on resume.

Epoch events are decided against the run's last checkpointed epoch, so a trainer that repeats
an epoch after a crash cannot store it twice. Imports ``contracts`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from contracts import common
from contracts import training as c

QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
COMPLETED, STOPPED, FAILED, INTERRUPTED = "completed", "stopped", "failed", "interrupted"
ACTIVE = (RUNNING, STOPPING)
RESUMABLE = (STOPPED, INTERRUPTED, FAILED, COMPLETED)


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    queued: c.RunQueued
    epochs: int  # the planned number of epochs (raised by a resume)
    epochs_done: int = 0  # the last epoch with a checkpoint
    attempt: int = 0
    instance: str = ""
    lease: str = ""
    best_epoch: int = 0
    best_val_accuracy: float = 0.0


State = Run | None


class DomainError(Exception):
    code = common.CONFLICT

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class InvalidRun(DomainError):
    code = common.VALIDATION_ERROR


class RunNotFound(DomainError):
    code = common.NOT_FOUND


class RunConflict(DomainError):
    code = common.CONFLICT


def queue(state: State, event: c.RunQueued) -> list[c.Event]:
    if state is not None:
        raise RunConflict(f"run {event.run_id} already exists")
    return [event]


def claim(state: State, instance: str, device: str, lease: str) -> list[c.Event]:
    run = _existing(state)
    if run.status != QUEUED:
        raise RunConflict(f"run {run.run_id} is {run.status}, not queued")
    started = c.RunStarted(
        run_id=run.run_id,
        instance=instance,
        device=device,
        lease=lease,
        attempt=run.attempt + 1,
        start_epoch=run.epochs_done + 1,
    )
    return [started]


def epoch(
    state: State, instance: str, metrics: c.EpochCompleted, checkpoints: list[c.CheckpointSaved]
) -> list[c.Event]:
    run = _mine(state, instance)
    if metrics.epoch <= run.epochs_done:
        return []  # already stored (a retried append): nothing new
    if metrics.epoch != run.epochs_done + 1:
        raise RunConflict(f"epoch {metrics.epoch} follows epoch {run.epochs_done}")
    return [metrics, *checkpoints]


def finish(state: State, instance: str, outcome: c.Event) -> list[c.Event]:
    _mine(state, instance)
    return [outcome]


def stop(state: State, command: c.StopRun) -> list[c.Event]:
    run = _existing(state)
    if run.status == QUEUED:
        return [c.RunStopped(run_id=run.run_id, epoch=run.epochs_done)]
    if run.status == RUNNING:
        return [c.RunStopRequested(run_id=run.run_id)]
    if run.status == STOPPING:
        return []
    raise RunConflict(f"run {run.run_id} is {run.status}: there is nothing to stop")


def resume(state: State, command: c.ResumeRun) -> list[c.Event]:
    run = _existing(state)
    if run.status not in RESUMABLE:
        raise RunConflict(f"run {run.run_id} is {run.status}; only an ended run can resume")
    epochs = command.epochs if command.epochs is not None else run.epochs
    if epochs < run.epochs:
        raise InvalidRun(f"epochs can only be raised (it is {run.epochs})", field="epochs")
    if epochs > 1000:
        raise InvalidRun("epochs must be at most 1000", field="epochs")
    if epochs <= run.epochs_done:
        raise RunConflict(
            f"run {run.run_id} has trained {run.epochs_done} of {epochs} epochs; "
            "raise epochs to train more"
        )
    return [c.RunResumed(run_id=run.run_id, epochs=epochs)]


def interrupt(state: State, reason: str) -> list[c.Event]:
    run = _existing(state)
    if run.status not in ACTIVE:
        return []
    return [c.RunInterrupted(run_id=run.run_id, reason=reason)]


def evolve(state: State, event: c.Event) -> State:
    if isinstance(event, c.RunQueued):
        epochs = event.hyperparameters.epochs
        return Run(run_id=event.run_id, status=QUEUED, queued=event, epochs=epochs)
    run = _existing(state)
    match event:
        case c.RunStarted():
            return replace(
                run,
                status=RUNNING,
                attempt=event.attempt,
                instance=event.instance,
                lease=event.lease,
            )
        case c.EpochCompleted():
            better = event.val_accuracy > run.best_val_accuracy or run.best_epoch == 0
            best = (
                (event.epoch, event.val_accuracy)
                if better
                else (run.best_epoch, run.best_val_accuracy)
            )
            return replace(
                run, epochs_done=event.epoch, best_epoch=best[0], best_val_accuracy=best[1]
            )
        case c.RunStopRequested():
            return replace(run, status=STOPPING)
        case c.RunStopped():
            return replace(run, status=STOPPED)
        case c.RunCompleted():
            return replace(run, status=COMPLETED)
        case c.RunFailed():
            return replace(run, status=FAILED)
        case c.RunInterrupted():
            return replace(run, status=INTERRUPTED)
        case c.RunResumed():
            return replace(run, status=QUEUED, epochs=event.epochs)
    return run


def hyperparameters(run: Run) -> c.Hyperparameters:
    """The run's hyperparameters with its current (possibly raised) number of epochs."""
    return msgspec.structs.replace(run.queued.hyperparameters, epochs=run.epochs)


def _existing(state: State) -> Run:
    if state is None:
        raise RunNotFound("that run does not exist")
    return state


def _mine(state: State, instance: str) -> Run:
    run = _existing(state)
    if run.status not in ACTIVE or run.instance != instance:
        raise RunConflict(f"run {run.run_id} is not running on {instance}")
    return run
