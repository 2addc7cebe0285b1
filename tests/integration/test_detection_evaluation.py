"""A detector's evaluation through the studio: a detection project of generated shapes, a
detector trained briefly, then evaluated on its validation subset with the best checkpoint:
the COCO figures equal the mAP its validation recorded for that epoch (one preprocessing, one
COCO evaluation), every image of the subset counts (negatives too), the worst images are the
subset's, with their boxes normalised, their thumbnails served, and the page draws them."""

from __future__ import annotations

import uuid

import pytest

from tests import shapes
from tests.stack import Stack
from tests.training_helpers import API, client, submit, wait, wait_status

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer")
DETECTOR = {"model": "ssdlite320_mobilenet_v3_large", "image_size": 64, "epochs": 1,
            "batch_size": 4, "learning_rate": 0.01, "augmentation": "none"}  # fmt: skip


def detection_split(stack: Stack, count: int) -> tuple[str, str]:
    """A detection project of ``count`` generated shape images split train/val; its ids."""
    with client(stack) as api:
        body = {"name": f"deval-{uuid.uuid4().hex[:6]}", "task_type": "detection"}
        project_id = api.post(f"{API}/projects", json=body).json()["data"]["id"]
        root = stack.imports / uuid.uuid4().hex
        shapes.write_coco(root, count, seed=3, size=64)
        body = {"project_id": project_id, "path": str(root), "format": "auto"}
        job = api.post(f"{API}/datasets/import/local", json=body).json()["data"]
        done = wait(
            lambda: (
                (d := api.get(f"{API}/datasets/import/{job['id']}").json()["data"])["state"]
                in ("completed", "failed")
                and d
            )
        )
        assert done["state"] == "completed", done
        ratios = {"train": 0.6, "val": 0.4, "test": 0.0}
        split = api.post(
            f"{API}/splits", json={"project_id": project_id, "name": "s", "ratios": ratios}
        )
        assert split.status_code == 201, split.text
        return project_id, split.json()["data"]["id"]


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:
    project_id, split_id = detection_split(stack, 12)
    resp = submit(stack, project_id, split_id, hyperparameters=DETECTOR)
    assert resp.status_code == 202, resp.text
    return wait_status(stack, resp.json()["data"]["id"], "completed", "failed", timeout=300)


@pytest.fixture(scope="module")
def evaluation(stack: Stack, trained: dict) -> dict:
    assert trained["status"] == "completed", trained
    with client(stack) as api:
        body = {"run_id": trained["id"], "checkpoint": "best", "subset": "val"}
        resp = api.post(f"{API}/evaluation/run", json=body)
        assert resp.status_code == 202, resp.text
        path = f"{API}/evaluation/{resp.json()['data']['id']}"
        return wait(
            lambda: (d := api.get(path).json()["data"])["status"] in ("completed", "failed") and d,
            timeout=180,
        )


def subset_ids(stack: Stack, project_id: str, split_id: str, subset: str) -> set[str]:
    found: set[str] = set()
    cursor = None
    with client(stack) as api:
        while True:
            params: dict[str, str | int] = {"limit": 200, "split_id": split_id, "subset": subset}
            params |= {"cursor": cursor} if cursor else {}
            page = api.get(f"{API}/datasets/{project_id}/images", params=params).json()["data"]
            found |= {item["id"] for item in page["items"]}
            if (cursor := page["next_cursor"]) is None:
                return found


def test_the_evaluation_reproduces_the_map_its_validation_recorded(stack, trained, evaluation):
    assert evaluation["status"] == "completed", evaluation
    m = evaluation["metrics"]
    best = next(e for e in trained["history"] if e["epoch"] == trained["best_epoch"])

    assert m["task"] == "detection" and evaluation["checkpoint_epoch"] == trained["best_epoch"]
    assert m["map"] == pytest.approx(best["val_map"], abs=1e-6)
    assert m["map50"] == pytest.approx(best["val_map50"], abs=1e-6)
    assert [row["label"] for row in m["per_class"]] == trained["classes"]
    assert sum(row["truths"] for row in m["per_class"]) == m["boxes"]
    assert 0.0 <= m["map"] <= m["map50"] <= 1.0


def test_every_image_of_the_subset_counts_and_the_worst_are_its_own(stack, trained, evaluation):
    m = evaluation["metrics"]
    val = subset_ids(stack, trained["project_id"], trained["split_id"], "val")

    assert m["images"] == evaluation["images"] == len(val)  # the negatives included
    assert {w["image_id"] for w in m["worst"]} <= val
    for w in m["worst"]:
        assert w["misses"] + w["false_positives"] > 0
        assert w["misses"] == sum(b["missed"] for b in w["truths"])
        assert w["false_positives"] == sum(p["false_positive"] for p in w["predictions"])
        for box in [*w["truths"], *w["predictions"]]:
            assert box["label"] in trained["classes"]
            assert 0.0 <= box["x"] <= box["x"] + box["w"] <= 1.0 + 1e-4


def test_the_page_draws_the_worst_images_over_served_thumbnails(stack, trained, evaluation):
    pid = trained["project_id"]
    with client(stack) as api:
        html = api.get(f"{API}/evaluation/{evaluation['id']}", params={"project_id": pid},
                       headers={"HX-Request": "true"}).text  # fmt: skip
        assert 'id="eval-det-metrics"' in html and 'id="eval-confusion"' not in html
        for w in evaluation["metrics"]["worst"][:3]:
            assert f'data-image-id="{w["image_id"]}"' in html
            thumbnail = api.get(f"{API}/datasets/{pid}/thumbnail/{w['image_id']}")
            assert thumbnail.status_code == 200


def test_a_confusion_cell_of_a_detectors_evaluation_is_refused_saying_why(
    stack, trained, evaluation
):
    # a detector's evaluation has no confusion matrix: asking one of its cells is a 422, not
    # an empty list that reads as "no image there"
    label = trained["classes"][0]
    with client(stack) as api:
        resp = api.get(f"{API}/evaluation/{evaluation['id']}/cell",
                       params={"true": label, "predicted": label})  # fmt: skip
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "no confusion matrix" in error["message"]
