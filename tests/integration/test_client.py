"""The Python client (``studio_client``) against a real studio: every resource a notebook
uses, typed results and errors, an upload with progress, a download verified by its sha256
(and a corrupted one refused), and ``runs.follow`` through the gateway being killed and
restarted mid-run, every epoch delivered once, in order."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from studio_client import (
    AsyncStudioClient,
    ChecksumMismatch,
    NotFound,
    StudioClient,
    ValidationFailed,
)
from studio_client.models import Run, StreamEvent
from tests import imagesets
from tests.stack import ADMIN, ADMIN_PASSWORD, Stack
from tests.training_helpers import FAST

pytestmark = pytest.mark.integration
EPOCHS = 4


@pytest.fixture(scope="module")
def studio(stack: Stack) -> Iterator[StudioClient]:
    stack.token()  # waits until the identity service has made the first admin
    with StudioClient(stack.base_url, timeout=30) as client:
        session = client.auth.login(ADMIN, ADMIN_PASSWORD)
        assert session.user_id == ADMIN and session.refresh_token
        yield client


def project_with_images(stack: Stack, studio: StudioClient, per_class: int = 12) -> str:
    project = studio.projects.create(f"c-{uuid.uuid4().hex[:6]}")
    root = imagesets.squares(stack.imports / uuid.uuid4().hex, per_class)
    job = studio.imports.local(project.id, root, format="folder")
    assert studio.imports.wait(job.id, timeout=60).state == "completed"
    return project.id


def test_projects_are_created_listed_archived_and_errors_are_typed(studio: StudioClient):
    # given a new project
    project = studio.projects.create("client-crud", description="from a script")
    assert project.status == "active" and project.role == "admin"

    # then it is read back, listed, archived and restored, as typed values
    assert studio.projects.get(project.id).description == "from a script"
    assert project.id in {p.id for p in studio.projects.list(q="client-crud").items}
    assert studio.projects.archive(project.id).status == "archived"
    assert project.id in {p.id for p in studio.projects.list(status="archived").items}
    assert studio.projects.restore(project.id).status == "active"

    # and refusals are typed exceptions carrying the envelope
    with pytest.raises(NotFound) as missing:
        studio.projects.get(uuid.uuid4().hex)
    assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
    assert missing.value.request_id and len(missing.value.request_id) >= 16
    with pytest.raises(ValidationFailed) as invalid:
        studio.splits.create(project.id, "s", ratios={"train": 2.0, "val": 0.1})
    assert invalid.value.status == 422 and invalid.value.field == "ratios.train"


async def test_the_async_client_does_the_same_without_a_thread(stack: Stack):
    async with AsyncStudioClient(stack.base_url, token=stack.token()) as studio:
        project = await studio.projects.create(f"aio-{uuid.uuid4().hex[:6]}")
        root = imagesets.squares(stack.imports / uuid.uuid4().hex, 3)
        job = await studio.imports.local(project.id, root, format="folder")
        names = [event.event async for event in studio.imports.follow(job.id)]
        assert names[0] == "status" and names[-1] == "complete"
        assert (await studio.datasets.get(project.id)).images == 6
        with pytest.raises(NotFound) as missing:
            await studio.runs.get(uuid.uuid4().hex)
        assert missing.value.request_id


def test_a_create_whose_answer_was_lost_is_retried_and_makes_one_project_and_one_split(
    stack: Stack, studio: StudioClient
):
    # given a network that loses the gateway's answer to a POST once it has run
    name = f"once-{uuid.uuid4().hex[:6]}"
    lossy = LoseFirstAnswer()
    with StudioClient(stack.base_url, token=stack.token(), transport=lossy) as client:
        # when a project is created, and a split of it
        project = client.projects.create(name)
        project_id = project_with_images(stack, studio, per_class=4)
        lossy.armed = True
        split = client.splits.create(project_id, "once", ratios=(0.5, 0.5, 0.0))

    # then each was retried with its key and answered with the first request's result
    assert len(lossy.lost) == 2 and lossy.replayed == 2
    assert [p.id for p in studio.projects.list(q=name).items] == [project.id]
    assert [s.id for s in studio.splits.list(project_id)] == [split.id]


def test_a_folder_and_a_zip_are_imported_followed_browsed_and_split(
    stack: Stack, studio: StudioClient, tmp_path: Path
):
    # given a project and a folder of images on the server
    project = studio.projects.create(f"imports-{uuid.uuid4().hex[:6]}")
    root = imagesets.squares(stack.imports / uuid.uuid4().hex, 8)

    # when it is imported and followed
    job = studio.imports.local(project.id, root, format="folder")
    events = list(studio.imports.follow(job.id))

    # then the stream says where it stands first and ends with the report
    assert events[0].event == "status" and events[-1].event == "complete"
    assert events[-1].data["report"]["imported"] == 16
    assert {e.event for e in events} <= {"status", "progress", "complete"}

    # when a ZIP is uploaded, with a progress callback
    archive = imagesets.zip_dir(imagesets.squares(tmp_path / "z", 6, start=500), tmp_path / "z.zip")
    progress: list[tuple[int, int | None]] = []
    upload = studio.imports.upload(
        project.id, archive, "folder", lambda done, total: progress.append((done, total))
    )

    # then the bar went from nothing to every byte, and the import completed
    size = archive.stat().st_size
    assert progress[0] == (0, size) and progress[-1] == (size, size)
    assert [a for a, _ in progress] == sorted(a for a, _ in progress)
    assert upload.source_kind == "upload" and upload.task_id in (None, upload.id)
    assert studio.imports.wait(upload.id, timeout=60).state == "completed"

    # and the dataset is browsed page by page, and split
    summary = studio.datasets.get(project.id)
    assert summary.images == 28 and summary.classes == {"br": 14, "tl": 14}
    assert len(list(studio.datasets.iter_images(project.id, limit=10))) == 28
    split = studio.splits.create(project.id, "s", ratios=(0.5, 0.25, 0.25), seed=3)
    assert sum(split.totals.values()) == 28 and split.seed == 3
    assert [s.id for s in studio.splits.list(project.id)] == [split.id]
    assert studio.splits.get(split.id).ratios["train"] == 0.5


@pytest.fixture(scope="module")
def followed(stack: Stack, studio: StudioClient) -> tuple[Run, list[StreamEvent], list[str]]:
    """A run followed from its start to its end, the gateway killed and restarted after its
    first epoch: what ``follow`` delivered, and the Last-Event-ID of each connection."""
    project_id = project_with_images(stack, studio, per_class=15)
    split = studio.splits.create(project_id, "s", ratios=(0.5, 0.25, 0.25))
    run = studio.runs.create(project_id, split.id, FAST, epochs=EPOCHS)
    assert run.status in ("queued", "running")
    events: list[StreamEvent] = []
    watched = Watched()
    with StudioClient(stack.base_url, token=stack.token(), transport=watched) as follower:
        for event in follower.runs.follow(run.id):
            events.append(event)
            if event.event == "epoch_end" and event.data["epoch"] == 1:
                stack.kill("gateway")  # mid-run: the stream breaks, the client reconnects
                stack.start("gateway")
    stack.wait_healthy(60)
    return studio.runs.get(run.id), events, watched.resumed_after


def test_follow_survives_a_gateway_restart_with_every_epoch_once_in_order(
    followed: tuple[Run, list[StreamEvent], list[str]],
):
    run, events, resumed_after = followed
    epochs = [e.data["epoch"] for e in events if e.event == "epoch_end"]
    assert epochs == list(range(1, EPOCHS + 1)), [(e.event, e.id) for e in events]
    assert events[-1].event == "complete" and run.status == "completed"
    stored = [e.id for e in events if e.id is not None]
    assert stored == sorted(set(stored)), "an event was repeated or came out of order"
    assert [h.epoch for h in run.history] == list(range(1, EPOCHS + 1))
    # the stream was taken up again after the restart, from the last event seen
    first_epoch = next(e.id for e in events if e.event == "epoch_end")
    assert resumed_after[0] == "" and len(resumed_after) >= 2
    assert first_epoch is not None and int(resumed_after[1]) >= first_epoch


def test_a_run_is_evaluated_exported_downloaded_verified_and_predicts(
    stack: Stack,
    studio: StudioClient,
    followed: tuple[Run, list[StreamEvent], list[str]],
    tmp_path: Path,
):
    run = followed[0]
    # when it is evaluated
    evaluation = studio.evaluations.wait(studio.evaluations.create(run.id).id, timeout=120)
    assert evaluation.status == "completed" and evaluation.metrics is not None
    assert 0.0 <= evaluation.metrics["accuracy"] <= 1.0
    assert [e.id for e in studio.evaluations.list(run.id)] == [evaluation.id]

    # and exported to ONNX
    export = studio.exports.wait(studio.exports.create(run.id, format="onnx").id, timeout=180)
    assert export.status == "completed" and export.sha256, export.error

    # then the download is the file the studio hashed
    progress: list[tuple[int, int | None]] = []
    path = studio.exports.download(
        export.id, tmp_path / "model.onnx", lambda done, total: progress.append((done, total))
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == export.sha256
    assert progress[-1] == (export.size, export.size)

    # and a download corrupted on the way is refused, leaving nothing behind
    flipping = StudioClient(stack.base_url, token=stack.token(), transport=FlipOneByte())
    with flipping, pytest.raises(ChecksumMismatch):
        flipping.exports.download(export.id, tmp_path / "corrupt.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]

    # and the exported model predicts
    images = [next(stack.imports.rglob("tl_0.png")), next(stack.imports.rglob("br_1.png"))]
    answer = studio.exports.predict(export.id, images, top_k=2)
    assert len(answer.predictions) == 2
    assert all({p.label for p in top} == {"tl", "br"} for top in answer.predictions)


def test_every_job_is_a_task(
    studio: StudioClient, followed: tuple[Run, list[StreamEvent], list[str]]
):
    run = followed[0]
    task = studio.tasks.get(run.id)
    assert task.kind == "training" and task.status == "completed"
    assert task.check_url and task.check_url.endswith(f"/tasks/{run.id}")
    assert studio.tasks.wait(run.id, timeout=5).done
    listed = studio.tasks.list(kind="training", project_id=run.project_id)
    assert [t.task_id for t in listed.items] == [run.id] and listed.total == 1


def test_a_split_is_exported_as_coco_to_a_file_and_the_new_fields_reach_the_gateway(
    stack: Stack, studio: StudioClient, tmp_path: Path
):
    # given a classification dataset of 16 images, split half and half
    project_id = project_with_images(stack, studio, per_class=8)
    split = studio.splits.create(project_id, "halves", ratios=(0.5, 0.5, 0.0))

    # when its split is exported as COCO into a folder, with a progress callback
    progress: list[tuple[int, int | None]] = []
    saved = studio.datasets.export(
        project_id, tmp_path, format="coco", split_id=split.id,
        progress=lambda done, total: progress.append((done, total)),
    )  # fmt: skip

    # then the file has the gateway's name and holds each subset's images and annotations
    assert saved.parent == tmp_path and saved.name.endswith(".zip")
    assert progress[-1] == (saved.stat().st_size, None)
    with zipfile.ZipFile(saved) as archive:
        names = set(archive.namelist())
        summary = json.loads(archive.read("export.json"))
    assert summary["images"] == 16 and summary["classes"] == ["br", "tl"]
    assert len([n for n in names if n.startswith("images/train/")]) == 8
    assert len([n for n in names if n.startswith("images/val/")]) == 8

    # and what the gateway refuses is a typed error, leaving no file behind
    with pytest.raises(ValidationFailed) as yolo:  # labels without boxes: YOLO cannot hold them
        studio.datasets.export(project_id, tmp_path / "y.zip", format="yolo")
    assert yolo.value.field == "format" and not (tmp_path / "y.zip").exists()
    with pytest.raises(ValidationFailed) as devices:
        studio.runs.create(project_id, split.id, epochs=1, devices=65)
    assert devices.value.status == 422 and "devices" in (devices.value.field or "")
    assert studio.runs.list(project_id=project_id) == []

    # and a detection project is made as such
    cars = studio.projects.create(f"det-{uuid.uuid4().hex[:6]}", task_type="detection")
    assert studio.projects.get(cars.id).task_type == "detection"


class Watched(httpx.AsyncBaseTransport):
    """The network as it is, noting each stream connection's ``Last-Event-ID`` ("" if none)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.resumed_after: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            self.resumed_after.append(request.headers.get("last-event-id", ""))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """A network that loses the answer to a POST after the gateway ran it (once armed)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.armed = True
        self.lost: list[str] = []
        self.replayed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST":
            return response
        self.replayed += response.headers.get("idempotent-replayed") == "true"
        if not self.armed:
            return response
        await response.aread()
        await response.aclose()
        self.armed = False
        self.lost.append(request.headers["Idempotency-Key"])
        raise httpx.ReadError("the connection broke before the answer came", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FlipOneByte(httpx.AsyncBaseTransport):
    """A network that corrupts one byte of every file download."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/download"):
            return response
        body = bytearray(await response.aread())
        await response.aclose()
        body[len(body) // 2] ^= 0xFF
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))

    async def aclose(self) -> None:
        await self.inner.aclose()
