"""A run's checkpoint files between this machine and the Object Store, by their stored records.

A ``CheckpointSaved`` event names a file (``object_name``, a new name per epoch) and its sha256;
whoever needs the checkpoint — a resume, an evaluation — takes the local copy if its sha256
matches the record, else fetches the object and checks it. Files and objects are deleted only
once no stored record that still counts (the run's last and best) names them. Puts and gets
ride out a NATS restart (retried for ``OBJECT_RETRY_S``, each try from the file's start), so a
short outage does not fail a training. Imports nats-py, ``contracts`` and ``services.kernel``
only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import training as c
from services.kernel import artifacts
from services.kernel.domain import Refused
from services.kernel.transient import retry_transient

log = logging.getLogger(__name__)

#: How long an Object Store call waits for NATS to come back, as event-store appends do.
OBJECT_RETRY_S = 60.0


class CheckpointUnavailable(Refused):
    """The checkpoint a record names is gone, or no longer the file recorded: a refusal whose
    code (``CHECKPOINT_MISSING``, ``CORRUPT_CHECKPOINT``) a job's failure says as it is."""


def object_name(run_id: str, path: Path) -> str:
    return c.checkpoint_object(run_id, path.name)


def local_path(workdir: Path, record: c.CheckpointSaved) -> Path:
    """Where the trainer keeps the file a record names, in the run's work directory."""
    return workdir / Path(record.object_name).name


async def fetch(
    objects: ObjectStore, record: c.CheckpointSaved, workdir: Path, copy: Path | None = None
) -> Path:
    """The recorded file, sha256 checked: the local one when it matches, else the Object
    Store's (put in its local place). With ``copy``, a private copy there instead (a link where
    possible), which no pruning of the work directory removes while the caller reads it."""
    local = local_path(workdir, record)
    name = record.object_name
    try:
        return await artifacts.fetch(
            objects, name, record.sha256, local, copy=copy, retry_for=OBJECT_RETRY_S
        )
    except artifacts.ArtifactMissing:
        raise CheckpointUnavailable(
            "CHECKPOINT_MISSING",
            f"the {record.kind} checkpoint of epoch {record.epoch} ({name}) is "
            "neither on this machine nor in the Object Store",
        ) from None
    except artifacts.ArtifactCorrupt:
        raise CheckpointUnavailable(
            "CORRUPT_CHECKPOINT",
            f"the {record.kind} checkpoint of epoch {record.epoch} ({name}) does "
            "not match the sha256 recorded when it was saved",
        ) from None


async def upload(objects: ObjectStore, run_id: str, paths: Iterable[Path]) -> None:
    """Puts each file under its object name (each once, however many kinds it serves)."""
    for path in dict.fromkeys(paths):
        name = object_name(run_id, path)

        async def put(path: Path = path, name: str = name) -> None:
            with path.open("rb") as file:  # each try from the start
                await objects.put(name, file)

        await retry_transient(put, what=f"uploading {name}", retry_for=OBJECT_RETRY_S)


async def delete(objects: ObjectStore, names: Iterable[str]) -> None:
    """Best effort: an object left behind costs space, never correctness."""
    for name in names:
        try:
            await objects.delete(name)
        except NotFoundError:
            pass
        except Exception:  # best effort, as said: whatever the reason, the rest are still tried
            log.warning("could not delete %s from the Object Store", name, exc_info=True)


async def sweep(objects: ObjectStore, run_id: str, keep: set[str]) -> None:
    """Deletes the run's objects that ``keep`` does not name: files a crash uploaded before
    their epoch could be stored, which no record names."""
    prefix = c.run_objects(run_id)
    try:
        infos = await objects.list(ignore_deletes=True)
    except NotFoundError:
        return
    await delete(
        objects, [i.name for i in infos if i.name.startswith(prefix) and i.name not in keep]
    )


@dataclass(frozen=True)
class CheckpointFiles:
    """The checkpoint files of runs: each run's work directory under ``artifacts`` on this
    machine, and their objects in the Object Store."""

    objects: ObjectStore
    artifacts: Path

    def workdir(self, run_id: str) -> Path:
        return self.artifacts / run_id

    async def upload(self, run_id: str, paths: Iterable[Path]) -> None:
        await upload(self.objects, run_id, paths)

    async def fetch(self, record: c.CheckpointSaved, copy: Path | None = None) -> Path:
        """The file ``record`` names, checked (see ``fetch``); with ``copy``, a private copy."""
        return await fetch(self.objects, record, self.workdir(record.run_id), copy)

    async def delete(self, names: Iterable[str]) -> None:
        await delete(self.objects, names)

    async def sweep(self, run_id: str, keep: set[str]) -> None:
        await sweep(self.objects, run_id, keep)
