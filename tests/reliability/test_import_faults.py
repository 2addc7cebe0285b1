"""An import interrupted by a crash or a cancel leaves the dataset exactly as it was.

One studio serves the module (``tests.fault_helpers``): a test that kills the datasets service
leaves it to be started again before the next, which also waits until no import of an earlier
test has anything left in the staging area or the uploads; the tests of the upload cap and of
a missing service restart the gateway alone with their settings.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import imagesets
from tests.fault_helpers import gateway_with, module_studio, whole_again
from tests.stack import Stack
from tests.upload_objects import left_behind

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects", "datasets")

API = "/api/v1"
#: The gateway's settings: a short request timeout, as for a studio of a test's own ...
QUICK = {"STUDIO_REQUEST_TIMEOUT": "1.5"}
#: ... or a small upload cap and a short wait for a missing service.
CAPPED = {"STUDIO_UPLOAD_MAX_BYTES": "20000", "STUDIO_RESPONDER_WAIT": "0.5"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with module_studio(tmp_path_factory.mktemp("imports"), STACK_SERVICES, QUICK) as s:
        yield s


@pytest.fixture
def stack(studio: Stack) -> Stack:
    """The module's studio, whole again, with nothing of an earlier test's imports left."""
    whole_again(studio)
    wait_for(lambda: staging(studio) == [], "the earlier imports leave no staging folder")
    wait_for(lambda: uploads(studio) == [], "the earlier uploads leave no file")
    return studio


def project(stack: Stack) -> str:
    resp = httpx.post(
        f"{stack.base_url}{API}/projects", json={"name": "p"}, headers=stack.headers(), timeout=15
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["id"]


def start(stack: Stack, path: str | Path) -> tuple[str, str]:
    project_id = project(stack)
    body = {"project_id": project_id, "path": str(path)}
    resp = httpx.post(
        f"{stack.base_url}{API}/datasets/import/local",
        json=body,
        headers=stack.headers(),
        timeout=30,
    )
    assert resp.status_code == 202, resp.text
    return project_id, resp.json()["data"]["id"]


def upload(stack: Stack, project_id: str, archive: Path) -> httpx.Response:
    with archive.open("rb") as fh:
        return httpx.post(
            f"{stack.base_url}{API}/datasets/import/upload",
            data={"project_id": project_id},
            files={"file": (archive.name, fh, "application/zip")},
            headers=stack.headers(),
            timeout=60,
        )


def start_upload(stack: Stack, archive: Path) -> tuple[str, str]:
    project_id = project(stack)
    resp = upload(stack, project_id, archive)
    assert resp.status_code == 202, resp.text
    return project_id, resp.json()["data"]["id"]


def job(stack: Stack, import_id: str) -> dict:
    resp = httpx.get(
        f"{stack.base_url}{API}/datasets/import/{import_id}", headers=stack.headers(), timeout=15
    )
    return resp.json()["data"]


def wait(stack: Stack, import_id: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = job(stack, import_id)
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def mid_import(stack: Stack, source: Path, begin=start, hold: bool = True) -> tuple[str, str]:
    """An import caught while it works: the datasets service is paused the moment the import
    is accepted, so however fast this machine decodes, the import is still unfinished when
    it is looked at. With ``hold`` it stays paused for the caller to kill (a stopped process
    dies of SIGKILL); else it runs on. Should a machine finish within that moment, another
    import is tried."""
    seen = []
    for _ in range(5):
        project_id, import_id = begin(stack, source)
        stack.pause("datasets")
        seen.append(job(stack, import_id))
        unfinished = seen[-1]["state"] in ("running", "importing")
        if not (unfinished and hold):
            stack.resume("datasets")
        if unfinished:
            return project_id, import_id
    pytest.fail(f"every import finished before the test could interrupt it: {seen}")


def staging(stack: Stack) -> list[str]:
    """The imports with something in the datasets service's staging area: a folder, or the
    claim (``<import id>.lock``) its live owner holds on it."""
    folder = stack.workspace / "datasets" / "staging"
    return (
        sorted({p.name.removesuffix(".lock") for p in folder.iterdir()}) if folder.exists() else []
    )


def uploads(stack: Stack) -> list[str]:
    """What uploads left: files in the gateway's folder, objects in the uploads bucket."""
    return left_behind(stack)


def plant_orphans(stack: Stack) -> None:
    """What a crash before an import was recorded leaves: a staging folder nobody runs."""
    orphan = stack.workspace / "datasets" / "staging" / "orphan-import" / "files"
    orphan.mkdir(parents=True)
    (orphan / "x.png").write_bytes(b"not an image")


def images(stack: Stack, project_id: str) -> int:
    summary = httpx.get(
        f"{stack.base_url}{API}/datasets/{project_id}", headers=stack.headers(), timeout=15
    )
    return int(summary.json()["data"]["images"])


def inside(stack: Stack, source: Path) -> Path:
    """The set, hard-linked under the stack's allowed import root (a symlink would escape it),
    once for the module's studio."""
    target = stack.imports / "heavy"
    if not target.exists():
        shutil.copytree(source, target, copy_function=os.link)
    return target


