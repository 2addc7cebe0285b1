"""A detection project's dataset page in a real Chromium: each thumbnail shows its boxes where
its objects are (an SVG laid over the whole image, one frame per box, in its class's colour, with
its label), a negative says it is one, the health report gives the box figures, and a
thumbnail opens a viewer with the full image, its boxes and labels drawn over it and listed in
words, the grid's neighbours a key away. The
create-project form offers detection with its hint. The dataset is a small COCO file imported
through the API: images of three shapes (wide, tall, square, so that letterboxing is checked),
with one to three boxes each, and one image without boxes."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_browse import THUMB, WAIT_MS, see_thumbnails
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets")
API = "/api/v1"
#: Boxes as COCO writes them (pixels, top-left x, y, width, height) on images of these sizes.
IMAGES: dict[str, tuple[tuple[int, int], list[tuple[str, int, int, int, int]]]] = {
    "a_wide.png": ((200, 100), [("circle", 10, 20, 60, 50), ("square", 120, 0, 80, 100)]),
    "b_tall.png": ((100, 200), [("triangle", 20, 130, 50, 60)]),
    "c_square.png": (
        (120, 120),
        [("circle", 0, 0, 40, 40), ("circle", 60, 60, 50, 50), ("square", 5, 70, 30, 30)],
    ),
    "d_empty.png": ((120, 80), []),  # a negative: no object in it
}
#: How far (CSS pixels) a drawn box may be from where its object is: rounding of the layout.
NEAR_PX = 1.5
TIMES = "\u00d7"  # the list's multiplication sign


@dataclass(frozen=True)
class Seeded:
    project_id: str
    ids: dict[str, str]  # file name → image id


def coco_folder(root: Path) -> Path:
    """The images (a filled shape per box on grey) and their COCO file."""
    root.mkdir(parents=True)
    classes = sorted({box[0] for _, boxes in IMAGES.values() for box in boxes})
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    doc["categories"] = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    for image_id, (name, ((width, height), boxes)) in enumerate(sorted(IMAGES.items()), 1):
        picture = Image.new("RGB", (width, height), (128, 128, 128))
        draw = ImageDraw.Draw(picture)
        for label, x, y, w, h in boxes:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(40 * len(label) % 255, 90, 200))
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": classes.index(label) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        picture.save(root / name)
        doc["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    expect.set_options(timeout=WAIT_MS)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def seeded(studio: Stack) -> Seeded:
    """A detection project holding the COCO file's four images, only read by the tests."""
    root = coco_folder(studio.imports / uuid.uuid4().hex)
    with studio.sync_client() as client:
        body = {"name": f"boxes-{uuid.uuid4().hex[:8]}", "task_type": "detection"}
        resp = client.post(f"{API}/projects", json=body)
        assert resp.status_code == 201, resp.text
        pid = resp.json()["data"]["id"]
        body = {"project_id": pid, "path": str(root), "format": "coco"}
        resp = client.post(f"{API}/datasets/import/local", json=body)
        assert resp.status_code == 202, resp.text
        job_url = f"{API}/datasets/import/{resp.json()['data']['id']}"

        def over() -> dict[str, Any] | None:
            job = client.get(job_url).json()["data"]
            return job if job["state"] in ("completed", "failed", "cancelled") else None

        job: dict[str, Any] = wait(over, timeout=60)
        assert job["state"] == "completed", job
        items = client.get(f"{API}/datasets/{pid}/images").json()["data"]["items"]
    assert sorted(i["filename"] for i in items) == sorted(IMAGES)
    return Seeded(pid, {i["filename"]: i["id"] for i in items})


def signed_in(studio: Stack, open_page: Any, there: str, viewport: dict[str, int] = WIDE) -> Any:
    page, _ = open_page(viewport=viewport)
    page.goto(f"{studio.base_url}/login?{urlencode({'next': there})}")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{studio.base_url}{there}")
    return page


def dataset_page(studio: Stack, open_page: Any, seeded: Seeded, **kw: Any) -> Any:
    page = signed_in(studio, open_page, f"/projects/{seeded.project_id}/dataset", **kw)
    see_thumbnails(page, len(IMAGES))
    # The classes take their colours in the histogram's order once it is drawn.
    expect(page.locator("#histogram tr[data-label='circle']")).to_be_attached()
    return page


