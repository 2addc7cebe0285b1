"""Journey steps of the evaluation page, done with the mouse as a person would."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Expect

#: Playwright's expectations give up after 5 s, too soon for the studio's answers on a loaded
#: two-core machine: these steps (and their tests) wait up to 20 s, without touching the
#: expectations of other modules.
WAIT_MS = 20_000
expect = Expect()
expect.set_options(timeout=WAIT_MS)

#: How long an evaluation of a small run may take on a loaded machine (ms).
EVALUATION_MS = 120_000


def open_evaluation_page(page: Any, base_url: str, project_id: str) -> None:
    url = f"{base_url}/projects/{project_id}/evaluation"
    if not page.url.startswith(url):
        page.goto(url)
    expect(page.locator("#eval-history")).not_to_contain_text("Loading")


def evaluate(page: Any, base_url: str, project_id: str, run_id: str) -> str:
    """Evaluate the run's best checkpoint on its test images and wait for the metrics; returns
    the evaluation's id."""
    open_evaluation_page(page, base_url, project_id)
    page.get_by_label("Run", exact=True).select_option(run_id)
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#eval-running")).to_be_visible()
    shown = page.locator(f'#eval-shown[data-run-id="{run_id}"][data-status="completed"]')
    expect(shown).to_be_visible(timeout=EVALUATION_MS)
    expect(page.locator("#eval-metrics")).to_be_visible()
    evaluation_id: str = shown.get_attribute("data-evaluation-id")
    return evaluation_id


def open_cell(page: Any, true_label: str, pred_label: str) -> int:
    """Open a confusion-matrix cell and wait until its thumbnails have loaded; returns how
    many images it shows."""
    name = re.compile(rf"^true {re.escape(true_label)} predicted {re.escape(pred_label)}: \d+")
    page.locator("#eval-confusion").get_by_role("button", name=name).click()
    expect(page.locator("#eval-cell-title")).to_have_text(name)
    thumbs = page.locator("#eval-cell-thumbs img")
    count: int = thumbs.count()
    if count:
        page.wait_for_function(
            "() => [...document.querySelectorAll('#eval-cell-thumbs img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    return count
