"""The evaluation page in a real Chromium: a tiny run trained through the API is evaluated from
the page; the metrics, per-class scores and confusion matrix are the API's numbers, a cell opens
its images, the gallery holds the most confident mistakes in order, and the reliability diagram
is drawn from the evaluation's calibration bins; accessible at a laptop's and a phone's width."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import imagesets
from tests.e2e.browser import PHONE, WIDE, axe_violations, screenshot
from tests.e2e.steps_evaluation import evaluate, expect, open_cell, open_evaluation_page
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import API, client, submit, wait, wait_status

pytestmark = pytest.mark.e2e
STACK_SERVICES = ("identity", "projects", "datasets", "trainer")


def noisy_squares(root: Path) -> Path:
    """The learnable two-class squares with every third image given the other label, so a
    trained model makes confident mistakes to show."""
    imagesets.squares(root, 16)
    for label, other in (("tl", "br"), ("br", "tl")):
        for i in range(0, 16, 3):
            shutil.move(root / label / f"{label}_{i}.png", root / other / f"{label}_{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(studio: Stack) -> dict[str, str]:
    """A project, its split and a completed one-epoch smallcnn run, all through the API."""
    with client(studio) as api:
        project = api.post(f"{API}/projects", json={"name": f"eval-{uuid.uuid4().hex[:6]}"})
        pid = project.json()["data"]["id"]
        root = noisy_squares(studio.imports / uuid.uuid4().hex)
        job = api.post(f"{API}/datasets/import/local", json={"project_id": pid, "path": str(root)})
        state = f"{API}/datasets/import/{job.json()['data']['id']}"
        wait(lambda: api.get(state).json()["data"]["state"] == "completed")
        ratios = {"train": 0.5, "val": 0.2, "test": 0.3}
        split = api.post(f"{API}/splits", json={"project_id": pid, "name": "s", "ratios": ratios})
        split_id = split.json()["data"]["id"]
    answer = submit(studio, pid, split_id, hyperparameters={"epochs": 1})
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["data"]["id"]
    wait_status(studio, run_id, "completed")
    return {"project_id": pid, "split_id": split_id, "run_id": run_id}


def signed_in(
    studio: Stack, open_page: Any, project_id: str, viewport: dict[str, int] = WIDE
) -> tuple[Any, Any]:
    """A page signed in through the form, landing on the project's evaluation page."""
    page, watch = open_page(viewport=viewport)
    page.goto(f"{studio.base_url}/login?next=/projects/{project_id}/evaluation")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/projects/{project_id}/evaluation")
    return page, watch


def api_evaluation(studio: Stack, evaluation_id: str) -> dict[str, Any]:
    with client(studio) as api:
        return api.get(f"{API}/evaluation/{evaluation_id}").json()["data"]


@pytest.fixture(scope="module")
def evaluated() -> dict[str, Any]:
    """The evaluation the module's first test starts from the page, for the others to read."""
    return {}


def an_evaluation(studio: Stack, trained: dict[str, str], evaluated: dict[str, Any]) -> str:
    """The evaluation the first test made from the page, or (that test deselected) one made
    through the API."""
    if "id" not in evaluated:
        with client(studio) as api:
            body = {"run_id": trained["run_id"]}
            answer = api.post(f"{API}/evaluation/run", json=body)
            assert answer.status_code == 202, answer.text
            evaluation_id = answer.json()["data"]["id"]
        wait(lambda: api_evaluation(studio, evaluation_id)["status"] != "running")
        evaluated["id"] = evaluation_id
    return str(evaluated["id"])


def test_an_evaluation_started_in_the_page_shows_the_api_numbers(
    studio, trained, open_page, evaluated
):
    page, _ = signed_in(studio, open_page, trained["project_id"])

    evaluation_id = evaluate(page, studio.base_url, trained["project_id"], trained["run_id"])
    evaluated["id"] = evaluation_id

    e = api_evaluation(studio, evaluation_id)
    assert e["status"] == "completed" and e["subset"] == "test"
    shows_the_metrics(page, e["metrics"])
    shows_the_confusion_matrix(page, e["metrics"])
    shows_the_mistakes(page, e["metrics"]["misclassified"])
    shows_the_reliability(page, e["metrics"], e["images"])


def shows_the_metrics(page: Any, m: dict[str, Any]) -> None:
    accuracy = page.locator('#eval-metrics tr[data-metric="accuracy"] td')
    expect(accuracy).to_have_text(f"{m['accuracy'] * 100:.1f} %")
    ece = page.locator('#eval-metrics tr[data-metric="ece"] td')
    expect(ece).to_have_text(f"{m['ece']:.4f}".rstrip("0").rstrip("."))
    for row in m["per_class"]:
        cells = page.locator(f'#eval-per-class tr[data-label="{row["label"]}"] td')
        expect(cells.last).to_have_text(str(row["support"]))


