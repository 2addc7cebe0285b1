"""Training detectors in the engine: the detector zoo, box-aware augmentation, the validation
mAP, the best epoch by mAP, and stop and exact resume of a real (tiny) detector on the CPU;
the trainer's side: a detection run's classes are its boxes' labels, its best epoch its mAP.

The real detector here is ssdlite320_mobilenet_v3_large on generated shapes
(``tests/shapes.py``): at 64 px on six images, a stopped run resumes to the uninterrupted run's
exact figures and weights; at 96 px it fits four images until its validation (eval mode, as
evaluation and export see it) finds them, which BatchNorm from scratch never did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
import torch
from torch import Tensor, nn
from torchvision.models import detection as tvd

from contracts import datasets as d
from contracts import training as c
from services.trainer import domain
from services.trainer.engine import EpochMetrics, Sample, read_checkpoint, train, validate
from services.trainer.engine.detection import Detection, DetectionDataset, detection_transform
from services.trainer.engine.session import Progress
from services.trainer.engine.tasks import Classification, task_for
from services.trainer.handlers import _classes
from services.vision import detectors
from services.vision.detectors import DETECTORS, build_detector, is_detector
from tests import shapes
from tests.unit.trainer.test_engine import Recorder, comparable

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
#: The detector runs train here: a batch in a tenth of faster R-CNN's time.
SSD = "ssdlite320_mobilenet_v3_large"
#: Epochs (one batch each) in which ssdlite fits four images (measured: mAP@.5 1.0 at 25 steps).
FIT_EPOCHS = 40
FITTED = 0.9


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One intra-op thread: on a loaded two-core machine two threads spinning for each other
    make a detector's step ten times slower (measured: 12 s against 0.9 s a batch)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def samples(root: Path, count: int, seed: int, size: int = 64) -> list[Sample]:
    drawn = shapes.write_coco(root, count, seed=seed, size=size)
    return [
        Sample(
            root / "images" / f"s{n:04d}.png",
            -1,
            tuple((shapes.CLASSES.index(lb), x, y, w, h) for lb, x, y, w, h in boxes),
        )
        for n, boxes in enumerate(drawn)
    ]


def test_detectors_are_told_apart_from_classifiers_and_build_without_downloads() -> None:
    assert all(is_detector(name) for name in DETECTORS)
    assert not is_detector("resnet18") and not is_detector("smallcnn")
    assert isinstance(task_for(DETECTOR), Detection)
    assert isinstance(task_for("resnet18"), Classification)
    model = build_detector(DETECTOR, 3, 96).eval()
    with torch.inference_mode():
        (found,) = model([torch.rand(3, 80, 96)])
    assert set(found) == {"boxes", "labels", "scores"}
    assert all(1 <= label <= 3 for label in found["labels"].tolist())  # 0 is the background
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("resnet18", 3, 96)


def test_detectors_normalise_by_group_and_a_batchnorm_detectors_state_still_loads() -> None:
    for name in (SSD, DETECTOR):
        model = build_detector(name, 3, 96)
        norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
        assert norms and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )
        assert all(m.num_channels % m.num_groups == 0 and m.num_groups >= 8 for m in norms)
    # A checkpoint written before detectors used GroupNorm holds BatchNorm's statistics.
    old = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    state = old.state_dict()
    rebuilt = build_detector("ssdlite320_mobilenet_v3_large", 3, 96, like=state)
    rebuilt.load_state_dict(state)  # strict: every key of the old model has its place
    with pytest.raises(RuntimeError, match="running_mean"):
        build_detector("ssdlite320_mobilenet_v3_large", 3, 96).load_state_dict(state)


def test_a_detector_fits_four_images_and_its_eval_mode_finds_them_too(tmp_path: Path) -> None:
    """The pipeline end to end: targets, losses, the eval-mode outputs and the mAP agree. With
    BatchNorm a detector from scratch fitted these images in training mode while evaluation
    (running statistics) found them at mAP@.5 0.12; with GroupNorm it finds them all."""
    data = samples(tmp_path, 4, seed=7, size=96)
    h = c.Hyperparameters(
        model=SSD, epochs=FIT_EPOCHS, batch_size=4,
        learning_rate=3e-3, optimizer="adamw", schedule="none", image_size=96,
        augmentation="none", seed=1,
    )  # fmt: skip
    fitted = UntilFitted()
    train(h, list(shapes.CLASSES), data, data, tmp_path / "run", "cpu", fitted)
    found = [m.val_map50 for m in fitted.epochs]
    assert max(v or 0.0 for v in found) >= FITTED, found


class UntilFitted(Recorder):
    """Asks the run to stop once an epoch's validation mAP@.5 reaches ``FITTED``."""

    def on_epoch(self, metrics: EpochMetrics, checkpoints: list[Any]) -> None:
        super().on_epoch(metrics, checkpoints)
        self.stopping = (metrics.val_map50 or 0.0) >= FITTED


