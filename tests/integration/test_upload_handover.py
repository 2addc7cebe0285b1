"""An uploaded ZIP goes from the gateway to the datasets service through the Object Store, not
a shared folder: the gateway, on a workspace of its own (as on another machine), still has its
uploads imported, and neither a file nor an object is left behind. The datasets service's side
(fetch, discard, the sweep of what a crashed gateway left) is checked against a real server."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from nats.aio.client import Client as NATS

from contracts import datasets as d
from services.datasets import domain
from services.datasets.handlers import ARCHIVE, Datasets
from services.datasets.uploads import STALE_AFTER_S, UploadGone, Uploads
from services.kernel import natsauth
from tests import imagesets
from tests.stack import API, Stack
from tests.upload_objects import left_behind

pytestmark = pytest.mark.integration


@pytest.fixture
def apart(tmp_path: Path) -> Iterator[Stack]:
    """projects and datasets on the stack's workspace; the gateway on one of its own."""
    s = Stack(tmp_path, ("projects", "datasets"))
    own = s.root / "gateway-workspace"
    try:
        s.start_nats()
        for name in s.services:
            s.start(name)
        env = {"STUDIO_WORKSPACE": str(own)}
        seeds = natsauth.secrets_dir(s.workspace)
        if natsauth.seed_path(seeds, "gateway").exists():
            env["STUDIO_NATS_CREDS"] = str(seeds)
        s.start("gateway", **env)
        s.wait_healthy()
        yield s
    finally:
        s.down()


def _import(stack: Stack, archive: Path) -> dict:
    headers = stack.headers()
    pid = httpx.post(f"{stack.base_url}{API}/projects", json={"name": "p"}, headers=headers)
    assert pid.status_code == 201, pid.text
    project_id = pid.json()["data"]["id"]
    with archive.open("rb") as fh:
        resp = httpx.post(
            f"{stack.base_url}{API}/datasets/import/upload",
            data={"project_id": project_id},
            files={"file": (archive.name, fh, "application/zip")},
            headers=headers,
            timeout=60,
        )
    assert resp.status_code == 202, resp.text
    path = f"{stack.base_url}{API}/datasets/import/{resp.json()['data']['id']}"
    deadline = time.monotonic() + 60
    while (job := httpx.get(path, headers=headers).json()["data"])["state"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_a_gateway_on_its_own_workspace_has_a_zip_upload_imported(apart: Stack, tmp_path: Path):
    # given a gateway that shares no folder with the datasets service
    own = apart.root / "gateway-workspace"
    archive = imagesets.zip_dir(
        imagesets.folder(tmp_path / "set", {"a": 3, "b": 2}), tmp_path / "s.zip"
    )
    # when a ZIP is uploaded, then it is imported whole
    job = _import(apart, archive)
    assert job["state"] == "completed", job
    assert job["report"]["imported"] == 5
    # and neither workspace keeps a file of it, nor the bucket an object
    assert left_behind(apart, own) == []
    assert left_behind(apart) == []
    # and no service was refused anything by the server on the way
    assert "Permissions Violation" not in apart.nats.log_path.read_text()  # type: ignore[union-attr]


async def test_the_service_fetches_an_object_then_discards_it(nc: NATS, tmp_path: Path):
    tmp_path = tmp_path / "staging"
    tmp_path.mkdir()
    uploads = Uploads(nc.jetstream())
    name = d.upload_object("u1")
    await (await uploads.bucket()).put(name, io.BytesIO(b"PK" + bytes(300_000)))
    target = tmp_path / "archive.zip"
    await uploads.fetch(name, target)
    assert target.read_bytes() == b"PK" + bytes(300_000)
    await uploads.discard(name)
    await uploads.discard(name)  # twice: harmless
    with pytest.raises(UploadGone):
        await uploads.fetch(name, tmp_path / "again.zip")
    assert not (tmp_path / "again.zip").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["archive.zip"]


async def test_the_sweep_removes_only_objects_older_than_an_hour(nc: NATS):
    # given an object a gateway put and never named in a command
    now = [time.time()]
    uploads = Uploads(nc.jetstream(), clock=lambda: now[0])
    name = d.upload_object("left")
    await (await uploads.bucket()).put(name, io.BytesIO(b"PK"))
    # when it is swept while it is fresh, then it stays (a command may be on its way)
    assert await uploads.sweep() == []
    # and an hour later it goes
    now[0] += STALE_AFTER_S + 60
    assert await uploads.sweep() == [name]
    assert await uploads.sweep() == []
    assert await uploads.sweep_if_due() == []  # nothing left either way


def _service(nc: NATS, tmp_path: Path) -> Datasets:
    return Datasets(
        cast(Any, None),
        None,
        instance="test",
        import_roots=[],
        uploads=tmp_path / "uploads",
        staging=tmp_path / "staging",
        handed=Uploads(nc.jetstream()),
    )


def _command(name: str) -> d.StartImport:
    return d.StartImport(
        dataset_id="p1", import_id="imp1", source_kind="upload", source="s.zip", upload_object=name
    )


async def test_the_service_claims_a_handed_over_archive_into_its_staging_folder(
    nc: NATS, tmp_path: Path
):
    # given an archive the gateway put in the bucket
    service = _service(nc, tmp_path)
    name = d.upload_object("u1")
    assert service.handed is not None
    await (await service.handed.bucket()).put(name, io.BytesIO(b"PK\x05\x06" + bytes(18)))
    # when the service takes it for an import, then it lies in the import's staging folder
    job = await service._take(_command(name))
    assert job.archive == service.staging / "imp1" / ARCHIVE
    assert job.archive.read_bytes() == b"PK\x05\x06" + bytes(18)
    assert list(job.root.iterdir()) == []


async def test_an_archive_no_longer_in_the_bucket_is_refused_and_leaves_no_folder(
    nc: NATS, tmp_path: Path
):
    # given a command naming an object a gateway that gave up already withdrew
    service = _service(nc, tmp_path)
    # when the service handles it, then it is refused and no staging folder is left
    with pytest.raises(domain.InvalidInput):
        await service._take(_command(d.upload_object("gone")))
    assert list(service.staging.iterdir()) == []
    # and a name outside the uploads is not fetched at all
    with pytest.raises(domain.InvalidInput):
        await service._take(_command("elsewhere/x.zip"))
