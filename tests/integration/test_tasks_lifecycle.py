"""Each job's life as the task view tells it, event by event: the events are written straight
into the event store as their services would write them (no service runs the jobs, so none
moves them on by itself), and after each the task is read through the gateway until it shows
the status the mapping in ``services.gateway.readmodels.tasks`` gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from contracts import common, new_id
from contracts import datasets as d
from contracts import exports as x
from contracts import training as t
from services.kernel.eventstore import EventStore
from tests.stream_helpers import Runs
from tests.training_helpers import API

pytestmark = pytest.mark.integration
STACK_SERVICES = ("identity", "projects")
WAIT_S = 30.0


class Stores:
    """Appends to the DATASETS, TRAINING (evaluations) and EXPORTS streams."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.runs = Runs(nc)
        self.datasets: EventStore[Any] = EventStore(
            nc, stream=d.STREAM, subject=d.event_subject, event_type=d.Event
        )
        self.evaluations: EventStore[Any] = EventStore(
            nc, stream=t.STREAM, subject=t.evaluation_subject, event_type=t.Event
        )
        self.exports: EventStore[Any] = EventStore(
            nc, stream=x.STREAM, subject=x.event_subject, event_type=x.Event
        )

    async def add(self, store: EventStore[Any], aggregate_id: str, *events: Any) -> None:
        await store.append(aggregate_id, list(events), await store.version(aggregate_id))


@pytest.fixture
async def stores(stack) -> AsyncIterator[Stores]:
    nc, _ = await Runs.connect(stack.nats_url)
    yield Stores(nc)
    await nc.close()


async def shows(api: httpx.AsyncClient, task_id: str, check: Callable[[dict], bool]) -> dict:
    """The task once ``check`` holds for it; at the deadline, fails showing what it was."""
    deadline, last = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline:
        resp = await api.get(f"{API}/tasks/{task_id}")
        last = resp.json()
        if resp.status_code == 200 and check(last["data"]):
            return last["data"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} is still {last}")


def status(word: str, **more: Any) -> Callable[[dict], bool]:
    return lambda task: task["status"] == word and all(task[k] == v for k, v in more.items())


async def test_a_run_is_pending_then_processing_with_progress_then_cancelled_when_stopped(
    api, stores
):
    runs = stores.runs
    run_id = await runs.queue(new_id())
    queued = await shows(api, run_id, status("pending", state="queued", kind="training"))
    assert queued["progress"] == 0.0 and queued["started_at"] is None
    await runs.start(run_id)
    running = await shows(api, run_id, status("processing", state="running"))
    assert running["started_at"] is not None and running["finished_at"] is None
    await runs.epochs(run_id, 1)
    await shows(api, run_id, lambda task: task["progress"] == pytest.approx(1 / 3, abs=1e-3))
    await runs.add(run_id, t.RunStopRequested(run_id=run_id))
    await shows(api, run_id, status("processing", state="stopping"))
    await runs.add(run_id, t.RunStopped(run_id=run_id, epoch=1))
    stopped = await shows(api, run_id, status("cancelled", state="stopped"))
    assert stopped["finished_at"] is not None and stopped["result"]["epochs"] == 1


async def test_a_run_that_fails_then_is_resumed_is_pending_again_and_then_completes(api, stores):
    runs = stores.runs
    run_id = await runs.queue(new_id())
    await runs.start(run_id)
    await runs.fail(run_id)
    failed = await shows(api, run_id, status("failed"))
    assert failed["error"] == {"code": "BOOM", "message": "it broke"}
    await runs.add(run_id, t.RunResumed(run_id=run_id, epochs=3))
    again = await shows(api, run_id, status("pending"))
    assert again["error"] is None and again["finished_at"] is None
    assert again["started_at"] == failed["started_at"]  # when it first started
    await runs.start(run_id)
    await runs.epochs(run_id, 1, 2, 3)
    await runs.complete(run_id, 3)
    done = await shows(api, run_id, status("completed", progress=1.0))
    assert done["result"]["best_epoch"] == 3 and done["result"]["run_id"] == run_id


async def test_an_interrupted_run_fails_unless_it_resumes_itself(api, stores):
    runs = stores.runs
    itself, left = await runs.queue(new_id()), await runs.queue(new_id())
    for run_id in (itself, left):
        await runs.start(run_id)
    crash = t.RunInterrupted(run_id=itself, reason="its trainer stopped")
    await runs.add(itself, crash, t.RunResumed(run_id=itself, epochs=3, automatic=True))
    await runs.add(left, t.RunInterrupted(run_id=left, reason="its trainer stopped"))
    await shows(api, itself, status("pending", state="queued"))
    interrupted = await shows(api, left, status("failed", state="interrupted"))
    assert interrupted["error"] == {"code": "INTERRUPTED", "message": "its trainer stopped"}


def _image(n: int) -> d.ImageRecord:
    """An image record as an import adds it (an id a dataset holds once)."""
    return d.ImageRecord(
        image_id=f"{n:064x}",
        filename=f"a/{n}.png",
        label="a",
        width=8,
        height=8,
        size=100,
        format="PNG",
        phash="0" * 16,
    )


