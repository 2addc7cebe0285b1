"""Object detection the user's way, end to end on the real studio, through the Python client
(``studio_client``) and the REST API it wraps: a detection project; a COCO ZIP of generated
shapes (``tests/shapes.py``) uploaded, and the same boxes as a YOLO ZIP written by a third-party
library (globox) into a second project; every box seen in the browse API; a split; a tiny
detector trained two epochs with its mAP live in the epoch events; evaluated (COCO mAP figures);
exported to ONNX (its parity gate passed, its metadata and model card saying detection and the
class names); the prediction endpoint answering boxes, labels and scores in the documented
shape; the model downloaded, verified by its sha256, and the same file onnxruntime opens.

A search (an experiment) on the detection project runs its trials as detectors and ranks them
by validation mAP@[.5:.95]; a classifier in a detection project's search is refused as a run's
model is.

The detector need not learn here (``tests/integration/test_detection_training.py`` is about
learning): sizes are the smallest that exercise every step (24 images of 64 px, 2 epochs, a
search of one trial; three trials under soak, ``make soak``).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from globox import AnnotationSet

from studio_client import StudioClient
from studio_client.experiments import choice, fixed, float_range
from tests import shapes
from tests.client_helpers import signed_in
from tests.stack import Stack
from tests.training_helpers import API

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer", "exporter")
DETECTOR = "ssdlite320_mobilenet_v3_large"
#: Its loss components, as torchvision names them (SSD: classification and box regression).
LOSSES = {"classification", "bbox_regression"}
#: Two epochs of a few steps at a small learning rate: the detector stays near its start, where
#: every class scores about 1/(K+1) on every proposal, well above torchvision's 0.05 threshold,
#: so parity and prediction compare and answer real boxes whatever its training would learn.
TINY: dict[str, str | int | float] = {
    "model": DETECTOR, "epochs": 2, "image_size": 64, "batch_size": 8, "learning_rate": 0.0005,
    "optimizer": "sgd", "schedule": "none", "augmentation": "none", "seed": 1,
}  # fmt: skip
IMAGES = 24


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[StudioClient]:
    with signed_in(stack, timeout=60) as client:
        yield client


def zipped(root: Path) -> Path:
    out = root.with_suffix(".zip")
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return out


def boxes_by_file(studio: StudioClient, project_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each image's boxes as the browse API shows them: (label, x, y, w, h), rounded."""
    found = {}
    for image in studio.datasets.iter_images(project_id):
        boxes = image.boxes or []
        found[image.filename.rsplit("/", 1)[-1]] = sorted(
            (b["label"], *(round(b[k], 3) for k in "xywh")) for b in boxes
        )
    return found


def drawn_by_file(drawn: list[list[shapes.Box]]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        f"s{n:04d}.png": sorted((label, *(round(v, 3) for v in xywh)) for label, *xywh in boxes)
        for n, boxes in enumerate(drawn)
    }


@pytest.fixture(scope="module")
def dataset(stack: Stack, studio: StudioClient) -> dict[str, Any]:
    """A detection project holding an uploaded COCO ZIP of generated shapes, split."""
    root = stack.imports / f"coco-{uuid.uuid4().hex[:8]}"
    drawn = shapes.write_coco(root, IMAGES, seed=61, size=64)
    project = studio.projects.create(f"journey-{uuid.uuid4().hex[:6]}", task_type="detection")
    job = studio.imports.upload(project.id, zipped(root), format="coco")
    done = studio.imports.wait(job.id, timeout=120)
    assert done.state == "completed", done
    split = studio.splits.create(project.id, "s", ratios={"train": 0.75, "val": 0.25, "test": 0})
    return {"project_id": project.id, "split_id": split.id, "root": root, "drawn": drawn}


def test_every_box_of_a_coco_zip_and_of_a_yolo_zip_is_in_the_browse_api(
    stack: Stack, studio: StudioClient, dataset: dict[str, Any]
):
    # then the browse API shows every image of the COCO ZIP with the boxes it was drawn with
    expected = drawn_by_file(dataset["drawn"])
    assert boxes_by_file(studio, dataset["project_id"]) == expected
    assert studio.datasets.get(dataset["project_id"]).images == IMAGES

    # and the same boxes written as YOLO by globox, zipped, import into a second project
    coco = AnnotationSet.from_coco(dataset["root"] / "annotations.json")
    yolo = stack.imports / f"yolo-{uuid.uuid4().hex[:8]}"
    (yolo / "images").mkdir(parents=True)
    for image in (dataset["root"] / "images").iterdir():
        (yolo / "images" / image.name).write_bytes(image.read_bytes())
    coco.save_yolo_darknet(
        yolo / "labels", label_to_id={c: n for n, c in enumerate(shapes.CLASSES)}
    )
    (yolo / "classes.txt").write_text("\n".join(shapes.CLASSES) + "\n")
    other = studio.projects.create(f"journey-yolo-{uuid.uuid4().hex[:6]}", task_type="detection")
    job = studio.imports.upload(other.id, zipped(yolo), format="yolo")
    assert studio.imports.wait(job.id, timeout=120).state == "completed"
    assert boxes_by_file(studio, other.id) == expected


