"""A run on two devices through the running studio: a second trainer lending two CPU "devices"
(``STUDIO_TRAINER_DEVICES=2``) joins the module's studio and trains the run with two gloo ranks,
holding both device leases for the whole run and releasing both at its end; the one-device
trainer leaves the run to it. What no trainer can train is refused with a 422."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from services.trainer.capacity import BUCKET
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration
#: The studio of test_training_api (the same set of services: one studio serves both).
STACK_SERVICES = ("projects", "datasets", "trainer")


@pytest.fixture(scope="module")
def trainer() -> str:
    """The two-device trainer's name: its instance and its device lease slot."""
    return f"ddp-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def two_devices(stack: Stack, trainer: str) -> Iterator[Stack]:
    """The module's studio with a second trainer of two CPU devices (starting: see ``split``)."""
    stack.start(trainer, "trainer", STUDIO_TRAINER_DEVICES="2", STUDIO_INSTANCE=trainer,
                STUDIO_TRAINER_SLOT=trainer)  # fmt: skip
    try:
        yield stack
    finally:
        stack.stop(trainer)


async def announced(stack: Stack, name: str) -> int | None:
    """The devices the trainer ``name`` announced, if it did."""
    nc = await nats.connect(stack.nats_url)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        entry = await kv.get(name)
        return int(json.loads(entry.value)["devices"]) if entry.value else None
    except Exception:  # no bucket or no key yet
        return None
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def split(two_devices: Stack, trainer: str) -> tuple[str, str]:
    """A learnable split, made while the trainer starts; ready once the trainer announced its
    two devices."""
    made = learnable_split(two_devices, per_class=8)
    wait(lambda: asyncio.run(announced(two_devices, trainer)) == 2, 60, every=0.25)
    return made


def leases(stack: Stack) -> list[dict[str, Any]]:
    with client(stack) as api:
        return api.get(f"{API}/training/queue").json()["data"]["leases"]  # type: ignore[no-any-return]


def test_a_run_on_two_devices_holds_both_leases_and_completes(
    two_devices: Stack, trainer: str, split
) -> None:
    # given a learnable split
    project_id, split_id = split
    # when a run asks for two devices
    hyper = {"epochs": 2, "batch_size": 8}
    resp = submit(two_devices, project_id, split_id, hyperparameters=hyper, devices=2)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["data"]["id"]
    # then, while it trains, both leases of the two-device trainer name it
    held = wait(lambda: len(h := [x for x in leases(two_devices) if x["run_id"] == run_id]) == 2
                and h, 120)  # fmt: skip
    assert {(h["key"], h["holder"]) for h in held} == {
        (trainer, trainer),
        (f"{trainer}.d1", trainer),
    }
    # and it completes like a one-device run: every epoch, its checkpoints
    done = wait_status(two_devices, run_id, "completed", "failed")
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == [1, 2]
    assert "last" in {k["kind"] for k in done["checkpoints"]}
    # and both leases are free again
    wait(lambda: not [x for x in leases(two_devices) if x["run_id"] == run_id], 30)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"devices": 3}, "devices"),
        ({"devices": 0}, "devices"),
        ({"devices": 2, "hyperparameters": {"batch_size": 7}}, "hyperparameters.batch_size"),
    ],
)
def test_a_run_no_trainer_can_train_is_refused(two_devices: Stack, split, body, field) -> None:
    project_id, split_id = split
    resp = submit(two_devices, project_id, split_id, **body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in str(resp.json()), resp.json()
