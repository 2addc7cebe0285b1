"""A finished run's model is measured, not guessed: its parameters and its latency at batch 1
(the objectives of a search beyond accuracy) reach the run's stored ``RunCompleted``."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from contracts import training as c
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain, engine
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.engine.loop import Precision
from services.trainer.engine.measure import (
    MIN_REPEATS,
    WARMUP,
    count_params,
    latency_ms,
    measure,
)
from services.trainer.epochs import Epochs
from services.trainer.images import Listing
from services.trainer.runstore import RunStore
from services.trainer.worker import DeviceSlot, Worker, ended
from tests.unit.trainer.test_worker_epochs import FakeObjects

RUN = "r" * 32
ME = "trainer-a"
CPU = Precision(torch.device("cpu"), None)


def smallcnn() -> torch.nn.Module:
    return engine.build_model("smallcnn", 3)


def test_params_are_every_parameter_of_the_model() -> None:
    model = smallcnn()
    expected = sum(p.numel() for p in model.parameters())
    # conv 3x3 (no bias) + BatchNorm (weight, bias) per block, then the linear head
    widths = [3, 32, 64, 128, 256]
    by_hand = sum(9 * a * b + 2 * b for a, b in itertools.pairwise(widths)) + 256 * 3 + 3
    assert count_params(model) == expected == by_hand


def test_latency_is_the_median_of_timed_passes_after_warm_up() -> None:
    # Given a clock under the test's control: each pass takes the next of these durations
    durations = [0.004, 0.001, 0.009, 0.002, 0.003]
    calls: list[str] = []
    model = CountingModel(calls)
    ticks = ticks_of(durations)
    # When five passes are timed
    found = latency_ms(model, 8, CPU, repeats=5, clock=lambda: next(ticks))
    # Then the latency is their median in ms, after the warm-up passes, in eval mode
    assert found == pytest.approx(statistics.median(durations) * 1000)
    assert calls == ["eval"] * (WARMUP + 5)
    assert model.training  # put back as it was


def test_a_slow_model_stops_timing_at_the_budget() -> None:
    ticks = ticks_of([2.0] * 100)
    calls: list[str] = []
    found = latency_ms(CountingModel(calls), 8, CPU, budget_s=3.0, clock=lambda: next(ticks))
    assert found == pytest.approx(2000.0)
    assert len(calls) == WARMUP + MIN_REPEATS


def test_a_real_model_has_a_positive_latency_and_no_gradients() -> None:
    model = smallcnn()
    found = measure(model, 32, CPU)
    assert found.params == count_params(model)
    assert found.latency_ms is not None and found.latency_ms > 0
    assert all(p.grad is None for p in model.parameters())


def test_a_latency_that_cannot_be_measured_leaves_params() -> None:
    class Broken(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("CUDA out of memory")

    found = measure(Broken(2, 2), 8, CPU)
    assert (found.params, found.latency_ms) == (6, None)


def test_a_stopped_run_is_not_measured() -> None:
    event = ended(RUN, engine.Outcome("stopped", 1, 1, 0.5))
    assert isinstance(event, c.RunStopped) and event.epoch == 1


def test_outcomes_that_trained_alike_are_equal_whatever_their_timing() -> None:
    # A resumed run matches an uninterrupted one (test_engine): a clock must not part them.
    first = engine.Outcome("completed", 2, 2, 0.9, params=10, latency_ms=1.0)
    assert first == engine.Outcome("completed", 2, 2, 0.9, params=10, latency_ms=2.5)
    assert first != engine.Outcome("completed", 2, 2, 0.9, params=11, latency_ms=1.0)


# --- through the worker ------------------------------------------------------------------


async def test_the_stored_run_completed_carries_params_and_latency(tmp_path: Path) -> None:
    # Given a claimed smallcnn run of one epoch on a tiny generated dataset
    images = generated(tmp_path / "images")
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    runs = RunStore(Repository(store, domain.evolve, None), instance=ME)
    await claimed(store)
    worker = Worker(
        runs=runs,
        slot=DeviceSlot(device="cpu", lease_key="slot", leases=None),  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
        images=FakeImages(images),  # type: ignore[arg-type]
        epochs=Epochs(runs, CheckpointFiles(FakeObjects(), tmp_path / "work")),  # type: ignore[arg-type]
        publish=publish,
    )
    # When the worker trains it to the end
    await worker._train_started(RUN, [SimpleNamespace(lost=threading.Event())])  # type: ignore[list-item]
    # Then its stored outcome says what the model costs
    events = [s.event for s in await store.load(RUN)]
    done = events[-1]
    assert isinstance(done, c.RunCompleted), events[-1]
    assert done.params == count_params(engine.build_model("smallcnn", 2))
    assert done.latency_ms is not None and done.latency_ms > 0


# --- helpers -------------------------------------------------------------------------------


class CountingModel(torch.nn.Linear):
    """A model that records the mode of every pass."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__(1, 1)
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        self.calls.append("train" if self.training else "eval")
        return x


def ticks_of(durations: list[float]) -> Any:
    """A clock whose reading advances by each duration in turn across a pass's two readings
    (the first reading, the loop's start, is 0)."""
    now = 0.0
    yield now
    for d in durations:
        yield now  # the pass starts
        now += d
        yield now  # and ends


def generated(folder: Path) -> list[tuple[str, Path, int]]:
    """Six 32x32 images of two classes, told apart by their brightness."""
    rng = random.Random(3)
    folder.mkdir(parents=True)
    found = []
    for label, i in itertools.product((0, 1), range(3)):
        path = folder / f"{label}_{i}.png"
        Image.new("RGB", (32, 32), (rng.randrange(40) + 200 * label,) * 3).save(path)
        found.append((f"{label}{i}", path, label))
    return found


class FakeImages:
    """Every subset is the same few images: enough to train and validate once."""

    def __init__(self, images: list[tuple[str, Path, int]]) -> None:
        self.images = images

    async def of(self, queued: c.RunQueued, subset: str) -> list[tuple[str, Path, int]]:
        return self.images

    async def listed(self, queued: c.RunQueued, subset: str) -> Listing:
        return Listing(self.images, [])

    async def fetched(self, listing: Listing) -> list[tuple[str, Path, int]]:
        return listing.images


async def publish(subject: str, data: bytes) -> None:
    await asyncio.sleep(0)


async def claimed(store: InMemoryEventStore[c.Event]) -> None:
    h = c.Hyperparameters(model="smallcnn", epochs=1, batch_size=4, image_size=32)
    queued = c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=h, classes=["dark", "bright"], train_images=6, val_images=6,
    )  # fmt: skip
    started = c.RunStarted(
        run_id=RUN, instance=ME, device="cpu", lease="slot", attempt=1, start_epoch=1
    )
    await store.append(RUN, [queued, started], 0)
