"""Checks a ``Hyperparameters`` before a run is queued: every bad value, with its field.

The bounds and choices are the contract's (``HYPERPARAMETER_BOUNDS``, ``HYPERPARAMETER_CHOICES``
in ``contracts.training``), never restated here: a stored ``RunQueued`` is unbounded, so a run
resumed from one is checked against them here. What only the trainer knows is checked here too:
the model against the zoo, the image size a backbone needs, the pretrained file.
Pure apart from one filesystem look-up (the pretrained file, by path or in torch's cache).
Imports ``contracts`` and ``services.vision`` only.
"""

from __future__ import annotations

import msgspec

from contracts.training import (
    HYPERPARAMETER_BOUNDS,
    HYPERPARAMETER_CHOICES,
    INT64_MAX,
    MODELS,
    TORCHVISION_MIN_SIZE,
    Hyperparameters,
)
from services.vision.detectors import DETECTORS
from services.vision.models import pretrained_path

#: What a run may train: a classifier of the contract's zoo, or a detector (for a detection
#: project; the trainer matches the model to the project's task when the run is started).
TRAINABLE = (*MODELS, *DETECTORS)

Problem = tuple[str, str]


def validate(h: Hyperparameters) -> list[Problem]:
    """(field, message) for every bad value; an empty list means ``h`` is valid."""
    values = msgspec.structs.asdict(h)
    checks = [_one_of("model", h.model, TRAINABLE)]
    checks += [_one_of(name, values[name], words) for name, words in HYPERPARAMETER_CHOICES.items()]
    checks += [_within(name, values[name], meta) for name, meta in HYPERPARAMETER_BOUNDS.items()]
    checks += [_image_size(h.model, h.image_size), _pretrained(h.model, h.pretrained)]
    return [problem for problem in checks if problem is not None]


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> Problem | None:
    if value in allowed:
        return None
    return field, f"unknown {field} {value!r}; expected one of {', '.join(allowed)}"


def _within(field: str, value: float | str | None, meta: msgspec.Meta) -> Problem | None:
    """The problem with ``value`` if it is outside ``meta``'s bounds (a number's or a length's)."""
    if value is None:  # an optional value left out: nothing to bound
        return None
    if isinstance(value, str):
        if meta.max_length is not None and len(value) > meta.max_length:
            return field, f"must be at most {meta.max_length} characters, not {len(value)}"
        return None
    high = INT64_MAX if meta.le is None else meta.le
    # Written as negated ranges so that NaN fails too.
    if meta.gt is not None:
        if not meta.gt < value <= high:
            return field, f"must be above {meta.gt} and at most {high}, not {value}"
        return None
    low = meta.ge
    if low is None or low <= value <= high:
        return None
    if high == INT64_MAX:  # the wire's limit on an int, not the domain's: rarely the one crossed
        bound = f"{low} or more" if not value > low else f"at most {high}"
        return field, f"must be {bound}, not {value}"
    return field, f"must be between {low} and {high}, not {value}"


def _image_size(model: str, size: int) -> Problem | None:
    """A backbone's lower limit; the contract's bounds are checked (and reported) apart."""
    if _within("image_size", size, HYPERPARAMETER_BOUNDS["image_size"]) is not None:
        return None
    if model != "smallcnn" and model in TRAINABLE and size < TORCHVISION_MIN_SIZE:
        return "image_size", f"must be at least {TORCHVISION_MIN_SIZE} for {model}, not {size}"
    return None


def _pretrained(model: str, value: str | None) -> Problem | None:
    if value is None or model not in TRAINABLE:
        return None
    if model in DETECTORS:
        return "pretrained", f"{model} trains from scratch: it takes no pretrained weights"
    try:
        pretrained_path(model, value)
    except ValueError as err:
        return "pretrained", str(err)
    except OSError as err:  # e.g. a name too long, or a folder the trainer may not read
        return "pretrained", f"cannot read {value!r}: {err.strerror or err}"
    return None
