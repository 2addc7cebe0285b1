"""A detector exported: a fasterrcnn_mobilenet_v3_large_320_fpn built with
``services.vision.detectors.build_detector``, saved as a checkpoint in the trainer's own format
(``write_checkpoints``), exported to ONNX and TorchScript; its parity holds box by box, a
deliberately broken export fails the gate with its numbers, prediction answers boxes
normalised to each image, and the bundle's card says what the file is.

The detector is untrained, so its FPN and heads are perturbed (slightly: its GroupNorm keeps
features at unit scale, and a stronger nudge saturates scores at 1.0 and clips boxes to zero
width): scores then spread out and boxes move away from the anchors, which is what a trained
detector's outputs look like to the parity check.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from contracts import exports as x
from contracts.training import Hyperparameters
from services.exporter import engine, handlers
from services.exporter.engine import (
    Exported,
    Predictor,
    bundle,
    detect_io,
    detector_export,
    export_onnx,
    export_torchscript,
)
from services.exporter.engine.box_parity import box_parity
from services.trainer.engine.checkpoints import FORMAT, write_checkpoints
from services.vision.detectors import build_detector
from tests.unit.exporter.test_export_handlers import E, FakeJobs, completed_export, exports

CLASSES = ["circle", "square", "triangle"]
MODEL, SIZE = "fasterrcnn_mobilenet_v3_large_320_fpn", 128


def shapes(folder: Path, count: int, seed: int) -> list[tuple[Path, int]]:
    """Noisy images of varied sizes and aspect ratios with a bright rectangle each."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        w, h = rng.choice([(160, 120), (96, 144), (128, 128)])
        noise = np.random.default_rng(seed + i).integers(0, 120, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(noise)
        x, y = rng.randrange(0, w // 2), rng.randrange(0, h // 2)
        image.paste(tuple(rng.randrange(150, 256) for _ in "rgb"), (x, y, x + w // 3, y + h // 3))
        image.save(folder / f"{i}.png")
        out.append((folder / f"{i}.png", i % len(CLASSES)))
    return out


def detector_checkpoint(workdir: Path) -> Path:
    """A checkpoint as a detection run writes it (every key the trainer's reader requires)."""
    torch.manual_seed(3)
    model = build_detector(MODEL, len(CLASSES), SIZE)
    with torch.no_grad():  # untrained, scores cluster: spread them
        for part in (model.backbone.fpn, model.rpn, model.roi_heads):
            for p in part.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    h = Hyperparameters(model=MODEL, epochs=1, batch_size=2, image_size=SIZE, learning_rate=0.01)
    state = {
        "format": FORMAT, "task": "detection", "model_name": MODEL, "model": model.state_dict(),
        "optimizer": {}, "scheduler": None, "scaler": {}, "rng": {}, "epoch": 1,
        "best_epoch": 1, "best_val_accuracy": 0.0, "history": [],
        "hyperparameters": msgspec.to_builtins(h), "classes": CLASSES,
    }  # fmt: skip
    workdir.mkdir(parents=True)
    return write_checkpoints(state, workdir, best=True)[0].path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, int]], Path]:
    root = tmp_path_factory.mktemp("detector")
    return detector_checkpoint(root / "run"), shapes(root / "images", 6, seed=5), root


@pytest.fixture(scope="module")
def onnx_file(made: tuple[Path, list[tuple[Path, int]], Path]) -> Exported:
    checkpoint, images, root = made
    return export_onnx(checkpoint, root / "out" / "model.onnx", images)


def test_a_detector_exports_to_onnx_with_box_parity_and_its_metadata(onnx_file: Exported) -> None:
    p = onnx_file.parity
    assert p is not None and p.passed, p
    assert p.images == 6 and p.top1_agreement == 1.0
    assert p.detections and p.detections > 0  # boxes above the threshold were really compared
    assert p.min_iou is not None and p.min_iou >= 0.99 and p.max_abs_diff <= 1e-3
    assert onnx_file.latency is None  # see detector_export: one image per call
    props = {q.key: q.value for q in onnx.load(str(onnx_file.path)).metadata_props}
    assert props["task"] == "detection" and json.loads(props["classes"]) == CLASSES
    pre = json.loads(props["preprocessing"])
    assert pre["task"] == "detection" and pre["input_size"] == SIZE and pre["classes"] == CLASSES
    assert pre["resize"] == "longer_side_then_pad_bottom_right" and pre["batch"] == 1
    assert pre["score_threshold"] == pytest.approx(0.05)


def test_a_broken_export_fails_the_gate(made: Any) -> None:
    """The same detector, boxes nudged by 3 % of a pixel-box's size on the exported side (an
    IoU of about 0.94), then with one detection dropped, then with scores off by 0.01."""
    checkpoint, images, _ = made
    model, info = detector_export_model(checkpoint)
    eager = detector_export.eager(model)
    x = detector_export.inputs(images[:3], SIZE)
    outputs = {id(image): eager(image) for image in x}  # the eager side runs once per image

    def reference(image: np.ndarray) -> Any:
        return outputs[id(image)]

    meta = detector_export.detector_metadata(model, info)

    def shifted(image: np.ndarray) -> Any:
        boxes, labels, scores = reference(image)
        size = boxes[:, 2:] - boxes[:, :2]
        return boxes + np.concatenate([size, size], axis=1) * 0.03, labels, scores

    def dropped(image: np.ndarray) -> Any:
        boxes, labels, scores = reference(image)
        return boxes[1:], labels[1:], scores[1:]

    def rescored(image: np.ndarray) -> Any:
        boxes, labels, scores = reference(image)
        return boxes, labels, scores - 0.01

    for broken in (shifted, dropped, rescored):
        p = detector_export.check(reference, broken, x, meta)
        assert not p.passed and p.top1_agreement < 1.0, broken.__name__
    p = detector_export.check(reference, rescored, x, meta)
    assert p.max_abs_diff >= 0.01 and p.min_iou == 0.0
    assert detector_export.check(reference, reference, x, meta).passed


def detector_export_model(checkpoint: Path) -> Any:
    from services.exporter.engine import load_checkpoint

    model, info = load_checkpoint(checkpoint)
    assert info["task"] == "detection"
    return model, info


def test_ties_and_threshold_edges_do_not_fail_parity() -> None:
    """A detection within the tolerance of the threshold may be kept on one side only; boxes
    in any order match one to one."""
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], dtype=np.float32)
    labels, scores = np.array([1, 2, 1]), np.array([0.9, 0.5, 0.0502], dtype=np.float32)

    def ref(_: np.ndarray) -> Any:
        return boxes, labels, scores

    def got(_: np.ndarray) -> Any:  # reordered, the threshold-edge detection lost
        return boxes[[1, 0]], labels[[1, 0]], scores[[1, 0]] + 1e-5

    p = box_parity(ref, got, [np.zeros(1)], threshold=0.05, cap=100)
    assert p.passed and p.detections == 2 and p.min_iou == 1.0
    wrong_label = box_parity(
        ref, lambda _: (boxes, np.array([2, 2, 1]), scores), [np.zeros(1)], threshold=0.05, cap=100
    )
    assert not wrong_label.passed


