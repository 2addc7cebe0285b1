"""A trainer told to stop (SIGTERM) while it trains: the run stops at its next batch and goes
back to the queue from its last stored epoch (interrupted, then queued again), its device lease
is released at once, and nothing else is stored; a user's stop under way still ends stopped, and
a run whose batch outlasts the wait is handed back all the same.

The worker is real, its run store an in-memory event store; the engine is a stand-in that
"trains" batch after batch in its thread until ``should_stop`` (the real loop polls it the
same way, ``engine/loop.py``). Imports the trainer's worker and its domain.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from contracts import training as c
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain, engine, worker
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.epochs import Epochs
from services.trainer.runstore import RunStore
from services.trainer.worker import LEFT, DeviceSlot, Worker
from tests.unit.trainer.test_measure import FakeImages, claimed, generated, publish
from tests.unit.trainer.test_worker_epochs import FakeObjects

RUN = "r" * 32
ME = "trainer-a"  # the instance test_measure.claimed starts the run on


class HeldLease:
    """A device lease that records its release (``keep_alive`` releases it on the way out)."""

    def __init__(self) -> None:
        self.key, self.lost = "slot", asyncio.Event()
        self.released = asyncio.Event()

    @asynccontextmanager
    async def keep_alive(self) -> AsyncIterator[HeldLease]:
        try:
            yield self
        finally:
            self.released.set()


class Engine:
    """``engine.train_on`` in its thread: a batch every 10 ms until told to stop, unless
    ``deaf`` (a batch longer than the trainer waits), then as stopped with no epoch done."""

    def __init__(self, deaf: bool = False) -> None:
        self.training, self.done, self.deaf = threading.Event(), threading.Event(), deaf
        #: Raises instead of returning once stopped (a DDP rank killed by the same signal).
        self.fails: Exception | None = None
        #: Ends a deaf engine's batch (the test's end).
        self.release = threading.Event()

    def train_on(self, *args: Any, **kwargs: Any) -> engine.Outcome:
        callbacks = args[6]
        self.training.set()
        try:
            while self.deaf or not callbacks.should_stop():
                time.sleep(0.01)
                if self.deaf and self.release.wait(0.01):
                    break
            if self.fails is not None:
                raise self.fails
            return engine.Outcome("stopped", 0, 0, 0.0)
        finally:
            self.done.set()


@pytest.fixture
async def training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A worker training the claimed run ``RUN`` on ``HeldLease``; the engine stand-in is
    ``training.engine`` (set ``deaf`` before the run starts through ``training.start()``)."""
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    runs = RunStore(Repository(store, domain.evolve, None), instance=ME)
    await claimed(store)
    w = Worker(
        runs=runs,
        slot=DeviceSlot(device="cpu", lease_key="slot", leases=None),  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
        images=FakeImages(generated(tmp_path / "images")),  # type: ignore[arg-type]
        epochs=Epochs(runs, CheckpointFiles(FakeObjects(), tmp_path / "work")),  # type: ignore[arg-type]
        publish=publish,
    )
    lease, fake = HeldLease(), Engine()
    monkeypatch.setattr(worker.engine, "train_on", lambda *a, **k: fake.train_on(*a, **k))

    async def start() -> None:
        w._start(RUN, [lease])  # type: ignore[list-item]
        await asyncio.to_thread(fake.training.wait, 10)

    yield _Training(w, store, lease, fake, start)
    fake.release.set()  # a deaf engine's thread ends with the test


class _Training:
    def __init__(self, w: Worker, store: Any, lease: HeldLease, fake: Engine, start: Any):
        self.worker, self.store, self.lease, self.engine, self.start = w, store, lease, fake, start

    async def events(self) -> list[c.Event]:
        return [s.event for s in await self.store.load(RUN)]


async def test_a_stopping_trainer_hands_its_run_back_to_the_queue_and_frees_its_device(training):
    # given a run training on this trainer
    await training.start()
    # when the trainer stops
    await training.worker.leave(within=10)
    # then the run stopped at a batch, is interrupted and queued again at once, in one append
    *_, interrupted, resumed = await training.events()
    assert isinstance(interrupted, c.RunInterrupted) and interrupted.reason == LEFT
    assert isinstance(resumed, c.RunResumed) and resumed.automatic
    assert training.engine.done.is_set()
    # and its lease was released, nothing of the run is left training here
    assert training.lease.released.is_set()
    assert not training.worker.training and not training.worker.stops


async def test_a_run_its_user_was_stopping_ends_stopped_when_the_trainer_stops(training):
    # given a run training here whose user asked it to stop (stored, not yet seen)
    await training.start()
    await training.store.append(RUN, [c.RunStopRequested(run_id=RUN)], 2)
    # when the trainer stops first
    await training.worker.leave(within=10)
    # then the run ends stopped, as its user asked, and is not queued again
    events = await training.events()
    assert isinstance(events[-1], c.RunStopped)
    assert not any(isinstance(e, c.RunResumed) for e in events)
    assert training.lease.released.is_set()


async def test_a_run_whose_batch_outlasts_the_wait_is_handed_back_all_the_same(training):
    # given a run in a batch longer than the trainer waits when it stops
    training.engine.deaf = True
    await training.start()
    # when the trainer stops and gives it a moment only
    await training.worker.leave(within=0.2)
    # then the run is back in the queue and the lease released, though its thread still runs
    *_, interrupted, resumed = await training.events()
    assert isinstance(interrupted, c.RunInterrupted) and isinstance(resumed, c.RunResumed)
    assert training.lease.released.is_set() and not training.engine.done.is_set()
    assert not training.worker.training


async def test_a_run_whose_engine_fails_as_the_trainer_stops_is_handed_back_not_failed(training):
    # given a run on several devices, whose rank processes the same SIGTERM ends
    training.engine.fails = RuntimeError("rank 1 exited with code -15 before its end")
    await training.start()
    # when the trainer stops
    await training.worker.leave(within=10)
    # then the run goes back to the queue: its failure was the stop's, not the run's
    events = await training.events()
    assert not any(isinstance(e, c.RunFailed) for e in events)
    assert isinstance(events[-2], c.RunInterrupted) and isinstance(events[-1], c.RunResumed)


async def test_a_trainer_that_stops_with_nothing_to_train_stops_at_once(training):
    await asyncio.wait_for(training.worker.leave(within=10), 1)
    assert training.worker.leaving
    assert [type(e) for e in await training.events()] == [c.RunQueued, c.RunStarted]
