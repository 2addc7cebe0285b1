"""Shared steps of the training tests: a project with a learnable split, runs, waiting."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import nats

from contracts import training as c
from services.kernel.eventstore import EventStore
from tests import imagesets
from tests.stack import Stack

API = "/api/v1"
#: Hyperparameters that train the small CNN on ``imagesets.squares`` in seconds on a CPU.
FAST: dict[str, Any] = {
    "model": "smallcnn",
    "epochs": 4,
    "batch_size": 8,
    "learning_rate": 0.003,
    "image_size": 32,
    "augmentation": "none",
    "seed": 7,
}


def client(stack: Stack) -> httpx.Client:
    return stack.sync_client(timeout=30)


def learnable_split(stack: Stack, per_class: int = 30, test: float = 0.0) -> tuple[str, str]:
    """A project with a train/val(/test) split of a learnable two-class set; returns its ids."""
    with client(stack) as api:
        pid = api.post(f"{API}/projects", json={"name": f"t-{uuid.uuid4().hex[:6]}"}).json()
        project_id = pid["data"]["id"]
        root = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class)
        job = api.post(
            f"{API}/datasets/import/local", json={"project_id": project_id, "path": str(root)}
        ).json()["data"]
        wait(
            lambda: (
                api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"] == "completed"
            )
        )
        val = 0.3 if test == 0 else 0.25
        ratios = {"train": round(1 - val - test, 6), "val": val, "test": test}
        split = api.post(
            f"{API}/splits", json={"project_id": project_id, "name": "s", "ratios": ratios}
        )
        assert split.status_code == 201, split.text
        return project_id, split.json()["data"]["id"]


def submit(stack: Stack, project_id: str, split_id: str, **overrides: Any) -> httpx.Response:
    hyper = FAST | overrides.pop("hyperparameters", {})
    body = {"project_id": project_id, "split_id": split_id, "hyperparameters": hyper, **overrides}
    with client(stack) as api:
        return api.post(f"{API}/training/run", json=body)


def run(stack: Stack, run_id: str) -> dict[str, Any]:
    with client(stack) as api:
        return api.get(f"{API}/training/runs/{run_id}").json()["data"]  # type: ignore[no-any-return]


def wait(condition: Any, timeout: float = 120.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def wait_status(stack: Stack, run_id: str, *statuses: str, timeout: float = 180) -> dict[str, Any]:
    return wait(lambda: (r := run(stack, run_id))["status"] in statuses and r, timeout)  # type: ignore[no-any-return]


def curves(detail: dict[str, Any]) -> list[tuple[int, float, float, float]]:
    """Per epoch: (epoch, train loss, val loss, val accuracy), rounded to 5 decimals."""
    return [
        (
            e["epoch"],
            round(e["train_loss"], 5),
            round(e["val_loss"], 5),
            round(e["val_accuracy"], 5),
        )
        for e in detail["history"]
    ]


async def run_events(stack: Stack, run_id: str) -> list[c.Event]:
    """Every event stored of run ``run_id``, read from its stream."""
    nc = await nats.connect(stack.nats_url)
    try:
        store: EventStore[c.Event] = EventStore(
            nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
        )
        return [s.event for s in await store.load(run_id)]
    finally:
        await nc.close()
