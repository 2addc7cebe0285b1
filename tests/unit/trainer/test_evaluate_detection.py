"""A detector's evaluation: COCO's figures and the worst images from a scripted detector whose
boxes are known, the sizes of upright originals, and ``evaluate`` on a real detector's
checkpoint (the branch is chosen by the checkpoint's model; a stop ends it)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from contracts.training import Hyperparameters
from services.trainer.engine.api import Sample
from services.trainer.engine.checkpoints import FORMAT
from services.trainer.engine.detection import Detection, collate
from services.trainer.engine.evaluate import EvaluationStopped, LabelledImage, evaluate
from services.trainer.engine.evaluate_detection import BoxedImage, evaluate_detector, upright_size
from services.vision.detectors import build_detector

CLASSES = ["disc", "square"]
#: (class index, x, y, w, h, score), normalised: what the scripted detector finds per image.
Found = tuple[int, float, float, float, float, float]


class Scripted(nn.Module):
    """Answers each image, in order, with the boxes scripted for it (in its tensor's pixels)."""

    def __init__(self, script: list[list[Found]]) -> None:
        super().__init__()
        self.script, self.sizes = list(script), list[tuple[int, int]]()

    def forward(
        self, images: list[Tensor], targets: Any = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if targets is not None:  # training mode's losses, as validation asks for them
            return {"loss": torch.zeros(())}
        outputs = []
        for image in images:
            h, w = image.shape[-2:]
            self.sizes.append((w, h))
            found = self.script.pop(0)
            boxes = [[x * w, y * h, (x + bw) * w, (y + bh) * h] for _, x, y, bw, bh, _ in found]
            outputs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor([f[0] + 1 for f in found], dtype=torch.int64),
                    "scores": torch.tensor([f[5] for f in found], dtype=torch.float32),
                }
            )
        return outputs


def picture(path: Path, size: tuple[int, int], orientation: int | None = None) -> Path:
    image = Image.new("RGB", size, (120, 120, 120))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def never(batch: int, batches: int) -> None:
    return None


def test_figures_and_worst_images_of_a_scripted_detector(tmp_path: Path) -> None:
    # Given three 400x200 images: one found exactly, one with a confident false positive
    # (and a timid one below the threshold), one whose only object is missed
    path = picture(tmp_path / "p.jpg", (400, 200))
    disc, square = (0, 0.1, 0.1, 0.5, 0.6), (1, 0.6, 0.2, 0.3, 0.3)
    samples: list[BoxedImage] = [("a", path, 0, [disc]), ("b", path, 0, [square]),
                                 ("c", path, 0, [disc])]  # fmt: skip
    model = Scripted(
        [
            [(*disc, 0.9)],
            [(*square, 0.8), (0, 0.0, 0.0, 0.2, 0.2, 0.7), (0, 0.5, 0.5, 0.1, 0.1, 0.1)],
            [],
        ]
    )

    # When it is evaluated at an input size of 100 (batches of two)
    result = evaluate_detector(model, CLASSES, 100, samples, "cpu", 2, never)

    # Then the figures are COCO's and the worst images come first, boxes normalised
    assert model.sizes == [(100, 50)] * 3  # longer side to the input size, as validation does
    assert result["task"] == "detection"
    assert (result["images"], result["boxes"]) == (3, 3)
    disc_row, square_row = result["per_class"]
    assert disc_row["truths"] == 2 and disc_row["recall"] == pytest.approx(0.5)
    assert square_row["ap"] == pytest.approx(1.0, abs=1e-6)
    assert result["map_large"] is not None and result["map_small"] is None  # 200x120 px is large
    assert [w["image_id"] for w in result["worst"]] == ["c", "b"]
    missed, spurious = result["worst"]
    assert (missed["misses"], missed["false_positives"], missed["predictions"]) == (1, 0, [])
    assert missed["truths"] == [
        {"label": "disc", "x": 0.1, "y": 0.1, "w": 0.5, "h": 0.6, "missed": True}
    ]
    assert (spurious["misses"], spurious["false_positives"]) == (0, 1)
    assert [(p["label"], p["false_positive"]) for p in spurious["predictions"]] == [
        ("square", False),
        ("disc", True),
    ]  # the timid box (score 0.1) is not listed
    assert spurious["predictions"][1] == pytest.approx(
        {"label": "disc", "x": 0.0, "y": 0.0, "w": 0.2, "h": 0.2, "score": 0.7,
         "false_positive": True}, abs=1e-4,
    )  # fmt: skip


