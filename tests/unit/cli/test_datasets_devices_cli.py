"""``studio datasets export`` (format, split by name, the file, what the archive holds, a
refusal), ``studio train --devices`` and ``studio projects create --task-type detection``,
on the real client with a handler in place of the studio."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from studio_client import RetryPolicy, StudioClient
from studio_client.cli.state import State

PROJECT = {"id": "a" * 32, "name": "cars", "role": "owner", "task_type": "detection"}
SPLIT = {"id": "b" * 32, "project_id": PROJECT["id"], "name": "quick", "created_at": "2026"}
SUMMARY = {"format": "yolo", "images": 2, "boxes": 5, "classes": ["car", "bus"],
           "left_out": [{"filename": "gone.png",
                         "reason": "deleted during the export"}]}  # fmt: skip


def archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("images/train/a.png", b"png" * 1000)
        zf.writestr("labels/train/a.txt", "0 0.5 0.5 0.2 0.2\n")
        zf.writestr("export.json", json.dumps(SUMMARY))
    return out.getvalue()


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"status": "ok", "data": data})


class Studio:
    """The routes these commands call; what they were sent is kept."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []
        self.refuse: dict[str, Any] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        body = json.loads(request.content) if request.content else dict(request.url.params)
        self.seen.append((request.method, path, body))
        if self.refuse is not None:
            answer = {"status": "error", "error": self.refuse, "request_id": "req-1"}
            return httpx.Response(422, json=answer)
        if path == f"/projects/{PROJECT['id']}":
            return ok(PROJECT)
        if path == "/projects" and request.method == "POST":
            return ok({**PROJECT, "name": body["name"], "task_type": body["task_type"]}, 201)
        if path == "/splits":
            return ok({"items": [SPLIT], "total": 1})
        if path == "/training/run":
            return ok({"id": "r1", "project_id": PROJECT["id"], "split_id": SPLIT["id"],
                       "status": "queued", "position": 1}, 202)  # fmt: skip
        if path.endswith("/export"):
            disposition = 'attachment; filename="cars-yolo.zip"'
            headers = {"Content-Disposition": disposition}
            return httpx.Response(200, content=archive(), headers=headers)
        return httpx.Response(404, json={"status": "error", "error": {"code": "NOT_FOUND",
                                         "message": path}})  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Studio]:
    studio = Studio()
    transport = httpx.MockTransport(studio)
    client = StudioClient("http://s", token="t", transport=transport,
                          retry=RetryPolicy(attempts=2, backoff=0.001))  # fmt: skip
    monkeypatch.setattr(State, "client", lambda self: client)
    yield studio
    client.close()


def studio(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def test_export_saves_the_split_as_yolo_and_says_what_it_holds(
    fake: Studio, tmp_path: Path
) -> None:
    target = tmp_path / "cars.zip"
    done = studio("datasets", "export", PROJECT["id"], "--format", "yolo", "--split", "quick",
                  "-o", str(target))  # fmt: skip
    assert done.exit_code == 0, done.output
    asked = [s for s in fake.seen if s[1].endswith("/export")]
    assert asked == [("GET", f"/datasets/{PROJECT['id']}/export",
                      {"format": "yolo", "split_id": SPLIT["id"]})]  # fmt: skip
    assert target.read_bytes() == archive()
    assert "2 images, 5 boxes, 2 classes (yolo)" in done.output
    assert "left out: gone.png (deleted during the export)" in done.output


def test_export_into_a_folder_with_json_prints_the_file_and_summary(
    fake: Studio, tmp_path: Path
) -> None:
    done = studio("datasets", "export", PROJECT["id"], "--format", "coco", "-o", str(tmp_path),
                  "--json")  # fmt: skip
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    assert printed["path"] == str(tmp_path / "cars-yolo.zip")
    assert printed["bytes"] == len(archive()) and printed["export"] == SUMMARY
    assert {"format": "coco"} in [s[2] for s in fake.seen if s[1].endswith("/export")]


def test_a_refused_export_fails_with_the_studios_message_and_no_file(
    fake: Studio, tmp_path: Path
) -> None:
    fake.refuse = {"code": "VALIDATION_ERROR", "message": "YOLO files carry boxes only",
                   "field": "format"}  # fmt: skip
    done = studio("datasets", "export", PROJECT["id"], "--format", "yolo",
                  "-o", str(tmp_path / "x.zip"))  # fmt: skip
    assert done.exit_code != 0
    assert "YOLO files carry boxes only" in done.output
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_refused_before_anything_is_sent(fake: Studio) -> None:
    done = studio("datasets", "export", PROJECT["id"], "--format", "voc")
    assert done.exit_code == 2 and "voc" in done.output
    assert fake.seen == []


def test_train_sends_its_devices(fake: Studio) -> None:
    done = studio("train", PROJECT["id"], "--epochs", "2", "--devices", "4", "--json")
    assert done.exit_code == 0, done.output
    sent = [s[2] for s in fake.seen if s[1] == "/training/run"]
    assert sent[0]["devices"] == 4 and sent[0]["hyperparameters"] == {"epochs": 2}
    assert json.loads(done.stdout)["id"] == "r1"


@pytest.mark.parametrize("devices", ["0", "65"])
def test_train_refuses_devices_out_of_range_before_sending(fake: Studio, devices: str) -> None:
    done = studio("train", PROJECT["id"], "--devices", devices)
    assert done.exit_code == 2 and "--devices" in done.output
    assert fake.seen == []


def test_a_detection_project_is_created(fake: Studio) -> None:
    done = studio("projects", "create", "cars", "--task-type", "detection", "--json")
    assert done.exit_code == 0, done.output
    assert fake.seen == [("POST", "/projects", {"name": "cars", "description": "",
                                                  "task_type": "detection"})]  # fmt: skip
    assert json.loads(done.stdout)["task_type"] == "detection"
