"""The split page in a real Chromium: make a split with the form, see a refused ratio by its
field, read the same counts in the chart, the table and the API, delete a split behind a
keyboard-usable confirmation; accessible at a laptop's and a phone's width."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import imagesets
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_split import expect, fill_split_form, make_split, open_split_page
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import API, client, wait

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets")
SUBSETS = ("train", "val", "test")


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


@pytest.fixture(scope="module")
def project_id(studio: Stack) -> str:
    """A project holding a two-class dataset of 40 images, imported through the API."""
    with client(studio) as api:
        project = api.post(f"{API}/projects", json={"name": f"split-{uuid.uuid4().hex[:6]}"})
        pid: str = project.json()["data"]["id"]
        root = imagesets.squares(studio.imports / uuid.uuid4().hex, 20)
        body = {"project_id": pid, "path": str(root)}
        job = api.post(f"{API}/datasets/import/local", json=body).json()["data"]
        wait(
            lambda: (
                api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"] == "completed"
            )
        )
    return pid


def signed_in(
    studio: Stack,
    open_page: Any,
    project_id: str,
    viewport: dict[str, int] = WIDE,
    user: tuple[str, str] = (ADMIN, ADMIN_PASSWORD),
) -> tuple[Any, Any]:
    """A page signed in through the form, landing on the project's split page."""
    page, watch = open_page(viewport=viewport)
    page.goto(f"{studio.base_url}/login?next=/projects/{project_id}/split")
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/projects/{project_id}/split")
    return page, watch


def api_split(studio: Stack, split_id: str) -> dict[str, Any]:
    with client(studio) as api:
        return api.get(f"{API}/splits/{split_id}").json()["data"]


def test_a_split_made_with_the_form_shows_the_api_counts_in_chart_and_table(
    studio, project_id, open_page
):
    page, _ = signed_in(studio, open_page, project_id)

    split_id = make_split(page, studio.base_url, project_id, 0.6, 0.2, 0.2, name="sixty", seed=3)

    split = api_split(studio, split_id)
    assert (split["name"], split["seed"], split["strategy"]) == ("sixty", 3, "stratified")
    assert split["ratios"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    labels = sorted({label for n in split["counts"].values() for label in n})
    assert labels == ["br", "tl"]
    # The table: one row per class, one column per subset, the API's numbers.
    for label in labels:
        cells = page.locator(f'#split-counts tr[data-label="{label}"] td[data-subset]')
        expect(cells).to_have_text([str(split["counts"][s].get(label, 0)) for s in SUBSETS])
    totals = page.locator("#split-counts tfoot td[data-subset]")
    expect(totals).to_have_text([str(split["totals"][s]) for s in SUBSETS])
    # The chart: the same numbers, one bar group per class, one series per subset.
    drawn = page.evaluate(
        "() => { const c = Chart.getChart('split-chart').data;"
        " return {labels: c.labels, series: c.datasets.map(d => [d.label, d.data])}; }"
    )
    assert drawn["labels"] == labels
    assert drawn["series"] == [
        [s, [split["counts"][s].get(label, 0) for label in labels]] for s in SUBSETS
    ]


def test_a_ratio_the_api_refuses_is_shown_by_its_field(studio, project_id, open_page):
    page, watch = signed_in(studio, open_page, project_id)
    watch.expect(r"status of 422|Error Code 422 from /api/v1/splits")
    open_split_page(page, studio.base_url, project_id)

    # Ratios that do not add up to 1: the server's message under the ratios.
    fill_split_form(page, train=0.8, val=0.3, test=0.1, name="too-much")
    expect(page.locator("#ratio-sum")).to_contain_text("1.20")
    page.get_by_role("button", name="Make the split").click()
    expect(page.locator("#error-ratios")).to_contain_text("add up to 1")
    expect(page.locator("#flash")).to_contain_text("add up to 1")

    # A ratio out of range: the problem under that very field.
    fill_split_form(page, train=1.5, val=0, test=0, name="too-big")
    page.get_by_role("button", name="Make the split").click()
    expect(page.locator("#error-ratios-train")).not_to_be_empty()
    expect(page.locator("#error-ratios")).to_be_empty()
    with client(studio) as api:
        names = [
            s["name"]
            for s in api.get(f"{API}/splits?project_id={project_id}").json()["data"]["items"]
        ]
    assert "too-much" not in names and "too-big" not in names


def test_a_split_is_deleted_only_after_confirming_with_the_keyboard(studio, project_id, open_page):
    page, _ = signed_in(studio, open_page, project_id)
    split_id = make_split(page, studio.base_url, project_id, name="doomed", seed=11)
    row = page.locator(f'#split-table tr[data-split-id="{split_id}"]')

    page.get_by_role("button", name="Delete this split").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Delete the split?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("doomed")
    page.keyboard.press("Escape")  # changed one's mind: nothing happens
    expect(dialog).to_be_hidden()
    expect(row).to_be_visible()

    page.get_by_role("button", name="Delete this split").click()
    dialog.get_by_role("button", name="Delete").focus()
    page.keyboard.press("Enter")
    expect(row).to_have_count(0)
    expect(page.locator("#split-status")).to_have_text("Split doomed deleted.")
    with client(studio) as api:
        assert api.get(f"{API}/splits/{split_id}").status_code == 404


def test_a_viewer_sees_the_splits_but_no_control_to_change_them(studio, project_id, open_page):
    with client(studio) as api:
        made = api.post(
            f"{API}/splits",
            json={"project_id": project_id, "name": "seen", "ratios": {"train": 0.8, "val": 0.2}},
        )
        assert made.status_code == 201, made.text
        viewer = f"viewer-{uuid.uuid4().hex[:6]}"
        studio.create_user(viewer, "a-long-viewer-password")
        added = api.post(
            f"{API}/projects/{project_id}/members", json={"user_id": viewer, "role": "viewer"}
        )
        assert added.status_code == 201, added.text

    page, _ = signed_in(studio, open_page, project_id, user=(viewer, "a-long-viewer-password"))

    expect(
        page.locator(f'#split-table tr[data-split-id="{made.json()["data"]["id"]}"]')
    ).to_be_visible()
    expect(page.locator("#split-shown")).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart('split-chart')")
    expect(page.locator("#split-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete this split")).to_have_count(0)


def test_the_fragments_are_the_api_json_drawn(studio, project_id):
    url = f"{studio.base_url}{API}/splits?project_id={project_id}"
    as_json = httpx.get(url, headers=studio.headers())
    as_html = httpx.get(url, headers=studio.headers() | {"HX-Request": "true"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_html.headers["content-type"].startswith("text/html")
    for split in as_json.json()["data"]["items"]:
        assert f'data-split-id="{split["id"]}"' in as_html.text


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_split_page_is_accessible(studio, project_id, open_page, viewport):
    page, _ = signed_in(studio, open_page, project_id, viewport)
    open_split_page(page, studio.base_url, project_id)
    if not page.locator("#split-table").count():
        make_split(page, studio.base_url, project_id, name="for-axe")
    expect(page.locator("#split-shown")).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart('split-chart')")
    screenshot(page, "split")
    assert axe_violations(page) == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
