"""The client's ``exports.predict`` against handler fakes, blocking and async: a detector's
answer (boxes per image, one with none) decodes into ``Predictions.boxes``, a classifier's
list of lists decodes as it always did, and an answer without ``task`` is a classifier's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from contracts.exports import DetectedBox as Sent
from studio_client import AsyncStudioClient, RetryPolicy, StudioClient
from studio_client.models import DetectedBox, Prediction, Predictions

FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002)
CAR: dict[str, Any] = {"label": "car", "score": 0.91, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.25}
BUS: dict[str, Any] = {"label": "bus", "score": 0.42, "x": 0.5, "y": 0.0, "w": 0.5, "h": 1.0}
DETECTED = {"export_id": "x1", "task": "detection",
            "predictions": [{"boxes": [CAR, BUS]}, {"boxes": []}]}  # fmt: skip
CLASSIFIED = {"export_id": "x1", "task": "classification",
              "predictions": [[{"label": "cat", "score": 0.8}, {"label": "dog", "score": 0.2}],
                              [{"label": "dog", "score": 0.6}]]}  # fmt: skip


class Studio:
    """The predict route answering ``data``; the requests it was sent are kept."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path != "/api/v1/export/x1/predict":
            return httpx.Response(404, json={"status": "error", "error": {"code": "NOT_FOUND"}})
        return httpx.Response(200, json={"status": "ok", "data": self.data})


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.jpg", tmp_path / "b.png"]
    for path in paths:
        path.write_bytes(b"\xff\xd8 not really an image")
    return paths


def predict(data: dict[str, Any], images: list[Path]) -> tuple[Predictions, Studio]:
    studio = Studio(data)
    with StudioClient("http://s", token="t", retry=FAST,
                      transport=httpx.MockTransport(studio)) as client:  # fmt: skip
        return client.exports.predict("x1", images, top_k=2), studio


def test_a_detectors_answer_is_its_boxes_per_image(images: list[Path]) -> None:
    answer, studio = predict(DETECTED, images)
    assert answer.task == "detection" and answer.detection
    assert answer.boxes == [[DetectedBox(**CAR), DetectedBox(**BUS)], []]
    assert answer.predictions == [[], []]  # no class lists: one empty list per image
    assert answer.export_id == "x1"
    [request] = studio.seen
    assert request.method == "POST" and dict(request.url.params) == {"top_k": "2"}
    assert b'filename="a.jpg"' in request.content and b'filename="b.png"' in request.content


def test_a_classifiers_answer_is_unchanged(images: list[Path]) -> None:
    answer, _ = predict(CLASSIFIED, images)
    assert answer.task == "classification" and not answer.detection
    assert answer.predictions == [
        [Prediction(label="cat", score=0.8), Prediction(label="dog", score=0.2)],
        [Prediction(label="dog", score=0.6)],
    ]
    assert answer.boxes == []


def test_an_answer_without_task_is_a_classifiers(images: list[Path]) -> None:
    older = {k: v for k, v in CLASSIFIED.items() if k != "task"}
    answer, _ = predict(older, images)
    assert answer.task == "classification"
    assert [[p.label for p in ranked] for ranked in answer.predictions] == [["cat", "dog"], ["dog"]]


@pytest.mark.parametrize("data", [DETECTED, CLASSIFIED], ids=["detection", "classification"])
async def test_the_async_client_decodes_both_shapes_alike(
    data: dict[str, Any], images: list[Path]
) -> None:
    blocking, _ = predict(data, images)
    transport = httpx.MockTransport(Studio(data))
    async with AsyncStudioClient("http://s", token="t", retry=FAST, transport=transport) as client:
        answer = await client.exports.predict("x1", images, top_k=2)
    assert answer == blocking and answer.task == data["task"]


def test_a_box_decodes_from_the_contracts_own_encoding() -> None:
    """What the gateway sends is ``msgspec.to_builtins`` of ``contracts.exports.DetectedBox``:
    the client reads exactly those fields."""
    sent = Sent(label="car", score=0.5, x=0.25, y=0.5, w=0.125, h=0.25)
    wire = json.loads(msgspec.json.encode(sent))
    assert msgspec.convert(wire, DetectedBox) == DetectedBox(**wire)
    assert set(wire) == set(DetectedBox.__struct_fields__)
