"""What ``POST /export/{id}/predict`` answers, as typed values: a classifier's top-k labels
per image or a detector's boxes per image, in one ``Predictions`` whose ``task`` says which.
The gateway sends ``predictions`` as a list of lists (classifier) or a list of ``{"boxes":
[...]}`` objects (detector); ``Answer`` decodes either and ``Answer.typed`` sorts them into
``predictions`` and ``boxes``. Imports msgspec only.
"""

from __future__ import annotations

import msgspec

__all__ = ["Answer", "DetectedBox", "Prediction", "Predictions"]


class _Model(msgspec.Struct, kw_only=True):
    """Keyword-only, unknown fields ignored (as ``studio_client.models.Model``)."""


class Prediction(_Model):
    """One of a classifier's top-k: a label and its probability."""

    label: str
    score: float


class DetectedBox(_Model):
    """One box a detector found: its class, score and the box normalised to the image
    (top-left ``x``/``y``, ``w``/``h``, all in [0, 1])."""

    label: str
    score: float
    x: float
    y: float
    w: float
    h: float


class Predictions(_Model):
    """What the export predicts for each image, in the order the images were sent.

    ``task`` is ``"classification"`` (``predictions``: the top-k per image; ``boxes`` empty)
    or ``"detection"`` (``boxes``: the boxes per image, best first; ``predictions`` holds an
    empty list per image)."""

    export_id: str
    predictions: list[list[Prediction]]
    task: str = "classification"
    boxes: list[list[DetectedBox]] = []

    @property
    def detection(self) -> bool:
        return self.task == "detection"


class ImageBoxes(_Model):
    """A detector's answer for one image on the wire."""

    boxes: list[DetectedBox] = []


class Answer(_Model):
    """The predict route's ``data`` as sent: each image's entry a list (classifier) or an
    object with boxes (detector). A gateway that sends no ``task`` is a classifier's."""

    export_id: str
    predictions: list[list[Prediction] | ImageBoxes]
    task: str = "classification"

    def typed(self) -> Predictions:
        """The answer as ``Predictions``; an entry's shape decides where it goes, so a
        detector's answer is read as boxes even if its ``task`` were missing."""
        boxes = [p.boxes for p in self.predictions if isinstance(p, ImageBoxes)]
        if not boxes:
            ranked = [p for p in self.predictions if isinstance(p, list)]
            return Predictions(export_id=self.export_id, predictions=ranked, task=self.task)
        return Predictions(
            export_id=self.export_id,
            predictions=[[] for _ in self.predictions],
            task="detection",
            boxes=[p.boxes if isinstance(p, ImageBoxes) else [] for p in self.predictions],
        )
