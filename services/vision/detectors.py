"""The object detectors a detection run can train, built from scratch with torchvision.

``build_detector`` gives a torchvision detection model for a project's ``num_classes`` classes;
the background is added inside (torchvision's class 0), so labels are 1..K for the project's
classes 0..K-1. Targets and outputs follow torchvision's convention: a list of [0, 1] float
CHW tensors in (the model normalises them itself), boxes in absolute pixel ``xyxy`` of each
input tensor, ``labels`` int64 1..K, and at inference ``scores``. The model resizes what it is
given to ``image_size`` internally and maps its boxes back, so callers work in the pixels of
the tensor they passed.

Every BatchNorm of torchvision's builders becomes a GroupNorm (32 groups, or fewer where the
channels do not divide by 32): a detector trains from scratch on a few images per batch, where
BatchNorm's batch statistics are too noisy and its running statistics, which evaluation uses,
lag behind the weights. Measured on the generated shapes: ssdlite fitted four training images
to mAP@.5 1.0 in its training mode while its eval mode (running statistics) scored 0.12 on the
same images; with GroupNorm, train and eval agree and both reach 1.0. A state dict written by
a BatchNorm detector (before this change) still loads: ``build_detector(..., like=state)``
builds the norm layers the state holds.

Nothing is downloaded: ``weights=None`` and ``weights_backbone=None`` always. Imports torch and
torchvision only (torchvision when a detector is built: a trainer starts without it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

#: The detectors a run may name in ``Hyperparameters.model`` (detection projects only).
DETECTORS: tuple[str, ...] = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
    "fcos_resnet50_fpn",
)

#: Detectors whose torchvision builder fixes the input size (their transform resizes to a square).
_FIXED_SIZE = frozenset({"ssdlite320_mobilenet_v3_large"})
#: GroupNorm's usual number of groups (Wu and He, 2018).
GROUPS = 32


def is_detector(model: str) -> bool:
    """Whether ``model`` names a detector (and not a classifier)."""
    return model in DETECTORS


def build_detector(
    name: str, num_classes: int, image_size: int, *, like: Mapping[str, Any] | None = None
) -> nn.Module:
    """``name`` untrained, predicting ``num_classes`` classes (labels 1..K; 0 is background),
    resizing its inputs so their longer side is ``image_size`` (a square of it for SSD), its
    norm layers GroupNorm; BatchNorm where ``like``, a state dict to load, holds BatchNorm's."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    if num_classes < 1:
        raise ValueError(f"a detector needs at least one class, not {num_classes}")
    if image_size < 32:
        raise ValueError(f"a detector needs an image size of at least 32, not {image_size}")
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
    if name not in _FIXED_SIZE:
        kwargs |= {"min_size": image_size, "max_size": image_size}
    from torchvision.models import detection as tvd

    builder: Callable[..., nn.Module] = getattr(tvd, name)
    model = builder(num_classes=num_classes + 1, **kwargs)
    if name in _FIXED_SIZE:
        # SSD's anchors follow its feature maps, so another square input size works as well.
        model.transform.fixed_size = (image_size, image_size)  # type: ignore[union-attr]
    if like is None or not any(key.endswith(".running_mean") for key in like):
        _group_norm(model)
    return model


def _group_norm(module: nn.Module) -> None:
    """Replaces every ``BatchNorm2d`` under ``module`` by a ``GroupNorm`` of its channels
    (weight 1, bias 0, as a fresh BatchNorm starts)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            groups = math.gcd(channels, GROUPS)
            setattr(module, name, nn.GroupNorm(groups, channels, eps=child.eps))
        else:
            _group_norm(child)
