"""Garbage collection of stored images (``studio gc`` and ``CollectGarbage``): what failed or
cancelled imports left goes, only when asked to delete; a file an event names never does, not
even while an import that will name it races the collection."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from contracts import datasets as d
from services.kernel.blobstore import BlobStore
from tests import imagesets
from tests.integration.test_datasets_api import finished, import_local, project
from tests.stack import Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"
HOUR_AGO = time.time() - 3600
ENDED = ("completed", "failed", "cancelled")


@pytest.fixture
async def nc(stack: Stack) -> AsyncIterator[NATS]:
    client = await nats.connect(stack.nats_url)
    yield client
    await client.close()


def blobs(stack: Stack) -> BlobStore:
    return BlobStore(stack.workspace / "blobs")


def studio_gc(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "gc", *args, "--workspace", str(stack.workspace)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def collect(nc: NATS, delete: bool, grace_s: float = 0) -> d.GarbageReport:
    command = d.CollectGarbage(delete=delete, grace_s=grace_s)
    reply = await nc.request(d.Subjects.COLLECT_GARBAGE, msgspec.json.encode(command), timeout=60)
    return msgspec.json.decode(reply.data, type=d.GarbageReport)


def orphan(store: BlobStore, seed: int, age: float = HOUR_AGO) -> str:
    """A stored original and thumbnail that no event names, as a failed import leaves them."""
    data = f"orphan {seed} {uuid.uuid4()}".encode()
    sha = hashlib.sha256(data).hexdigest()
    store.put_bytes(data, sha)
    store.put_thumb(sha, b"thumbnail")
    for path in (store.blob_path(sha), store.thumb_path(sha)):
        os.utime(path, (age, age))
    return sha


def shas(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


async def dataset_ids(api: httpx.AsyncClient, pid: str) -> set[str]:
    listed = (await api.get(f"{API}/datasets/{pid}/images", params={"limit": 500})).json()
    return {i["id"] for i in listed["data"]["items"]}


async def test_gc_lists_by_default_deletes_with_yes_and_keeps_every_named_file(
    api: httpx.AsyncClient, stack: Stack
):
    # given a dataset, two old files no event names and one just written
    pid = await project(api)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 3, "b": 3}, start=7100)
    assert (await import_local(api, pid, root))["state"] == "completed"
    store = blobs(stack)
    old = [orphan(store, n) for n in range(2)]
    young = orphan(store, 2, age=time.time())

    listed = studio_gc(stack, "--grace", "600")
    assert listed.returncode == 0, listed.stderr
    assert "would delete" in listed.stdout and all(sha in listed.stdout for sha in old)
    assert all(store.has(sha) for sha in old)  # a dry run deletes nothing

    deleted = studio_gc(stack, "--yes", "--grace", "600")

    assert deleted.returncode == 0, deleted.stderr
    assert "deleted" in deleted.stdout and "younger than the grace period kept" in deleted.stdout
    assert not any(store.has(sha) or store.has_thumb(sha) for sha in old)
    assert store.has(young) and store.has_thumb(young)
    named = await dataset_ids(api, pid)
    assert len(named) == 6 and all(store.has(i) and store.has_thumb(i) for i in named)


async def test_the_files_of_a_cancelled_import_are_collected(
    api: httpx.AsyncClient, stack: Stack, nc: NATS
):
    store = blobs(stack)
    # Big enough that the cancel lands while it decodes: a quiet machine's pool of processes
    # imported 400 images before the cancel came, five times over. Seeds no other test uses.
    for attempt in range(5):
        pid = await project(api)
        root = imagesets.folder(
            stack.imports / uuid.uuid4().hex, {"a": 3000}, start=100_000 + attempt * 5000
        )
        body = {"project_id": pid, "path": str(root), "format": "folder"}
        job = (await api.post(f"{API}/datasets/import/local", json=body)).json()["data"]
        await _decoding(api, job["id"])
        await api.post(f"{API}/datasets/import/{job['id']}/cancel")
        if (await finished(api, job))["state"] == "cancelled":
            break
    assert (await finished(api, job))["state"] == "cancelled"
    files = shas(root)
    assert any(store.has(sha) for sha in files)  # it had stored some before the cancel

    report = await collect(nc, delete=True)

    assert report.deleted and not report.deferred and report.files >= 1
    assert not any(store.has(sha) or store.has_thumb(sha) for sha in files)


async def _job(api: httpx.AsyncClient, import_id: str) -> dict:
    return (await api.get(f"{API}/datasets/import/{import_id}")).json()["data"]


async def _decoding(api: httpx.AsyncClient, import_id: str) -> None:
    """Waits until the import has stored at least one image (or ended)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = await _job(api, import_id)
        if data["state"] in ENDED or (data.get("progress") or {}).get("done", 0) > 0:
            return
        await asyncio.sleep(0.02)


async def test_gc_racing_an_import_deletes_nothing_the_import_names(
    api: httpx.AsyncClient, stack: Stack, nc: NATS
):
    # given the very files an import is about to read, left unnamed by an earlier failed one
    store = blobs(stack)
    root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"a": 150, "b": 150}, start=40_000)
    for path in root.rglob("*.png"):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        store.put_bytes(data, sha)
        os.utime(store.blob_path(sha), (HOUR_AGO, HOUR_AGO))

    # when collections delete again and again while the import runs
    pid = await project(api)
    body = {"project_id": pid, "path": str(root), "format": "folder"}
    job = (await api.post(f"{API}/datasets/import/local", json=body)).json()["data"]
    reports = []
    while (data := await _job(api, job["id"]))["state"] not in ENDED:
        reports.append(await collect(nc, delete=True))

    # then every image it named is there, original and thumbnail
    assert data["state"] == "completed", data
    named = await dataset_ids(api, pid)
    assert len(named) == 300
    assert all(store.has(i) and store.has_thumb(i) for i in named)
    # (whether a collection met the import running depends on the machine's speed: the
    # collector's hold-off itself is shown step by step in test_gc_collector)
    assert all(r.deferred or r.deleted or not r.files for r in reports)
