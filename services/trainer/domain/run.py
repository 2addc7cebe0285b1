"""The Run aggregate as a pure decider: queued → running → completed, stopped, failed or
interrupted, and back to queued on resume.

Epoch events are decided against the run's last checkpointed epoch, so a trainer that repeats
an epoch after a crash cannot store it twice, and each stored epoch names its checkpoint file
(``CheckpointSaved``: object name and sha256), the one a resume must continue from. A run only
completes with every planned epoch stored (or stopped early by its patience); a run a crash
interrupted goes back to the queue by itself, unless auto-resume is off or it keeps crashing
without storing an epoch. Imports ``contracts`` and the kernel's ``DomainError`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from contracts import training as c
from services.kernel.domain import Conflict, InvalidInput, NotFound

QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
COMPLETED, STOPPED, FAILED, INTERRUPTED = "completed", "stopped", "failed", "interrupted"
ACTIVE = (RUNNING, STOPPING)
RESUMABLE = (STOPPED, INTERRUPTED, FAILED, COMPLETED)
#: Crashes in a row without a stored epoch after which a run is no longer resumed by itself.
AUTO_RESUME_LIMIT = 3


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
    #: The stored records of its newest and its best checkpoint (one file may be both).
    last_checkpoint: c.CheckpointSaved | None = None
    best_checkpoint: c.CheckpointSaved | None = None
    #: Interruptions since its last stored epoch.
    crashes: int = 0


State = Run | None


class InvalidRun(InvalidInput):
    """What a run is asked to do or store does not make sense for a run."""


class RunNotFound(NotFound):
    """No run has that id."""


class RunConflict(Conflict):
    """The command does not fit the run's state: it has moved on, or another trainer has it."""


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
    if not any(k.kind == "last" and k.epoch == metrics.epoch for k in checkpoints):
        raise InvalidRun(f"epoch {metrics.epoch} comes without its checkpoint")
    return [metrics, *checkpoints]


def finish(state: State, instance: str, outcome: c.Event) -> list[c.Event]:
    """The run's end as its trainer saw it, held to what is stored: a completion short of its
    planned epochs is a failure, and a stop keeps the last stored epoch."""
    run = _mine(state, instance)
    if isinstance(outcome, c.RunCompleted):
        short = run.epochs_done < run.epochs and not outcome.early_stopped
        if short or outcome.epochs != run.epochs_done or run.epochs_done == 0:
            message = (
                f"the trainer reported {outcome.epochs} epochs done but {run.epochs_done} "
                f"of {run.epochs} are stored; the run cannot be complete"
            )
            return [c.RunFailed(run_id=run.run_id, code="EPOCHS_MISSING", message=message)]
    if isinstance(outcome, c.RunStopped) and outcome.epoch != run.epochs_done:
        return [msgspec.structs.replace(outcome, epoch=run.epochs_done)]
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


def interrupt(state: State, reason: str, auto_resume: bool = False) -> list[c.Event]:
    """Its trainer crashed. A run being stopped ends stopped (as its user asked); any other
    goes back to the queue at once when ``auto_resume``, in the same append, so no crash can
    come between the two — unless it crashed ``AUTO_RESUME_LIMIT`` times without progress."""
    run = _existing(state)
    if run.status not in ACTIVE:
        return []
    if run.status == STOPPING:
        return [c.RunStopped(run_id=run.run_id, epoch=run.epochs_done)]
    if auto_resume and run.crashes + 1 >= AUTO_RESUME_LIMIT:
        reason += (
            f"; not resumed by itself after {AUTO_RESUME_LIMIT} interruptions "
            "without a finished epoch"
        )
        auto_resume = False
    interrupted = c.RunInterrupted(run_id=run.run_id, reason=reason)
    if not auto_resume:
        return [interrupted]
    return [interrupted, c.RunResumed(run_id=run.run_id, epochs=run.epochs, automatic=True)]


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
            # A detector's best epoch is its best mAP (its accuracy is 0.0), kept in the same
            # field: what a run's best epoch is chosen by.
            score = event.val_accuracy if event.val_map is None else event.val_map
            better = score > run.best_val_accuracy or run.best_epoch == 0
            best = (event.epoch, score) if better else (run.best_epoch, run.best_val_accuracy)
            return replace(
                run,
                epochs_done=event.epoch,
                best_epoch=best[0],
                best_val_accuracy=best[1],
                crashes=0,
            )
        case c.CheckpointSaved(kind="last"):
            return replace(run, last_checkpoint=event)
        case c.CheckpointSaved(kind="best"):
            return replace(run, best_checkpoint=event)
        case c.RunStopRequested():
            return replace(run, status=STOPPING)
        case c.RunStopped():
            return replace(run, status=STOPPED)
        case c.RunCompleted():
            return replace(run, status=COMPLETED)
        case c.RunFailed():
            return replace(run, status=FAILED)
        case c.RunInterrupted():
            return replace(run, status=INTERRUPTED, crashes=run.crashes + 1)
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
