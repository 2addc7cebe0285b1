"""An import interrupted by a crash or a cancel leaves the dataset exactly as it was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests import imagesets
from tests.stack import Stack

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects", "datasets")

API = "/api/v1"


def start(stack: Stack, path: str) -> tuple[str, str]:
    pid = httpx.post(f"{stack.base_url}{API}/projects", json={"name": "p"}, timeout=15)
    project_id = pid.json()["data"]["id"]
    body = {"project_id": project_id, "path": path}
    resp = httpx.post(f"{stack.base_url}{API}/datasets/import/local", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    return project_id, resp.json()["data"]["id"]


def job(stack: Stack, import_id: str) -> dict:
    resp = httpx.get(f"{stack.base_url}{API}/datasets/import/{import_id}", timeout=15)
    return resp.json()["data"]


def wait(stack: Stack, import_id: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = job(stack, import_id)
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def mid_import(stack: Stack, source: Path) -> tuple[str, str]:
    """An import caught while it decodes: ``start`` answers once the source is read, so the
    job is decoding then, unless this machine was quicker than the test (then try again)."""
    for _ in range(5):
        project_id, import_id = start(stack, str(source))
        if job(stack, import_id)["state"] == "importing":
            return project_id, import_id
    pytest.fail("every import finished before the test could interrupt it")


def images(stack: Stack, project_id: str) -> int:
    summary = httpx.get(f"{stack.base_url}{API}/datasets/{project_id}", timeout=15)
    return int(summary.json()["data"]["images"])


def inside(stack: Stack, source: Path) -> Path:
    """The set, hard-linked under the stack's allowed import root (a symlink would escape it)."""
    return Path(shutil.copytree(source, stack.imports / "heavy", copy_function=os.link))


@pytest.fixture(scope="module")
def heavy_set(tmp_path_factory: pytest.TempPathFactory):
    return imagesets.heavy(tmp_path_factory.mktemp("heavy"), 200)


def test_a_datasets_service_killed_mid_import_keeps_nothing_and_the_retry_works(
    own_stack: Stack, heavy_set
):
    stack = own_stack
    source = inside(stack, heavy_set)
    stack.up()
    # when the service is killed while it decodes the images
    project_id, import_id = mid_import(stack, source)
    stack.kill("datasets")
    stack.start("datasets")
    stack.wait_healthy()
    # then the import ends as interrupted and the dataset holds nothing of it
    failed = wait(stack, import_id, lambda d: d["state"] != "running" and d["state"] != "importing")
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "INTERRUPTED"
    assert images(stack, project_id) == 0
    # and the same import, started again, completes whole
    body = {"project_id": project_id, "path": str(source)}
    retry = httpx.post(f"{stack.base_url}{API}/datasets/import/local", json=body, timeout=30)
    done = wait(stack, retry.json()["data"]["id"], lambda d: d["state"] == "completed")
    assert done["report"]["imported"] == 200
    assert images(stack, project_id) == 200


def test_a_cancelled_import_keeps_nothing(own_stack: Stack, heavy_set):
    stack = own_stack
    stack.up()
    source = inside(stack, heavy_set)
    for _ in range(5):  # a loaded machine may finish the import before the cancel lands
        project_id, import_id = mid_import(stack, source)
        url = f"{stack.base_url}{API}/datasets/import/{import_id}/cancel"
        resp = httpx.post(url, timeout=60)
        if resp.status_code == 200 or job(stack, import_id)["state"] != "completed":
            break
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["state"] == "cancelled"
    assert images(stack, project_id) == 0
    again = httpx.post(f"{stack.base_url}{API}/datasets/import/{import_id}/cancel", timeout=60)
    assert again.status_code == 409


def test_an_upload_over_the_size_limit_is_refused_with_413_and_leaves_no_file(tmp_path: Path):
    stack = Stack(tmp_path, STACK_SERVICES, STUDIO_UPLOAD_MAX_BYTES="20000")
    try:
        stack.up()
        pid = httpx.post(f"{stack.base_url}{API}/projects", json={"name": "p"}, timeout=15)
        project_id = pid.json()["data"]["id"]
        big = imagesets.zip_dir(imagesets.heavy(tmp_path / "big", 2, size=64), tmp_path / "b.zip")
        with big.open("rb") as fh:
            resp = httpx.post(
                f"{stack.base_url}{API}/datasets/import/upload",
                data={"project_id": project_id},
                files={"file": ("b.zip", fh, "application/zip")},
                timeout=30,
            )
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "ARCHIVE_TOO_LARGE"
        assert list((stack.workspace / "uploads").iterdir()) == []
        assert images(stack, project_id) == 0
    finally:
        stack.down()
