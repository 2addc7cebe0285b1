"""The dataset page's import half in a real Chromium: a ZIP uploaded with its upload progress and
its report, a server folder imported with its live progress, a running import cancelled, bad
paths told next to their field, and the page at a laptop's and a phone's width."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests import imagesets
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_dataset import (
    import_from_server_path,
    open_dataset,
    report,
    start_server_import,
    upload_zip,
)
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets")
API = "/api/v1"


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


def new_project(studio: Stack) -> str:
    with studio.sync_client() as client:
        resp = client.post(f"{API}/projects", json={"name": f"import-{uuid.uuid4().hex[:8]}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


def import_json(studio: Stack, import_id: str) -> dict[str, Any]:
    with studio.sync_client() as client:
        return dict(client.get(f"{API}/datasets/import/{import_id}").json()["data"])


def messy_folder(root: Path) -> Path:
    """Two classes of 10 squares, a byte copy of one of them under the other class, a corrupt
    PNG and a text file."""
    imagesets.squares(root, per_class=10)
    (root / "tl" / "copy.png").write_bytes((root / "br" / "br_0.png").read_bytes())
    (root / "br" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (root / "br" / "notes.txt").write_text("not an image")
    return root


def signed_in_page(
    studio: Stack,
    open_page: Any,
    project_id: str,
    viewport: dict[str, int] = WIDE,
    user: tuple[str, str] = (ADMIN, ADMIN_PASSWORD),
) -> Any:
    """A page signed in through the form, sent on to the project's dataset page."""
    page, watch = open_page(viewport=viewport)
    target = f"/projects/{project_id}/dataset"
    page.goto(f"{studio.base_url}/login?next={target}")
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{studio.base_url}{target}")
    return page, watch


