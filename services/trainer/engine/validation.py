"""Checks a ``Hyperparameters`` before a run is queued: every bad value, with its field.

Pure apart from one filesystem look-up (the pretrained file, by path or in torch's cache).
"""

from __future__ import annotations

from contracts.training import AUGMENTATIONS, MODELS, OPTIMIZERS, SCHEDULES, Hyperparameters
from services.vision.models import pretrained_path

CLASS_WEIGHTS = ("none", "auto")
MIXED_PRECISION = ("auto", "on", "off")
#: torchvision backbones downsample 32 times; smaller images vanish before their head.
TORCHVISION_MIN_SIZE = 32

Problem = tuple[str, str]


def validate(h: Hyperparameters) -> list[Problem]:
    """(field, message) for every bad value; an empty list means ``h`` is valid."""
    checks = [
        _one_of("model", h.model, MODELS),
        _one_of("optimizer", h.optimizer, OPTIMIZERS),
        _one_of("schedule", h.schedule, SCHEDULES),
        _one_of("augmentation", h.augmentation, AUGMENTATIONS),
        _one_of("class_weights", h.class_weights, CLASS_WEIGHTS),
        _one_of("mixed_precision", h.mixed_precision, MIXED_PRECISION),
        _between("epochs", h.epochs, 1, 1000),
        _between("batch_size", h.batch_size, 1, 4096),
        _learning_rate(h.learning_rate),
        _between("weight_decay", h.weight_decay, 0, 1),
        _image_size(h.model, h.image_size),
        _between("early_stopping_patience", h.early_stopping_patience, 0, 1000),
        _between("workers", h.workers, 0, 32),
        None if h.seed >= 0 else ("seed", f"must be 0 or more, not {h.seed}"),
        _pretrained(h.model, h.pretrained),
    ]
    return [problem for problem in checks if problem is not None]


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> Problem | None:
    if value in allowed:
        return None
    return field, f"unknown {field} {value!r}; expected one of {', '.join(allowed)}"


def _between(field: str, value: float, low: float, high: float) -> Problem | None:
    # Written as a negated range so that NaN fails too.
    if not low <= value <= high:
        return field, f"must be between {low} and {high}, not {value}"
    return None


def _learning_rate(value: float) -> Problem | None:
    if not 0 < value <= 10:
        return "learning_rate", f"must be above 0 and at most 10, not {value}"
    return None


def _image_size(model: str, size: int) -> Problem | None:
    problem = _between("image_size", size, 16, 1024)
    if problem is None and model != "smallcnn" and model in MODELS and size < TORCHVISION_MIN_SIZE:
        return "image_size", f"must be at least {TORCHVISION_MIN_SIZE} for {model}, not {size}"
    return problem


def _pretrained(model: str, value: str | None) -> Problem | None:
    if value is None or model not in MODELS:
        return None
    try:
        pretrained_path(model, value)
    except ValueError as err:
        return "pretrained", str(err)
    except OSError as err:  # e.g. a name too long, or a folder the trainer may not read
        return "pretrained", f"cannot read {value!r}: {err.strerror or err}"
    return None
