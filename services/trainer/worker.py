"""The trainer's worker: holds its device's lease, claims the oldest queued run, trains it in a
thread, and stores what the engine reports — epochs with their checkpoints, then the outcome.

Claiming is an append with the run's expected version, so two trainers racing for one run
cannot both start it; the lease makes sure two runs never share a device.

Files before facts: an epoch's checkpoint is a new file (see ``engine.checkpoints``), uploaded
to the Object Store, and only then is the epoch stored, naming that file and its sha256; the
files the run no longer needs are pruned after that. A resume continues from exactly the file
that the last stored epoch names, fetched and checked against its sha256. An epoch the store
refuses fails the run; a crash interrupts it, and (``STUDIO_AUTO_RESUME``, on by default) puts
it back in the queue. ``engine.fault_point`` marks each step, for the fault tests.
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
from contracts.common import CommandAccepted, Reply
from services.kernel.blobstore import BlobStore
from services.kernel.commands import execute
from services.kernel.domain import DomainError, Refused
from services.kernel.jobs.runner import failure_of
from services.kernel.lease import Lease, Leases
from services.kernel.queries import PagedQuery
from services.kernel.repository import Repository
from services.kernel.sqlite import session
from services.kernel.transient import TRANSIENT
from services.trainer import checkpoints, domain, engine
from services.trainer.checkpoints import CheckpointUnavailable
from services.trainer.projection import active, queued

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
REAP_INTERVAL_S = 3.0
#: After the worker's loop failed, how long it waits before looking for a run again.
RETRY_S = 2.0


class EpochNotStored(Refused):
    """The store refused an epoch: training on would build on a history that is not there."""

    def __init__(self, message: str) -> None:
        super().__init__("EPOCH_NOT_STORED", message)


class Worker:
    def __init__(
        self,
        *,
        runs: Repository[domain.State],
        datasets: PagedQuery[d.SubsetItem],
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
        auto_resume: bool = True,
    ) -> None:
        self.runs, self.datasets, self.leases, self.db = runs, datasets, leases, db
        self.blobs, self.artifacts, self.objects = blobs, artifacts, objects
        self.device, self.lease_key, self.instance = device, lease_key, instance
        self.publish, self.changed = publish, changed
        self.auto_resume = auto_resume
        self.stops: dict[str, threading.Event] = {}
        #: Each run's trace (its queueing request's), carried on to what the trainer stores.
        self.traces: dict[str, dict[str, str]] = {}

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
                try:
                    took = await self._next()
                except Exception:
                    # A trainer whose loop ended would answer commands but never train again:
                    # log it, wait, and look again (a lease or claim failing past its retries
                    # is a NATS outage longer than they ride out, or a bug worth a traceback).
                    log.exception("taking the next run failed; trying again in %.0fs", RETRY_S)
                    await asyncio.sleep(RETRY_S)
                    continue
                if not took:
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
        workdir = self.artifacts / run_id
        try:
            train, val = await self._samples(run)
            workdir.mkdir(parents=True, exist_ok=True)
            resume = await self._resume_from(run, workdir) if run.epochs_done > 0 else None
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
        except Exception as exc:  # the engine (torch) fails in many ways; _fail sorts them
            self.stops.pop(run_id, None)
            if lease.lost.is_set():
                return  # another trainer will see the lease gone and mark the run interrupted
            await self._fail(run, exc)
            await self._tidy(run_id, workdir)
            return
        self.stops.pop(run_id, None)
        if lease.lost.is_set():
            return
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
        await self._tidy(run_id, workdir)

    async def _fail(self, run: domain.Run, exc: Exception) -> None:
        if isinstance(exc, TRANSIENT):
            # A NATS outage longer than the retries is no fault of the run: it ends interrupted,
            # so that (with auto-resume) it continues from its last stored epoch once NATS is back.
            log.warning("run %s: NATS unreachable (%r); interrupting it", run.run_id, exc)
            reason = f"NATS was unreachable ({type(exc).__name__})"
            await self._store(run.run_id, "interrupt", self._interrupt(reason))
            return
        # a checkpoint gone or an epoch not stored says its own code (a ``Refused``), any
        # other failure of the engine TRAINING_FAILED with its reason: as every job says it
        failure = failure_of(exc, "TRAINING_FAILED")
        log.error("run %s failed: %s: %s", run.run_id, failure.code, failure.message, exc_info=exc)
        failed = c.RunFailed(run_id=run.run_id, code=failure.code, message=failure.message)
        await self._finish(run, failed)

    async def _samples(self, run: domain.Run) -> tuple[list[engine.Sample], list[engine.Sample]]:
        """The split's train and val images of the run's classes, as the datasets service has
        them now (an image relabelled since the run was queued into a class it never had is
        left out), each read from the blob store by its ``blob`` address."""
        queued = run.queued
        index = {label: i for i, label in enumerate(queued.classes)}

        async def samples(subset: d.Subset) -> list[engine.Sample]:
            query = d.GetSubset(
                dataset_id=queued.project_id, split_id=queued.split_id, subset=subset
            )
            return [
                engine.Sample(self.blobs.blob_path(item.blob), index[item.label])
                for item in await self.datasets(query)
                if item.label in index
            ]

        return await samples("train"), await samples("val")

    async def _resume_from(self, run: domain.Run, workdir: Path) -> Path:
        """The checkpoint of the last stored epoch, exactly: here, or from the Object Store
        (another machine's, or this one's after a bad file), its sha256 checked."""
        record = run.last_checkpoint
        if record is None or record.epoch != run.epochs_done:
            raise CheckpointUnavailable(
                "CHECKPOINT_MISSING", f"no checkpoint is recorded for epoch {run.epochs_done}"
            )
        return await checkpoints.fetch(self.objects, record, workdir)

    async def store_epoch(
        self,
        run: domain.Run,
        metrics: engine.EpochMetrics,
        files: list[engine.Checkpoint],
        kept: dict[str, c.CheckpointSaved],
    ) -> None:
        """Uploads the epoch's file, then stores the epoch naming it; then prunes what the run
        no longer needs. EpochNotStored when the store refuses the epoch."""
        await checkpoints.upload(self.objects, run.run_id, [f.path for f in files])
        engine.fault_point("after_upload", metrics.epoch)
        saved = [
            c.CheckpointSaved(
                run_id=run.run_id,
                epoch=metrics.epoch,
                kind=ckpt.kind,
                sha256=ckpt.sha256,
                size=ckpt.size,
                object_name=checkpoints.object_name(run.run_id, ckpt.path),
            )
            for ckpt in files
        ]
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
        reply = await self._store(run.run_id, f"a{run.attempt}.e{metrics.epoch}", decide)
        if not isinstance(reply, CommandAccepted):
            raise EpochNotStored(f"epoch {metrics.epoch} was not stored: {reply.message}")
        engine.fault_point("after_append", metrics.epoch)
        before = {r.object_name for r in kept.values()}
        kept.update({record.kind: record for record in saved})
        names = {r.object_name for r in kept.values()}
        engine.prune(self.artifacts / run.run_id, {Path(n).name for n in names})
        await checkpoints.delete(self.objects, before - names)

    async def _tidy(self, run_id: str, workdir: Path) -> None:
        """At the end of an attempt: removes the files and objects of the run that no stored
        record names any longer (those of epochs a crash kept from being stored)."""
        try:
            run, _ = await self.runs.get(run_id)
            if run is None:
                return
            names = {r.object_name for r in (run.last_checkpoint, run.best_checkpoint) if r}
            engine.prune(workdir, {Path(n).name for n in names})
            await checkpoints.sweep(self.objects, run_id, names)
        except Exception:  # best effort: a file left behind costs space, never correctness
            log.warning("run %s: tidying its checkpoints failed", run_id, exc_info=True)

    async def _finish(self, run: domain.Run, outcome: c.Event) -> None:
        decide = partial(domain.finish, instance=self.instance, outcome=outcome)
        await self._store(run.run_id, "end", decide)

    async def _store(self, run_id: str, step: str, decide: Callable[..., list[c.Event]]) -> Reply:
        cause = Message(message_id=f"{run_id}.{step}.{time.time_ns()}", actor=self.instance)
        if step.startswith("a"):  # an epoch: its id is fixed, so a retry is stored once
            cause = Message(message_id=f"{run_id}.{step}", actor=self.instance)
        trace = await self._trace(run_id)
        reply = await execute(
            self.runs, run_id, cause, decide, headers=trace, refusals=(DomainError,), noun="run"
        )
        if not isinstance(reply, CommandAccepted):
            log.error("run %s: %s not stored: %s", run_id, step, reply.message)
        if step == "end":
            self.traces.pop(run_id, None)
        return reply

    async def _trace(self, run_id: str) -> dict[str, str]:
        """The trace the run was queued in (its first event's), so that a claim, an epoch or
        an outcome can be followed back to the client's request across the queue."""
        if run_id not in self.traces:
            stored = await self.runs.store.load(run_id)
            parent = stored[0].headers.get("traceparent") if stored else None
            self.traces[run_id] = {"traceparent": parent} if parent else {}
        return self.traces[run_id]

    def _interrupt(self, reason: str) -> Callable[..., list[c.Event]]:
        return partial(domain.interrupt, reason=reason, auto_resume=self.auto_resume)

    async def interrupt_mine(self, reason: str) -> None:
        async with session(self.db) as db:
            mine = [r.run_id for r in await active(db) if r.instance == self.instance]
        for run_id in mine:
            if run_id not in self.stops:
                await self._store(run_id, "interrupt", self._interrupt(reason))

    async def _reap_forever(self) -> None:
        """Runs whose trainer's lease is gone were left by a crash: mark them interrupted."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap()
            except Exception:  # the reaper's loop guard: a failed pass is tried again next time
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
                await self._store(row.run_id, "interrupt", self._interrupt(reason))


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
        asyncio.run_coroutine_threadsafe(self.worker.publish(subject, data), self.loop)

    def on_epoch(self, metrics: engine.EpochMetrics, checkpoints: list[engine.Checkpoint]) -> None:
        # Block the training thread until the epoch is stored: nothing runs ahead of the log.
        future = asyncio.run_coroutine_threadsafe(
            self.worker.store_epoch(self.run, metrics, checkpoints, self.kept), self.loop
        )
        future.result()

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lease.lost.is_set()
