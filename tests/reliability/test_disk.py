"""Disk: the workspace fills up during an import and during a checkpoint write.

The full disk is real: a size-limited tmpfs mounted at the workspace's blob folder (where an
import writes images and thumbnails) and at its artifacts folder (where a trainer writes each
epoch's checkpoint), filled by a filler file. Each ends in a clear failure with the code
``DISK_FULL`` and a message saying the disk is full (never "corrupt image" or a crash), leaves
no half-written file and nothing an event names, and the same work done again once the filler
is gone succeeds. Mounting needs root (CAP_SYS_ADMIN): without it the module is skipped, saying
so. The seams are also checked in-process on the same kind of disk.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.common import DISK_FULL
from services.datasets.decoding import decode_file
from services.kernel.blobstore import BlobStore, DiskFull
from services.kernel.jobs.runner import failure_of
from services.trainer.engine.checkpoints import write_checkpoints
from tests import imagesets
from tests.conftest import PATIENT_S
from tests.reliability import figures
from tests.stack import API, Stack
from tests.training_helpers import FAST, wait

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer")
SHA = "ab" * 32


@contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``, unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fills ``disk`` with one file to ``leave`` bytes of the last one (so that a write starts
    and fails midway); deleting it gives the space back."""
    filler = disk / f"filler-{uuid.uuid4().hex[:8]}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        chunk = 1 << 16
        while chunk:  # ever smaller writes once a big one no longer fits, down to one byte
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def leftovers(folder: Path) -> list[Path]:
    """Temp files left anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


# --- the seams, in-process --------------------------------------------------------------------


def test_a_full_disk_is_disk_full_at_each_write_seam_and_leaves_no_temp_file(tmp_path: Path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk, leave=64 * 1024)  # room for a write to start, not to end
        store = BlobStore(disk / "store")
        # a blob: DiskFull, which is not an OSError, so no reader takes it for a bad file
        with pytest.raises(DiskFull) as blob:
            store.put_bytes(b"x" * 100_000, SHA)
        assert not isinstance(blob.value, OSError)
        # it crosses a process boundary whole (the import decodes in a pool of processes)
        crossed = pickle.loads(pickle.dumps(blob.value))
        assert failure_of(crossed, "IMPORT_FAILED").code == DISK_FULL
        # a checkpoint: torch wraps the ENOSPC in a RuntimeError; it still reads as DISK_FULL
        with pytest.raises(RuntimeError) as saved:
            write_checkpoints({"epoch": 1, "w": torch.zeros(300_000)}, disk, best=True)
        failure = failure_of(saved.value, "TRAINING_FAILED")
        assert failure.code == DISK_FULL and "disk is full" in failure.message
        assert leftovers(disk) == [] and not list(disk.glob(".epoch-*"))
        assert not (disk / "last.pt").exists()
        # an image being imported onto a full store is not "corrupt": the import fails
        fill(disk)
        image = imagesets.squares(tmp_path / "set", 1) / "tl" / "tl_0.png"
        with pytest.raises(DiskFull):
            decode_file(image, store)
        assert leftovers(disk) == []


# --- the studio on a small disk ---------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A studio whose blob and artifacts folders are small disks of their own."""
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_REQUEST_TIMEOUT="5")
    with (
        small_disk(stack.workspace / "blobs") as blobs,
        small_disk(stack.workspace / "artifacts", "48m") as artifacts,
    ):
        try:
            stack.up(PATIENT_S)
            yield {"stack": stack, "blobs": blobs, "artifacts": artifacts}
        finally:
            stack.down()


def settled(api: Any, path: str, key: str, done: tuple[str, ...]) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        data: dict[str, Any] = api.get(path).json()["data"]
        return data if data[key] in done else None

    return wait(read, 180, every=0.2)  # type: ignore[no-any-return]


def test_the_disk_filling_up_fails_an_import_and_a_checkpoint_clearly_and_retry_works(small):
    stack, blobs, artifacts = small["stack"], small["blobs"], small["artifacts"]
    with stack.sync_client(timeout=30) as api:
        project_id = api.post(f"{API}/projects", json={"name": "disk"}).json()["data"]["id"]
        root = imagesets.squares(stack.imports / uuid.uuid4().hex, 10)
        body = {"project_id": project_id, "path": str(root)}
        # given a full blob disk, when an import runs
        filler = fill(blobs)
        started = api.post(f"{API}/datasets/import/local", json=body)
        assert started.status_code == 202, started.text
        job = started.json()["data"]
        ended = settled(api, f"{API}/datasets/import/{job['id']}", "state", ("completed", "failed"))
        # then it fails saying the disk is full, and keeps nothing
        assert ended["state"] == "failed", ended
        assert ended["error"]["code"] == DISK_FULL, ended
        assert "disk is full" in ended["error"]["message"], ended
        assert api.get(f"{API}/datasets/{project_id}").json()["data"]["images"] == 0
        assert leftovers(blobs) == []
        # and once space returns the same import commits whole
        filler.unlink()
        job = api.post(f"{API}/datasets/import/local", json=body).json()["data"]
        ended = settled(api, f"{API}/datasets/import/{job['id']}", "state", ("completed", "failed"))
        assert ended["state"] == "completed", ended
        ratios = {"train": 0.7, "val": 0.3, "test": 0.0}
        split = api.post(
            f"{API}/splits", json={"project_id": project_id, "name": "s", "ratios": ratios}
        ).json()["data"]
        # given a full artifacts disk, when a run writes its first checkpoint
        filler = fill(artifacts)
        hyper = FAST | {"epochs": 2}
        body = {"project_id": project_id, "split_id": split["id"], "hyperparameters": hyper}
        run_id = api.post(f"{API}/training/run", json=body).json()["data"]["id"]
        path = f"{API}/training/runs/{run_id}"
        run = settled(api, path, "status", ("completed", "failed", "interrupted"))
        # then the run fails saying the disk is full, with no checkpoint recorded or left
        assert run["status"] == "failed", run
        assert run["message"].startswith(f"{DISK_FULL}: the disk is full"), run
        assert run["checkpoints"] == [] and run["history"] == [], run
        assert leftovers(artifacts) == []
        # and once space returns the run resumes and completes
        filler.unlink()
        assert api.post(f"{path}/resume").status_code == 202
        run = settled(api, path, "status", ("completed", "failed", "interrupted"))
        assert run["status"] == "completed", run
        assert [e["epoch"] for e in run["history"]] == [1, 2]
    figures.record("disk: full during an import and a checkpoint", events_lost=0)