def test_a_detector_exports_to_torchscript_by_scripting(made: Any) -> None:
    checkpoint, images, root = made
    exported = export_torchscript(checkpoint, root / "ts" / "model.pt", images[:1])
    assert exported.format == "torchscript" and exported.parity and exported.parity.passed
    loaded = torch.jit.load(str(exported.path))
    x, _ = detect_io.letterbox(Image.open(images[0][0]).convert("RGB"), SIZE)
    found = loaded([x])[1][0]
    assert set(found) == {"boxes", "labels", "scores"}


def test_predict_answers_normalised_boxes_on_each_image(made: Any, onnx_file: Exported) -> None:
    """Boxes come back in [0, 1] of each image, whatever its size; they are the eager
    detector's boxes on the letterboxed input, mapped back."""
    checkpoint, images, _ = made
    data = [images[0][0].read_bytes(), images[1][0].read_bytes()]
    predictor = Predictor()
    assert predictor.task(onnx_file.path) == "detection"
    found = predictor.detect(onnx_file.path, data)
    assert len(found) == 2 and all(found)
    model, _ = detector_export_model(checkpoint)
    image = Image.open(io.BytesIO(data[1])).convert("RGB")
    x, scale = detect_io.letterbox(image, SIZE)
    boxes, labels, scores = detector_export.eager(model)(x[None].numpy())
    want = detect_io.normalised(boxes, labels, scores, CLASSES, scale, image.size)
    assert [d[0] for d in found[1]] == [d[0] for d in want]
    assert np.allclose([d[1:] for d in found[1]], [d[1:] for d in want], atol=2e-3)
    for label, score, bx, by, bw, bh in found[0] + found[1]:
        assert label in CLASSES and 0.05 <= score <= 1
        assert 0 <= bx <= bx + bw <= 1 and 0 <= by <= by + bh <= 1


