"""Journey steps of the export page, done as a person would with the mouse and keyboard; each
waits until what it did shows in the page.

- ``export_run``: choose a run and a format on the export page, press Export, wait until the
  export has finished (its parity check in); returns the export's id.
- ``download``: press the download link; returns the downloaded file and the sha256 the page
  shows next to the link (the file is Playwright's, kept until the page's context closes).
- ``predict``: choose an image with the file input (the keyboard's way); ``drop``: drop one on
  the drop zone (a real ``drop`` event carrying a ``DataTransfer``). Both return the top class.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

#: An export (ONNX, parity and latency) of a small model on a loaded CPU stays well inside this.
EXPORT_TIMEOUT_MS = 180_000
PREDICT_TIMEOUT_MS = 60_000
FINISHED = re.compile(r"^(completed|failed)$")


def export_run(page: Any, base_url: str, project_id: str, run_id: str, fmt: str = "onnx") -> str:
    """Export ``run_id`` from the project's export page; returns the export's id once it ended
    (its state and parity badge are in the page; the caller checks which)."""
    page.goto(f"{base_url}/projects/{project_id}/export")
    page.get_by_label("Run", exact=True).select_option(run_id)
    page.get_by_label("Format", exact=True).select_option(fmt)
    page.get_by_role("button", name="Export", exact=True).click()
    detail = page.locator("#export-detail")
    expect(detail).to_have_attribute("data-export-id", re.compile(r"\w+"))
    expect(detail).to_have_attribute("data-status", FINISHED, timeout=EXPORT_TIMEOUT_MS)
    export_id = detail.get_attribute("data-export-id")
    assert export_id
    return str(export_id)


def download(page: Any) -> tuple[Path, str]:
    """Download the export shown; returns (the downloaded file, the sha256 shown by the link)."""
    shown = page.locator("#export-sha256").inner_text().strip()
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile(r"^Download the \S+ model")).click()
    saved = info.value.path()  # waits for the download to finish
    return Path(saved), shown


def _wait_result(page: Any, name: str) -> str:
    expect(page.locator("#predict-name")).to_have_text(name, timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#predict-result")).to_be_visible()
    return str(page.locator("#predict-top-label").inner_text())


def predict(page: Any, image_path: Path | str) -> str:
    """Try the export shown on an image chosen with the file input; returns the top class."""
    path = Path(image_path)
    page.get_by_label("Choose an image").set_input_files(str(path))
    return _wait_result(page, path.name)


def drop(page: Any, image_path: Path | str) -> str:
    """Drop an image on the drop zone (a ``drop`` event with the file in its DataTransfer);
    returns the top class."""
    path = Path(image_path)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    carried = page.evaluate_handle(
        """([name, b64, type]) => {
            const raw = atob(b64);
            const bytes = new Uint8Array(raw.length);
            for (let i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode(), kind],
    )
    zone = page.locator("#drop-zone")
    zone.dispatch_event("dragenter", {"dataTransfer": carried})
    zone.dispatch_event("dragover", {"dataTransfer": carried})
    zone.dispatch_event("drop", {"dataTransfer": carried})
    carried.dispose()
    return _wait_result(page, path.name)
