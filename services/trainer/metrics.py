"""The trainer's Prometheus metrics: runs, their epochs, the queue, the device lease, evaluations.

A run's own series (``studio_training_*{run}``) exist only while it runs on this trainer:
``run_ended`` removes them however the run ends (completed, failed, stopped, interrupted, a
lease lost), so that the number of series stays bounded by the runs running now. Every
labelled counter exists at 0 from the start, for each of its outcomes. Imports
``prometheus_client`` only.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

#: How a run ends, as this trainer stores it: the planned three, and ``interrupted`` (its
#: trainer gone or NATS unreachable: it goes back in the queue with auto-resume).
RUN_OUTCOMES = ("completed", "failed", "stopped", "interrupted")
EVALUATION_OUTCOMES = ("completed", "failed")
SPLITS = ("train", "val")

EPOCH_SECONDS = Histogram(
    "studio_training_epoch_seconds",
    "Time of one training epoch (validation included).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
EPOCHS = Counter("studio_training_epochs_total", "Training epochs stored.")
IMAGES_PER_SECOND = Gauge(
    "studio_training_images_per_second",
    "Training images per second of a run's last epoch.",
    ["run"],
)
LOSS = Gauge("studio_training_loss", "A running run's loss of its last epoch.", ["run", "split"])
ACCURACY = Gauge(
    "studio_training_accuracy", "A running run's accuracy of its last epoch.", ["run", "split"]
)
RUNS = Counter("studio_runs_total", "Runs ended by this trainer, by outcome.", ["outcome"])
RUNS_RUNNING = Gauge("studio_runs_running", "Runs training on this trainer now.")
QUEUE_DEPTH = Gauge("studio_queue_depth", "Runs waiting for a device, as this trainer sees them.")
LEASE_HELD = Gauge(
    "studio_lease_held", "1 while this trainer holds the device's lease.", ["device", "holder"]
)
DEVICE_WAIT = Histogram(
    "studio_device_wait_seconds",
    "Time a run waited in the queue for a device (queued or resumed, to started).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
EVALUATION_SECONDS = Histogram(
    "studio_evaluation_seconds",
    "Time of one evaluation of a checkpoint (fetch and measure).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
EVALUATIONS = Counter("studio_evaluations_total", "Evaluations ended, by outcome.", ["outcome"])

for _outcome in RUN_OUTCOMES:
    RUNS.labels(_outcome)
for _outcome in EVALUATION_OUTCOMES:
    EVALUATIONS.labels(_outcome)

_lock = threading.Lock()
#: The runs counted in ``RUNS_RUNNING``: each is taken out once, however often it is ended.
_running: set[str] = set()


class Epoch(Protocol):
    """An epoch's figures (``engine.EpochMetrics`` or ``EpochCompleted``), read only."""

    @property
    def seconds(self) -> float: ...
    @property
    def images_per_second(self) -> float: ...
    @property
    def train_loss(self) -> float: ...
    @property
    def val_loss(self) -> float: ...
    @property
    def val_accuracy(self) -> float: ...


def run_started(run_id: str, waited: float | None = None) -> None:
    """The run started here after waiting ``waited`` seconds for a device (None: unknown)."""
    with _lock:
        if run_id not in _running:
            _running.add(run_id)
            RUNS_RUNNING.inc()
    if waited is not None:
        DEVICE_WAIT.observe(max(waited, 0.0))


def epoch_done(run_id: str, epoch: Epoch) -> None:
    """An epoch of a run running here is stored: its figures become the run's series."""
    EPOCHS.inc()
    EPOCH_SECONDS.observe(max(epoch.seconds, 0.0))
    with _lock:
        if run_id not in _running:  # the run has ended: its series must not come back
            return
        IMAGES_PER_SECOND.labels(run_id).set(epoch.images_per_second)
        LOSS.labels(run_id, "train").set(epoch.train_loss)
        LOSS.labels(run_id, "val").set(epoch.val_loss)
        ACCURACY.labels(run_id, "val").set(epoch.val_accuracy)


def run_ended(run_id: str, outcome: str | None = None) -> None:
    """The run ended (or was found ended): its series go; ``outcome`` is counted when given."""
    with _lock:
        if run_id in _running:
            _running.discard(run_id)
            RUNS_RUNNING.dec()
        _remove(IMAGES_PER_SECOND, run_id)
        for split in SPLITS:
            _remove(LOSS, run_id, split)
            _remove(ACCURACY, run_id, split)
    if outcome is not None:
        RUNS.labels(outcome).inc()


def queue_depth(waiting: int) -> None:
    QUEUE_DEPTH.set(waiting)


def lease_held(device: str, holder: str) -> None:
    LEASE_HELD.labels(device, holder).set(1)


def lease_released(device: str, holder: str) -> None:
    _remove(LEASE_HELD, device, holder)


def evaluation_ended(outcome: str, seconds: float) -> None:
    EVALUATIONS.labels(outcome).inc()
    EVALUATION_SECONDS.observe(max(seconds, 0.0))


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        metric.remove(*labels)