def test_a_detector_is_checked_like_any_model() -> None:
    good = c.Hyperparameters(model=DETECTOR, image_size=128)
    assert validate(good) == []
    assert [f for f, _ in validate(msgspec.structs.replace(good, image_size=16))] == ["image_size"]
    assert [f for f, _ in validate(msgspec.structs.replace(good, pretrained="imagenet"))] == [
        "pretrained"
    ]


def test_boxes_move_with_a_flipped_image_and_negatives_have_none(tmp_path: Path) -> None:
    image = shapes.draw(3, 64)[0]
    image.save(tmp_path / "a.png")
    box = (1, 0.125, 0.25, 0.25, 0.5)  # x 8..24, y 16..48 in pixels
    flip = detection_transform("light", 64, train=True)
    flips = {}
    for seed in range(8):  # the flip is drawn under each image's seed
        dataset = DetectionDataset([Sample(tmp_path / "a.png", -1, (box,))], flip, 64)
        tensor, target = dataset[(0, seed)]
        flips[seed] = target["boxes"].tolist()
        assert (
            tensor.shape == (3, 64, 64) and 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1
        )
        assert target["labels"].tolist() == [2]  # class 1 is label 2: 0 is the background
    assert {tuple(b[0]) for b in flips.values()} == {
        (8.0, 16.0, 24.0, 48.0),
        (40.0, 16.0, 56.0, 48.0),
    }
    plain = DetectionDataset(
        [Sample(tmp_path / "a.png", -1)], detection_transform("none", 32, train=False), 32
    )
    tensor, target = plain[(0, 0)]
    assert tensor.shape == (3, 32, 32) and target["boxes"].shape == (0, 4)
    assert target["labels"].dtype == torch.int64 and len(target["labels"]) == 0


class Oracle(nn.Module):
    """Predicts the truth it is told, with a fixed loss in training mode."""

    def __init__(self, truths: list[dict[str, Tensor]]) -> None:
        super().__init__()
        self.truths, self.bn = truths, nn.BatchNorm1d(1)

    def forward(self, images: list[Tensor], targets: Any = None) -> Any:
        if self.training:
            assert not self.bn.training  # validation losses leave BatchNorm's statistics alone
            return {"loss_a": torch.tensor(0.25), "loss_b": torch.tensor(0.5)}
        found, self.truths = self.truths[: len(images)], self.truths[len(images) :]
        return [t | {"scores": torch.ones(len(t["labels"]))} for t in found]


def test_validation_reports_the_loss_and_cocos_map_of_the_predictions() -> None:
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0]]), "labels": torch.tensor([1])}
    negative = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    batches = [([torch.rand(3, 32, 32)] * 2, [target, negative])]
    task = Detection()
    task.prepare(c.Hyperparameters(model=DETECTOR), [], 2, torch.device("cpu"))
    model = Oracle([target, negative]).eval()
    perfect = task.validate(model, iter(batches), _nothing, torch.device("cpu"))
    assert (perfect.loss, perfect.accuracy) == (0.75, 0.0)
    assert perfect.map == pytest.approx(1.0) and perfect.map50 == pytest.approx(1.0)
    assert not model.training
    wrong = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0]]), "labels": torch.tensor([2])}
    missed = task.validate(
        Oracle([wrong, negative]).eval(), iter(batches), _nothing, torch.device("cpu")
    )
    assert missed.map == 0.0 and missed.map50 == 0.0


def _nothing() -> Any:
    return torch.autocast("cpu", enabled=False)


def metrics(epoch: int, val_map: float | None, accuracy: float = 0.0) -> EpochMetrics:
    return EpochMetrics(epoch, 1.0, 1.0, accuracy, 0.1, 1.0, 10.0, None, {}, val_map, val_map)


def test_a_detection_runs_best_epoch_is_its_best_map() -> None:
    progress = Progress()
    for epoch, found in enumerate([0.2, 0.5, 0.4], start=1):
        progress.record(metrics(epoch, found))
    outcome = progress.outcome("completed")
    assert (outcome.best_epoch, outcome.best_val_accuracy, outcome.best_val_map) == (2, 0.0, 0.5)
    classifier = Progress()
    classifier.record(metrics(1, None, accuracy=0.9))
    assert classifier.outcome("completed").best_val_map is None


