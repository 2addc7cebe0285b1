"""The dataset page's browsing half in a real Chromium: thumbnails that all load and page in as
the grid scrolls, filters by label and split subset, the class histogram, the health report's
duplicate groups, relabelling and deleting through the dialog, a reload when an import ends, and
the page at a laptop's and a phone's width. Also the fragments themselves, without a browser:
the images route answers htmx with thumbnails and a sentinel for the next page, scripts JSON."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import expect

from tests import imagesets
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_browse import (
    THUMB,
    WAIT_MS,
    delete_image,
    filter_by_label,
    filters,
    histogram,
    open_image_dialog,
    relabel,
    see_all_thumbnails,
    see_thumbnails,
    shown_total,
    thumb,
)
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets")
API = "/api/v1"
#: Images per page of the grid in these tests: small, so that scrolling pages several times.
PAGE = 4


@dataclass(frozen=True)
class BrowseSet:
    project_id: str
    split_id: str
    train: int  # images in the split's train subset


def new_project(studio: Stack, prefix: str) -> str:
    with studio.sync_client() as client:
        resp = client.post(f"{API}/projects", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


def import_folder(studio: Stack, project_id: str, root: Path) -> dict[str, Any]:
    """Import ``root`` through the API and wait until it is over; its job."""
    with studio.sync_client() as client:
        body = {"project_id": project_id, "path": str(root)}
        resp = client.post(f"{API}/datasets/import/local", json=body)
        assert resp.status_code == 202, resp.text
        job_url = f"{API}/datasets/import/{resp.json()['data']['id']}"

        def over() -> dict[str, Any] | None:
            job = client.get(job_url).json()["data"]
            return job if job["state"] in ("completed", "failed", "cancelled") else None

        job: dict[str, Any] = wait(over, timeout=60)
    assert job["state"] == "completed", job
    return job


def duplicated_folder(root: Path) -> Path:
    """7 cats and 5 dogs of distinct noise, an exact copy of cat_0 (not imported), a bigger
    copy of dog_1 (a near-duplicate, imported) and an unreadable file: 13 images."""
    imagesets.folder(root, {"cat": 7, "dog": 5})
    (root / "cat" / "zz_copy.png").write_bytes((root / "cat" / "cat_0.png").read_bytes())
    imagesets.noise(8).resize((48, 48)).save(root / "dog" / "dog_1_big.png")  # dog_1 is seed 8
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return root


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[Stack]:
    yield stack


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    """What the page shows after the studio answered may take a while on a loaded machine:
    this module's expectations wait up to ``WAIT_MS`` (Playwright's default, None, after)."""
    expect.set_options(timeout=WAIT_MS)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def browse_set(studio: Stack) -> BrowseSet:
    """A project of 13 images with duplicates and a split, only read by the tests."""
    project_id = new_project(studio, "browse")
    job = import_folder(studio, project_id, duplicated_folder(studio.imports / uuid.uuid4().hex))
    assert job["report"]["imported"] == 13, job["report"]
    with studio.sync_client() as client:
        body = {
            "project_id": project_id,
            "name": "s",
            "ratios": {"train": 0.5, "val": 0.5, "test": 0.0},
        }
        resp = client.post(f"{API}/splits", json=body)
    assert resp.status_code == 201, resp.text
    split = resp.json()["data"]
    return BrowseSet(project_id, split["id"], split["totals"]["train"])


def signed_in(
    studio: Stack,
    open_page: Any,
    project_id: str,
    viewport: dict[str, int] = WIDE,
    user: tuple[str, str] = (ADMIN, ADMIN_PASSWORD),
    prepare: Callable[[Any], None] | None = None,
    **query: str | int,
) -> tuple[Any, Any]:
    """A page signed in through the form, which leads straight on to the project's dataset
    page with ``query`` (``limit``: images per page), its first images shown. ``prepare`` gets
    the page first (to route its requests, say)."""
    page, watch = open_page(viewport=viewport)
    if prepare:
        prepare(page)
    there = f"/projects/{project_id}/dataset" + (f"?{urlencode(query)}" if query else "")
    page.goto(f"{studio.base_url}/login?{urlencode({'next': there})}")
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{studio.base_url}{there}")
    expect(page.locator("#browse-total")).to_have_text(re.compile(r"\d+ images?"))
    return page, watch


# --- the fragments, without a browser ---------------------------------------------------------


def test_the_images_route_answers_htmx_with_thumbnails_and_scripts_with_json(studio, browse_set):
    pid, split = browse_set.project_id, browse_set.split_id
    url = f"{API}/datasets/{pid}/images"
    with studio.sync_client() as client:
        query = {"limit": PAGE, "label": "cat"}
        html = client.get(url, params=query, headers={"HX-Request": "true"})
        data = client.get(url, params=query).json()["data"]
        assert html.headers["content-type"].startswith("text/html")
        for item in data["items"]:
            assert f"/api/v1/datasets/{pid}/thumbnail/{item['id']}" in html.text
            assert f'alt="{item["filename"]}, labelled cat"' in html.text
        # the sentinel asks for the next page with the same filter and the answer's cursor
        sentinel = re.search(r'<li class="more muted" hx-get="([^"]+)"', html.text)
        assert sentinel is not None
        following = httpx.URL(sentinel.group(1).replace("&amp;", "&"))
        assert following.params["cursor"] == data["next_cursor"]
        assert following.params["label"] == "cat" and following.params["limit"] == str(PAGE)
        assert 'data-total="7"' in html.text  # 7 cats: the exact copy was not imported
        shown = client.get(f"{API}/datasets/{pid}/thumbnail/{data['items'][0]['id']}")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        # with a split, each image says its subset, in the JSON and in the fragment
        in_split = client.get(url, params={"split_id": split, "limit": 500}).json()["data"]
        subsets = [item["subset"] for item in in_split["items"]]
        assert sorted(set(subsets)) == ["train", "val"] and len(subsets) == 13
        trained = client.get(
            url,
            params={"split_id": split, "subset": "train", "limit": 500},
            headers={"HX-Request": "true"},
        ).text
        assert trained.count('class="badge run thumb-subset">train<') == browse_set.train


def test_the_summary_and_health_routes_answer_htmx_with_the_histogram_and_groups(
    studio, browse_set
):
    pid = browse_set.project_id
    with studio.sync_client() as client:
        hx = {"HX-Request": "true"}
        histogram_html = client.get(f"{API}/datasets/{pid}", headers=hx).text
        health_html = client.get(f"{API}/datasets/{pid}/health", headers=hx).text
        assert client.get(f"{API}/datasets/{pid}").json()["data"]["classes"] == {
            "cat": 7,
            "dog": 6,
        }
    assert 'data-label="cat" data-count="7"' in histogram_html
    assert 'class="hist-fill w-100"' in histogram_html  # cat, the largest
    assert 'class="hist-fill w-85"' in histogram_html  # dog: 6/7 of it
    assert "cat/zz_copy.png" in health_html and "copy, not imported" in health_html
    assert "dog/dog_1.png" in health_html and "dog/dog_1_big.png" in health_html
    assert "dog/broken.png" in health_html


# --- in the browser ---------------------------------------------------------------------------


def test_thumbnails_load_and_scrolling_brings_every_page(studio, browse_set, open_page):
    page, _ = signed_in(studio, open_page, browse_set.project_id, limit=PAGE)
    assert shown_total(page) == 13
    # the first page is there, then each scroll to the grid's end brings the next
    assert see_thumbnails(page, PAGE) >= PAGE
    assert see_all_thumbnails(page) == 13
    names = page.locator(THUMB).evaluate_all("els => els.map(e => e.dataset.filename)")
    assert names == sorted(names) and len(set(names)) == 13
    assert "cat/zz_copy.png" not in names  # the exact copy was never imported
    broken = page.locator(f"{THUMB} img").evaluate_all(
        "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
    )
    assert broken == []
    expect(page.locator(f"{THUMB} img").first).to_have_attribute(
        "alt", re.compile(r"^cat/cat_0\.png, labelled cat$")
    )
    screenshot(page, "dataset-browse")
    assert axe_violations(page) == []


def test_filters_by_label_and_split_subset_and_the_histogram_counts(studio, browse_set, open_page):
    page, _ = signed_in(studio, open_page, browse_set.project_id, limit=PAGE)
    assert histogram(page) == {"cat": 7, "dog": 6}
    filter_by_label(page, "dog")
    assert shown_total(page) == 6
    assert see_all_thumbnails(page) == 6
    assert "label=dog" in page.url  # the filter is kept in the page's address
    # a split's subset: every thumbnail says it is in train, as many as the split put there
    filters(page).get_by_label("Split", exact=True).select_option(browse_set.split_id)
    filters(page).get_by_label("Subset", exact=True).select_option("train")
    expect(page.locator('#browse-total[data-subset="train"]')).to_be_attached()
    filter_by_label(page, "")
    assert shown_total(page) == browse_set.train
    see_all_thumbnails(page)
    badges = page.locator(f"{THUMB} .thumb-subset").all_inner_texts()
    assert badges == ["train"] * browse_set.train
    # a class's name in the histogram shows only its images
    page.get_by_role("button", name="Show only cat images").click()
    expect(page.locator('#browse-total[data-label="cat"]')).to_be_attached()
    expect(filters(page).get_by_label("Label", exact=True)).to_have_value("cat")
    # the address keeps the filters: opened again, the page shows the same images
    page.reload()
    expect(page.locator('#browse-total[data-label="cat"][data-subset="train"]')).to_be_attached()
    expect(filters(page).get_by_label("Split", exact=True)).to_have_value(browse_set.split_id)
    expect(filters(page).get_by_label("Subset", exact=True)).to_have_value("train")
    expect(filters(page).get_by_label("Label", exact=True)).to_have_value("cat")
    expect(page.locator(f'{THUMB}:not([data-label="cat"])')).to_have_count(0)


def test_health_shows_duplicate_groups_as_thumbnails(studio, browse_set, open_page):
    page, _ = signed_in(studio, open_page, browse_set.project_id)
    exact = page.locator("#exact-duplicates li.health-group")
    expect(exact).to_have_count(1)
    expect(exact.locator("figure")).to_have_count(2)  # the kept image and its copy, side by side
    expect(exact).to_contain_text("cat/cat_0.png")
    expect(exact).to_contain_text("cat/zz_copy.png")
    near = page.locator("#near-duplicates li.health-group")
    expect(near).to_have_count(1)
    expect(near.get_by_role("img", name=re.compile(r"^dog\/dog_1(_big)?\.png"))).to_have_count(2)
    expect(page.locator("#corrupt-files")).to_contain_text("dog/broken.png")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#health img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )


def test_relabel_and_delete_update_the_grid_and_the_histogram(studio, open_page):
    project_id = new_project(studio, "edit")
    page, watch = signed_in(studio, open_page, project_id)
    # an empty dataset says so in each part, then an import that ends fills them all
    expect(page.locator("#thumbs")).to_contain_text("No images yet")
    expect(page.locator("#histogram")).to_contain_text("No images yet")
    expect(page.locator("#health")).to_contain_text("The dataset has no images.")
    root = imagesets.folder(studio.imports / uuid.uuid4().hex, {"a": 3, "b": 2}, start=100)
    import_folder(studio, project_id, root)
    page.evaluate("document.dispatchEvent(new CustomEvent('dataset:changed'))")
    see_thumbnails(page, 5)
    expect(page.locator("#histogram-table tbody tr")).to_have_count(2)
    assert histogram(page) == {"a": 3, "b": 2}
    # relabel: the thumbnail says so and the histogram moves one image
    relabel(page, "a/a_0.png", "b")
    expect(page.locator("#histogram-table tr[data-label='b']")).to_have_attribute("data-count", "3")
    assert histogram(page) == {"a": 2, "b": 3}
    expect(page.get_by_role("img", name="a/a_0.png, labelled b")).to_be_visible()
    # an empty label is refused by the server and said next to the field
    watch.expect(r"status of 422")
    dialog = open_image_dialog(page, "a/a_1.png")
    dialog.get_by_label("Label").fill("")
    dialog.get_by_role("button", name="Save label").click()
    expect(dialog.locator("#error-label")).not_to_be_empty()
    page.keyboard.press("Escape")  # the dialog closes by keyboard, focus back on its button
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Edit a/a_1.png")).to_be_focused()
    # delete: the thumbnail leaves the grid, the histogram and total follow
    delete_image(page, "b/b_0.png")
    expect(page.locator("#histogram-table tr[data-label='b']")).to_have_attribute("data-count", "2")
    assert shown_total(page) == 4 and page.locator(THUMB).count() == 4
    # an import that ends ("dataset:changed") reloads the grid and the histogram
    more = imagesets.folder(studio.imports / uuid.uuid4().hex, {"c": 2}, start=200)
    import_folder(studio, project_id, more)
    page.evaluate("document.dispatchEvent(new CustomEvent('dataset:changed'))")
    expect(page.locator("#histogram-table tr[data-label='c']")).to_have_attribute("data-count", "2")
    expect(page.locator("#browse-total")).to_have_attribute("data-total", "6")
    expect(thumb(page, "c/c_1.png")).to_have_count(1)
    expect(
        filters(page).get_by_label("Label", exact=True).locator("option[value='c']")
    ).to_have_count(1)
    # relabelled out of the label shown, an image leaves the filtered grid
    filter_by_label(page, "c")
    relabel(page, "c/c_0.png", "a")
    expect(thumb(page, "c/c_0.png")).to_have_count(0)
    expect(page.locator("#browse-total")).to_have_text("1 image matches")
    expect(page.locator("#histogram-table tr[data-label='c']")).to_have_attribute("data-count", "1")


#: What the gateway answers htmx when the datasets service does not answer (the error fragment).
UNANSWERED = (
    '<div id="flash" class="flash" role="status" aria-live="polite" hx-swap-oob="true">'
    '<p class="error" role="alert">The datasets service did not answer in time.</p></div>'
)


def test_a_part_that_fails_says_so_in_its_place_and_can_be_asked_again(
    studio, browse_set, open_page
):
    health = re.compile(r".*/api/v1/datasets/[0-9a-f]+/health$")

    def unanswered(route: Any) -> None:
        headers = {"HX-Reswap": "none"}
        route.fulfill(status=503, content_type="text/html", body=UNANSWERED, headers=headers)

    page, watch = signed_in(
        studio, open_page, browse_set.project_id, prepare=lambda p: p.route(health, unanswered)
    )
    watch.expect(r"503")
    part = page.locator("#health .browse-failed")
    expect(part).to_contain_text("The health report could not be made.")
    expect(page.locator("#flash")).to_contain_text("did not answer in time")
    see_thumbnails(page, 13)  # the rest of the page works meanwhile
    page.unroute(health)
    part.get_by_role("button", name="Try again").click()
    expect(page.locator("#near-duplicates li.health-group")).to_have_count(1)


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_browsing_half_is_accessible_with_its_dialog(studio, browse_set, open_page, viewport):
    page, _ = signed_in(studio, open_page, browse_set.project_id, viewport, limit=PAGE)
    see_thumbnails(page, PAGE)
    expect(page.locator("#near-duplicates")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    screenshot(page, "dataset-browse-health")
    assert axe_violations(page) == []
    dialog = open_image_dialog(page, "cat/cat_0.png")
    expect(dialog.get_by_label("Label")).to_be_focused()
    expect(dialog.get_by_label("Label")).to_have_value("cat")
    screenshot(page, "dataset-browse-dialog")
    assert axe_violations(page) == []
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()


def test_a_viewer_browses_without_edit_controls(studio, browse_set, open_page):
    user = (f"viewer{uuid.uuid4().hex[:6]}", "viewer-password-123")
    studio.create_user(*user)
    with studio.sync_client() as client:
        body = {"user_id": user[0], "role": "viewer"}
        resp = client.post(f"{API}/projects/{browse_set.project_id}/members", json=body)
    assert resp.status_code == 201, resp.text
    page, _ = signed_in(studio, open_page, browse_set.project_id, user=user)
    see_thumbnails(page, 13)
    expect(page.get_by_role("button", name=re.compile(r"^Edit "))).to_have_count(0)
    expect(page.locator("#image-dialog")).to_have_count(0)
    assert histogram(page) == {"cat": 7, "dog": 6}
