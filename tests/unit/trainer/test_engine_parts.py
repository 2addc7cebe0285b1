"""The engine's parts on their own: validation, models and weights files, devices, image loading,
class weights and schedule planning."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import msgspec
import pytest
import torch
from PIL import Image

from contracts.training import MODELS, Hyperparameters
from services.trainer.engine import build_model, pick_device, validate
from services.trainer.engine.data import load_image
from services.trainer.engine.optim import class_weights, plan_schedule

EXIF_ORIENTATION = 0x0112


def test_the_defaults_are_valid() -> None:
    assert validate(Hyperparameters()) == []


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("model", {"model": "vgg16"}),
        ("optimizer", {"optimizer": "adam"}),
        ("schedule", {"schedule": "linear"}),
        ("augmentation", {"augmentation": "heavy"}),
        ("class_weights", {"class_weights": "manual"}),
        ("mixed_precision", {"mixed_precision": "fp16"}),
        ("epochs", {"epochs": 0}),
        ("epochs", {"epochs": 1001}),
        ("batch_size", {"batch_size": 0}),
        ("batch_size", {"batch_size": 4097}),
        ("learning_rate", {"learning_rate": 0.0}),
        ("learning_rate", {"learning_rate": 10.5}),
        ("learning_rate", {"learning_rate": float("nan")}),
        ("weight_decay", {"weight_decay": -0.1}),
        ("weight_decay", {"weight_decay": 1.5}),
        ("image_size", {"image_size": 15}),
        ("image_size", {"image_size": 1025}),
        ("image_size", {"image_size": 16, "model": "resnet18"}),
        ("early_stopping_patience", {"early_stopping_patience": -1}),
        ("early_stopping_patience", {"early_stopping_patience": 1001}),
        ("workers", {"workers": -1}),
        ("workers", {"workers": 33}),
        ("seed", {"seed": -1}),
        ("pretrained", {"pretrained": "/no/such/weights.pt"}),
        ("pretrained", {"pretrained": ""}),
    ],
)
def test_validate_names_each_bad_value(field: str, changes: dict[str, Any]) -> None:
    problems = validate(msgspec.structs.replace(Hyperparameters(), **changes))

    assert [f for f, _ in problems] == [field]


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    h = Hyperparameters(model="x", epochs=0, seed=-3, image_size=16, pretrained=str(weights))

    assert [f for f, _ in validate(h)] == ["model", "epochs", "seed"]
    assert validate(Hyperparameters(model="smallcnn", image_size=16)) == []


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_runs_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 3).eval()

    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))

    assert logits.shape == (2, 3)


def test_a_weights_file_of_the_same_architecture_loads_without_its_head(tmp_path: Path) -> None:
    source = build_model("resnet18", 10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")

    model = build_model("resnet18", 2, tmp_path / "resnet18.pt")

    assert model.state_dict()["conv1.weight"].equal(source.state_dict()["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (2, 512)


def test_a_weights_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    torch.save(build_model("resnet18", 2).state_dict(), tmp_path / "resnet18.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")

    with pytest.raises(ValueError, match="does not fit smallcnn"):
        build_model("smallcnn", 2, tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match="does not fit resnet34"):
        build_model("resnet34", 2, tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match="cannot read weights"):
        build_model("smallcnn", 2, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg16", 2)


def test_pick_device_honours_an_explicit_choice() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device() == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not available"):
        pick_device("cuda:99")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


def test_load_image_applies_exif_orientation_and_whitens_transparency(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotated 90°: stored 40x20, shown 20x40
    Image.new("RGB", (40, 20), "red").save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")

    turned = load_image(tmp_path / "turned.jpg", 16)
    clear = load_image(tmp_path / "clear.png", 16)

    assert (turned.mode, turned.size) == ("RGB", (20, 40))
    assert clear.getpixel((3, 3)) == (255, 255, 255)


def test_a_large_jpeg_decodes_at_a_reduced_scale(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 768), "blue").save(buffer, "JPEG")
    (tmp_path / "big.jpg").write_bytes(buffer.getvalue())

    image = load_image(tmp_path / "big.jpg", 64)

    assert min(image.size) >= 128 and image.size[0] < 1024


def test_auto_class_weights_are_inverse_frequency_with_mean_one() -> None:
    weights = class_weights([0, 0, 0, 1], 2)

    assert weights.tolist() == pytest.approx([0.5, 1.5])
    assert class_weights([0, 1], 3).mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "none"])
def test_a_planned_schedule_fast_forwards_to_the_stepped_one(schedule: str) -> None:
    h = Hyperparameters(epochs=6, schedule=schedule, learning_rate=0.1, optimizer="sgd")
    stepped = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    planned = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    live = plan_schedule(stepped, h, steps_per_epoch=5, epochs_done=0)
    for _ in range(4):
        for _ in range(5):
            stepped.step()
            live.after_batch()
        live.after_epoch()

    plan_schedule(planned, h, steps_per_epoch=5, epochs_done=4)

    assert planned.param_groups[0]["lr"] == stepped.param_groups[0]["lr"]
    assert planned.param_groups[0]["momentum"] == stepped.param_groups[0]["momentum"]


def test_imagenet_weights_come_from_torchs_cache_only(tmp_path, monkeypatch):
    import torch
    from torchvision import models as tv

    from contracts.training import Hyperparameters
    from services.trainer.engine import validate
    from services.vision.models import pretrained_path

    # given an empty torch cache: the weights are refused, never downloaded
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    problems = validate(Hyperparameters(model="resnet18", pretrained="imagenet"))
    assert problems and problems[0][0] == "pretrained" and "cache" in problems[0][1]
    assert validate(Hyperparameters(model="smallcnn", pretrained="imagenet"))[0][0] == "pretrained"
    # when the file torchvision would have downloaded is there, it is the one used
    name = tv.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    cached = tmp_path / "checkpoints" / name
    cached.parent.mkdir()
    torch.save(tv.resnet18(weights=None).state_dict(), cached)
    assert pretrained_path("resnet18", "imagenet") == cached
    assert validate(Hyperparameters(model="resnet18", pretrained="imagenet")) == []