def test_the_runs_aggregate_takes_a_detectors_best_epoch_by_map() -> None:
    queued = c.RunQueued(
        run_id="r" * 32, experiment_id="x" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(model=DETECTOR), classes=["a"], train_images=2,
        val_images=1,
    )  # fmt: skip
    run = domain.evolve(None, queued)
    for epoch, found in enumerate([0.3, 0.6, 0.5], start=1):
        event = c.EpochCompleted(
            run_id="r" * 32, epoch=epoch, train_loss=1.0, val_loss=1.0, val_accuracy=0.0,
            learning_rate=0.1, seconds=1.0, images_per_second=1.0, val_map=found, val_map50=found,
        )  # fmt: skip
        run = domain.evolve(run, event)
    assert run is not None and run.best_epoch == 2


def test_a_detection_runs_classes_are_its_boxes_labels() -> None:
    box = d.Box(label="cat", x=0.1, y=0.1, w=0.2, h=0.2)
    items = [
        d.SubsetItem(image_id="a", label="", blob="a", boxes=[box]),
        d.SubsetItem(image_id="b", label="", blob="b"),  # a negative
        d.SubsetItem(
            image_id="c", label="", blob="c", boxes=[msgspec.structs.replace(box, label="dog")]
        ),
    ]
    assert _classes(DETECTOR, items) == ["cat", "dog"]
    assert _classes("resnet18", items) == [""]


def detector_hp(**changes: Any) -> c.Hyperparameters:
    base = c.Hyperparameters(
        model=SSD, epochs=2, batch_size=2, learning_rate=1e-3, image_size=64,
        augmentation="standard", schedule="cosine", seed=5,
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Sample], list[Sample]]:
    root = tmp_path_factory.mktemp("shapes")
    return samples(root / "train", 4, seed=1), samples(root / "val", 2, seed=2)


def run(data: Any, workdir: Path, **kw: Any) -> tuple[Any, Recorder]:
    stops = {k: kw.pop(k) for k in ("stop_after",) if k in kw}
    recorder = Recorder(**stops)
    h = detector_hp()
    outcome = train(h, list(shapes.CLASSES), data[0], data[1], workdir, "cpu", recorder, **kw)
    return outcome, recorder


def test_a_stopped_detector_resumes_to_the_uninterrupted_runs_exact_figures(
    tiny: Any, tmp_path: Path
) -> None:
    whole_outcome, whole = run(tiny, tmp_path / "whole")
    assert whole_outcome.status == "completed" and whole_outcome.best_val_accuracy == 0.0
    assert whole_outcome.best_val_map is not None
    first = whole.epochs[0]
    assert set(first.losses) == {"classification", "bbox_regression"}
    assert sum(first.losses.values()) == pytest.approx(first.train_loss, rel=1e-4)
    assert first.val_map is not None and first.val_map50 is not None and first.val_accuracy == 0.0

    stopped, before = run(tiny, tmp_path / "split", stop_after=(2, 1))
    assert (stopped.status, stopped.epochs_done) == ("stopped", 1)
    state = read_checkpoint(before.saved[-1][0].path)
    assert state["task"] == "detection" and state["epoch"] == 1
    resumed, after = run(tiny, tmp_path / "split", resume=before.saved[-1][0].path)

    assert resumed == whole_outcome
    assert comparable(before.epochs + after.epochs) == comparable(whole.epochs)
    assert after.batches == [b for b in whole.batches if b[0] >= 2]
    final = read_checkpoint(after.saved[-1][0].path)["model"]
    expected = read_checkpoint(whole.saved[-1][0].path)["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [asdict(m)["epoch"] for m in after.epochs] == [2]


def test_the_contract_names_the_same_detectors_as_the_zoo() -> None:
    # The gateway (no torch) refuses a detector on a classification project by this list.
    assert c.DETECTORS == DETECTORS


def test_a_run_stopped_before_detectors_had_groupnorm_resumes_with_its_batchnorm(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a detector run stopped after epoch 1 by a studio whose detectors had BatchNorm
    with monkeypatch.context() as old_studio:
        old_studio.setattr(detectors, "_group_norm", lambda module: None)
        stopped, before = run(tiny, tmp_path / "old", stop_after=(2, 1))
    assert (stopped.status, stopped.epochs_done) == ("stopped", 1)
    saved = before.saved[-1][0].path
    assert any(key.endswith(".running_mean") for key in read_checkpoint(saved)["model"])

    # when today's studio resumes it, then it trains on to its end with the same layers
    resumed, after = run(tiny, tmp_path / "old", resume=saved)
    assert resumed.status == "completed" and [m.epoch for m in after.epochs] == [2]
    final = read_checkpoint(after.saved[-1][0].path)["model"]
    assert final.keys() == read_checkpoint(saved)["model"].keys()