def test_the_bundle_card_names_task_preprocessing_and_interface(
    made: Any, onnx_file: Exported
) -> None:
    checkpoint, _, root = made
    small = root / "small" / "model.onnx"  # the card is under test, not deflating 76 MB
    small.parent.mkdir()
    small.write_bytes(b"onnx")
    exported = Exported(small, "onnx", 4, "0" * 64, onnx_file.parity, None)
    out = bundle(exported, checkpoint, {"name": "shapes"}, root / "bundle.zip")
    with zipfile.ZipFile(out) as archive:
        card = json.loads(archive.read("model_card.json"))
        assert archive.read("labels.txt").decode().split() == CLASSES
    assert card["task"] == "detection" and card["preprocessing"]["task"] == "detection"
    assert "boxes" in card["interface"]


async def test_the_predict_query_answers_a_detector_exports_boxes(
    made: Any, onnx_file: Exported, tmp_path: Path
) -> None:
    """The exporter's predict handler, the real engine behind it: a detector export answers
    ``task="detection"`` and its boxes per image (no top-k lists)."""
    _, images, _ = made
    (tmp_path / E).mkdir()
    (tmp_path / E / "model.onnx").symlink_to(onnx_file.path)
    repo = exports()
    await completed_export(repo)
    table = handlers.table(
        exports=repo, sources=None, jobs=FakeJobs(), files=tmp_path, engine=engine
    )  # type: ignore[arg-type]
    data = [images[2][0].read_bytes(), images[3][0].read_bytes()]
    answer = await table[x.Predict](x.Predict(export_id=E, images=data, top_k=1), {})
    assert isinstance(answer, x.Predictions), answer
    assert answer.task == "detection" and answer.results == [[], []]
    assert len(answer.boxes) == 2 and all(answer.boxes)
    want = Predictor().detect(onnx_file.path, data)
    assert [[(b.label, b.score, b.x, b.y, b.w, b.h) for b in i] for i in answer.boxes] == want
    bad = await table[x.Predict](x.Predict(export_id=E, images=[data[0], b"junk"]), {})
    assert (bad.code, bad.field) == ("VALIDATION_ERROR", "images[1]")


def test_the_gateway_answers_boxes_for_a_detector_and_lists_for_a_classifier() -> None:
    from services.gateway.api.exports import predictions_body

    box = x.DetectedBox(label="circle", score=0.8, x=0.1, y=0.2, w=0.3, h=0.4)
    detected = x.Predictions(export_id=E, results=[[], []], task="detection", boxes=[[box], []])
    assert predictions_body(detected)["predictions"] == [
        {"boxes": [{"label": "circle", "score": 0.8, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}]},
        {"boxes": []},
    ]
    classified = x.Predictions(export_id=E, results=[[("cat", 0.9)]])
    body = predictions_body(classified)
    assert body["predictions"] == [[{"label": "cat", "score": 0.9}]]
    assert body["task"] == "classification"
