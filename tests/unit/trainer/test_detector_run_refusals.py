"""What a detection run cannot be is refused when it is submitted, naming its field, with
nothing stored: several devices (the engine trains a detector on one only, so it used to be
queued and fail once its leases were taken), pretrained weights, an image size below the
backbone's least. A classifier on two devices of a trainer that has them, and a detector on
one, are still queued. The trainer's start-run handler, its event store in memory and the
datasets query faked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from contracts import common, new_id
from contracts import datasets as d
from contracts import training as c
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain
from services.trainer.handlers import Training

DETECTOR = "ssdlite320_mobilenet_v3_large"


async def subset(query: d.GetSubset, headers: Mapping[str, str]) -> list[d.SubsetItem]:
    """Two images of two classes, each with a box of its class, in every subset."""
    return [
        d.SubsetItem(image_id=f"{query.subset}-{label}", label=label, blob="0" * 64,
                     boxes=[d.Box(label=label, x=0.1, y=0.1, w=0.2, h=0.2)])
        for label in ("car", "bike")
    ]  # fmt: skip


async def not_busy() -> bool:
    return False


async def two_devices() -> int:
    return 2


def training() -> tuple[Training, InMemoryEventStore[Any]]:
    store: InMemoryEventStore[Any] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    handler = Training(Repository(store, domain.evolve, None), subset, not_busy,  # type: ignore[arg-type]
                       largest=two_devices)  # fmt: skip
    return handler, store


def start(model: str, devices: int = 1, **change: Any) -> c.StartRun:
    values = {"model": model, "epochs": 1, "batch_size": 4, "image_size": 64} | change
    hyper = c.HyperparametersIn(**values)
    return c.StartRun(run_id=new_id(), experiment_id=new_id(), project_id=new_id(),
                      split_id=new_id(), hyperparameters=hyper, devices=devices)  # fmt: skip


async def test_a_detector_on_two_devices_is_refused_naming_devices_and_nothing_is_stored():
    handler, store = training()
    command = start(DETECTOR, 2)
    answer = await handler.start_run(command, {})
    assert isinstance(answer, common.CommandRejected), answer
    assert (answer.code, answer.field) == (common.VALIDATION_ERROR, "devices")
    assert answer.message == "a detector trains on one device, not 2"
    assert await store.load(command.run_id) == []


@pytest.mark.parametrize(("model", "devices"), [(DETECTOR, 1), ("smallcnn", 2)])
async def test_what_the_engine_can_train_is_still_queued(model: str, devices: int):
    handler, store = training()
    command = start(model, devices)
    answer = await handler.start_run(command, {})
    assert not isinstance(answer, common.CommandRejected), answer
    (queued,) = [s.event for s in await store.load(command.run_id)]
    assert isinstance(queued, c.RunQueued) and queued.devices == devices


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"pretrained": "imagenet"}, "pretrained", f"{DETECTOR} trains from scratch"),
        ({"image_size": 16}, "image_size", f"must be at least 32 for {DETECTOR}, not 16"),
        ({"model": "fcos_resnet50_fpn", "image_size": 24}, "image_size", "at least 32"),
    ],
)
async def test_what_a_detector_cannot_take_is_refused_naming_its_hyperparameter(
    change: dict[str, Any], field: str, says: str
):
    handler, store = training()
    command = start(**{"model": DETECTOR} | change)
    answer = await handler.start_run(command, {})
    assert isinstance(answer, common.CommandRejected), answer
    assert (answer.code, answer.field) == (common.VALIDATION_ERROR, f"hyperparameters.{field}")
    assert says in answer.message, answer.message
    assert await store.load(command.run_id) == []
