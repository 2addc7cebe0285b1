"""``studio predict`` on the real client with a handler in place of the studio: a detector's
boxes as a table (an image without boxes says so) and as JSON with ``--json``, and a
classifier's top-k table and JSON exactly as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from studio_client import RetryPolicy, StudioClient
from studio_client.cli.state import State

CAR: dict[str, Any] = {"label": "car", "score": 0.91, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.25}
BUS: dict[str, Any] = {"label": "bus", "score": 0.425, "x": 0.5, "y": 0.0, "w": 0.5, "h": 1.0}
DETECTED = {"export_id": "x1", "task": "detection",
            "predictions": [{"boxes": [CAR, BUS]}, {"boxes": []}]}  # fmt: skip
RANKED = [
    [{"label": "cat", "score": 0.8}, {"label": "dog", "score": 0.2}],
    [{"label": "dog", "score": 0.6}, {"label": "cat", "score": 0.4}],
]
CLASSIFIED = {"export_id": "x1", "task": "classification", "predictions": RANKED}


class Studio:
    """The predict route answering ``data``; the query of each request is kept."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = DETECTED
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, dict(request.url.params)))
        return httpx.Response(200, json={"status": "ok", "data": self.data})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    studio = Studio()
    client = StudioClient("http://s", token="t", transport=httpx.MockTransport(studio),
                          retry=RetryPolicy(attempts=2, backoff=0.001))  # fmt: skip
    monkeypatch.setattr(State, "client", lambda self: client)
    yield studio
    client.close()


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    paths = [tmp_path / "street.jpg", tmp_path / "empty.png"]
    for path in paths:
        path.write_bytes(b"image bytes")
    return [str(p) for p in paths]


def studio(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def rows(shown: str) -> list[list[str]]:
    """The table's cells, line by line, its rules and column separators left out."""
    lines = (line.translate({ord(c): " " for c in "┃│━─╇┼╋┡┩"}) for line in shown.splitlines())
    return [line.split() for line in lines if line.strip()]


def test_a_detectors_boxes_print_as_a_table(fake: Studio, images: list[str]) -> None:
    done = studio("predict", "x1", *images)
    assert done.exit_code == 0, done.output
    lines = rows(done.stdout)
    assert lines[0] == ["image", "#", "label", "score", "x", "y", "w", "h"]
    assert ["street.jpg", "1", "car", "91.0%", "0.100", "0.200", "0.300", "0.250"] in lines
    assert ["street.jpg", "2", "bus", "42.5%", "0.500", "0.000", "0.500", "1.000"] in lines
    assert ["empty.png", "no", "boxes"] in lines
    assert fake.seen == [("/api/v1/export/x1/predict", {"top_k": "3"})]


def test_a_detectors_boxes_as_json(fake: Studio, images: list[str]) -> None:
    done = studio("predict", "x1", *images, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "export_id": "x1",
        "task": "detection",
        "images": [{"image": images[0], "boxes": [CAR, BUS]}, {"image": images[1], "boxes": []}],
    }


def test_a_classifiers_answer_prints_as_before(fake: Studio, images: list[str]) -> None:
    fake.data = CLASSIFIED
    shown = studio("predict", "x1", *images, "--top-k", "2")
    assert shown.exit_code == 0, shown.output
    lines = rows(shown.stdout)
    assert lines[0] == ["image", "#1", "#2"]
    assert ["street.jpg", "cat", "80.0%", "dog", "20.0%"] in lines
    assert ["empty.png", "dog", "60.0%", "cat", "40.0%"] in lines
    printed = json.loads(studio("predict", "x1", *images, "--top-k", "2", "--json").stdout)
    assert printed == {
        "export_id": "x1",
        "images": [
            {"image": images[0], "predictions": RANKED[0]},
            {"image": images[1], "predictions": RANKED[1]},
        ],
    }
