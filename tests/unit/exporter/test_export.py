"""The exporter end to end on a tiny smallcnn checkpoint: ONNX and TorchScript files checked
for parity, corrupt checkpoints refused, parity failures reported, prediction and bundles.

The task: 32x32 noise with a bright square top-left (class 0) or bottom-right (class 1), as in
the trainer's tests; two epochs train it in a second or two.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from contracts.training import Hyperparameters
from services.exporter.engine import (
    BadImage,
    Exported,
    Predictor,
    bundle,
    export_onnx,
    export_torchscript,
    load_checkpoint,
    onnx_export,
    providers,
)
from services.trainer.engine import Sample, train
from services.vision.preprocess import eval_transform, load_image

CLASSES = ["top_left", "bottom_right"]


def squares(folder: Path, per_class: int, seed: int) -> list[tuple[Path, int]]:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    samples = []
    for i in range(2 * per_class):
        label = i % 2
        image = Image.new("RGB", (32, 32))
        image.putdata([tuple(rng.randrange(120) for _ in "rgb") for _ in range(32 * 32)])
        x, y = rng.randrange(1, 5) + 17 * label, rng.randrange(1, 5) + 17 * label
        image.paste((rng.randrange(200, 256),) * 3, (x, y, x + 10, y + 10))
        image.save(folder / f"{i}.png")
        samples.append((folder / f"{i}.png", label))
    return samples


class Quiet:
    def on_batch(self, epoch: int, batch: int, batches: int, loss: float) -> None: ...
    def on_epoch(self, metrics: Any, checkpoints: Any) -> None: ...
    def should_stop(self) -> bool:
        return False


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, int]]]:
    """A checkpoint and 120 labelled images it has not trained on."""
    root = tmp_path_factory.mktemp("export")
    fit = [Sample(p, y) for p, y in squares(root / "train", 24, seed=1)]
    held_out = squares(root / "val", 60, seed=2)
    h = Hyperparameters(model="smallcnn", epochs=2, batch_size=8, learning_rate=3e-3,
                        image_size=32, augmentation="light", seed=7)  # fmt: skip
    val = [Sample(p, y) for p, y in held_out[:16]]
    train(h, CLASSES, fit, val, root / "run", "cpu", Quiet())
    return root / "run" / "last.pt", held_out


@pytest.fixture(scope="module")
def onnx_file(
    trained: tuple[Path, list[tuple[Path, int]]], tmp_path_factory: pytest.TempPathFactory
) -> Exported:
    checkpoint, images = trained
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx", images)


def eager_logits(checkpoint: Path, images: list[tuple[Path, int]]) -> torch.Tensor:
    model, _ = load_checkpoint(checkpoint)
    t = eval_transform(32)
    with torch.inference_mode():
        return model(torch.stack([t(load_image(p, 32)) for p, _ in images]))


def test_onnx_export_passes_parity_and_carries_its_metadata(onnx_file: Exported) -> None:
    parity = onnx_file.parity
    assert parity is not None and parity.passed
    assert (parity.images, parity.top1_agreement) == (120, 1.0)
    assert parity.max_abs_diff < 1e-4 and parity.onnx_accuracy == parity.torch_accuracy
    assert onnx_file.latency is not None and onnx_file.latency.onnx_b32 > 0
    data = onnx_file.path.read_bytes()
    assert (onnx_file.size, onnx_file.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    model = onnx.load(str(onnx_file.path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["studio_format"] == "ai-studio/1" and props["model"] == "smallcnn"
    assert json.loads(props["classes"]) == CLASSES
    assert json.loads(props["preprocessing"])["input_size"] == 32
    assert model.opset_import[0].version >= 17


@pytest.mark.parametrize("batch", [1, 5])
def test_the_onnx_batch_axis_is_dynamic(trained: Any, onnx_file: Exported, batch: int) -> None:
    checkpoint, images = trained
    expected = eager_logits(checkpoint, images[:batch])
    session = ort.InferenceSession(str(onnx_file.path), providers=["CPUExecutionProvider"])
    t = eval_transform(32)
    x = torch.stack([t(load_image(p, 32)) for p, _ in images[:batch]]).numpy()

    (logits,) = session.run(["logits"], {"image": x})

    assert logits.shape == (batch, 2)
    assert (logits.argmax(1) == expected.argmax(1).numpy()).all()


def test_torchscript_export_loads_and_matches(trained: Any, tmp_path: Path) -> None:
    checkpoint, images = trained
    exported = export_torchscript(checkpoint, tmp_path / "model.pt", images[:40])

    assert exported.parity is not None and exported.parity.passed
    loaded = torch.jit.load(str(exported.path))
    t = eval_transform(32)
    x = torch.stack([t(load_image(p, 32)) for p, _ in images[:8]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), eager_logits(checkpoint, images[:8]))
    assert exported.sha256 == hashlib.sha256(exported.path.read_bytes()).hexdigest()


def test_a_corrupt_checkpoint_is_refused(trained: Any, tmp_path: Path) -> None:
    checkpoint, _ = trained
    data = checkpoint.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    # In the archive's header torch itself fails; inside tensor data only the sha256 can tell.
    for where, known, error in ((100, None, "unreadable"), (len(data) // 2, digest, "corrupt")):
        flipped = bytearray(data)
        flipped[where] ^= 0xFF
        bad = tmp_path / f"flipped{where}.pt"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=error):
            load_checkpoint(bad, sha256=known)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    model, info = load_checkpoint(checkpoint, sha256=digest)
    assert (info["model"], info["image_size"], info["classes"]) == ("smallcnn", 32, CLASSES)
    assert not model.training


def test_a_parity_failure_is_reported_with_its_numbers(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, images = trained
    real = onnx_export._runner

    def noisy(path: Path) -> Any:
        run = real(path)
        return lambda batch: run(batch) + np.float32(0.01)  # shifts logits, keeps the argmax

    monkeypatch.setattr(onnx_export, "_runner", noisy)
    exported = export_onnx(checkpoint, tmp_path / "model.onnx", images[:20])

    assert exported.parity is not None and not exported.parity.passed
    assert exported.parity.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    assert exported.parity.top1_agreement == 1.0


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_predictions_are_top_k_sorted_and_capped(trained: Any, onnx_file: Exported) -> None:
    checkpoint, images = trained
    predictor = Predictor(max_sessions=2)
    data = [p.read_bytes() for p, _ in images[:4]]

    results = predictor.predict(onnx_file.path, data, top_k=5)

    expected = eager_logits(checkpoint, images[:4]).argmax(1).tolist()
    assert [r[0][0] for r in results] == [CLASSES[i] for i in expected]
    for result in results:
        assert len(result) == 2 and result[0][1] >= result[1][1]
        assert sum(p for _, p in result) == pytest.approx(1.0, abs=1e-5)
    assert [len(r) for r in predictor.predict(onnx_file.path, data[:1], top_k=1)] == [1]


def test_an_undecodable_image_is_named_by_its_index(trained: Any, onnx_file: Exported) -> None:
    _, images = trained
    good = images[0][0].read_bytes()
    truncated = png(Image.new("RGB", (64, 64), (9, 9, 9)))[:-40]
    predictor = Predictor()

    for bad in (b"not an image", truncated):
        with pytest.raises(BadImage) as caught:
            predictor.predict(onnx_file.path, [good, bad])
        assert caught.value.index == 1


def test_a_bundle_holds_model_labels_and_card(
    trained: Any, onnx_file: Exported, tmp_path: Path
) -> None:
    checkpoint, _ = trained
    out = bundle(onnx_file, checkpoint, {"name": "Squares", "author": "test"}, tmp_path / "b.zip")

    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert names == {"model.onnx", "labels.txt", "model_card.md", "model_card.json"}
        assert archive.read("labels.txt").decode().splitlines() == CLASSES
        card = json.loads(archive.read("model_card.json"))
        assert archive.read("model.onnx") == onnx_file.path.read_bytes()
        assert "# Squares" in archive.read("model_card.md").decode()
    assert card["name"] == "Squares" and card["format"] == "onnx"
    assert card["sha256"] == onnx_file.sha256 and card["parity"]["passed"] is True
    assert card["latency_ms"]["torch_b1"] > 0 and card["preprocessing"]["input_size"] == 32


def test_only_the_cpu_provider_is_asked_for_without_a_gpu() -> None:
    assert providers() == ["CPUExecutionProvider"]


def test_a_dynamo_failure_falls_back_to_the_torchscript_exporter(
    trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint, images = trained
    real = torch.onnx.export

    def no_dynamo(*args: Any, dynamo: bool = True, **kwargs: Any) -> Any:
        if dynamo:
            raise RuntimeError("unsupported graph")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    exported = export_onnx(checkpoint, tmp_path / "model.onnx", images[:20])

    assert "falling back to dynamo=False" in caplog.text
    assert exported.parity is not None and exported.parity.passed
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 2)