def test_the_evaluation_agrees_with_the_validation_of_the_same_images(tmp_path: Path) -> None:
    # Given images of two sizes and a detector that finds some boxes well, some loosely
    wide, tall = picture(tmp_path / "w.png", (400, 200)), picture(tmp_path / "t.png", (90, 150))
    truths = [[(0, 0.1, 0.1, 0.5, 0.6), (1, 0.6, 0.2, 0.3, 0.3)], [(1, 0.2, 0.3, 0.5, 0.4)], []]
    script: list[list[Found]] = [
        [(0, 0.12, 0.1, 0.5, 0.6, 0.9), (1, 0.66, 0.25, 0.3, 0.3, 0.6)],
        [(1, 0.2, 0.3, 0.5, 0.4, 0.8), (0, 0.0, 0.0, 0.3, 0.3, 0.7)],
        [(0, 0.5, 0.5, 0.2, 0.2, 0.4)],
    ]
    paths = [wide, tall, wide]
    h = Hyperparameters(model="fasterrcnn_mobilenet_v3_large_320_fpn", image_size=80)
    task = Detection()
    task.prepare(h, [], len(CLASSES), torch.device("cpu"))
    data = task.dataset([Sample(p, -1, tuple(b)) for p, b in zip(paths, truths, strict=True)],
                        h, train=False)  # fmt: skip
    batch = collate([data[(i, 0)] for i in range(len(paths))])

    # When the run's validation and the evaluation score the same images
    validated = task.validate(Scripted(script), iter([batch]), nullcontext, torch.device("cpu"))
    samples: list[BoxedImage] = [
        (str(i), p, -1, b) for i, (p, b) in enumerate(zip(paths, truths, strict=True))
    ]
    evaluated = evaluate_detector(Scripted(script), CLASSES, 80, samples, "cpu", 8, never)

    # Then they give the same figures (COCO's, whatever the pixels each works in)
    assert 0.0 < evaluated["map"] < evaluated["map50"] < 1.0
    assert evaluated["map"] == pytest.approx(validated.map, abs=1e-9)
    assert evaluated["map50"] == pytest.approx(validated.map50, abs=1e-9)


def test_sizes_are_those_of_the_upright_original(tmp_path: Path) -> None:
    assert upright_size(picture(tmp_path / "flat.jpg", (300, 100))) == (300, 100)
    assert upright_size(picture(tmp_path / "turned.jpg", (300, 100), orientation=6)) == (100, 300)


def test_a_box_of_an_unknown_class_is_refused(tmp_path: Path) -> None:
    samples: list[BoxedImage] = [("a", tmp_path / "none.png", 0, [(2, 0, 0, 0.5, 0.5)])]
    with pytest.raises(ValueError, match="box label 2"):
        evaluate_detector(Scripted([]), CLASSES, 64, samples, "cpu", 1, never)


def detector_checkpoint(path: Path) -> Path:
    """A checkpoint in the engine's format of an untrained detector (what evaluate reads)."""
    h = Hyperparameters(model="fasterrcnn_mobilenet_v3_large_320_fpn", image_size=64)
    torch.manual_seed(0)
    model = build_detector(h.model, len(CLASSES), h.image_size)
    state: dict[str, Any] = {
        "format": FORMAT, "model_name": h.model, "model": model.state_dict(), "optimizer": {},
        "scheduler": None, "scaler": None, "rng": {}, "epoch": 3, "best_epoch": 3,
        "best_val_accuracy": 0.0, "history": [], "hyperparameters": {"image_size": 64},
        "classes": CLASSES,
    }  # fmt: skip
    torch.save(state, path)
    return path


def test_evaluate_takes_the_detector_branch_from_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = detector_checkpoint(tmp_path / "det.pt")
    image = picture(tmp_path / "p.png", (96, 64))
    samples: list[LabelledImage | BoxedImage] = [
        ("a", image, 0, [(0, 0.2, 0.2, 0.5, 0.5)]),
        ("neg", image, 0),  # a negative: listed without boxes
    ]

    result = evaluate(checkpoint, samples)

    assert result["task"] == "detection" and result["predictions"] == []
    assert (result["checkpoint_epoch"], result["classes"], result["images"]) == (3, CLASSES, 2)
    assert {"map", "map50", "map75", "map_small", "per_class", "worst"} <= result.keys()
    # an untrained detector misses the disc
    assert [w["misses"] for w in result["worst"] if w["image_id"] == "a"] == [1]
    with pytest.raises(EvaluationStopped):
        evaluate(checkpoint, samples, should_stop=lambda: True)