#: Where each drawn frame is on the screen, and its class and colour, in the order drawn.
FRAMES = """root => Array.from(root.querySelectorAll('rect.box-frame')).map(r => {
  const b = r.getBoundingClientRect();
  const g = r.closest('g') || r;
  return {label: g.getAttribute('data-label'), colour: getComputedStyle(r).stroke,
          left: b.left, top: b.top, width: b.width, height: b.height};
})"""


def letterboxed(area: dict[str, float], size: tuple[int, int]) -> tuple[float, float, float]:
    """Where an image of ``size`` lies inside ``area`` when fitted whole (object-fit contain):
    its left, top and scale."""
    scale = min(area["width"] / size[0], area["height"] / size[1])
    left = area["x"] + (area["width"] - size[0] * scale) / 2
    top = area["y"] + (area["height"] - size[1] * scale) / 2
    return left, top, scale


def assert_drawn_on_objects(frames: list[dict[str, Any]], image: str, area: dict[str, Any]) -> None:
    """Every box of ``image`` is drawn, in order, on its object inside ``area`` (the picture
    as the page lays it out), in its class's colour."""
    size, boxes = IMAGES[image]
    left, top, scale = letterboxed(area, size)
    assert [f["label"] for f in frames] == [b[0] for b in boxes]
    for frame, (_, x, y, w, h) in zip(frames, boxes, strict=True):
        want = (left + x * scale, top + y * scale, w * scale, h * scale)
        got = (frame["left"], frame["top"], frame["width"], frame["height"])
        assert all(abs(g - e) <= NEAR_PX for g, e in zip(got, want, strict=True)), (got, want)
    colours = {f["label"]: f["colour"] for f in frames}
    assert all(f["colour"] == colours[f["label"]] for f in frames)


