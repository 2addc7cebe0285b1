"""``train_on``: one run on several devices, one spawned process per device (torch.distributed).

The calling thread is the ranks' supervisor. It spawns one process per device (``gloo`` on CPU,
``nccl`` on CUDA, meeting at a file in a fresh folder of the run's work directory), and carries
rank 0's reports to the caller's ``Callbacks``: each batch, and each epoch, whose checkpoint
file rank 0 has written and which rank 0 waits on until the caller stored it. A stop (or a lost
lease) is not passed down: the supervisor ends every rank at once, which abandons the epoch in
progress just as a one-device stop does; a rank that fails or dies ends the others, and the
supervisor raises its error. However ``train_on`` ends, no rank outlives it.

One device trains in the calling thread (``training.train``), exactly as before.
Imports torch, the standard library and the engine's own modules only.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from contracts.training import Hyperparameters
from services.trainer.engine.api import (
    STOPPED,
    Callbacks,
    Checkpoint,
    EpochMetrics,
    Outcome,
    Sample,
)
from services.trainer.engine.checkpoints import read_checkpoint
from services.trainer.engine.tasks import task_for
from services.trainer.engine.training import train
from services.trainer.engine.world import World

log = logging.getLogger(__name__)

#: How often the supervisor looks at ``should_stop`` while no rank reports.
POLL_S = 0.1
#: How long a rank may wait for the others in one collective before it fails.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
#: How long an ended rank gets to exit after SIGTERM before it is killed.
EXIT_GRACE_S = 5.0
#: How often a rank looks whether its trainer is still there.
ORPHAN_CHECK_S = 1.0


class RankFailed(RuntimeError):
    """A rank exited without an outcome (killed, out of memory, a crash of the interpreter)."""


def train_on(
    h: Hyperparameters, classes: list[str], train_set: Sequence[Sample], val: Sequence[Sample],
    workdir: Path, devices: Sequence[str], callbacks: Callbacks, *, resume: Path | None = None,
) -> Outcome:  # fmt: skip
    """``training.train`` on every device of ``devices`` at once, as one run."""
    if len(devices) == 1:
        return train(h, classes, train_set, val, workdir, devices[0], callbacks, resume=resume)
    if not task_for(h.model).distributed:
        raise ValueError(f"{h.model} trains on one device, not {len(devices)}")
    if h.batch_size % len(devices):
        raise ValueError(f"batch_size {h.batch_size} is not a multiple of {len(devices)} devices")
    workdir.mkdir(parents=True, exist_ok=True)
    meeting = Path(tempfile.mkdtemp(prefix=".ddp-", dir=workdir))
    job = (h, classes, list(train_set), list(val), workdir, resume)
    ranks: list[tuple[BaseProcess, Connection]] = []
    try:
        context = multiprocessing.get_context("spawn")  # a threaded parent must never fork
        for rank, device in enumerate(devices):
            ours, theirs = context.Pipe()
            world = World(rank, len(devices))
            args = (world, device, str(meeting / "store"), job, theirs, os.getpid())
            process = context.Process(target=_rank_main, args=args, daemon=True)
            process.start()
            theirs.close()
            ranks.append((process, ours))
        return _supervise(ranks, callbacks, _stopped(resume))
    finally:
        _end(ranks)
        shutil.rmtree(meeting, ignore_errors=True)


def _stopped(resume: Path | None) -> Outcome:
    """What a stop before the first new epoch returns: where the resumed checkpoint stood."""
    if resume is None:
        return Outcome(STOPPED, 0, 0, 0.0)
    state = read_checkpoint(resume)
    return Outcome(STOPPED, state["epoch"], state["best_epoch"], state["best_val_accuracy"])


def _supervise(
    ranks: list[tuple[BaseProcess, Connection]], callbacks: Callbacks, progress: Outcome
) -> Outcome:
    """Carries rank 0's reports until every rank returned; stops or fails them all at once.
    ``progress``: the outcome of a stop, moved on by every stored epoch."""
    outcomes: dict[int, Outcome] = {}
    waiting = {rank: conn for rank, (_, conn) in enumerate(ranks)}
    while waiting:
        if callbacks.should_stop():
            return progress
        ready = wait(list(waiting.values()), timeout=POLL_S)
        for rank, conn in list(waiting.items()):
            if conn not in ready:
                continue
            kind, body = _receive(rank, ranks[rank][0], conn)
            if kind == "done":
                outcomes[rank] = body
                del waiting[rank]
            elif kind == "batch":
                callbacks.on_batch(*body)
            elif kind == "epoch":
                progress = _epoch(conn, callbacks, progress, *body)
    return outcomes[0]


def _receive(rank: int, process: BaseProcess, conn: Connection) -> tuple[str, Any]:
    """A rank's next report; its error raised here, or RankFailed when it died without one."""
    try:
        kind, body = conn.recv()
    except EOFError:
        process.join(EXIT_GRACE_S)
        raise RankFailed(
            f"rank {rank} exited with code {process.exitcode} before its end"
        ) from None
    if kind == "error":
        raise _chained(body)
    return kind, body


