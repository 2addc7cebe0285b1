"""The export page in a real Chromium: export a trained run, see its parity pass and its latency,
download it and check the file against the sha256 shown, try it by dropping an image, and be
told clearly what is wrong with a file that is not one; the page's fragments without a browser.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from contracts import exports as x
from services.gateway.api.exports import predictions_body
from services.gateway.pages.templating import number
from tests import imagesets
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot, sign_in
from tests.e2e.steps_export import download, drop, export_run, predict
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import API, client, learnable_split, submit, wait, wait_status

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets", "trainer", "exporter")
HX = {"HX-Request": "true"}
FINISHED = ("completed", "failed")


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, Any]:
    """A project with a small run trained to the end (two epochs of the smallest model)."""
    project_id, split_id = learnable_split(stack, per_class=16)
    resp = submit(stack, project_id, split_id, hyperparameters={"epochs": 2})
    assert resp.status_code == 202, resp.text
    return wait_status(stack, resp.json()["data"]["id"], "completed")


@pytest.fixture(scope="module")
def exported(stack: Stack, trained: dict[str, Any]) -> dict[str, Any]:
    """An ONNX export of the run made through the API, finished."""
    with client(stack) as api:
        resp = api.post(f"{API}/export/run", json={"run_id": trained["id"], "format": "onnx"})
        assert resp.status_code == 202, resp.text
        path = f"{API}/export/{resp.json()['data']['id']}"
        done: dict[str, Any] = wait(
            lambda: (d := api.get(path).json()["data"])["status"] in FINISHED and d
        )
    assert done["status"] == "completed", done
    return done


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images the model never saw, one of each class, and files that are not images."""
    root = imagesets.squares(tmp_path_factory.mktemp("try"), per_class=1, start=900)
    return {"tl": root / "tl" / "tl_0.png", "br": root / "br" / "br_0.png"}


def page_of(trained: dict[str, Any]) -> str:
    return f"/projects/{trained['project_id']}/export"


def api_top_label(stack: Stack, export_id: str, path: Path) -> str:
    """What the API itself says the top class of ``path`` is."""
    with client(stack) as api:
        files = {"file": (path.name, path.read_bytes(), "image/png")}
        resp = api.post(f"{API}/export/{export_id}/predict", files=files)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"]["predictions"][0][0]["label"])


def test_export_see_parity_and_latency_download_and_predict(stack, trained, images, open_page):
    page, watch = open_page(viewport=WIDE)
    sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
    # Given a trained run, when it is exported from the page
    export_id = export_run(page, stack.base_url, trained["project_id"], trained["id"])
    # then its parity passed and its latency is shown, as the API says
    with client(stack) as api:
        truth = api.get(f"{API}/export/{export_id}").json()["data"]
    assert truth["status"] == "completed" and truth["parity"]["passed"] is True
    expect(page.locator("#export-status")).to_have_text("completed")
    expect(page.locator("#parity-badge")).to_have_text("passed")
    expect(page.locator("#parity-top1")).to_have_text("100.0 %")
    latency = page.locator("#latency-table")
    expect(latency).to_contain_text("1 image")
    expect(latency).to_contain_text(f"{number(truth['latency']['exported_b1'], 2)} ms")
    expect(page.locator(f"#export-row-{export_id}")).to_contain_text("passed")
    # the file downloaded is the one the sha256 shown names
    path, shown = download(page)
    assert shown == truth["sha256"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == shown
    expect(page.locator("#bundle-sha256")).to_have_text(truth["bundle_sha256"])
    with page.expect_download() as bundle:
        page.get_by_role("link", name=re.compile(r"^Download the bundle")).click()
    assert bundle.value.suggested_filename.endswith("-bundle.zip")
    bundle_bytes = Path(bundle.value.path()).read_bytes()
    assert hashlib.sha256(bundle_bytes).hexdigest() == truth["bundle_sha256"]
    # an image chosen with the file input, and one dropped, get the top class the API gives
    assert predict(page, images["tl"]) == api_top_label(stack, export_id, images["tl"])
    assert drop(page, images["br"]) == api_top_label(stack, export_id, images["br"])
    expect(page.locator("#predict-preview")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("#predict-bars li")).to_have_count(len(trained["classes"]))
    screenshot(page, "export")
    assert axe_violations(page) == []
    _files_that_are_not_images_are_refused_clearly(page, watch)


def _files_that_are_not_images_are_refused_clearly(page: Any, watch: Any) -> None:
    chooser = page.get_by_label("Choose an image")
    error = page.locator("#predict-error")
    # a text file: refused before it is sent
    chooser.set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}
    )
    expect(error).to_contain_text("notes.txt is not an image")
    expect(page.locator("#predict-result")).to_be_hidden()
    # a file that says it is a PNG but is not: the exported model's service refuses it
    watch.expect(r"status of 422|Error Code 422")
    chooser.set_input_files(
        {"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG but not really"}
    )
    expect(error).to_contain_text("Could not predict broken.png")
    expect(error).to_contain_text("not a readable image")
    # too large to send
    chooser.set_input_files(
        {"name": "huge.png", "mimeType": "image/png", "buffer": b"\0" * (7 * 1024 * 1024)}
    )
    expect(error).to_contain_text("huge.png is too large")
    screenshot(page, "export-error")


