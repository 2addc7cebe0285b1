"""The exports context: a run's checkpoint exported (ONNX, TorchScript), verified, served."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from contracts.common import Id, JobEvents, Keyword
from contracts.envelope import Message

CONTEXT: Final = "exports"
STREAM: Final = "EXPORTS"
EVENTS: Final = "evt.exports.>"
FORMATS: Final = ("onnx", "torchscript")
#: Images in one prediction request.
PREDICT_MAX_IMAGES: Final = 64


#: The Object Store bucket of the exported files: the exporter writes each export's model file
#: and bundle there before it records the export completed; whoever serves them reads them there.
EXPORTS_BUCKET: Final = "studio_exports"
#: The bundle's file name beside the model file.
BUNDLE_NAME: Final = "bundle.zip"


def event_subject(export_id: str) -> str:
    return f"evt.exports.{export_id}"


def export_object(export_id: str, name: str) -> str:
    """The object name of an export's file ``name`` (its model file, or ``BUNDLE_NAME``) in
    ``EXPORTS_BUCKET``. ``ExportCompleted`` records both names: readers take them from there."""
    return f"exports/{export_id}/{name}"


class Subjects:
    REQUEST_EXPORT: Final = "cmd.exports.request_export"
    PREDICT: Final = "qry.exports.predict"


class Parity(msgspec.Struct, frozen=True):
    """The exported model against the trained one, on the same preprocessed images."""

    images: int
    max_abs_diff: float
    top1_agreement: float
    torch_accuracy: float | None
    exported_accuracy: float | None
    passed: bool
    #: A detector's parity (boxes, not logits): the smallest IoU of a matched pair and how many
    #: detections above the score threshold were matched; ``max_abs_diff`` is then the largest
    #: score gap and ``top1_agreement`` the share of images whose boxes all matched.
    min_iou: float | None = None
    detections: int | None = None


class Latency(msgspec.Struct, frozen=True):
    """Milliseconds per batch: the exported model's runtime next to torch eager."""

    exported_b1: float
    exported_b32: float
    torch_b1: float
    torch_b32: float


class RequestExport(Message, frozen=True, tag="exports.request_export.v1"):
    export_id: Id
    run_id: Id
    checkpoint: Keyword = "best"
    format: Keyword = "onnx"


class Predict(Message, frozen=True, tag="exports.predict.v1"):
    export_id: Id
    images: Annotated[list[bytes], msgspec.Meta(max_length=PREDICT_MAX_IMAGES)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5


class DetectedBox(msgspec.Struct, frozen=True):
    """One box a detector export found: its class, score, and the box normalised to the image
    like ``contracts.datasets.Box`` (top-left ``x``/``y``, ``w``/``h``, all in [0, 1])."""

    label: str
    score: float
    x: float
    y: float
    w: float
    h: float


class Predictions(Message, frozen=True, tag="exports.predictions.v1"):
    export_id: str
    #: A classifier's top-k (class, probability) per image; empty lists for a detector.
    results: list[list[tuple[str, float]]]
    #: "classification" or "detection" (what the export predicts).
    task: str = "classification"
    #: A detector's boxes per image, best first; empty for a classifier.
    boxes: list[list[DetectedBox]] = []


class ExportRequested(Message, frozen=True, tag="exports.export_requested.v1"):
    export_id: str
    run_id: str
    checkpoint: str
    format: str
    checkpoint_sha256: str
    checkpoint_epoch: int
    instance: str = ""


class ExportCompleted(Message, frozen=True, tag="exports.export_completed.v1"):
    export_id: str
    run_id: str
    format: str
    file_name: str
    size: int
    sha256: str
    parity: Parity
    latency: Latency | None
    bundle_size: int
    bundle_sha256: str
    #: Where the model file and the bundle are in ``EXPORTS_BUCKET`` (stored there before this
    #: event); "" for an export completed before exports were kept in the Object Store.
    object_name: str = ""
    bundle_object: str = ""


class ExportFailed(Message, frozen=True, tag="exports.export_failed.v1"):
    export_id: str
    run_id: str
    code: str
    message: str
    parity: Parity | None = None


Event = ExportRequested | ExportCompleted | ExportFailed

ALL: tuple[type[Message], ...] = (
    RequestExport,
    Predict,
    Predictions,
    ExportRequested,
    ExportCompleted,
    ExportFailed,
)

#: The export as a background job: its events, for the job decider and job tables.
EXPORT_JOB: Final = JobEvents(
    "export", "export_id", "run_id", ExportRequested, ExportCompleted, ExportFailed
)
