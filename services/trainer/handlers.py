"""Command handlers of the trainer service: start (queue), stop and resume a run.

A run is checked in full when it is submitted (hyperparameters, split, classes), so a bad
request is refused at once rather than failing later on a device.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial

from contracts import common
from contracts import datasets as d
from contracts import training as c
from contracts.common import CommandRejected, Reply
from services.kernel.commands import execute
from services.kernel.domain import DomainError, Refused
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT
from services.trainer import domain
from services.trainer.engine import validate
from services.vision.detectors import is_detector

_REFUSALS = (DomainError,)


async def _one_device() -> int:
    return 1


def invalid(message: str, field: str) -> CommandRejected:
    return CommandRejected(code=common.VALIDATION_ERROR, message=message, field=field)


class Training:
    def __init__(
        self,
        runs: Repository[domain.State],
        datasets: PagedQuery[d.SubsetItem],
        busy: Callable[[], Awaitable[bool]],
        *,
        largest: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.runs = runs
        self.datasets = datasets
        self.busy = busy
        #: The most devices any live trainer has (``capacity``): the most one run may ask for.
        self.largest = largest or _one_device

    async def start_run(self, command: c.StartRun, headers: Mapping[str, str]) -> Reply:
        queued = await self._checked(command, headers)
        if isinstance(queued, CommandRejected):
            return queued
        if command.if_busy == "reject" and await self.busy():
            return CommandRejected(
                code=common.CONFLICT, message="An experiment is already training"
            )
        decide = partial(domain.queue, event=queued)
        return await self._execute(command, command.run_id, decide, headers)

    async def stop_run(self, command: c.StopRun, headers: Mapping[str, str]) -> Reply:
        decide = partial(domain.stop, command=command)
        return await self._execute(command, command.run_id, decide, headers)

    async def resume_run(self, command: c.ResumeRun, headers: Mapping[str, str]) -> Reply:
        decide = partial(domain.resume, command=command)
        return await self._execute(command, command.run_id, decide, headers)

    async def _execute(
        self, command: c.Command, run_id: str, decide: Callable, headers: Mapping[str, str]
    ) -> Reply:
        return await execute(
            self.runs, run_id, command, decide, headers=headers, refusals=_REFUSALS, noun="run"
        )

    async def _subset(
        self, command: c.StartRun, subset: d.Subset, headers: Mapping[str, str]
    ) -> list[d.SubsetItem]:
        """The subset's images as the datasets service has them now (a split made a moment
        ago included); ``Refused`` NOT_FOUND when the split does not exist."""
        query = d.GetSubset(dataset_id=command.project_id, split_id=command.split_id, subset=subset)
        return await self.datasets(query, headers)

    async def _checked(
        self, command: c.StartRun, headers: Mapping[str, str]
    ) -> c.RunQueued | CommandRejected:
        if command.if_busy not in ("queue", "reject"):
            return invalid("if_busy must be queue or reject", "if_busy")
        problems = validate(command.hyperparameters)
        if problems:
            field, message = problems[0]
            return invalid(message, f"hyperparameters.{field}")
        refused = await self._devices_refused(command)
        if refused is not None:
            return refused
        try:
            train = await self._subset(command, "train", headers)
            val = await self._subset(command, "val", headers)
        except Refused as err:
            if err.code == common.NOT_FOUND:
                message = f"split {command.split_id} does not exist in this project"
                return invalid(message, "split_id")
            if err.code == common.VALIDATION_ERROR:
                return invalid("invalid project id", "project_id")
            return CommandRejected(code=err.code, message=err.message)
        except TRANSIENT:
            return CommandRejected(
                code=common.UNAVAILABLE, message="the datasets service did not answer; try again"
            )
        if not train or not val:
            which = "training" if not train else "validation"
            return invalid(f"the split has no {which} images", "split_id")
        classes = _classes(command.hyperparameters.model, train + val)
        if is_detector(command.hyperparameters.model) and not classes:
            return invalid("a detector needs boxes; this split's images have none", "split_id")
        if not is_detector(command.hyperparameters.model) and len(classes) < 2:
            return invalid("training needs at least two classes; this split has one", "split_id")
        return c.RunQueued(
            run_id=command.run_id,
            experiment_id=command.experiment_id,
            project_id=command.project_id,
            split_id=command.split_id,
            hyperparameters=command.hyperparameters,
            classes=classes,
            train_images=len(train),
            val_images=len(val),
            devices=command.devices,
        )

    async def _devices_refused(self, command: c.StartRun) -> CommandRejected | None:
        """Why the run cannot train on the devices it asks, or None. A run asking more than any
        trainer has would wait for ever: it is refused at once, saying how many there are."""
        devices, batch = command.devices, command.hyperparameters.batch_size
        if devices > 1 and is_detector(command.hyperparameters.model):  # the engine's own rule
            message = f"a detector trains on one device, not {devices}"
            return invalid(message, "devices")
        largest = await self.largest() if devices > 1 else 1
        if not 1 <= devices <= largest:
            return invalid(
                f"devices must be between 1 and {largest} (the most devices of one trainer "
                f"here), not {devices}",
                "devices",
            )
        if batch % devices:
            message = f"batch_size {batch} must be a multiple of devices ({devices}): each "
            return invalid(message + "device trains an equal share", "hyperparameters.batch_size")
        return None


def _classes(model: str, items: list[d.SubsetItem]) -> list[str]:
    """A run's classes: its images' labels for a classifier, its boxes' labels for a detector
    (whose images without boxes are negatives, of no class)."""
    if is_detector(model):
        return sorted({box.label for item in items for box in item.boxes})
    return sorted({item.label for item in items})
