"""The trainer's worker: holds its devices' leases, claims the oldest queued run it can train,
trains it in a thread, and stores what the engine reports — epochs with their checkpoints
(``epochs``), then the outcome (``runstore``).

Claiming is an append with the run's expected version, so two trainers racing for one run
cannot both start it; the leases make sure two runs never share a device. A run that asks for
N devices (``devices``) starts only once N leases of this one trainer are taken, holds them all
while it trains (``engine.train_on``: a process per device) and releases them all however it
ends; a trainer with several devices trains several runs at once, each on its own. An epoch
the store refuses fails the run; a crash interrupts it, and (``STUDIO_AUTO_RESUME``, on by
default) puts it back in the queue (``reaper``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from contracts import datasets as d
from contracts import training as c
from services.kernel.lease import Lease, Leases
from services.trainer import domain, engine, metrics
from services.trainer.bridge import Bridge, Publish
from services.trainer.epochs import Epochs
from services.trainer.images import SplitImages
from services.trainer.projection import RunQueue
from services.trainer.reaper import Reaper
from services.trainer.runstore import RunStore

log = logging.getLogger(__name__)

#: After the worker's loop failed, how long it waits before looking for a run again.
RETRY_S = 2.0
#: How soon a trainer with nothing to train looks again (sooner when the queue changes): a
#: device freed by a dead holder's lease TTL is taken within this of the key expiring.
IDLE_LOOK_S = 0.25
#: How long a stopping trainer (SIGTERM) waits for its runs to stop at their next batch and go
#: back to the queue: within the 5 s the service gives its whole clean-up (BACKGROUND_STOP_S).
LEAVE_S = 3.5
#: How long a run cancelled past ``LEAVE_S`` is given to be handed back (two NATS calls).
HAND_BACK_S = 1.0
#: Why a run a stopping trainer handed back was interrupted.
LEFT = "its trainer was stopped (SIGTERM); it goes on from its last stored epoch"


@dataclass(frozen=True)
class DeviceSlot:
    """The devices this trainer trains on, each with the lease (``lease_key``) that makes it its
    own: ``device`` first, then ``others`` (``STUDIO_TRAINER_DEVICES`` above one)."""

    device: str
    lease_key: str
    leases: Leases
    #: (device, lease key) of every device after the first.
    others: tuple[tuple[str, str], ...] = ()

    @property
    def slots(self) -> list[tuple[str, str]]:
        """(device, lease key) of every device of this trainer, in order."""
        return [(self.device, self.lease_key), *self.others]

    async def take(self, keys: Sequence[str], wanted: int, instance: str) -> list[Lease] | None:
        """``wanted`` leases of ``keys`` (free as far as this trainer knows) for ``instance``;
        None, holding none, when fewer than that could be taken (another holds some)."""
        taken: list[Lease] = []
        try:
            for key in keys:
                lease = await self.leases.acquire(key, instance)
                if lease is not None:
                    taken.append(lease)
                    if len(taken) == wanted:
                        return taken
        except BaseException:
            await asyncio.shield(release_quietly(taken))
            raise
        await release(taken)
        return None


async def release(leases: Sequence[Lease]) -> None:
    for lease in leases:
        await lease.release()


async def release_quietly(leases: Sequence[Lease]) -> None:
    """``release``, whatever NATS says: a lease not released expires by its TTL."""
    try:
        await release(leases)
    except Exception as exc:
        log.warning("device leases not released (%r); they expire by their TTL", exc)


class Worker:
    """Trains the queued runs on its device slots, each run on as many devices as it asks, all
    of this trainer: claims, trains in a thread, stores the outcome; its reaper ends the runs a
    gone trainer left active. The queue is served in order: the oldest run this trainer could
    train waits for its devices, and no later run takes them meanwhile."""

    def __init__(
        self,
        *,
        runs: RunStore,
        slot: DeviceSlot,
        queue: RunQueue,
        images: SplitImages,
        epochs: Epochs,
        publish: Publish,
    ) -> None:
        self.runs, self.slot, self.queue = runs, slot, queue
        self.images, self.epochs, self.publish = images, epochs, publish
        self.stops: dict[str, threading.Event] = {}
        self.reaper = Reaper(queue, slot.leases, runs, training=self.stops)
        #: Lease keys of the devices a run of this trainer trains on now.
        self.busy: set[str] = set()
        #: How many devices each run asks (fixed when it is queued), as looked up.
        self.wanted: dict[str, int] = {}
        self.training: set[asyncio.Task[None]] = set()
        #: The trainer is stopping (``leave``): the runs that stop now go back to the queue.
        self.leaving = False

    def request_stop(self, run_id: str) -> None:
        """Called by the projection when a stop is stored: the engine stops at its next batch."""
        flag = self.stops.get(run_id)
        if flag is not None:
            flag.set()

    async def serve(self) -> None:
        await self.reaper.interrupt_mine("the trainer restarted while it ran")
        reaper = asyncio.create_task(self.reaper.forever())
        watcher = asyncio.create_task(self._watch_queue())
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
                    await self.queue.wait(IDLE_LOOK_S)
        finally:  # cancelled: the service is stopping
            reaper.cancel()
            watcher.cancel()
            await self.leave(LEAVE_S)

    async def leave(self, within: float) -> None:
        """The trainer stops (SIGTERM): each run it trains stops at its next batch (the epoch
        under way is abandoned, never half-saved) and goes back to the queue from its last
        stored epoch (interrupted, and with auto-resume queued again), its leases released at
        once, so that another trainer, or this one restarted, continues it exactly without
        waiting for their TTL. A run still training after ``within`` (a batch longer than that)
        is handed back all the same; its thread ends at its next batch, storing nothing."""
        self.leaving = True
        # (got, not read: a worker built bare, as the loop's own test builds it, has neither)
        for flag in self.__dict__.get("stops", {}).values():
            flag.set()
        training = set(self.__dict__.get("training", ()))
        if not training:
            return
        _, late = await asyncio.wait(training, timeout=within)
        for task in late:
            task.cancel()
        if late:  # each hands its run back and releases its leases as it ends
            await asyncio.wait(late, timeout=HAND_BACK_S)

    async def _watch_queue(self) -> None:
        """Keeps ``studio_queue_depth`` to the queue as this trainer's read model has it, also
        while it trains (when ``_next`` does not look)."""
        while True:
            try:
                metrics.queue_depth(len(await self.queue.waiting()))
            except Exception:  # a gauge is no reason to stop: look again at the next change
                log.warning("reading the queue's depth failed", exc_info=True)
            await self.queue.wait(1.0)

    async def _next(self) -> bool:
        """Start the oldest queued run that this trainer can train, on as many devices as it
        asks; False when none could start now."""
        waiting = await self.queue.waiting()
        metrics.queue_depth(len(waiting))
        self.wanted = {run_id: n for run_id, n in self.wanted.items() if run_id in waiting}
        for run_id in waiting:
            if run_id in self.stops:  # started here; the read model has not seen it yet
                continue
            wanted = await self._wanted(run_id)
            if wanted > len(self.slot.slots):
                continue  # more devices than this trainer has: never refuse a later run for it
            free = [key for _, key in self.slot.slots if key not in self.busy]
            if len(free) < wanted:
                return False  # it waits for this trainer's devices to come free, first in line
            leases = await self.slot.take(free, wanted, self.runs.instance)
            if leases is None:
                return False
            if await self._claimed(run_id, leases):
                self._start(run_id, leases)
                return True
        return False

    async def _claimed(self, run_id: str, leases: list[Lease]) -> bool:
        """``_claim``; the leases released unless the run is ours (another trainer claimed it
        first, or the claim failed past its retries)."""
        try:
            if await self._claim(run_id, leases):
                return True
        except BaseException:
            await asyncio.shield(release_quietly(leases))
            raise
        await release(leases)
        return False

    async def _wanted(self, run_id: str) -> int:
        if run_id not in self.wanted:
            run = await self.runs.get(run_id)
            self.wanted[run_id] = run.queued.devices if run is not None else 1
        return self.wanted[run_id]

    async def _claim(self, run_id: str, leases: list[Lease]) -> bool:
        """Starts the run on the leases' devices; False when another trainer claimed it first."""
        devices = ",".join(self._devices(leases))
        if not await self.runs.claim(run_id, device=devices, lease=leases[0].key):
            return False
        for lease in leases:
            await lease.renew(run_id=run_id)
        return True

    def _devices(self, leases: Sequence[Lease]) -> list[str]:
        device_of = {key: device for device, key in self.slot.slots}
        return [device_of[lease.key] for lease in leases]

    def _start(self, run_id: str, leases: list[Lease]) -> None:
        """Trains the claimed run in a task of its own; its devices are busy until it ends."""
        self.stops[run_id] = threading.Event()
        self.busy.update(lease.key for lease in leases)
        task = asyncio.create_task(self._hold(run_id, leases))
        self.training.add(task)
        task.add_done_callback(self.training.discard)

    async def _hold(self, run_id: str, leases: list[Lease]) -> None:
        """Keeps every lease of the run alive while it trains; releases them all however it
        ends (a crash of the trainer leaves them to their TTL)."""
        try:
            async with AsyncExitStack() as held:
                for lease in leases:
                    await held.enter_async_context(lease.keep_alive())
                    metrics.lease_held(lease.key, self.runs.instance)
                await self._traced(run_id, leases)
        except Exception:  # the run's own failures are stored by _train: this is the trainer's
            log.exception("training run %s ended with an error", run_id)
        finally:
            self.stops.pop(run_id, None)
            for lease in leases:
                self.busy.discard(lease.key)
                metrics.lease_released(lease.key, self.runs.instance)

    async def _traced(self, run_id: str, leases: list[Lease]) -> None:
        """Trains the claimed run inside its span (``RunStore.traced``)."""
        async with self.runs.traced(run_id):
            await self._train(run_id, leases)

    async def _train(self, run_id: str, leases: list[Lease]) -> None:
        metrics.run_started(run_id, await self.runs.waited(run_id))
        try:
            await self._train_started(run_id, leases, self._devices(leases))
        finally:  # however it ended (a lease lost included), its series go
            metrics.run_ended(run_id)

    async def _train_started(
        self, run_id: str, leases: Sequence[Lease], devices: Sequence[str] | None = None
    ) -> None:
        run = await self.runs.get(run_id)
        assert run is not None
        stop = self.stops.setdefault(run_id, threading.Event())
        loop = asyncio.get_running_loop()
        bridge = Bridge(self.publish, self.epochs, run, loop, stop, leases)
        try:
            outcome = await self._attempt(run, bridge, devices or [self.slot.device])
        except asyncio.CancelledError:
            if self.leaving and not bridge.lost():  # still ours: back to the queue at once
                await asyncio.shield(self._hand_back(run_id))
            raise
        except Exception as exc:  # the engine (torch) fails in many ways; fail() sorts them
            self.stops.pop(run_id, None)
            if bridge.lost():
                return  # another trainer will see the lease gone and mark the run interrupted
            if self.leaving:  # the stop's doing (DDP ranks hit by the same signal): no fault
                log.warning("run %s ended as the trainer stopped (%r); handed back", run_id, exc)
                await self._hand_back(run_id)
                return
            await self.runs.fail(run_id, exc)
            await self.epochs.tidy(run_id)
            return
        self.stops.pop(run_id, None)
        if bridge.lost():
            return
        if self.leaving and outcome.status == "stopped":
            await self._hand_back(run_id)  # stopped by the trainer's stop, not by its user
        else:
            await self.runs.finish(run_id, ended(run_id, outcome))
        await self.epochs.tidy(run_id)

    async def _hand_back(self, run_id: str) -> None:
        """The run ends interrupted here, while its leases are still held (so no other trainer
        has it), and (auto-resume) is queued again; a run its user was stopping ends stopped."""
        try:
            run = await self.runs.get(run_id)
            if run is not None and run.instance == self.runs.instance:
                await self.runs.interrupt(run_id, LEFT)
        except Exception:  # its leases go all the same: a reaper interrupts it once they do
            log.exception("run %s could not be handed back to the queue", run_id)

    async def _attempt(
        self, run: domain.Run, bridge: Bridge, devices: Sequence[str]
    ) -> engine.Outcome:
        """Trains the run in a thread (on several devices, in a process per device), from its
        last stored epoch when it has one."""
        train, val = await self._samples(run)
        workdir = self.epochs.files.workdir(run.run_id)
        workdir.mkdir(parents=True, exist_ok=True)
        resume = await self.epochs.resume_from(run) if run.epochs_done > 0 else None
        return await asyncio.to_thread(
            _train_on,
            domain.hyperparameters(run),
            run.queued.classes,
            train,
            val,
            workdir,
            devices,
            bridge,
            resume=resume,
        )

    async def _samples(self, run: domain.Run) -> tuple[list[engine.Sample], list[engine.Sample]]:
        """The split's train and val images of the run's classes (with a detector's boxes)."""

        async def samples(subset: d.Subset) -> list[engine.Sample]:
            listing = await self.images.listed(run.queued, subset)
            await self.images.fetched(listing)
            return [
                engine.Sample(path, label, listing.boxes.get(image_id, ()))
                for image_id, path, label in listing.images
            ]

        return await samples("train"), await samples("val")


def _train_on(*args: Any, **kwargs: Any) -> engine.Outcome:
    """``engine.train_on``, looked up in the run's thread: the first run imports the training
    engine (torchvision with it) there, never in the event loop that keeps the leases."""
    return engine.train_on(*args, **kwargs)


def ended(run_id: str, outcome: engine.Outcome) -> c.Event:
    """The event a training that returned ``outcome`` ends with."""
    if outcome.status == "stopped":
        return c.RunStopped(run_id=run_id, epoch=outcome.epochs_done)
    return c.RunCompleted(
        run_id=run_id,
        epochs=outcome.epochs_done,
        best_epoch=outcome.best_epoch,
        best_val_accuracy=outcome.best_val_accuracy,
        early_stopped=outcome.status == "early_stopped",
        params=outcome.params,
        latency_ms=outcome.latency_ms,
        best_val_map=outcome.best_val_map,
    )