async def test_an_import_is_processing_with_progress_then_cancelled_or_completed(api, stores):
    project_id, cancelled, completed = new_id(), new_id(), new_id()
    for n, import_id in enumerate((cancelled, completed)):
        started = d.ImportStarted(
            dataset_id=project_id,
            import_id=import_id,
            source_kind="local",
            source="/x",
            format="auto",
        )
        await stores.add(stores.datasets, project_id, started)
        task = await shows(api, import_id, status("processing", kind="import", state="running"))
        assert task["project_id"] == project_id and task["progress"] is None
        validated = d.ImportValidated(
            dataset_id=project_id, import_id=import_id, format="folder", files=4
        )
        added = d.ImagesAdded(
            dataset_id=project_id, import_id=import_id, images=[_image(2 * n), _image(2 * n + 1)]
        )
        await stores.add(stores.datasets, project_id, validated, added)
        await shows(api, import_id, status("processing", state="importing", progress=0.5))
    stop = d.ImportFailed(
        dataset_id=project_id,
        import_id=cancelled,
        code="CANCELLED",
        message="cancelled",
        status=409,
    )
    await stores.add(stores.datasets, project_id, stop)
    gone = await shows(api, cancelled, status("cancelled"))
    assert gone["error"]["code"] == "CANCELLED" and gone["progress"] == 0.5
    report = d.ImportReport(format="folder", files=4, imported=4)
    done = d.ImportCompleted(dataset_id=project_id, import_id=completed, report=report)
    await stores.add(stores.datasets, project_id, done)
    result = (await shows(api, completed, status("completed", progress=1.0)))["result"]
    assert result["imported"] == 4 and result["dataset_id"] == project_id


async def test_evaluations_and_exports_are_processing_then_completed_or_failed(api, stores):
    project_id = new_id()
    run_id = await stores.runs.queue(new_id(), project_id)
    good, bad = new_id(), new_id()
    for evaluation_id in (good, bad):
        started = t.EvaluationStarted(
            evaluation_id=evaluation_id,
            run_id=run_id,
            checkpoint="best",
            subset="test",
            images=4,
            checkpoint_epoch=1,
        )
        await stores.add(stores.evaluations, evaluation_id, started)
        task = await shows(api, evaluation_id, status("processing", kind="evaluation"))
        assert task["project_id"] == project_id and task["progress"] is None  # its run's project
    done = t.EvaluationCompleted(
        evaluation_id=good, run_id=run_id, metrics={"accuracy": 0.75}, predictions=[]
    )
    await stores.add(stores.evaluations, good, done)
    failure = t.EvaluationFailed(evaluation_id=bad, run_id=run_id, code="NO_TEST", message="none")
    await stores.add(stores.evaluations, bad, failure)
    assert (await shows(api, good, status("completed")))["result"]["accuracy"] == 0.75
    assert (await shows(api, bad, status("failed")))["error"]["code"] == "NO_TEST"
    export_id = new_id()
    requested = x.ExportRequested(
        export_id=export_id,
        run_id=run_id,
        checkpoint="best",
        format="onnx",
        checkpoint_sha256="0" * 64,
        checkpoint_epoch=1,
    )
    await stores.add(stores.exports, export_id, requested)
    await shows(api, export_id, status("processing", kind="export", project_id=project_id))
    failed = x.ExportFailed(export_id=export_id, run_id=run_id, code="PARITY", message="off")
    await stores.add(stores.exports, export_id, failed)
    assert (await shows(api, export_id, status("failed")))["error"]["code"] == "PARITY"
    # and the list filters them as they are now
    listed = await api.get(f"{API}/tasks", params={"kind": "evaluation", "status": "failed"})
    assert [task["task_id"] for task in listed.json()["data"]["items"]] == [bad]


async def test_an_unknown_task_is_a_404(api):
    resp = await api.get(f"{API}/tasks/{new_id()}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"
    malformed = await api.get(f"{API}/tasks/not%20an%20id")
    assert malformed.status_code == 404


async def test_a_rebuilt_read_model_shows_every_task_as_before(api, stores):
    # given tasks of every kind (those of the tests above, and one more run)
    run_id = await stores.runs.queue(new_id())
    await shows(api, run_id, status("pending"))
    before = (await api.get(f"{API}/tasks", params={"limit": 500})).json()["data"]
    assert {task["kind"] for task in before["items"]} >= {  # the shared studio may hold more
        "import",
        "training",
        "evaluation",
        "export",
    }
    # when the gateway's read model is dropped and replayed from the streams
    reply = await stores.nc.request(common.rebuild_subject("gateway"), b"", timeout=60)
    assert msgspec.json.decode(reply.data)["type"] == "common.read_model_rebuilt.v1"
    # then the same tasks read the same
    after = (await api.get(f"{API}/tasks", params={"limit": 500})).json()["data"]
    assert after == before