@pytest.fixture(scope="module")
def heavy_set(tmp_path_factory: pytest.TempPathFactory):
    return imagesets.heavy(tmp_path_factory.mktemp("heavy"), 200)


@pytest.fixture(scope="module")
def heavy_zip(heavy_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return imagesets.zip_dir(heavy_set, tmp_path_factory.mktemp("zip") / "heavy.zip")


def test_a_datasets_service_killed_mid_import_keeps_nothing_and_the_retry_works(
    stack: Stack, heavy_set
):
    gateway_with(stack, QUICK)
    source = inside(stack, heavy_set)
    # when the service is killed while it decodes the images
    project_id, import_id = mid_import(stack, source)
    stack.kill("datasets")
    plant_orphans(stack)
    stack.start("datasets")
    stack.wait_healthy()
    # then the import ends as interrupted and the dataset holds nothing of it
    failed = wait(stack, import_id, lambda d: d["state"] != "running" and d["state"] != "importing")
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "INTERRUPTED"
    assert images(stack, project_id) == 0
    # and no file of a crash is left behind
    wait_for(lambda: staging(stack) == [], "the restart removes the staging folders left")
    # and the same import, started again, completes whole
    body = {"project_id": project_id, "path": str(source)}
    retry = httpx.post(
        f"{stack.base_url}{API}/datasets/import/local",
        json=body,
        headers=stack.headers(),
        timeout=30,
    )
    done = wait(stack, retry.json()["data"]["id"], lambda d: d["state"] == "completed")
    assert done["report"]["imported"] == 200
    assert images(stack, project_id) == 200


def test_a_cancelled_import_keeps_nothing(stack: Stack, heavy_set):
    gateway_with(stack, QUICK)
    source = inside(stack, heavy_set)
    for _ in range(5):  # a loaded machine may finish the import before the cancel lands
        project_id, import_id = mid_import(stack, source, hold=False)
        url = f"{stack.base_url}{API}/datasets/import/{import_id}/cancel"
        resp = httpx.post(url, headers=stack.headers(), timeout=60)
        if resp.status_code == 200 or job(stack, import_id)["state"] != "completed":
            break
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["state"] == "cancelled"
    assert images(stack, project_id) == 0
    again = httpx.post(
        f"{stack.base_url}{API}/datasets/import/{import_id}/cancel",
        headers=stack.headers(),
        timeout=60,
    )
    assert again.status_code == 409


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_datasets_service_killed_mid_upload_import_leaves_no_file_and_the_retry_works(
    stack: Stack, heavy_zip: Path
):
    gateway_with(stack, QUICK)
    # given an uploaded ZIP being imported: its files extracted into its staging folder
    project_id, import_id = mid_import(stack, heavy_zip, start_upload)
    assert staging(stack) == [import_id]
    assert uploads(stack) == []  # the service took the archive: no copy, no object
    # when the service is killed, and a crash earlier left a folder of an unrecorded import
    stack.kill("datasets")
    plant_orphans(stack)
    stack.start("datasets")
    stack.wait_healthy()
    # then the import ends as interrupted, the dataset holds nothing of it, and no file stays
    failed = wait(stack, import_id, lambda d: d["state"] not in ("running", "importing"))
    assert failed["error"]["code"] == "INTERRUPTED"
    assert images(stack, project_id) == 0
    wait_for(lambda: staging(stack) == [], "the restart removes the staging folders left")
    # and the same upload, sent again, completes whole and leaves nothing behind
    retry = upload(stack, project_id, heavy_zip)
    assert retry.status_code == 202, retry.text
    done = wait(stack, retry.json()["data"]["id"], lambda d: d["state"] == "completed")
    assert done["report"]["imported"] == 200
    assert images(stack, project_id) == 200
    # (the job removes its folder right after storing its end)
    wait_for(lambda: staging(stack) == [], "a finished import removes its staging folder")
    assert uploads(stack) == []


def test_an_upload_over_the_size_limit_is_refused_with_413_and_leaves_no_file(
    stack: Stack, tmp_path: Path
):
    gateway_with(stack, CAPPED)
    project_id = project(stack)
    big = imagesets.zip_dir(imagesets.heavy(tmp_path / "big", 2, size=64), tmp_path / "b.zip")
    resp = upload(stack, project_id, big)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "ARCHIVE_TOO_LARGE"
    assert uploads(stack) == []
    assert images(stack, project_id) == 0


def test_an_upload_answered_503_leaves_no_file(stack: Stack, tmp_path: Path):
    # given a studio whose datasets service is down (and a short wait for it)
    gateway_with(stack, CAPPED)
    project_id = project(stack)
    stack.stop("datasets")
    archive = imagesets.zip_dir(imagesets.folder(tmp_path / "set", {"a": 2}), tmp_path / "s.zip")
    # when an archive is uploaded, then it is answered 503 and no staged file stays
    resp = upload(stack, project_id, archive)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "UNAVAILABLE"
    assert uploads(stack) == []