@pytest.fixture(scope="module")
def trained(studio: StudioClient, dataset: dict[str, Any]) -> dict[str, Any]:
    """The tiny detector's run, finished, with the epoch events its stream delivered."""
    run = studio.runs.create(dataset["project_id"], dataset["split_id"], TINY)
    events = []
    for event in studio.runs.follow(run.id):
        events.append(event)
        if event.event in ("complete", "error"):
            break
    done = studio.runs.wait(run.id, timeout=300)
    return {"run": done, "events": events}


def test_a_detector_trains_with_its_map_live_in_every_epoch_event(trained: dict[str, Any]):
    run = trained["run"]
    assert run.status == "completed", run
    epochs = [e.data for e in trained["events"] if e.event == "epoch_end"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for epoch in epochs:
        assert 0.0 <= epoch["val_map"] <= epoch["val_map50"] <= 1.0
        assert set(epoch["losses"]) >= LOSSES
    assert run.classes == sorted(shapes.CLASSES)
    # and the run read back says the same, as typed values
    assert [(e.epoch, e.val_map) for e in run.history] == [
        (e["epoch"], e["val_map"]) for e in epochs
    ]
    best = next(e for e in run.history if e.epoch == run.best_epoch)
    assert run.best_val_map == best.val_map == max(e.val_map or 0.0 for e in run.history)


@pytest.fixture(scope="module")
def exported(studio: StudioClient, trained: dict[str, Any]) -> Any:
    job = studio.exports.create(trained["run"].id, format="onnx")
    return studio.exports.wait(job.id, timeout=300)


def test_the_detector_is_evaluated_with_coco_map(studio: StudioClient, trained: dict[str, Any]):
    job = studio.evaluations.create(trained["run"].id, subset="val")
    evaluation = studio.evaluations.wait(job.id, timeout=300)
    assert evaluation.status == "completed", evaluation
    m = evaluation.metrics or {}
    assert m["task"] == "detection" and evaluation.images == m["images"] > 0
    for figure in ("map", "map50", "map75"):
        assert 0.0 <= m[figure] <= 1.0, (figure, m)
    assert [row["label"] for row in m["per_class"]] == sorted(shapes.CLASSES)


def test_the_onnx_export_passes_parity_and_says_what_it_detects(
    studio: StudioClient, exported: Any, tmp_path: Path
):
    assert exported.status == "completed", exported
    assert exported.parity and exported.parity["passed"], exported.parity
    assert exported.parity["detections"] > 0 and exported.parity["min_iou"] >= 0.99
    # the file downloads (its sha256 checked by the client) and carries its task and classes
    model = onnx.load(str(studio.exports.download(exported.id, tmp_path / "model.onnx")))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["task"] == "detection" and json.loads(props["classes"]) == sorted(shapes.CLASSES)
    assert json.loads(props["preprocessing"])["classes"] == sorted(shapes.CLASSES)
    # and so does the model card of its bundle
    bundle = studio.exports.download(exported.id, tmp_path / "bundle.zip", bundle=True)
    with zipfile.ZipFile(bundle) as archive:
        card = json.loads(archive.read("model_card.json"))
        labels = archive.read("labels.txt").decode().split()
    assert card["task"] == "detection" and card["model"] == DETECTOR
    assert labels == sorted(shapes.CLASSES) == card["preprocessing"]["classes"]


def test_prediction_answers_boxes_labels_and_scores(
    stack: Stack, exported: Any, dataset: dict[str, Any]
):
    # images of the dataset and a new one
    images = [(dataset["root"] / "images" / f"s{n:04d}.png").read_bytes() for n in range(3)]
    buffer = io.BytesIO()
    shapes.draw(7_000, 64)[0].save(buffer, "PNG")
    images.append(buffer.getvalue())
    files = [("file", (f"p{n}.png", image, "image/png")) for n, image in enumerate(images)]
    with stack.sync_client(timeout=60) as api:
        resp = api.post(f"{API}/export/{exported.id}/predict", files=files)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["export_id"] == exported.id and data["task"] == "detection"
    assert len(data["predictions"]) == len(images)
    boxes = [box for image in data["predictions"] for box in image["boxes"]]
    assert all(image["boxes"] for image in data["predictions"]), data  # see TINY
    for image in data["predictions"]:
        scores = [box["score"] for box in image["boxes"]]
        assert scores == sorted(scores, reverse=True)
    for box in boxes:
        assert set(box) == {"label", "score", "x", "y", "w", "h"}
        assert box["label"] in shapes.CLASSES and 0.0 <= box["score"] <= 1.0
        assert 0.0 <= box["x"] <= box["x"] + box["w"] <= 1.0 + 1e-4
        assert 0.0 <= box["y"] <= box["y"] + box["h"] <= 1.0 + 1e-4


#: One trial in ``make test`` (the search's plumbing end to end; its ranking is unit-tested in
#: tests/unit/trainer/test_experiment_task.py), three under ``make soak``.
@pytest.mark.parametrize("trials", [1, pytest.param(3, marks=pytest.mark.soak)])
def test_a_search_on_a_detection_project_trains_detectors_ranked_by_map(
    studio: StudioClient, dataset: dict[str, Any], trials: int
):
    # given a detection project's split, when a small search starts with the defaults for
    # its family and objective ("any" and none: the detectors, validation mAP maximised)
    space = {k: fixed(v) for k, v in TINY.items() if k not in ("model", "epochs", "seed")}
    space["model"] = choice(DETECTOR)
    space["learning_rate"] = float_range(0.005, 0.05, log=True)
    experiment = studio.experiments.create(
        dataset["project_id"], dataset["split_id"], f"search-{uuid.uuid4().hex[:6]}",
        search_config=space, max_trials=trials, epochs_per_trial=1, pruning="none", seed=5,
    )  # fmt: skip
    assert experiment.architecture_type == "detector"
    assert experiment.objectives == [{"metric": "val_map", "direction": "maximize"}]

    # then it runs to its end, each trial a detector run whose mAP is its value
    done = studio.experiments.wait(experiment.id, timeout=600)
    assert done.status == "completed" and done.reason == "max_trials", done
    assert [t.state for t in done.trials] == ["completed"] * trials, done.trials
    for trial in done.trials:
        run = studio.runs.get(trial.run_id or "")
        assert run.hyperparameters["model"] == DETECTOR and run.best_val_map is not None
        assert trial.values == {"val_map": pytest.approx(run.best_val_map)}
        assert trial.best_val_map == run.best_val_map
    ranked = max(done.trials, key=lambda t: (t.values["val_map"], -t.trial))
    assert done.best == {"val_map": ranked.trial} and done.front == [ranked.trial]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"search_config": {"model": choice(DETECTOR, "resnet18")}},
            "search_config.model.choices.1",
        ),
        ({"architecture_type": "resnet"}, "architecture_type"),
        (
            {"objectives": [{"metric": "val_accuracy", "direction": "maximize"}]},
            "objectives.0.metric",
        ),
    ],
)
def test_a_search_of_the_other_task_is_refused_as_a_run_is(
    stack: Stack, dataset: dict[str, Any], body: dict[str, Any], field: str
):
    ids = {"project_id": dataset["project_id"], "split_id": dataset["split_id"]}
    with stack.sync_client(timeout=60) as api:
        resp = api.post(f"{API}/experiments", json=ids | {"name": "wrong"} | body)
        run = api.post(f"{API}/training/run", json=ids | {"hyperparameters": {"model": "resnet18"}})
    assert resp.status_code == run.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == run.json()["error"]["code"] == "VALIDATION_ERROR"
    assert error["field"] == field, error


def test_the_experiments_form_of_a_detection_project_offers_detectors_and_map(
    stack: Stack, dataset: dict[str, Any]
):
    page = f"/projects/{dataset['project_id']}/training/experiments"
    with stack.sync_client(timeout=60, cookies={"studio_access": stack.token()}) as api:
        html = api.get(page).text
    assert f'data-model="{DETECTOR}"' in html and 'data-model="resnet18"' not in html
    assert 'id="obj-val_map"' in html and 'id="obj-val_accuracy"' not in html
    assert '<option value="detector"' in html and '<option value="resnet"' not in html
