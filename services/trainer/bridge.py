"""The engine's callbacks for one run (``engine.Callbacks``), called from its training thread
and carried to the worker's event loop: batch progress published live (throttled), each epoch
stored before the thread goes on, and whether to stop (asked, or a device lease lost).

Imports msgspec, the training contracts and the trainer's own modules; no torch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from contracts import training as c
from services.kernel.lease import Lease
from services.trainer import domain, engine
from services.trainer.epochs import Epochs

PROGRESS_INTERVAL_S = 0.25

Publish = Callable[[str, bytes], Coroutine[Any, Any, None]]


class Bridge:
    """The engine's callbacks, called from the training thread, carried to the event loop."""

    def __init__(
        self,
        publish: Publish,
        epochs: Epochs,
        run: domain.Run,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        leases: Sequence[Lease],
    ) -> None:
        self.publish, self.epochs = publish, epochs
        self.run, self.loop, self.stop, self.leases = run, loop, stop, list(leases)
        #: The stored records the run still needs, by kind: its last and its best checkpoint.
        self.kept = {r.kind: r for r in (run.last_checkpoint, run.best_checkpoint) if r is not None}
        self._last = 0.0
        self._epoch, self._epoch_start, self._loss_sum = 0, time.monotonic(), 0.0

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        now = time.monotonic()
        if epoch != self._epoch:
            self._epoch, self._epoch_start, self._loss_sum = epoch, now, 0.0
        self._loss_sum += loss
        if now - self._last < PROGRESS_INTERVAL_S and batch != batches:
            return
        self._last = now
        per_batch = (now - self._epoch_start) / max(batch, 1)
        eta = per_batch * ((batches - batch) + (self.run.epochs - epoch) * batches)
        data = msgspec.json.encode(
            {
                "run_id": self.run.run_id,
                "epoch": epoch,
                "epochs": self.run.epochs,
                "batch": batch,
                "batches": batches,
                "loss": round(loss, 6),
                "running_loss": round(self._loss_sum / max(batch, 1), 6),
                "eta_s": round(eta, 1),
            }
        )
        subject = c.progress_subject(self.run.run_id)
        asyncio.run_coroutine_threadsafe(self.publish(subject, data), self.loop)

    def on_epoch(self, metrics: engine.EpochMetrics, checkpoints: list[engine.Checkpoint]) -> None:
        # Block the training thread until the epoch is stored: nothing runs ahead of the log.
        future = asyncio.run_coroutine_threadsafe(
            self.epochs.store(self.run, metrics, checkpoints, self.kept), self.loop
        )
        future.result()

    def lost(self) -> bool:
        """Whether any of the run's device leases is lost: the run is no longer this trainer's."""
        return any(lease.lost.is_set() for lease in self.leases)

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lost()
