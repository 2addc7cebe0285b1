"""The whole journey, as a new user does it with the mouse in a real Chromium: sign in, create a
project, upload a ZIP and watch its bar, see the thumbnails, make a split, train while the chart
gains one point per epoch, stop and resume, evaluate and open a confusion-matrix cell, export,
download and check the sha256, predict by dropping an image. No console error and no failed
request on the way. Then every page, full of this project's data, is checked with axe-core and
photographed at a laptop's and a phone's width."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests import imagesets
from tests.e2e import (
    steps_browse,
    steps_dataset,
    steps_evaluation,
    steps_export,
    steps_projects,
    steps_split,
    steps_training,
)
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot, sign_in
from tests.stack import ADMIN, ADMIN_PASSWORD

pytestmark = pytest.mark.e2e
EPOCHS = 4
PER_CLASS = 16
#: Records every value the loss chart's point count takes from now on.
RECORD_POINTS = """() => {
  window.__points = [];
  const canvas = document.getElementById('chart-loss');
  new MutationObserver(() => window.__points.push(Number(canvas.getAttribute('data-points'))))
    .observe(canvas, {attributes: true, attributeFilter: ['data-points']});
}"""
#: The aria-label of the confusion-matrix cell holding the most images.
BIGGEST_CELL = """() => {
  const cells = [...document.querySelectorAll('#eval-confusion button[aria-label]')];
  const count = b => Number((b.getAttribute('aria-label').match(/: (\\d+)/) || [0, 0])[1]);
  return cells.sort((a, b) => count(b) - count(a))[0].getAttribute('aria-label');
}"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable two-class set with a few wrong labels (so the model makes mistakes to
    show), zipped as a user would."""
    root = imagesets.squares(tmp_path_factory.mktemp("set") / "squares", PER_CLASS)
    for label, other in (("tl", "br"), ("br", "tl")):
        for i in range(0, PER_CLASS, 5):
            shutil.move(root / label / f"{label}_{i}.png", root / other / f"{label}_{i}.png")
    return imagesets.zip_dir(root, root.parent / "squares.zip")


def test_a_new_user_does_the_whole_journey_with_the_mouse(studio, open_page, archive):
    page, _ = open_page(viewport=WIDE, accept_downloads=True)
    base = studio.base_url
    sign_in(page, base, ADMIN, ADMIN_PASSWORD)

    project_id = steps_projects.create_project(page, base, "Squares journey")
    steps_projects.open_project(page, base, project_id)
    figures = steps_dataset.upload_zip(page, base, project_id, archive)
    assert figures["imported"] == 2 * PER_CLASS, figures
    assert steps_browse.see_thumbnails(page, at_least=8) >= 8

    split_id = steps_split.make_split(page, base, project_id, train=0.6, val=0.2, test=0.2)

    run_id = steps_training.start_run(page, base, project_id, split_id, EPOCHS)
    page.evaluate(RECORD_POINTS)
    steps_training.wait_points(page, 1)
    stopped = steps_training.stop_run(page)
    if stopped == "stopped":
        steps_training.resume_run(page)
    assert steps_training.wait_complete(page) == EPOCHS
    seen = page.evaluate("window.__points")
    # The chart gained exactly one point per epoch: never two at once, never one twice.
    assert seen and seen[-1] == EPOCHS, seen
    assert all(b - a in (0, 1) for a, b in zip([0, *seen], seen, strict=False)), seen
    screenshot(page, "journey-training")

    evaluation_id = steps_evaluation.evaluate(page, base, project_id, run_id)
    biggest = page.evaluate(BIGGEST_CELL)
    true_label, pred_label = re.match(r"true (\S+) predicted (\S+):", biggest).groups()
    assert steps_evaluation.open_cell(page, true_label, pred_label) > 0
    screenshot(page, "journey-evaluation")

    export_id = steps_export.export_run(page, base, project_id, run_id)
    expect(page.locator("#export-detail")).to_have_attribute("data-status", "completed")
    saved, shown = steps_export.download(page)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == shown
    image = next((archive.parent / "squares" / "br").glob("*.png"))
    assert steps_export.drop(page, image) in ("tl", "br")
    screenshot(page, "journey-export")

    pages = {
        "projects": "/projects",
        "dataset": f"/projects/{project_id}/dataset",
        "split": f"/projects/{project_id}/split",
        "training": f"/projects/{project_id}/training?run={run_id}",
        "evaluation": f"/projects/{project_id}/evaluation?evaluation={evaluation_id}",
        "export": f"/projects/{project_id}/export?export_id={export_id}",
        "system": "/system",
    }
    every_page_is_accessible_at_both_widths(open_page, base, pages)


def every_page_is_accessible_at_both_widths(open_page, base: str, pages: dict[str, str]) -> None:
    problems: list[str] = []
    for viewport in (WIDE, PHONE):
        page, _ = open_page(viewport=viewport)
        sign_in(page, base, ADMIN, ADMIN_PASSWORD)
        for name, path in pages.items():
            page.goto(f"{base}{path}")
            expect(page.locator("main")).not_to_contain_text("Loading", timeout=30_000)
            problems += [f"{name} at {viewport['width']} px: {v}" for v in axe_violations(page)]
            screenshot(page, f"journey-{name}")
    assert not problems, "\n".join(problems)