def _epoch(
    conn: Connection, callbacks: Callbacks, progress: Outcome, metrics: EpochMetrics,
    files: list[Checkpoint],
) -> Outcome:  # fmt: skip
    """Stores rank 0's epoch through the caller, then lets rank 0 go on; the stopped outcome
    as of this epoch. A failure to store ends every rank (the caller's error is raised)."""
    callbacks.on_epoch(metrics, files)
    conn.send("stored")
    if any(f.kind == "best" for f in files):
        return Outcome(STOPPED, metrics.epoch, metrics.epoch, metrics.val_accuracy)
    return replace(progress, epochs_done=metrics.epoch)


def _end(ranks: list[tuple[BaseProcess, Connection]]) -> None:
    """Every rank gone: asked (SIGTERM), then killed past ``EXIT_GRACE_S``."""
    for process, _ in ranks:
        if process.is_alive():
            process.terminate()
    for process, conn in ranks:
        process.join(EXIT_GRACE_S)
        if process.is_alive():
            log.warning("rank process %s ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.join()
        conn.close()


class _Reporter:
    """A rank's callbacks: rank 0's go to the supervisor (an epoch waits until it is stored);
    stops come from the supervisor ending the ranks, so a rank never stops by itself."""

    def __init__(self, conn: Connection, world: World) -> None:
        self.conn, self.world = conn, world

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        if self.world.main:
            self.conn.send(("batch", (epoch, batch, batches, loss)))

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Checkpoint]) -> None:
        self.conn.send(("epoch", (metrics, checkpoints)))
        if self.conn.recv() != "stored":
            raise RuntimeError("the supervisor did not store the epoch")

    def should_stop(self) -> bool:
        return False


def _orphaned_exit(parent: int) -> None:
    """Ends this rank once its trainer is gone (killed: nothing terminated the ranks), so no
    rank holds a device, or waits in a collective, for a run nobody supervises any more."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def _rank_main(
    world: World, device: str, store: str, job: tuple[Any, ...], conn: Connection, parent: int
) -> None:
    """One rank: joins the group, trains its share, sends its outcome (or its error)."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    else:  # the ranks share the CPU's cores: each takes its part, not all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size))
    h, classes, train_set, val, workdir, resume = job
    watchdog = threading.Thread(target=_orphaned_exit, args=(parent,), daemon=True)
    watchdog.start()
    try:
        dist.init_process_group(
            backend, init_method=f"file://{store}", rank=world.rank, world_size=world.size,
            timeout=COLLECTIVE_TIMEOUT,
        )  # fmt: skip
        outcome = train(
            h, classes, train_set, val, workdir, device, _Reporter(conn, world),
            resume=resume, world=world,
        )  # fmt: skip
        conn.send(("done", outcome))
    except BaseException as exc:  # the supervisor raises it: the run fails with its reason
        conn.send(("error", [_portable(e) for e in _chain(exc)]))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first: pickling keeps none of them, and what failed
    underneath (a full disk under torch's RuntimeError) decides how the run's failure reads."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _chained(chain: list[BaseException]) -> BaseException:
    """The outermost error of a rank's ``_chain``, with its causes linked again."""
    for outer, inner in itertools.pairwise(chain):
        outer.__cause__ = inner
    return chain[0]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (a ValueError stays one), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