def shows_the_confusion_matrix(page: Any, m: dict[str, Any]) -> None:
    labels, matrix = m["confusion_matrix"]["labels"], m["confusion_matrix"]["matrix"]
    cells = [(n, t, p) for t, row in zip(labels, matrix, strict=True)
             for p, n in zip(labels, row, strict=True)]  # fmt: skip
    for n, t, p in cells:
        cell = page.get_by_role("button", name=f"true {t} predicted {p}: {n} images")
        expect(cell).to_have_count(1)
        assert "heat-" in (cell.get_attribute("class") or "")
    # The biggest cell opens exactly its images, thumbnails loaded.
    n, t, p = max(cells)
    assert open_cell(page, t, p) == n


def shows_the_mistakes(page: Any, wrong: list[dict[str, Any]]) -> None:
    """The most confident mistakes, in the API's order."""
    assert wrong, "the noisy labels give the model mistakes to show"
    gallery = page.locator("#eval-misclassified figure")
    expect(gallery).to_have_count(min(60, len(wrong)))
    shown = [float(c) for c in gallery.evaluate_all("fs => fs.map(f => f.dataset.confidence)")]
    assert shown == sorted(shown, reverse=True)
    assert gallery.first.get_attribute("data-image-id") == wrong[0]["image_id"]


def shows_the_reliability(page: Any, m: dict[str, Any], images: int) -> None:
    """The reliability diagram: the non-empty bins and the diagonal."""
    page.wait_for_function("() => window.Chart && Chart.getChart('eval-reliability')")
    drawn = page.evaluate("() => Chart.getChart('eval-reliability').data.datasets.map(d => d.data)")
    bins = [b for b in m["calibration"] if b["count"]]
    assert drawn[0] == [{"x": b["confidence"], "y": b["accuracy"]} for b in bins]
    assert drawn[1] == [{"x": 0, "y": 0}, {"x": 1, "y": 1}]
    assert sum(b["count"] for b in m["calibration"]) == images


def test_an_earlier_evaluation_is_listed_and_reopens(studio, trained, open_page, evaluated):
    page, watch = signed_in(studio, open_page, trained["project_id"])
    # The test leaves pages at once: thumbnails still loading are cut off, as they should be.
    watch.expect(r"/thumbnail/\w+ net::ERR_ABORTED")
    evaluation_id = an_evaluation(studio, trained, evaluated)
    page.reload()
    open_evaluation_page(page, studio.base_url, trained["project_id"])
    row = page.locator(f'#eval-list-{trained["run_id"]} tr[data-evaluation-id="{evaluation_id}"]')
    expect(row).to_contain_text("completed")
    row.get_by_role("button", name="Open").click()
    expect(page.locator(f'#eval-shown[data-evaluation-id="{evaluation_id}"]')).to_be_visible()
    expect(page.locator("#eval-shown-title")).to_be_focused()
    assert f"evaluation={evaluation_id}" in page.url
    # The address reopens it.
    page.goto(page.url)
    expect(page.locator(f'#eval-shown[data-evaluation-id="{evaluation_id}"]')).to_be_visible()
    assert open_cell(page, "tl", "br") >= 0


def test_an_evaluation_that_does_not_exist_is_told_in_the_page(studio, trained, open_page):
    page, watch = signed_in(studio, open_page, trained["project_id"])
    watch.expect(r"status of 404|Error Code 404 from /api/v1/evaluation/")
    missing = "0" * 31 + "a"

    page.goto(f"{page.url}?evaluation={missing}")

    expect(page.locator("#flash")).to_contain_text("does not exist")
    expect(page.locator("#eval-result")).to_contain_text("Evaluate a run, or open one")


def test_the_fragments_are_the_api_json_drawn(studio, trained, evaluated):
    evaluation_id = an_evaluation(studio, trained, evaluated)
    url = f"{studio.base_url}{API}/evaluation/{evaluation_id}?project_id={trained['project_id']}"
    as_json = httpx.get(url, headers=studio.headers())
    as_html = httpx.get(url, headers=studio.headers() | {"HX-Request": "true"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_html.headers["content-type"].startswith("text/html")
    for row in as_json.json()["data"]["metrics"]["per_class"]:
        assert f'data-label="{row["label"]}"' in as_html.text
    cell = f"{studio.base_url}{API}/evaluation/{evaluation_id}/cell?true=tl&predicted=tl"
    items = httpx.get(cell, headers=studio.headers()).json()["data"]["items"]
    drawn = httpx.get(cell, headers=studio.headers() | {"HX-Request": "true"}).text
    assert drawn.count("<figure") == len(items)


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["wide", "phone"])
def test_the_evaluation_page_is_accessible(studio, trained, open_page, evaluated, viewport):
    page, _ = signed_in(studio, open_page, trained["project_id"], viewport)
    evaluation_id = an_evaluation(studio, trained, evaluated)
    page.goto(
        f"{studio.base_url}/projects/{trained['project_id']}/evaluation?evaluation={evaluation_id}"
    )
    expect(page.locator("#eval-shown")).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart('eval-reliability')")
    open_cell(page, "tl", "tl")
    screenshot(page, "evaluation")
    assert axe_violations(page) == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
