"""The Export aggregate as a pure decider: requested once (its checkpoint's sha256 on record),
then completed — only if its parity check passed — or failed, once.

One function per command, as in the trainer and datasets: ``request`` decides a
``RequestExport`` from the facts its handler gathered (the run's checkpoint records, how many
parity images its split has); ``finish`` stores a job's outcome; ``predictable`` says whether a
stored export answers a prediction. The lifecycle (started once, finished once while running)
is the kernel's job decider, shared with every job. No I/O, no clock, no ids: the handler stamps
the envelope. Imports ``contracts`` and the kernel's pure ``domain`` and ``jobs`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts import exports as x
from contracts import training as t
from services.kernel.domain import Conflict, InvalidInput, NotFound
from services.kernel.jobs import COMPLETED, RUNNING, Lifecycle

CHECKPOINTS = ("best", "last")
#: An export's lifecycle, the kernel's job decider: requested once, then ended once.
EXPORT = Lifecycle(*x.EXPORT_JOB)
#: Why an export whose exporter stopped during it failed.
INTERRUPTED = "the exporter stopped during the export; request it again"


@dataclass(frozen=True)
class Export:
    export_id: str
    run_id: str
    status: str
    format: str
    file: str = ""


State = Export | None


@dataclass(frozen=True)
class RunFacts:
    """What a request needs from outside the export, gathered by its handler: whether the run
    exists, its latest checkpoint record of each kind, and how many images parity can use."""

    exists: bool
    checkpoints: Mapping[str, t.CheckpointSaved] = field(default_factory=dict)
    parity_images: int = 0


class UnknownFormat(InvalidInput):
    """The format is none the exporter writes."""


class UnknownCheckpoint(InvalidInput):
    """The checkpoint is neither ``best`` nor ``last``."""


class RunNotFound(NotFound):
    """The run to export does not exist."""


class CheckpointNotSaved(Conflict):
    """The run has no checkpoint of that kind yet."""


class NoParityImages(InvalidInput):
    """The run's split has nothing to check the exported model's parity on."""


class ParityNotPassed(Conflict):
    """An export may complete only with a passed parity check."""


class ExportNotFound(NotFound):
    """The export to predict with does not exist."""


class NotPredictable(Conflict):
    """Only a completed ONNX export predicts."""


class NoImagesSent(InvalidInput):
    """A prediction needs at least one image."""


def validate(command: x.RequestExport) -> None:
    """The command's own values, checked before anything is looked up."""
    if command.format not in x.FORMATS:
        raise UnknownFormat(f"format must be one of {', '.join(x.FORMATS)}", field="format")
    if command.checkpoint not in CHECKPOINTS:
        raise UnknownCheckpoint("checkpoint must be best or last", field="checkpoint")


def request(
    state: State, command: x.RequestExport, *, run: RunFacts, instance: str
) -> list[x.Event]:
    """An export of the run's latest checkpoint of the kind asked for, to be run by
    ``instance`` (which ends it as interrupted if it stops meanwhile)."""
    validate(command)
    if not run.exists:
        raise RunNotFound(f"run {command.run_id} does not exist", field="run_id")
    saved = run.checkpoints.get(command.checkpoint)
    if saved is None:
        raise CheckpointNotSaved(f"run {command.run_id} has no {command.checkpoint} checkpoint yet")
    if not run.parity_images:
        raise NoParityImages("the run's split has no test or validation images")
    requested = x.ExportRequested(
        export_id=command.export_id,
        run_id=command.run_id,
        checkpoint=command.checkpoint,
        format=command.format,
        checkpoint_sha256=saved.sha256,
        checkpoint_epoch=saved.epoch,
        instance=instance,
    )
    return EXPORT.start(_status(state), requested)


def finish(state: State, outcome: x.ExportCompleted | x.ExportFailed) -> list[x.Event]:
    """A running export's outcome, stored once."""
    if isinstance(outcome, x.ExportCompleted) and not outcome.parity.passed:
        raise ParityNotPassed("an export whose parity check failed cannot complete")
    return EXPORT.finish(_status(state), outcome)


def parity_failure(export_id: str, run_id: str, parity: x.Parity) -> x.ExportFailed | None:
    """How an export whose exported model disagrees with the trained one fails (``None``: it
    agrees, and the export goes on)."""
    if parity.passed:
        return None
    message = (
        f"the exported model disagrees with the trained one: max |diff| "
        f"{parity.max_abs_diff:.3g}, top-1 agreement {parity.top1_agreement:.2%}"
    )
    return x.ExportFailed(
        export_id=export_id, run_id=run_id, code="PARITY_FAILED", message=message, parity=parity
    )


def interrupted(export_id: str, run_id: str) -> x.ExportFailed:
    """How an export fails when its exporter stopped in the middle of it."""
    return x.ExportFailed(
        export_id=export_id,
        run_id=run_id,
        code="INTERRUPTED",
        message=INTERRUPTED,
    )


def predictable(state: State, query: x.Predict) -> Export:
    """The export that answers ``query``, or why none does."""
    if state is None:
        raise ExportNotFound(f"export {query.export_id} does not exist")
    if state.status != COMPLETED or state.format != "onnx":
        raise NotPredictable("only a completed ONNX export predicts")
    if not query.images:
        raise NoImagesSent("send at least one image", field="images")
    return state


def evolve(state: State, event: x.Event) -> State:
    match event:
        case x.ExportRequested():
            return Export(event.export_id, event.run_id, RUNNING, event.format)
        case x.ExportCompleted():
            return EXPORT.ended(state, event, file=event.file_name)
    return EXPORT.ended(state, event)


def _status(state: State) -> str | None:
    return state.status if state is not None else None
