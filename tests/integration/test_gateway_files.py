"""The gateway serves images, thumbnails, export downloads and bundles through its ports (the
datasets service's blob query, the exports bucket), never from another service's folders: here
it runs with a workspace of its own, as it would on another machine, and serves them all."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Iterator

import nats
import pytest
from PIL import Image

from contracts import datasets as d
from contracts import exports as x
from services.kernel import natsauth
from tests import imagesets
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def apart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every service on the stack's workspace; the gateway on one of its own, which holds
    nothing but the gateway's read model (and the NATS seed it connects with)."""
    s = Stack(tmp_path_factory.mktemp("apart"))
    own = s.root / "gateway-workspace"
    try:
        s.start_nats()
        for name in s.services:
            s.start(name)
        env = {"STUDIO_WORKSPACE": str(own)}
        seeds = natsauth.secrets_dir(s.workspace)
        if natsauth.seed_path(seeds, "gateway").exists():  # where the embedded server wrote it
            env["STUDIO_NATS_CREDS"] = str(seeds)
        s.start("gateway", **env)
        s.wait_healthy()
        yield s
    finally:
        s.down()


@pytest.fixture(scope="module")
def export(apart: Stack) -> dict:
    project_id, split_id = learnable_split(apart, per_class=20, test=0.25)
    run = submit(apart, project_id, split_id, hyperparameters={"epochs": 1}).json()["data"]
    wait_status(apart, run["id"], "completed")
    with client(apart) as api:
        resp = api.post(f"{API}/export/run", json={"run_id": run["id"], "format": "onnx"})
        assert resp.status_code == 202, resp.text
        path = f"{API}/export/{resp.json()['data']['id']}"
        return wait(
            lambda: (e := api.get(path).json()["data"])["status"] in ("completed", "failed") and e
        )


def gateway_folders(stack: Stack) -> set[str]:
    return {p.name for p in (stack.root / "gateway-workspace").iterdir()}


def test_the_gateway_runs_on_a_workspace_without_the_services_folders(apart: Stack):
    assert {"blobs", "exports"}.isdisjoint(gateway_folders(apart))


def test_an_image_and_its_thumbnail_are_served_from_the_datasets_service(apart: Stack):
    big = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))  # noise: ~1.4 MB PNG
    root = imagesets.folder(apart.imports / uuid.uuid4().hex, {"a": 2, "b": 2})
    big.save(root / "a" / "big.png")
    assert (root / "a" / "big.png").stat().st_size > d.BLOB_CHUNK_MAX  # served in pieces
    with client(apart) as api:
        pid = api.post(f"{API}/projects", json={"name": f"f-{uuid.uuid4().hex[:6]}"}).json()
        pid = pid["data"]["id"]
        job = api.post(f"{API}/datasets/import/local", json={"project_id": pid, "path": str(root)})
        job_id = job.json()["data"]["id"]
        state = lambda: api.get(f"{API}/datasets/import/{job_id}").json()["data"]["state"]  # noqa: E731
        wait(lambda: state() == "completed")
        listed = api.get(f"{API}/datasets/{pid}/images").json()["data"]["items"]
        assert len(listed) == 5
        for item in listed:
            resp = api.get(f"{API}/datasets/{pid}/image/{item['id']}")
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
            # an image's id is the sha256 of its bytes: these are its bytes, whole
            assert hashlib.sha256(resp.content).hexdigest() == item["id"]
            assert int(resp.headers["content-length"]) == len(resp.content)
            thumb = api.get(f"{API}/datasets/{pid}/thumbnail/{item['id']}")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
        cached = api.get(
            f"{API}/datasets/{pid}/image/{listed[0]['id']}",
            headers={"If-None-Match": f'"{listed[0]["id"]}"'},
        )
        assert cached.status_code == 304
        gone = listed[0]["id"]
        assert api.delete(f"{API}/datasets/{pid}/images/{gone}").status_code == 204
        missing = api.get(f"{API}/datasets/{pid}/image/{gone}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert {"blobs", "exports"}.isdisjoint(gateway_folders(apart))


def test_an_export_and_its_bundle_are_served_from_the_object_store(apart: Stack, export: dict):
    assert export["status"] == "completed", export
    with client(apart) as api:
        resp = api.get(f"{API}/export/{export['id']}/download")
        assert resp.status_code == 200, resp.text
        assert hashlib.sha256(resp.content).hexdigest() == export["sha256"]
        assert resp.headers["x-checksum-sha256"] == export["sha256"]
        assert resp.headers["content-disposition"].startswith("attachment; filename=")
        assert int(resp.headers["content-length"]) == len(resp.content)
        ranges = {"bytes=0-99": (0, 100), "bytes=-10": (-10, None), "bytes=100-": (100, None)}
        for asked, (start, end) in ranges.items():
            part = api.get(f"{API}/export/{export['id']}/download", headers={"Range": asked})
            assert part.status_code == 206, asked
            assert part.content == resp.content[start:end], asked
            assert part.headers["content-range"].endswith(f"/{len(resp.content)}")
        beyond = f"bytes={len(resp.content)}-"
        unsatisfiable = api.get(f"{API}/export/{export['id']}/download", headers={"Range": beyond})
        assert unsatisfiable.status_code == 416
        bundle = api.get(f"{API}/export/{export['id']}/bundle")
        assert bundle.status_code == 200
        assert hashlib.sha256(bundle.content).hexdigest() == export["bundle_sha256"]
        assert "model.onnx" in zipfile.ZipFile(io.BytesIO(bundle.content)).namelist()
    assert {"blobs", "exports"}.isdisjoint(gateway_folders(apart))


def test_an_export_file_not_in_the_object_store_is_not_found_until_the_exporter_puts_it(
    apart: Stack, export: dict
):
    # as for an export made before the bucket held them: the exporter's own folder has the
    # files, the gateway does not look there, and the exporter puts them back at its next start
    assert list((apart.workspace / "exports" / export["id"]).glob("*.onnx"))

    async def remove() -> None:
        nc = await nats.connect(apart.nats_url)
        try:
            bucket = await nc.jetstream().object_store(x.EXPORTS_BUCKET)
            await bucket.delete(x.export_object(export["id"], x.BUNDLE_NAME))
        finally:
            await nc.close()

    asyncio.run(remove())
    with client(apart) as api:
        resp = api.get(f"{API}/export/{export['id']}/bundle")
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["code"] == "NOT_FOUND"
        assert api.get(f"{API}/export/{export['id']}/download").status_code == 200
    apart.stop("exporter")
    apart.start("exporter")
    with client(apart) as api:
        back = wait(
            lambda: (r := api.get(f"{API}/export/{export['id']}/bundle")).status_code == 200 and r,
            timeout=120,
            every=0.5,
        )
        assert hashlib.sha256(back.content).hexdigest() == export["bundle_sha256"]


def test_only_the_export_files_are_kept_under_their_declared_names(apart: Stack, export: dict):
    async def names() -> set[str]:
        nc = await nats.connect(apart.nats_url)
        try:
            bucket = await nc.jetstream().object_store(x.EXPORTS_BUCKET)
            return {i.name for i in await bucket.list(ignore_deletes=True)}
        finally:
            await nc.close()

    kept = asyncio.run(names())
    assert x.export_object(export["id"], "model.onnx") in kept
    assert all(n.startswith("exports/") for n in kept)
