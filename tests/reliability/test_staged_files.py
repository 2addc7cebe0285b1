"""Staged files: what the gateway and the datasets service remove, and what they never touch.

Pure file-system tests (no NATS): the sweeps of what crashes leave behind, and the claim by
which the datasets service takes an uploaded archive from the gateway.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from contracts import datasets as c
from services.datasets import domain
from services.datasets.handlers import ARCHIVE, Datasets
from services.gateway.uploads import STALE_AFTER_S, Sweeper, sweep


def staged(folder: Path, name: str, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"PK\x05\x06" + bytes(18))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def datasets(tmp_path: Path) -> Datasets:
    return Datasets(
        cast(Any, None),
        None,
        instance="test",
        import_roots=[],
        uploads=tmp_path / "uploads",
        staging=tmp_path / "datasets" / "staging",
    )


def upload_command(path: Path, import_id: str = "imp1") -> c.StartImport:
    return c.StartImport(
        dataset_id="p1",
        import_id=import_id,
        source_kind="upload",
        source="set.zip",
        staged_path=str(path),
    )


def test_the_gateway_sweeps_stale_uploads_and_keeps_those_being_received(tmp_path: Path):
    # given an upload a crashed gateway left an hour ago, and one being received now
    folder = tmp_path / "uploads"
    left = staged(folder, "left.zip", age_s=STALE_AFTER_S + 60)
    receiving = staged(folder, "receiving.zip")
    # when the folder is swept, then only the stale one goes
    assert sweep(folder) == [left]
    assert list(folder.iterdir()) == [receiving]


def test_the_sweep_runs_at_most_once_per_period():
    sweeper = Sweeper(every=3600)
    assert sweeper.due()
    assert not sweeper.due()


def test_a_claim_moves_the_archive_out_of_the_gateways_folder(tmp_path: Path):
    # given an archive the gateway staged
    service = datasets(tmp_path)
    archive = staged(tmp_path / "uploads", "a.zip")
    # when the service takes it for an import
    job = service._job(upload_command(archive))
    # then it lies in the import's own staging folder, beside an empty folder to extract into,
    # and the gateway's sweep or its cleanup can no longer reach it
    assert job.archive == service.staging / "imp1" / ARCHIVE
    assert job.archive.is_file() and not archive.exists()
    assert job.root == service.staging / "imp1" / "files"
    assert list(job.root.iterdir()) == []


def test_an_archive_the_gateway_already_deleted_is_refused_and_leaves_no_folder(tmp_path: Path):
    # given a gateway that gave up (a 503) and deleted its staged archive before the service
    # got to the command
    service = datasets(tmp_path)
    archive = staged(tmp_path / "uploads", "a.zip")
    command = upload_command(archive)
    archive.unlink()
    # when the service handles it, then it is refused and no staging folder is left
    with pytest.raises(domain.InvalidInput):
        service._job(command)
    # and so it is when the archive goes between the service's check and its move
    with pytest.raises(domain.InvalidInput):
        service._claim(command, archive)
    assert list(service.staging.iterdir()) == []


def test_a_restart_reaps_only_staging_folders_no_import_runs(tmp_path: Path):
    # given staging folders of: a crash before the import was recorded, an import this
    # process runs, and one another instance runs
    service = datasets(tmp_path)
    for name in ("orphan", "live", "elsewhere"):
        (service.staging / name / "files").mkdir(parents=True)
        (service.staging / name / "files" / "x.png").write_bytes(b"x")
    service.active.add("live")
    # when the restart reaps the staging area
    removed = asyncio.run(service.reap_staging(keep={"elsewhere"}))
    # then the orphan goes, and the files a live import reads stay
    assert removed == ["orphan"]
    assert sorted(p.name for p in service.staging.iterdir()) == ["elsewhere", "live"]
    assert (service.staging / "live" / "files" / "x.png").exists()