def slow_upload(page: Any, size: int) -> None:
    """Throttle the page's uploads so that sending ``size`` bytes takes about two seconds."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", conditions | {"uploadThroughput": size // 2})


def record_upload_bar(page: Any) -> None:
    """Keep every value the upload bar takes in ``window.uploadBar``."""
    page.evaluate(
        """() => {
        window.uploadBar = [];
        const bar = document.getElementById('upload-bar');
        new MutationObserver(() => window.uploadBar.push(bar.getAttribute('value')))
            .observe(bar, {attributes: true, attributeFilter: ['value']});
    }"""
    )


def start_by_api(studio: Stack, project_id: str, root: Path) -> str:
    with studio.sync_client() as client:
        body = {"project_id": project_id, "path": str(root), "format": "folder"}
        started = client.post(f"{API}/datasets/import/local", json=body)
    assert started.status_code == 202, started.text
    return str(started.json()["data"]["id"])


def drop_file(page: Any, name: str, content: bytes) -> None:
    """Drop a file named ``name`` on the ZIP drop zone, as a file dragged from the desktop."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, {type: 'application/zip'}));
        return transfer;
    }""",
        [name, list(content)],
    )
    page.locator("#zip-drop").dispatch_event("dragenter", {"dataTransfer": transfer})
    expect(page.locator("#zip-drop")).to_have_class(re.compile(r"\bover\b"))
    page.locator("#zip-drop").dispatch_event("drop", {"dataTransfer": transfer})


@contextmanager
def held_import(studio: Stack, project_id: str, root: Path) -> Iterator[str]:
    """Start an import of ``root`` by the API and hold the datasets service still (SIGSTOP) from
    the moment the import is on record until the block ends: the import is surely running
    while the block runs, however fast this machine decodes."""
    pool = ThreadPoolExecutor(1)
    started = pool.submit(start_by_api, studio, project_id, root)
    try:
        with studio.sync_client() as client:

            def on_record() -> str | None:
                imports = client.get(f"{API}/datasets/{project_id}").json()["data"]["imports"]
                return str(imports[0]["id"]) if imports else None

            job_id = str(wait(on_record, timeout=60, every=0.02))
        studio.pause("datasets")
        try:
            yield job_id
        finally:
            studio.resume("datasets")
        assert started.result(timeout=60) == job_id
    finally:
        pool.shutdown(wait=True)


def count_dataset_changes(page: Any) -> None:
    page.evaluate(
        "window.datasetChanges = 0;"
        "document.addEventListener('dataset:changed', () => { window.datasetChanges += 1; });"
    )


def test_a_zip_uploads_with_its_progress_and_its_report_names_each_file(
    studio: Stack, open_page: Any, tmp_path: Path
) -> None:
    # given a ZIP of 20 images, a duplicate, a corrupt file and a text file
    pid = new_project(studio)
    archive = imagesets.zip_dir(messy_folder(tmp_path / "set"), tmp_path / "squares.zip")
    page, _ = signed_in_page(studio, open_page, pid)
    open_dataset(page, studio.base_url, pid)
    count_dataset_changes(page)
    record_upload_bar(page)
    slow_upload(page, archive.stat().st_size)
    # when it is uploaded from the page (the step sees the upload bar reach 100 %)
    got = upload_zip(page, studio.base_url, pid, archive)
    # then the bar moved with the bytes sent, not in one jump at the end
    values = [float(v) for v in page.evaluate("() => window.uploadBar")]
    assert any(0 < v < 100 for v in values), values
    assert values[-1] == 100
    # then the report says what became of every file, by name
    assert got["state"] == "completed", got
    assert (got["files"], got["imported"]) == (23, 20)
    assert (got["duplicates"], got["corrupt"], got["skipped"]) == (1, 1, 1)
    assert got["problems"]["duplicates"] == ["tl/copy.png"]
    assert got["problems"]["corrupt"] == ["br/broken.png"]
    assert got["problems"]["skipped"] == ["br/notes.txt"]
    # and it is what the API says of the import
    job = import_json(studio, got["import_id"])
    assert job["report"]["imported"] == 20
    assert [d["file"] for d in job["report"]["duplicates"]] == ["tl/copy.png"]
    # and the page was told its dataset changed, and lists the import
    page.wait_for_function("() => window.datasetChanges === 1")
    row = page.locator(f'[data-import-row="{got["import_id"]}"]')
    expect(row).to_contain_text("squares.zip")
    expect(row).to_contain_text("completed")
    assert page.locator("#upload-bar").get_attribute("value") == "100"
    screenshot(page, "dataset-import-upload")


def test_a_running_import_is_picked_up_shows_live_progress_and_can_be_cancelled(
    studio: Stack, open_page: Any
) -> None:
    # given an import of a large folder running when the page opens (its service held still
    # meanwhile, so that it cannot end before the page is there to watch it)
    pid = new_project(studio)
    heavy = imagesets.heavy(studio.imports / uuid.uuid4().hex, count=200, size=384)
    with held_import(studio, pid, heavy) as job_id:
        page, _ = signed_in_page(studio, open_page, pid)
        panel = page.locator(f'#import-job [data-import-id="{job_id}"][data-done="false"]')
        expect(panel).to_be_visible(timeout=30_000)
    # then its live progress shows files processed, files/s and an ETA
    page.wait_for_function(
        """() => Number(document.getElementById('import-job').dataset.progressSeen || 0) > 0
            && document.getElementById('import-bar').value > 0""",
        timeout=60_000,
    )
    live = panel.locator(".import-live")
    expect(live.locator('[data-live="count"]')).to_have_text(re.compile(r"^[\d,]+ / 200 files$"))
    expect(live.locator('[data-live="rate"]')).to_contain_text("files/s")
    expect(live.locator('[data-live="eta"]')).to_contain_text("ETA")
    screenshot(page, "dataset-import-live")
    # when it is cancelled from the page (the service held still until the click is sent)
    studio.pause("datasets")
    try:
        page.get_by_role("button", name="Cancel import").click()
    finally:
        studio.resume("datasets")
    # then it ends cancelled, nothing of it kept, and the list says so
    got = report(page)
    assert (got["import_id"], got["state"]) == (job_id, "cancelled"), got
    assert "nothing of it was kept" in got["reason"]
    with studio.sync_client() as client:
        assert client.get(f"{API}/datasets/{pid}").json()["data"]["images"] == 0
    expect(page.locator(f'[data-import-row="{job_id}"]')).to_contain_text("cancelled")


def test_a_server_folder_imports_from_the_form_with_its_report(
    studio: Stack, open_page: Any
) -> None:
    pid = new_project(studio)
    root = messy_folder(studio.imports / uuid.uuid4().hex)
    page, _ = signed_in_page(studio, open_page, pid)
    count_dataset_changes(page)
    got = import_from_server_path(page, studio.base_url, pid, root, fmt="folder")
    assert (got["state"], got["files"], got["imported"]) == ("completed", 23, 20), got
    assert got["problems"]["corrupt"] == ["br/broken.png"]
    page.wait_for_function("() => window.datasetChanges === 1")
    expect(page.locator(f'[data-import-row="{got["import_id"]}"]')).to_contain_text("completed")
    # and a CSV naming one image under two labels: that image is a label problem, by name
    rows = [("x1.png", "cat"), ("x2.png", "dog"), ("x3.png", "cat")]
    table = imagesets.csv_set(studio.imports / uuid.uuid4().hex, rows, start=500)
    with (table / "labels.csv").open("a") as fh:
        fh.write("images/x3.png,dog\n")
    got = import_from_server_path(page, studio.base_url, pid, table, fmt="csv")
    assert (got["state"], got["imported"], got["label_problems"]) == ("completed", 2, 1), got
    assert got["problems"]["label_problems"] == ["images/x3.png"]
    problem = page.locator('[data-problems="label_problems"] tbody tr')
    expect(problem).to_contain_text("listed with labels cat and dog")


def test_an_import_started_while_another_runs_leaves_both_ends_told(
    studio: Stack, open_page: Any
) -> None:
    # given an import running when the page opens
    pid = new_project(studio)
    first = imagesets.heavy(studio.imports / uuid.uuid4().hex, count=150, size=384)
    second = imagesets.folder(studio.imports / uuid.uuid4().hex, {"a": 2, "b": 2})
    with held_import(studio, pid, first) as first_id:
        page, _ = signed_in_page(studio, open_page, pid)
        expect(page.locator(f'#import-job [data-import-id="{first_id}"]')).to_be_visible()
        count_dataset_changes(page)
    # when another is started from the form before it ends (its panel replaces the first's)
    got = import_from_server_path(page, studio.base_url, pid, second, fmt="folder")
    assert (got["state"], got["imported"]) == ("completed", 4), got
    # then the page is told of both, and lists both as completed
    page.wait_for_function("() => window.datasetChanges === 2", timeout=60_000)
    expect(page.locator(f'[data-import-row="{first_id}"]')).to_contain_text("completed")
    expect(page.locator(f'[data-import-row="{got["import_id"]}"]')).to_contain_text("completed")


def test_a_viewer_watches_imports_without_the_controls_to_start_or_cancel_one(
    studio: Stack, open_page: Any
) -> None:
    # given a viewer of a project whose import is running when the viewer opens the page
    pid = new_project(studio)
    user = (f"viewer{uuid.uuid4().hex[:6]}", "viewer-password-123")
    studio.create_user(*user)
    with studio.sync_client() as client:
        resp = client.post(
            f"{API}/projects/{pid}/members", json={"user_id": user[0], "role": "viewer"}
        )
    assert resp.status_code == 201, resp.text
    heavy = imagesets.heavy(studio.imports / uuid.uuid4().hex, count=40, size=256)
    with held_import(studio, pid, heavy) as job_id:
        page, _ = signed_in_page(studio, open_page, pid, user=user)
        panel = page.locator(f'#import-job [data-import-id="{job_id}"][data-done="false"]')
        expect(panel).to_be_visible(timeout=30_000)
        # then there is no form to import with and no button to cancel the running one
        expect(page.get_by_text("importing images needs the editor role")).to_be_visible()
        expect(page.get_by_role("button", name="Upload and import")).to_have_count(0)
        expect(page.get_by_role("button", name="Import folder")).to_have_count(0)
        expect(page.get_by_role("button", name="Cancel import")).to_be_hidden()
    # and the viewer sees its report when it ends
    got = report(page)
    assert (got["import_id"], got["state"], got["imported"]) == (job_id, "completed", 40)


def test_bad_server_paths_are_told_next_to_the_field(studio: Stack, open_page: Any) -> None:
    pid = new_project(studio)
    page, watch = signed_in_page(studio, open_page, pid)
    # the refusals the test provokes: the browser's and htmx's console lines of them
    watch.expect(r"status of 40[34]")
    watch.expect(r"Error Code 40[34] from /api/v1/datasets/import/local")
    # a folder outside the roots the operator allowed
    start_server_import(page, studio.base_url, pid, "/etc", "folder")
    error = page.locator("#error-path")
    expect(error).to_contain_text("is not inside")
    expect(page.get_by_label("Folder path")).to_have_value("/etc")
    # a folder inside them that does not exist
    start_server_import(page, studio.base_url, pid, "no-such-folder", "folder")
    expect(error).to_contain_text("does not exist")
    assert page.locator("#import-job [data-import-id]").count() == 0


def test_a_file_that_is_not_a_zip_is_refused_by_its_field_and_an_upload_can_be_cancelled(
    studio: Stack, open_page: Any, tmp_path: Path
) -> None:
    pid = new_project(studio)
    page, watch = signed_in_page(studio, open_page, pid)
    watch.expect(r"status of 415")
    # when a file that is not a ZIP is dropped on the drop zone and sent
    drop_file(page, "photos.zip", b"these are not the bytes of a ZIP archive")
    expect(page.locator("#zip-chosen")).to_contain_text("photos.zip")
    page.get_by_role("button", name="Upload and import").click()
    # then the refusal is told by the file field, and the form is ready again
    expect(page.locator("#error-file")).to_contain_text("not a ZIP archive")
    expect(page.locator("#upload-note")).to_have_text("The studio refused the archive.")
    expect(page.get_by_role("button", name="Upload and import")).to_be_enabled()
    # and an upload cancelled on its way imports nothing (the refused one is on record, failed)
    with studio.sync_client() as client:
        refused = client.get(f"{API}/datasets/{pid}").json()["data"]["imports"]
    assert [i["state"] for i in refused] == ["failed"]
    archive = imagesets.zip_dir(imagesets.squares(tmp_path / "set", 10), tmp_path / "set.zip")
    slow_upload(page, archive.stat().st_size // 10)  # about 20 s to send
    page.get_by_label("ZIP archive").set_input_files(str(archive))
    page.get_by_role("button", name="Upload and import").click()
    page.get_by_role("button", name="Cancel upload").click()
    expect(page.locator("#upload-note")).to_have_text("Upload cancelled: nothing was imported.")
    expect(page.get_by_role("button", name="Cancel upload")).to_be_hidden()
    assert page.locator("#import-job [data-import-id]").count() == 0
    with studio.sync_client() as client:
        assert client.get(f"{API}/datasets/{pid}").json()["data"]["imports"] == refused


def test_the_import_fragment_is_the_apis_json_drawn(studio: Stack) -> None:
    # given a completed import with a duplicate, a corrupt file and a skipped one
    pid = new_project(studio)
    job_id = start_by_api(studio, pid, messy_folder(studio.imports / uuid.uuid4().hex))
    url = f"{API}/datasets/import/{job_id}"
    # when htmx asks for it, and a script does
    with studio.sync_client() as client:
        job = finished(client, url)
        html = client.get(url, headers={"HX-Request": "true"})
    # then the script gets JSON and htmx the same report drawn, every file named
    assert job["state"] == "completed" and job["report"]["imported"] == 20
    assert html.headers["content-type"].startswith("text/html")
    assert 'data-figure="imported">20<' in html.text
    for name in ("tl/copy.png", "br/broken.png", "br/notes.txt"):
        assert name in html.text
    # a bad path to htmx: the error fragment, its message next to the path field
    with studio.sync_client() as client:
        body = {"project_id": pid, "path": "/etc", "format": "folder"}
        refused = client.post(
            f"{API}/datasets/import/local", json=body, headers={"HX-Request": "true"}
        )
    assert refused.status_code == 403
    assert re.search(r'id="error-path"[^>]*>[^<]*is not inside', refused.text)


def finished(client: httpx.Client, url: str) -> dict[str, Any]:
    """The import at ``url`` once it has ended."""

    def ended() -> dict[str, Any] | None:
        data = dict(client.get(url).json()["data"])
        return data if data["state"] in ("completed", "failed", "cancelled") else None

    return dict(wait(ended, timeout=90))


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_dataset_import_page_is_accessible(
    studio: Stack, open_page: Any, viewport: dict[str, int]
) -> None:
    # given a project with a completed import, its report opened from the list
    pid = new_project(studio)
    job_id = start_by_api(studio, pid, messy_folder(studio.imports / uuid.uuid4().hex))
    with studio.sync_client() as client:
        finished(client, f"{API}/datasets/import/{job_id}")
    page, _ = signed_in_page(studio, open_page, pid, viewport)
    open_dataset(page, studio.base_url, pid)
    page.get_by_role("button", name=re.compile("Show the import")).click()
    expect(page.locator('#import-job [data-figure="imported"]')).to_have_text("20")
    # then it fits the width (no sideways scrolling) and axe finds nothing serious
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "dataset-import")
    assert axe_violations(page) == []
