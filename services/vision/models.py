"""The architectures a run can train, built from scratch, and loading a local weights file.

Torchvision models are always built with ``weights=None``: nothing is downloaded, pretrained
weights come only from a file on the trainer's machine. Imports torch and torchvision only
(torchvision when a model of it is built or its weights looked up: a trainer starts without it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: The state-dict prefix of each model's classifier head, which may differ in shape when loading.
HEADS = {
    "smallcnn": "head.",
    "resnet18": "fc.",
    "resnet34": "fc.",
    "resnet50": "fc.",
    "mobilenet_v3_small": "classifier.3.",
    "mobilenet_v3_large": "classifier.3.",
    "efficientnet_b0": "classifier.1.",
    "convnext_tiny": "classifier.2.",
}
_TORCHVISION = frozenset(name for name in HEADS if name != "smallcnn")


def _torchvision(name: str) -> Callable[..., nn.Module]:
    """torchvision's builder of ``name`` (torchvision is imported by the first one asked for)."""
    from torchvision import models as tv

    builder: Callable[..., nn.Module] = getattr(tv, name)
    return builder


class SmallCNN(nn.Module):
    """Four conv blocks (conv, BatchNorm, ReLU, pool), a global average pool and a linear head:
    a few seconds an epoch on a CPU at 32 to 64 px."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 3
        for width in widths:
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def build_model(name: str, num_classes: int, pretrained: Path | None = None) -> nn.Module:
    """``name`` with a head for ``num_classes``; starts from ``pretrained`` when given."""
    if name not in HEADS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(HEADS)}")
    if num_classes < 1:
        raise ValueError(f"a model needs at least one class, not {num_classes}")
    if name == "smallcnn":
        model: nn.Module = SmallCNN(num_classes)
    else:
        model = _torchvision(name)(weights=None, num_classes=num_classes)
    if pretrained is not None:
        load_pretrained(model, name, pretrained)
    return model


def load_pretrained(model: nn.Module, name: str, path: Path) -> None:
    """Loads every weight of ``path`` into ``model``; only the head may differ, and is skipped.

    Raises ValueError when the file is unreadable or holds another architecture.
    """
    own = model.state_dict()
    head = HEADS[name]
    kept: dict[str, Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in _read_state_dict(path).items():
        key = key.removeprefix("module.")  # saved from DataParallel
        if key not in own:
            unexpected.append(key)
        elif own[key].shape == value.shape:
            kept[key] = value
        elif not key.startswith(head):
            mismatched.append(key)
    missing = [key for key in own if key not in kept and not key.startswith(head)]
    wrong = missing + unexpected + mismatched
    if wrong:
        raise ValueError(
            f"{path} does not fit {name}: {len(missing)} missing, {len(unexpected)} unexpected "
            f"and {len(mismatched)} mismatched weights (first: {wrong[0]})"
        )
    model.load_state_dict(kept, strict=False)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its format
        raise ValueError(f"cannot read weights from {path}: {exc}") from exc
    # Accept a bare state dict, one of our checkpoints, or the common {"state_dict": …} wrapper.
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return data


#: ``pretrained: "imagenet"`` means torchvision's default weights, from torch's cache only.
CACHED = "imagenet"


def pretrained_path(model: str, value: str) -> Path:
    """The weights file ``value`` names: a path, or ``imagenet`` for the file torchvision
    would download into torch's cache. Raises ValueError when it is not there: nothing is
    downloaded at run time."""
    if value != CACHED:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {value!r}")
        return path
    if model not in _TORCHVISION:
        raise ValueError(f"{model} has no ImageNet weights; give a weights file or none")
    from torchvision import models as tv

    url = tv.get_model_weights(model).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise ValueError(
            f"the ImageNet weights of {model} are not in torch's cache ({path}); nothing is "
            "downloaded at run time: put the file there, or give its path"
        )
    return path
