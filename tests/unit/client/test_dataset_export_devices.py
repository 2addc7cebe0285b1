"""The client's calls of this session's routes, against handler fakes: a dataset export
streamed to a file (its query, the gateway's file name for a folder, a truncated or refused
one writes nothing, a broken one starts again), a run's ``devices`` and a detection project.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from studio_client import RetryPolicy, StudioClient, StudioError, ValidationFailed

FAST = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)
PROJECT = "a" * 32


def studio(handler: object) -> StudioClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return StudioClient("http://s", token="t", retry=FAST, transport=transport)


def archive(images: int = 8) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for i in range(images):
            zf.writestr(f"images/{i}.png", bytes([i]) * 100_000)
        zf.writestr("annotations.json", json.dumps({"images": [], "annotations": []}))
        zf.writestr("export.json", json.dumps({"format": "coco", "images": images}))
    return out.getvalue()


def zip_answer(body: bytes, name: str = "export.zip") -> httpx.Response:
    # No Content-Length and no checksum: the gateway makes the ZIP as it sends it.
    async def chunks() -> Any:
        for at in range(0, len(body), 70_000):
            yield body[at : at + 70_000]

    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return httpx.Response(200, content=chunks(), headers=headers)


def test_an_export_streams_to_the_file_with_its_format_and_split(tmp_path: Path) -> None:
    body, seen = archive(), []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, dict(request.url.params)))
        return zip_answer(body)

    progress: list[tuple[int, int | None]] = []
    with studio(handler) as s:
        saved = s.datasets.export(
            PROJECT, tmp_path / "d.zip", format="yolo", split_id="s1",
            progress=lambda done, total: progress.append((done, total)),
        )  # fmt: skip
        whole = s.datasets.export(PROJECT, tmp_path / "all.zip")
    assert saved == tmp_path / "d.zip" and saved.read_bytes() == body
    assert whole.read_bytes() == body
    assert seen == [
        (f"/api/v1/datasets/{PROJECT}/export", {"format": "yolo", "split_id": "s1"}),
        (f"/api/v1/datasets/{PROJECT}/export", {"format": "coco"}),
    ]
    assert progress[0] == (0, None) and progress[-1] == (len(body), None)
    assert len(progress) > 3  # chunk by chunk, not once at the end


def test_an_export_into_a_folder_keeps_the_gateways_name(tmp_path: Path) -> None:
    name = f"{PROJECT}-coco.zip"
    with studio(lambda request: zip_answer(archive(), name)) as s:
        saved = s.datasets.export(PROJECT, tmp_path)
    assert saved == tmp_path / name and zipfile.is_zipfile(saved)


def test_a_truncated_or_corrupted_export_writes_nothing(tmp_path: Path) -> None:
    body = archive()
    corrupt = bytearray(body)
    corrupt[200] ^= 0xFF  # inside the first image's bytes: its CRC fails
    answers = iter([body[:-40], bytes(corrupt)])
    with studio(lambda request: zip_answer(next(answers))) as s:
        for _ in range(2):
            with pytest.raises(StudioError) as broken:
                s.datasets.export(PROJECT, tmp_path / "d.zip")
            assert broken.value.code == "INCOMPLETE_DOWNLOAD"
    assert list(tmp_path.iterdir()) == []  # no file, no part file


def test_an_export_that_breaks_off_is_started_again(tmp_path: Path) -> None:
    body, calls = archive(), []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return zip_answer(body)

    with studio(handler) as s:
        saved = s.datasets.export(PROJECT, tmp_path / "d.zip")
    assert saved.read_bytes() == body and len(calls) == 2


def test_a_refused_export_raises_its_error_and_writes_nothing(tmp_path: Path) -> None:
    error = {"code": "VALIDATION_ERROR", "message": "YOLO files carry boxes only",
             "field": "format"}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"status": "error", "error": error, "request_id": "r"})

    with studio(handler) as s, pytest.raises(ValidationFailed) as refused:
        s.datasets.export(PROJECT, tmp_path / "d.zip", format="yolo")
    assert refused.value.field == "format" and "boxes only" in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def run_answer(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    run = {"id": "r1", "project_id": sent["project_id"], "split_id": sent["split_id"],
           "status": "queued"}  # fmt: skip
    return httpx.Response(202, json={"status": "ok", "data": run})


def test_a_run_names_its_devices_and_leaves_the_default_out() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return run_answer(request)

    with studio(handler) as s:
        s.runs.create(PROJECT, "s1", {"epochs": 2}, devices=4)
        s.runs.create(PROJECT, "s1", epochs=2)
    assert bodies[0]["devices"] == 4 and bodies[0]["hyperparameters"] == {"epochs": 2}
    assert "devices" not in bodies[1]  # a gateway of before the field still accepts it


def test_too_many_devices_is_the_gateways_422() -> None:
    detail = [{"loc": ["body", "devices"], "msg": "less than or equal to 64"}]
    error = {"code": "VALIDATION_ERROR", "message": "devices: at most 64", "field": "devices",
             "details": detail}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"status": "error", "error": error, "request_id": "r"})

    with studio(handler) as s, pytest.raises(ValidationFailed) as refused:
        s.runs.create(PROJECT, "s1", devices=65)
    assert refused.value.field == "devices"


def test_a_detection_project_is_created_as_such() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        project = {"id": PROJECT, "name": "cars", "task_type": bodies[-1]["task_type"]}
        return httpx.Response(201, json={"status": "ok", "data": project})

    with studio(handler) as s:
        made = s.projects.create("cars", task_type="detection")
    assert bodies == [{"name": "cars", "description": "", "task_type": "detection"}]
    assert made.task_type == "detection"
