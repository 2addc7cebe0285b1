"""A run's epochs as the trainer stores them, files before facts: an epoch's checkpoint is a
new file (see ``engine.checkpoints``), uploaded to the Object Store, and only then is the epoch
stored, naming that file and its sha256; the files the run no longer needs are pruned after
that. A resume continues from exactly the file that the last stored epoch names, fetched and
checked against its sha256. ``engine.fault_point`` marks each step, for the fault tests.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from contracts import training as c
from contracts.common import CommandAccepted
from services.kernel.domain import Refused
from services.trainer import domain, engine
from services.trainer.checkpoints import CheckpointFiles, CheckpointUnavailable, object_name
from services.trainer.metrics import epoch_done
from services.trainer.runstore import RunStore

log = logging.getLogger(__name__)


class EpochNotStored(Refused):
    """The store refused an epoch: training on would build on a history that is not there."""

    def __init__(self, message: str) -> None:
        super().__init__("EPOCH_NOT_STORED", message)


class Epochs:
    """Stores a run's epochs with their checkpoint files; finds the file a resume starts from."""

    def __init__(self, runs: RunStore, files: CheckpointFiles) -> None:
        self.runs, self.files = runs, files

    async def store(
        self,
        run: domain.Run,
        metrics: engine.EpochMetrics,
        files: list[engine.Checkpoint],
        kept: dict[str, c.CheckpointSaved],
    ) -> None:
        """Uploads the epoch's file, then stores the epoch naming it; then prunes what the run
        no longer needs. EpochNotStored when the store refuses the epoch."""
        await self.files.upload(run.run_id, [f.path for f in files])
        engine.fault_point("after_upload", metrics.epoch)
        saved = [
            c.CheckpointSaved(
                run_id=run.run_id,
                epoch=metrics.epoch,
                kind=ckpt.kind,
                sha256=ckpt.sha256,
                size=ckpt.size,
                object_name=object_name(run.run_id, ckpt.path),
            )
            for ckpt in files
        ]
        reply = await self.runs.epoch(run, completed(run.run_id, metrics), saved)
        if not isinstance(reply, CommandAccepted):
            raise EpochNotStored(f"epoch {metrics.epoch} was not stored: {reply.message}")
        epoch_done(run.run_id, metrics)
        engine.fault_point("after_append", metrics.epoch)
        before = {r.object_name for r in kept.values()}
        kept.update({record.kind: record for record in saved})
        names = {r.object_name for r in kept.values()}
        engine.prune(self.files.workdir(run.run_id), {Path(n).name for n in names})
        await self.files.delete(before - names)

    async def resume_from(self, run: domain.Run) -> Path:
        """The checkpoint of the last stored epoch, exactly: here, or from the Object Store
        (another machine's, or this one's after a bad file), its sha256 checked."""
        record = run.last_checkpoint
        if record is None or record.epoch != run.epochs_done:
            raise CheckpointUnavailable(
                "CHECKPOINT_MISSING", f"no checkpoint is recorded for epoch {run.epochs_done}"
            )
        return await self.files.fetch(record)

    async def tidy(self, run_id: str) -> None:
        """At the end of an attempt: removes the files and objects of the run that no stored
        record names any longer (those of epochs a crash kept from being stored)."""
        try:
            run = await self.runs.get(run_id)
            if run is None:
                return
            names = {r.object_name for r in (run.last_checkpoint, run.best_checkpoint) if r}
            engine.prune(self.files.workdir(run_id), {Path(n).name for n in names})
            await self.files.sweep(run_id, names)
        except Exception:  # best effort: a file left behind costs space, never correctness
            log.warning("run %s: tidying its checkpoints failed", run_id, exc_info=True)


def completed(run_id: str, metrics: engine.EpochMetrics) -> c.EpochCompleted:
    """The engine's metrics of an epoch as the event stores them (the same fields, by name)."""
    return c.EpochCompleted(run_id=run_id, **dataclasses.asdict(metrics))