def test_the_page_at_a_phones_width_shows_an_export_and_is_accessible(
    stack, trained, exported, images, open_page
):
    page, _ = open_page(viewport=PHONE)
    sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{stack.base_url}{page_of(trained)}?export_id={exported['id']}")
    expect(page.locator("#parity-badge")).to_have_text("passed")
    expect(page.locator("#export-sha256")).to_have_text(exported["sha256"])
    assert predict(page, images["br"]) == api_top_label(stack, exported["id"], images["br"])
    assert sideways(page) == []
    screenshot(page, "export")
    assert axe_violations(page) == []


def sideways(page: Any) -> list[str]:
    """Nothing when the page fits its width; else how far it scrolls sideways and the elements
    that stick out past its right edge, innermost first."""
    return list(
        page.evaluate(
            """() => {
            const over = document.documentElement.scrollWidth - window.innerWidth;
            if (over <= 0) { return []; }
            const out = ["the page scrolls sideways by " + over + "px"];
            for (const el of document.querySelectorAll("main *")) {
              const box = el.getBoundingClientRect();
              if (box.right > window.innerWidth + 1) {
                out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
                  + "." + el.className + " right=" + Math.round(box.right));
              }
            }
            return out.slice(0, 1).concat(out.slice(1).reverse().slice(0, 10));
        }"""
        )
    )


def test_an_export_the_server_refuses_says_why_next_to_the_field(stack, trained, open_page):
    page, watch = open_page(viewport=WIDE)
    watch.expect(r"status of 422|Error Code 422")
    sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{stack.base_url}{page_of(trained)}?run_id={trained['id']}")
    expect(page.get_by_label("Run", exact=True)).to_have_value(trained["id"])
    # a format the exporter does not write (as an older page or a script might send)
    page.evaluate(
        "() => { const s = document.getElementById('export-format');"
        " s.add(new Option('TFLite', 'tflite')); s.value = 'tflite'; }"
    )
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("#error-format")).to_contain_text("format must be one of onnx")
    expect(page.locator("#flash")).to_contain_text("format must be one of")
    expect(page.locator("#export-detail")).to_have_attribute("data-status", "none")


def test_a_project_without_runs_says_what_to_do_first(stack, open_page):
    with client(stack) as api:
        name = f"empty-{uuid.uuid4().hex[:6]}"
        project_id = api.post(f"{API}/projects", json={"name": name}).json()["data"]["id"]
    page, watch = open_page(viewport=WIDE)
    sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
    page.goto(f"{stack.base_url}/projects/{project_id}/export")
    expect(page.locator("#no-runs")).to_contain_text("Train a model")
    expect(page.locator("#exports-empty")).to_have_text("No exports yet.")
    expect(page.locator("#predict-zone")).to_be_hidden()
    # an export named in the address that is not there: said, not loaded forever
    watch.expect(r"status of 404|Error Code 404")
    page.goto(f"{stack.base_url}/projects/{project_id}/export?export_id={'0' * 31}a")
    expect(page.locator("#flash")).to_contain_text("does not exist")
    expect(page.locator("#export-detail")).to_contain_text("That export cannot be shown")


