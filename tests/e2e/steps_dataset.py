"""Journey steps of the dataset page's import half, done as a person would: choose a ZIP and
upload it, or type a server folder, then wait for the import's report on the page.

Each step returns what the page's report says (``report``): its figures and, by kind, the names
of the files that were not imported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

#: How long an import of a small set may take on a loaded machine.
IMPORT_TIMEOUT_MS = 90_000
FIGURES = ("files", "imported", "duplicates", "corrupt", "skipped", "label_problems")


def open_dataset(page: Any, base_url: str, project_id: str) -> None:
    """The project's dataset page (unless it is open already)."""
    url = f"{base_url}/projects/{project_id}/dataset"
    if page.url.split("#")[0] != url:
        page.goto(url)
    expect(page.get_by_role("heading", name="Import images")).to_be_visible()
    # The page's script has drawn the import it picks up (a running one, or the last shown).
    expect(page.locator("#dataset-import")).to_have_attribute("data-ready", "true")


def shown_import(page: Any) -> str:
    """The id of the import the panel shows now, or ``""``."""
    panel = page.locator("#import-job [data-import-id]")
    return str(panel.get_attribute("data-import-id")) if panel.count() else ""


def report(page: Any, after: str = "", timeout_ms: int = IMPORT_TIMEOUT_MS) -> dict[str, Any]:
    """Wait until the import panel shows an ended import other than ``after``; its report as
    the page shows it: ``state``, each figure, ``problems`` (kind → file names), or ``reason``
    when it failed or was cancelled."""
    other = f':not([data-import-id="{after}"])' if after else ""
    ended = page.locator(f'#import-job [data-import-id]{other}[data-done="true"]')
    expect(ended).to_be_visible(timeout=timeout_ms)
    answer: dict[str, Any] = {
        "import_id": ended.get_attribute("data-import-id"),
        "state": ended.get_attribute("data-state"),
    }
    if answer["state"] != "completed":
        answer["reason"] = ended.locator("[role=alert], [role=status]").first.inner_text()
        return answer
    for key in FIGURES:
        text = ended.locator(f'[data-figure="{key}"]').inner_text()
        answer[key] = int(text.replace(",", ""))
    answer["problems"] = {
        kind: ended.locator(f'[data-problems="{kind}"] tbody tr td:first-child').all_inner_texts()
        for kind in FIGURES[2:]
    }
    return answer


def upload_zip(page: Any, base_url: str, project_id: str, zip_path: Path | str) -> dict[str, Any]:
    """Choose ``zip_path`` in the upload form, upload it, watch the upload bar reach 100 % and
    wait for the import's report (``report``'s answer)."""
    open_dataset(page, base_url, project_id)
    before = shown_import(page)
    page.get_by_label("ZIP archive").set_input_files(str(zip_path))
    expect(page.locator("#zip-chosen")).to_contain_text(Path(zip_path).name)
    page.get_by_role("button", name="Upload and import").click()
    expect(page.locator("#upload-bar")).to_have_attribute("value", "100", timeout=60_000)
    expect(page.locator("#upload-percent")).to_have_text("100 %")
    note = page.locator("#upload-note")
    expect(note).to_have_text(re.compile("Uploaded|refused"), timeout=60_000)
    if "refused" in note.inner_text():
        raise AssertionError(f"the upload was refused: {page.locator('#error-file').inner_text()}")
    return report(page, after=before)


def start_server_import(
    page: Any, base_url: str, project_id: str, path: Path | str, fmt: str = "folder"
) -> None:
    """Fill in the server-path form and send it (the answer is not waited for)."""
    open_dataset(page, base_url, project_id)
    page.get_by_label("Folder path").fill(str(path))
    page.locator("#local-format").select_option(fmt)
    page.get_by_role("button", name="Import folder").click()


def import_from_server_path(
    page: Any, base_url: str, project_id: str, path: Path | str, fmt: str = "folder"
) -> dict[str, Any]:
    """Import the server folder ``path`` from the form and wait for its report."""
    open_dataset(page, base_url, project_id)
    before = shown_import(page)
    start_server_import(page, base_url, project_id, path, fmt)
    other = f':not([data-import-id="{before}"])' if before else ""
    started = page.locator(f"#import-job [data-import-id]{other}")
    refused = page.locator("#error-path:not(:empty)")
    expect(started.or_(refused)).to_be_visible(timeout=60_000)
    if refused.is_visible():
        raise AssertionError(f"the server path was refused: {refused.inner_text()}")
    return report(page, after=before)
