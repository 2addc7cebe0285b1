"""The trainer's metrics: a run's series exist only while it runs here and go however it ends
(the cardinality stays bounded by the runs running now); ends count by the outcome stored;
the lease, queue and wait gauges follow what the worker does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from contracts import training as c
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain, engine, metrics
from services.trainer.checkpoints import CheckpointFiles
from services.trainer.epochs import Epochs
from services.trainer.reaper import Reaper
from services.trainer.runstore import RunStore

ME = "trainer-a"
RUN_SERIES = (
    ("studio_training_images_per_second", {}),
    ("studio_training_loss", {"split": "train"}),
    ("studio_training_loss", {"split": "val"}),
    ("studio_training_accuracy", {"split": "val"}),
)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def count(name: str, **labels: str) -> float:
    return value(name, **labels) or 0.0


def series_of(run_id: str) -> dict[str, float | None]:
    return {f"{n}{sorted(lb.items())}": value(n, run=run_id, **lb) for n, lb in RUN_SERIES}


def epoch(n: int = 1, loss: float = 0.7, accuracy: float = 0.5) -> engine.EpochMetrics:
    return engine.EpochMetrics(n, loss, loss + 0.1, accuracy, 0.01, 2.0, 40.0, None)


def new_run() -> str:
    return uuid.uuid4().hex


def test_labelled_counters_exist_at_zero_before_any_run():
    for outcome in ("completed", "failed", "stopped", "interrupted"):
        assert value("studio_runs_total", outcome=outcome) is not None
    for outcome in ("completed", "failed"):
        assert value("studio_evaluations_total", outcome=outcome) is not None


def test_a_runs_series_exist_while_it_runs_and_go_when_it_ends():
    run_id = new_run()
    running, completed = (
        count("studio_runs_running"),
        count("studio_runs_total", outcome="completed"),
    )
    epochs, seconds = (
        count("studio_training_epochs_total"),
        count("studio_training_epoch_seconds_count"),
    )
    # given a run started here, with one epoch done
    metrics.run_started(run_id, waited=3.0)
    metrics.epoch_done(run_id, epoch(loss=0.7, accuracy=0.5))
    assert count("studio_runs_running") == running + 1
    assert value("studio_training_loss", run=run_id, split="train") == pytest.approx(0.7)
    assert value("studio_training_loss", run=run_id, split="val") == pytest.approx(0.8)
    assert value("studio_training_accuracy", run=run_id, split="val") == pytest.approx(0.5)
    assert value("studio_training_images_per_second", run=run_id) == pytest.approx(40.0)
    assert count("studio_training_epochs_total") == epochs + 1
    assert count("studio_training_epoch_seconds_count") == seconds + 1
    # when it ends
    metrics.run_ended(run_id, "completed")
    # then its series are gone, and its outcome counted once
    assert all(v is None for v in series_of(run_id).values())
    assert count("studio_runs_running") == running
    assert count("studio_runs_total", outcome="completed") == completed + 1
    # and ending it again (a second path seeing the same end) takes nothing more away
    metrics.run_ended(run_id)
    assert count("studio_runs_running") == running


def test_an_epoch_reported_after_its_run_ended_brings_no_series_back():
    run_id = new_run()
    metrics.run_started(run_id)
    metrics.run_ended(run_id)
    metrics.epoch_done(run_id, epoch())
    assert all(v is None for v in series_of(run_id).values())


def test_the_lease_series_lives_while_held_and_the_queue_depth_is_set():
    device = f"host-{uuid.uuid4().hex[:6]}"
    metrics.lease_held(device, ME)
    assert value("studio_lease_held", device=device, holder=ME) == 1
    metrics.lease_released(device, ME)
    metrics.lease_released(device, ME)  # released twice: quiet
    assert value("studio_lease_held", device=device, holder=ME) is None
    metrics.queue_depth(3)
    assert value("studio_queue_depth") == 3


def test_the_device_wait_is_observed_once_per_start():
    before = count("studio_device_wait_seconds_count")
    small = count("studio_device_wait_seconds_bucket", le="5.0")
    metrics.run_started(run_id := new_run(), waited=2.0)
    metrics.run_ended(run_id)
    assert count("studio_device_wait_seconds_count") == before + 1
    assert count("studio_device_wait_seconds_bucket", le="5.0") == small + 1


# --- the run store counts what is stored, and removes the run's series ------------------------


@pytest.fixture
def epochs(tmp_path: Path) -> Epochs:
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    runs = RunStore(Repository(store, domain.evolve, None), instance=ME)
    return Epochs(runs, CheckpointFiles(SimpleNamespace(), tmp_path))  # type: ignore[arg-type]


async def started(runs: RunStore, run_id: str, epochs: int = 3) -> domain.Run:
    queued = c.RunQueued(
        run_id=run_id, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(epochs=epochs), classes=["a", "b"],
        train_images=10, val_images=4,
        occurred_at=datetime.now(UTC) - timedelta(seconds=30),
    )  # fmt: skip
    start = c.RunStarted(
        run_id=run_id, instance=ME, device="cpu", lease="slot", attempt=1, start_epoch=1
    )
    await runs.repo.store.append(run_id, [queued, start], 0)
    run, _ = await runs.repo.get(run_id)
    assert run is not None
    metrics.run_started(run_id, await runs.waited(run_id))
    return run


async def test_the_wait_is_from_the_runs_last_queueing(epochs: Epochs):
    run_id = new_run()
    await started(epochs.runs, run_id)
    waited = await epochs.runs.waited(run_id)
    assert waited is not None and 29 <= waited < 3600
    assert await epochs.runs.waited(new_run()) is None  # a run never queued: unknown


async def test_an_end_counts_the_outcome_the_store_decided(epochs: Epochs):
    # given a run of 3 epochs running here, none of them stored yet
    run_id = new_run()
    await started(epochs.runs, run_id)
    metrics.epoch_done(run_id, epoch())
    failed = count("studio_runs_total", outcome="failed")
    completed = count("studio_runs_total", outcome="completed")
    # when the engine reports it complete after 1 epoch (the decider stores a failure)
    done = c.RunCompleted(run_id=run_id, epochs=1, best_epoch=1, best_val_accuracy=0.5)
    await epochs.runs.finish(run_id, done)
    # then the failure is counted, not the completion, and the run's series are gone
    assert count("studio_runs_total", outcome="failed") == failed + 1
    assert count("studio_runs_total", outcome="completed") == completed
    assert all(v is None for v in series_of(run_id).values())


async def test_a_run_found_interrupted_at_startup_loses_its_series(epochs: Epochs):
    # given a run of this instance that was running (its series set) when it stopped
    run_id = new_run()
    await started(epochs.runs, run_id)
    metrics.epoch_done(run_id, epoch())
    interrupted = count("studio_runs_total", outcome="interrupted")
    rows = [SimpleNamespace(run_id=run_id, instance=ME, lease="slot")]

    async def active() -> list[SimpleNamespace]:
        return rows

    reaper = Reaper(SimpleNamespace(active=active), None, epochs.runs, training=set())  # type: ignore[arg-type]
    # when the trainer starts again and reaps its own runs
    await reaper.interrupt_mine("the trainer restarted while it ran")
    # then the run's end is counted as interrupted and its series are gone
    assert count("studio_runs_total", outcome="interrupted") == interrupted + 1
    assert all(v is None for v in series_of(run_id).values())
    # and a second reaping of the same run (no longer active) counts nothing
    await reaper.interrupt_mine("again")
    assert count("studio_runs_total", outcome="interrupted") == interrupted + 1
