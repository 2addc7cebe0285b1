"""The trainer's worker: holds its device's lease, claims the oldest queued run, trains it in a
thread, and stores what the engine reports — epochs with their checkpoints, then the outcome.

Claiming is an append with the run's expected version, so two trainers racing for one run
cannot both start it; the lease makes sure two runs never share a device.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from nats.js.object_store import ObjectStore
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import Message
from contracts import datasets as d
from contracts import training as c
from contracts.common import CommandAccepted
from services.kernel import dataview
from services.kernel.blobstore import BlobStore
from services.kernel.commands import execute
from services.kernel.eventstore import EventStore
from services.kernel.lease import Lease, Leases
from services.kernel.repository import Repository
from services.kernel.sqlite import session
from services.trainer import domain, engine
from services.trainer.projection import active, queued

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
REAP_INTERVAL_S = 3.0


class Worker:
    def __init__(
        self,
        *,
        runs: Repository[domain.State],
        datasets: EventStore[d.Event],
        leases: Leases,
        db: AsyncEngine,
        blobs: BlobStore,
        artifacts: Path,
        objects: ObjectStore,
        device: str,
        lease_key: str,
        instance: str,
        publish: Callable[[str, bytes], Coroutine[Any, Any, None]],
        changed: Callable[[float], Awaitable[None]],
    ) -> None:
        self.runs, self.datasets, self.leases, self.db = runs, datasets, leases, db
        self.blobs, self.artifacts, self.objects = blobs, artifacts, objects
        self.device, self.lease_key, self.instance = device, lease_key, instance
        self.publish, self.changed = publish, changed
        self.stops: dict[str, threading.Event] = {}

    def request_stop(self, run_id: str) -> None:
        """Called by the projection when a stop is stored: the engine stops at its next batch."""
        flag = self.stops.get(run_id)
        if flag is not None:
            flag.set()

    async def serve(self) -> None:
        await self.interrupt_mine("the trainer restarted while it ran")
        reaper = asyncio.create_task(self._reap_forever())
        try:
            while True:
                if not await self._next():
                    await self.changed(1.0)
        finally:
            reaper.cancel()

    async def _next(self) -> bool:
        """Take one queued run and train it; False when there was nothing to take."""
        async with session(self.db) as db:
            waiting = [row.run_id for row in await queued(db)]
        if not waiting:
            return False
        lease = await self.leases.acquire(self.lease_key, self.instance)
        if lease is None:
            return False
        async with lease.keep_alive():
            for run_id in waiting:
                claim = partial(
                    domain.claim, instance=self.instance, device=self.device, lease=self.lease_key
                )
                if isinstance(await self._store(run_id, "claim", claim), CommandAccepted):
                    await lease.renew(run_id=run_id)
                    await self._train(run_id, lease)
                    return True
        return True

    async def _train(self, run_id: str, lease: Lease) -> None:
        run, _ = await self.runs.get(run_id)
        assert run is not None
        stop = self.stops[run_id] = threading.Event()
        loop = asyncio.get_running_loop()
        bridge = Bridge(self, run, loop, stop, lease)
        try:
            train, val = await self._samples(run)
            workdir = self.artifacts / run_id
            workdir.mkdir(parents=True, exist_ok=True)
            resume = run.epochs_done > 0 and await self._fetch_last(run_id, workdir)
            outcome = await asyncio.to_thread(
                engine.train,
                domain.hyperparameters(run),
                run.queued.classes,
                train,
                val,
                workdir,
                self.device,
                bridge,
                resume=resume,
            )
        except Exception as exc:
            log.exception("run %s failed", run_id)
            await self._finish(
                run,
                c.RunFailed(
                    run_id=run_id, code="TRAINING_FAILED", message=f"{type(exc).__name__}: {exc}"
                ),
            )
            return
        finally:
            self.stops.pop(run_id, None)
        if lease.lost.is_set():
            return  # another trainer will see the lease gone and mark the run interrupted
        if outcome.status == "stopped":
            await self._finish(run, c.RunStopped(run_id=run_id, epoch=outcome.epochs_done))
        else:
            await self._finish(
                run,
                c.RunCompleted(
                    run_id=run_id,
                    epochs=outcome.epochs_done,
                    best_epoch=outcome.best_epoch,
                    best_val_accuracy=outcome.best_val_accuracy,
                    early_stopped=outcome.status == "early_stopped",
                ),
            )

    async def _samples(self, run: domain.Run) -> tuple[list[engine.Sample], list[engine.Sample]]:
        view = await dataview.load(self.datasets, run.queued.project_id)
        index = {label: i for i, label in enumerate(run.queued.classes)}

        def samples(subset: str) -> list[engine.Sample]:
            return [
                engine.Sample(self.blobs.blob_path(image_id), index[label])
                for image_id, label in view.subset(run.queued.split_id, subset)
                if label in index  # relabelled since it was queued into a class it never had
            ]

        return samples("train"), samples("val")

    async def _fetch_last(self, run_id: str, workdir: Path) -> bool:
        """The last checkpoint, here already or from the Object Store (another machine's)."""
        path = workdir / "last.pt"
        if path.exists():
            return True
        try:
            result = await self.objects.get(f"runs/{run_id}/last.pt")
        except Exception:
            log.warning("run %s: no last checkpoint to resume from; starting over", run_id)
            return False
        path.write_bytes(result.data or b"")
        return True

    async def store_epoch(
        self, run: domain.Run, metrics: engine.EpochMetrics, checkpoints: list[engine.Checkpoint]
    ) -> None:
        saved = []
        for ckpt in checkpoints:
            name = f"runs/{run.run_id}/{ckpt.kind}.pt"
            with ckpt.path.open("rb") as fh:
                await self.objects.put(name, fh)
            saved.append(
                c.CheckpointSaved(
                    run_id=run.run_id,
                    epoch=metrics.epoch,
                    kind=ckpt.kind,
                    sha256=ckpt.sha256,
                    size=ckpt.size,
                    object_name=name,
                )
            )
        event = c.EpochCompleted(
            run_id=run.run_id,
            epoch=metrics.epoch,
            train_loss=metrics.train_loss,
            val_loss=metrics.val_loss,
            val_accuracy=metrics.val_accuracy,
            learning_rate=metrics.learning_rate,
            seconds=metrics.seconds,
            images_per_second=metrics.images_per_second,
            gpu_memory_peak=metrics.gpu_memory_peak,
        )
        decide = partial(domain.epoch, instance=self.instance, metrics=event, checkpoints=saved)
        await self._store(run.run_id, f"a{run.attempt}.e{metrics.epoch}", decide)

    async def _finish(self, run: domain.Run, outcome: c.Event) -> None:
        decide = partial(domain.finish, instance=self.instance, outcome=outcome)
        await self._store(run.run_id, "end", decide)

    async def _store(self, run_id: str, step: str, decide: Callable[..., list[c.Event]]) -> Any:
        cause = Message(message_id=f"{run_id}.{step}.{time.time_ns()}", actor=self.instance)
        if step.startswith("a"):  # an epoch: its id is fixed, so a retry is stored once
            cause = Message(message_id=f"{run_id}.{step}", actor=self.instance)
        reply = await execute(
            self.runs, run_id, cause, decide, headers={}, refusals=(domain.DomainError,), noun="run"
        )
        if not isinstance(reply, CommandAccepted):
            log.warning("run %s: %s not stored: %s", run_id, step, reply.message)
        return reply

    async def interrupt_mine(self, reason: str) -> None:
        async with session(self.db) as db:
            mine = [r.run_id for r in await active(db) if r.instance == self.instance]
        for run_id in mine:
            if run_id not in self.stops:
                await self._store(run_id, "interrupt", partial(domain.interrupt, reason=reason))

    async def _reap_forever(self) -> None:
        """Runs whose trainer's lease is gone were left by a crash: mark them interrupted."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap()
            except Exception:
                log.exception("checking for interrupted runs failed")

    async def _reap(self) -> None:
        async with session(self.db) as db:
            rows = await active(db)
        for row in rows:
            holder = await self.leases.holder(row.lease) if row.lease else None
            alive = (
                holder is not None
                and holder.holder == row.instance
                and (holder.run_id in (None, row.run_id))
            )
            if not alive and row.run_id not in self.stops:
                reason = f"its trainer {row.instance} stopped answering (its device lease expired)"
                await self._store(row.run_id, "interrupt", partial(domain.interrupt, reason=reason))


class Bridge:
    """The engine's callbacks, called from the training thread, carried to the event loop."""

    def __init__(
        self,
        worker: Worker,
        run: domain.Run,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        lease: Lease,
    ) -> None:
        self.worker, self.run, self.loop, self.stop, self.lease = worker, run, loop, stop, lease
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
        asyncio.run_coroutine_threadsafe(self.worker.publish(subject, data), self.loop)

    def on_epoch(self, metrics: engine.EpochMetrics, checkpoints: list[engine.Checkpoint]) -> None:
        # Block the training thread until the epoch is stored: nothing runs ahead of the log.
        future = asyncio.run_coroutine_threadsafe(
            self.worker.store_epoch(self.run, metrics, checkpoints), self.loop
        )
        future.result()

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lease.lost.is_set()