def test_thumbnails_draw_each_box_on_its_object_and_mark_the_negative(studio, seeded, open_page):
    page = dataset_page(studio, open_page, seeded)
    colours: dict[str, str] = {}
    for name, (_, boxes) in IMAGES.items():
        item = page.locator(f"{THUMB}[data-filename='{name}']")
        img = item.locator("img")
        area = img.bounding_box()
        assert area is not None
        frames = item.evaluate(FRAMES)
        assert len(frames) == len(boxes)
        if boxes:
            assert_drawn_on_objects(frames, name, area)
            count = f"{len(boxes)} box" + ("es" if len(boxes) > 1 else "")
            expect(item.locator(".thumb-box-count")).to_have_text(count)
            expect(img).to_have_attribute("alt", re.compile(f"{count}: "))
            expect(item.locator("text.box-tag").first).to_have_text(boxes[0][0])
            colours |= {f["label"]: f["colour"] for f in frames}
        else:
            expect(item.locator(".thumb-negative-badge")).to_have_text("negative")
            expect(img).to_have_attribute("alt", f"{name}, a negative: no object in it")
            expect(item.locator("svg")).to_have_count(0)
    assert len(set(colours.values())) == len(colours) == 3, colours  # one colour per class
    facts = page.locator("#box-facts")  # the health report's box figures
    expect(facts).to_contain_text("6 (1 negative: images with no object)")
    expect(facts).to_contain_text("0 to 3, median 1.5")
    expect(facts).to_contain_text("1 small (under 32² px), 5 medium (under 96² px), 0 large")
    expect(page.locator("#boxes-by-class tbody tr")).to_have_text(
        ["circle3", "square2", "triangle1"]  # a class, then its boxes
    )
    screenshot(page, "dataset-detection-boxes")
    assert axe_violations(page) == []

    # An editor may delete a detection image, not relabel it: its boxes say its classes.
    page.get_by_role("button", name="Edit a_wide.png").click()
    dialog = page.get_by_role("dialog", name="Edit image")
    expect(dialog.get_by_role("button", name="Delete image…")).to_be_focused()
    expect(dialog.locator("#image-dialog-boxes")).to_contain_text("correct the annotation file")
    expect(dialog.get_by_label("Label")).to_have_count(0)
    expect(dialog.get_by_role("button", name="Save label")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def viewer_frames(page: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The viewer's drawn frames and where its picture is, once that picture has loaded."""
    page.wait_for_function(
        "() => { const i = document.getElementById('viewer-image');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    area = page.locator("#viewer-image").bounding_box()
    assert area is not None
    return page.locator("#viewer-stage").evaluate(FRAMES), area


def open_viewer(page: Any, name: str) -> Any:
    """Click ``name``'s thumbnail; the viewer, its picture loaded and its boxes drawn on their
    objects in the grid's colours."""
    opener = page.locator(f"{THUMB}[data-filename='{name}'] a.thumb-link")
    in_grid = {f["label"]: f["colour"] for f in opener.evaluate(FRAMES)}
    opener.click()
    viewer = page.get_by_role("dialog", name=name)
    expect(viewer).to_be_visible()
    frames, area = viewer_frames(page)
    size = IMAGES[name][0]
    assert page.locator("#viewer-image").evaluate("i => i.naturalWidth") == size[0]  # not the thumb
    assert_drawn_on_objects(frames, name, area)
    assert {f["label"]: f["colour"] for f in frames} == in_grid
    return viewer


def test_a_thumbnail_opens_the_viewer_with_the_full_image_its_boxes_and_labels(
    studio, seeded, open_page
):
    page = dataset_page(studio, open_page, seeded)
    viewer = open_viewer(page, "a_wide.png")
    expect(viewer.locator(".viewer-tag")).to_have_text(["circle", "square"])
    expect(viewer.locator("#viewer-boxes li")).to_have_text(
        [f"circle: at 10, 20, 60 {TIMES} 50 px", f"square: at 120, 0, 80 {TIMES} 100 px"]
    )
    expect(page.locator("#viewer-prev")).to_be_disabled()
    screenshot(page, "dataset-detection-viewer")
    assert axe_violations(page) == []

    page.keyboard.press("ArrowRight")  # the grid's next image: the tall one
    expect(page.get_by_role("dialog", name="b_tall.png")).to_be_visible()
    frames, area = viewer_frames(page)
    assert_drawn_on_objects(frames, "b_tall.png", area)
    page.get_by_role("button", name="Next →").click()
    page.get_by_role("button", name="Next →").click()
    expect(page.get_by_role("dialog", name="d_empty.png")).to_be_visible()
    expect(page.locator("#viewer-said")).to_have_text("d_empty.png, a negative: no object in it")
    expect(page.locator("#viewer-stage rect")).to_have_count(0)
    expect(page.locator("#viewer-boxes")).to_be_hidden()
    expect(page.locator("#viewer-next")).to_be_disabled()

    page.keyboard.press("Escape")
    expect(page.locator("#image-viewer")).to_be_hidden()
    expect(page.locator(f"{THUMB}[data-filename='d_empty.png'] a.thumb-link")).to_be_focused()


def test_the_viewer_fits_a_phone(studio, seeded, open_page):
    page = dataset_page(studio, open_page, seeded, viewport=PHONE)
    open_viewer(page, "b_tall.png")
    area = page.locator("#viewer-image").bounding_box()
    assert area is not None and area["x"] >= 0 and area["x"] + area["width"] <= PHONE["width"]
    screenshot(page, "dataset-detection-viewer")
    assert axe_violations(page) == []


def test_the_fragment_draws_the_boxes_of_the_browse_api_and_json_keeps_them(studio, seeded):
    url = f"{API}/datasets/{seeded.project_id}/images"
    with studio.sync_client() as client:
        items = client.get(url).json()["data"]["items"]
        html = client.get(url, headers={"HX-Request": "true"}).text
    wide = next(i for i in items if i["filename"] == "a_wide.png")
    assert [(b["label"], b["x"], b["w"]) for b in wide["boxes"]] == [
        ("circle", 0.05, 0.3),
        ("square", 0.6, 0.4),
    ]
    assert html.count('<g class="box ') == sum(len(b) for _, b in IMAGES.values())
    assert 'viewBox="0 0 200 100"' in html and 'x="120.00" y="0.00" width="80.00"' in html


def test_the_create_form_offers_detection_with_its_hint(studio):
    with studio.sync_client() as client:
        html = client.get("/projects", headers={"Accept": "text/html"}).text
    assert '<option value="detection">Detection</option>' in html
    assert 'aria-describedby="task-type-hint error-task_type"' in html
    assert re.search(
        r'id="task-type-hint">Detection finds and boxes each object: import COCO', html
    )
