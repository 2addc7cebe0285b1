"""The Evaluation aggregate as a pure decider: a run's checkpoint measured on a subset of its
split, started once, then completed or failed once.

It is decided against the Run it evaluates: the checkpoint it reads is the one the run's
``CheckpointSaved`` record names (so ``EvaluationStarted`` says which epoch it measures), and
the handler counts the subset's images of the run's classes before it asks, since an evaluation
of no image is refused. Imports ``contracts``, the kernel's ``domain`` and ``jobs``, and the
Run's state only.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import training as c
from services.kernel.domain import Conflict, InvalidInput
from services.kernel.jobs import RUNNING, Lifecycle
from services.trainer.domain import run as runs

CHECKPOINTS = ("best", "last")
SUBSETS = ("train", "val", "test")
#: An evaluation's lifecycle, the kernel's job decider: started once, then ended once.
EVALUATION = Lifecycle(*c.EVALUATION_JOB)
#: Why an evaluation whose trainer stopped during it failed.
INTERRUPTED = "the trainer stopped during it"


@dataclass(frozen=True)
class Evaluation:
    evaluation_id: str
    run_id: str
    status: str
    instance: str


State = Evaluation | None


class InvalidEvaluation(InvalidInput):
    """A checkpoint or subset no evaluation can use, or a subset with nothing to measure."""


class CheckpointNotSavedYet(Conflict):
    """The run has not stored a checkpoint of the kind asked for."""


def check(command: c.EvaluateRun) -> None:
    """The command's own values, checked before anything is read for it."""
    if command.checkpoint not in CHECKPOINTS:
        raise InvalidEvaluation("checkpoint must be best or last", field="checkpoint")
    if command.subset not in SUBSETS:
        raise InvalidEvaluation("subset must be train, val or test", field="subset")


def checkpoint(run: runs.State, command: c.EvaluateRun) -> c.CheckpointSaved:
    """The record of the checkpoint the evaluation reads: the run's newest of its kind."""
    check(command)
    if run is None:
        raise runs.RunNotFound(f"run {command.run_id} does not exist", field="run_id")
    record = run.best_checkpoint if command.checkpoint == "best" else run.last_checkpoint
    if record is None:
        raise CheckpointNotSavedYet(
            f"run {command.run_id} has no {command.checkpoint} checkpoint yet"
        )
    return record


def start(
    state: State, command: c.EvaluateRun, *, run: runs.State, images: int, instance: str
) -> list[c.Event]:
    """Start it on ``instance``, over the ``images`` of the subset that are of the run's
    classes; an evaluation id is used once."""
    record = checkpoint(run, command)
    if images == 0:
        raise InvalidEvaluation(
            f"the split's {command.subset} subset has no images of the run's classes",
            field="subset",
        )
    started = c.EvaluationStarted(
        evaluation_id=command.evaluation_id,
        run_id=command.run_id,
        checkpoint=command.checkpoint,
        subset=command.subset,
        images=images,
        checkpoint_epoch=record.epoch,
        instance=instance,
    )
    return EVALUATION.start(_status(state), started)


def finish(state: State, event: c.Event) -> list[c.Event]:
    """Its outcome (``EvaluationCompleted`` or ``EvaluationFailed``), once, while it runs."""
    return EVALUATION.finish(_status(state), event)


def evolve(state: State, event: c.Event) -> State:
    if isinstance(event, c.EvaluationStarted):
        return Evaluation(event.evaluation_id, event.run_id, RUNNING, event.instance)
    return EVALUATION.ended(state, event)


def _status(state: State) -> str | None:
    return state.status if state is not None else None
