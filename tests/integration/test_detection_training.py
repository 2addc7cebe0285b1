"""Training a detector against the running studio: a detection project's COCO import of
generated coloured shapes (``tests/shapes.py``), split, trained on the CPU by the trainer
service; its epochs carry the loss components and the validation mAP, its best epoch is its
best mAP, it learns well above chance, and it stops and resumes like any run. A detector on a
classification project (and a classifier on a detection project) is refused with the field.

Sizes: ``make test`` stops and resumes a two-epoch run on 60 images (whether a detector can fit
images at all is the engine's unit test, tests/unit/trainer/test_detection.py). The learning
scenario is ``soak`` (``make soak``): 160 images of each of two generated data sets, 12 epochs
each; measured: see ``LEARNS``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import shapes
from tests.stack import Stack
from tests.training_helpers import API, client, run, submit, wait, wait_status

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer")
DETECTOR = "ssdlite320_mobilenet_v3_large"
#: Settings measured to learn the shapes from scratch on one CPU thread (engine alone, 45
#: training images: mAP@.5 0.62 at 96 px in 20 epochs, 0.79 at 128 px in 15; with 120
#: training images, 0.61 at 96 px in 12 epochs). AdamW with onecycle's warm-up; faster R-CNN
#: reached 0.09 in 7 epochs at 3 s a batch of 4, ssdlite trains a batch in 0.3 s.
LEARNS: dict[str, Any] = {
    "model": DETECTOR,
    "epochs": 12,
    "batch_size": 4,
    "learning_rate": 0.003,
    "optimizer": "adamw",
    "schedule": "onecycle",
    "image_size": 128,
    "augmentation": "light",
    "seed": 3,
}


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    """A detection project with a train/val split of 60 generated shapes."""
    return shapes_split(stack, 60, seed=16)


def shapes_split(stack: Stack, count: int, *, seed: int) -> tuple[str, str]:
    """A new detection project with a 3:1 train/val split of ``count`` generated shapes."""
    with client(stack) as api:
        body = {"name": f"det-{uuid.uuid4().hex[:6]}", "task_type": "detection"}
        project_id = api.post(f"{API}/projects", json=body).json()["data"]["id"]
        root = stack.imports / uuid.uuid4().hex
        shapes.write_coco(root, count, seed=seed, size=96)
        job = api.post(
            f"{API}/datasets/import/local", json={"project_id": project_id, "path": str(root)}
        ).json()["data"]

        def imported() -> bool:
            state = api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"]
            assert state not in ("failed", "cancelled"), state
            return bool(state == "completed")

        wait(imported)
        ratios = {"train": 0.75, "val": 0.25, "test": 0.0}
        made = api.post(
            f"{API}/splits", json={"project_id": project_id, "name": "s", "ratios": ratios}
        )
        assert made.status_code == 201, made.text
        return project_id, made.json()["data"]["id"]


@pytest.mark.soak  # minutes of CPU a data set: over make test's budget (see the module's doc)
@pytest.mark.parametrize("seed", [16, 17])
def test_a_detector_learns_the_shapes_well_above_chance(stack: Stack, seed: int) -> None:
    project_id, split_id = shapes_split(stack, 160, seed=seed)
    resp = submit(stack, project_id, split_id, hyperparameters=LEARNS)
    assert resp.status_code == 202, resp.text
    assert resp.json()["data"]["classes"] == list(sorted(shapes.CLASSES))
    done = wait_status(stack, resp.json()["data"]["id"], "completed", "failed", timeout=3600)
    assert done["status"] == "completed", done
    history = done["history"]
    assert [e["epoch"] for e in history] == list(range(1, LEARNS["epochs"] + 1))
    components = {"classification", "bbox_regression"}  # SSD's losses
    assert all(set(e["losses"]) == components and e["val_accuracy"] == 0.0 for e in history)
    best = max(history, key=lambda e: e["val_map"])
    assert done["best_epoch"] == best["epoch"] and done["best_val_map"] == best["val_map"]
    # Chance is ~0: random boxes almost never overlap a shape by half, in the right class.
    assert best["val_map50"] >= 0.7, history  # measured 0.94 and 0.96
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_a_detector_run_stops_and_resumes_to_its_end(stack: Stack, split: Any) -> None:
    project_id, split_id = split
    quick = LEARNS | {"epochs": 2, "image_size": 64, "batch_size": 8}
    resp = submit(stack, project_id, split_id, hyperparameters=quick)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["data"]["id"]
    wait(lambda: run(stack, run_id)["epochs_done"] >= 1, timeout=600)
    with client(stack) as api:
        assert api.post(f"{API}/training/runs/{run_id}/stop").status_code in (200, 202)
        stopped = wait_status(stack, run_id, "stopped", "completed", timeout=600)
        if stopped["status"] == "stopped":
            resumed = api.post(f"{API}/training/runs/{run_id}/resume", json={})
            assert resumed.status_code in (200, 202), resumed.text
    done = wait_status(stack, run_id, "completed", "failed", timeout=600)
    assert done["status"] == "completed", done
    assert [e["epoch"] for e in done["history"]] == [1, 2]
    assert all(e["val_map"] is not None for e in done["history"])
    assert done["best_val_map"] is not None and done["best_val_accuracy"] == 0.0
    assert {k["kind"] for k in done["checkpoints"]} == {"last", "best"}


def test_a_model_of_the_other_task_is_refused_with_its_field(stack: Stack, split: Any) -> None:
    project_id, split_id = split
    classifier = submit(stack, project_id, split_id, hyperparameters={"model": "resnet18"})
    assert classifier.status_code == 422, classifier.text
    error = classifier.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "detector" in error["message"]
    with client(stack) as api:
        other = api.post(f"{API}/projects", json={"name": f"c-{uuid.uuid4().hex[:6]}"})
        cls_id = other.json()["data"]["id"]
    detector = submit(stack, cls_id, split_id, hyperparameters={"model": DETECTOR})
    assert detector.status_code == 422, detector.text
    assert "classifier" in detector.json()["error"]["message"]