def test_the_exports_list_is_one_route_for_scripts_and_the_page(stack, trained, exported):
    headers = stack.headers()
    url = f"{stack.base_url}{API}/export"
    by_project = {"project_id": trained["project_id"]}
    as_json = httpx.get(url, params=by_project, headers=headers)
    assert as_json.status_code == 200
    ids = [e["id"] for e in as_json.json()["data"]["items"]]
    assert exported["id"] in ids
    by_run = httpx.get(url, params={"run_id": trained["id"]}, headers=headers).json()
    assert [e["id"] for e in by_run["data"]["items"]] == ids
    as_html = httpx.get(url, params=by_project, headers=headers | HX)
    assert as_html.headers["content-type"].startswith("text/html")
    assert f'id="export-row-{exported["id"]}"' in as_html.text
    one = httpx.get(f"{url}/{exported['id']}", headers=headers | HX)
    assert exported["sha256"] in one.text and 'id="parity-badge"' in one.text
    neither = httpx.get(url, headers=headers)
    assert neither.status_code == 422
    assert neither.json()["error"]["field"] == "run_id"
    stranger = httpx.get(url, params={"project_id": "0" * 31 + "a"}, headers=headers)
    assert stranger.status_code == 404


def test_a_detectors_boxes_are_drawn_on_the_dropped_image(stack, trained, exported, open_page):
    """The page given a detector's answer (the gateway's own shape, from ``predictions_body``;
    the route is answered in the browser so the test needs no trained detector): each box is
    drawn over the image where its normalised coordinates put it, and listed in words."""
    boxes = [
        x.DetectedBox(label="circle", score=0.91, x=0.1, y=0.2, w=0.5, h=0.25),
        x.DetectedBox(label="square", score=0.42, x=0.6, y=0.6, w=0.3, h=0.3),
    ]
    answer = x.Predictions(export_id=exported["id"], results=[[]], task="detection", boxes=[boxes])
    body = {"status": "ok", "data": predictions_body(answer)}
    page, _ = open_page(viewport=WIDE)
    sign_in(page, stack.base_url, ADMIN, ADMIN_PASSWORD)
    page.route("**/predict?*", lambda route: route.fulfill(json=body))
    page.goto(f"{stack.base_url}{page_of(trained)}?export_id={exported['id']}")
    expect(page.locator("#parity-badge")).to_have_text("passed")
    wide = {"name": "wide.png", "mimeType": "image/png", "buffer": _png(200, 100)}
    page.get_by_label("Choose an image").set_input_files(wide)
    expect(page.locator("#predict-top-label")).to_have_text("2 boxes")
    expect(page.locator("#predict-top")).to_contain_text("Found: 2 boxes")
    expect(page.locator("#predict-top-score")).to_contain_text("circle, 91.0 %")
    rects = page.locator("#predict-boxes rect")
    expect(rects).to_have_count(2)
    expect(page.locator("#predict-bars li")).to_have_count(2)
    expect(page.locator("#predict-bars li").first).to_contain_text("circle")
    image = page.locator("#predict-preview").bounding_box()
    first = rects.first.bounding_box()
    assert image and first
    # the box sits where (0.1, 0.2, 0.5 x 0.25) of the image is, whatever size it is shown at
    assert first["x"] - image["x"] == pytest.approx(0.1 * image["width"], abs=3)
    assert first["y"] - image["y"] == pytest.approx(0.2 * image["height"], abs=3)
    assert first["width"] == pytest.approx(0.5 * image["width"], abs=4)
    assert image["width"] == pytest.approx(2 * image["height"], abs=3)  # its own shape
    screenshot(page, "export-boxes")
    assert axe_violations(page) == []


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()
