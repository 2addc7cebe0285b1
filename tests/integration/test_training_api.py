"""Training against the running studio: a small CNN learns, streams, stops and resumes exactly."""

from __future__ import annotations

import asyncio
import json
import uuid

import msgspec
import nats
import pytest
from websockets.asyncio.client import connect

from contracts import common
from contracts import training as c
from tests import imagesets
from tests.stack import Stack
from tests.training_helpers import (
    API,
    client,
    curves,
    learnable_split,
    run,
    submit,
    wait,
    wait_status,
)

pytestmark = pytest.mark.integration
#: What these tests need of the studio: the stack starts only these (and the gateway).
STACK_SERVICES = ("projects", "datasets", "trainer")


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    return learnable_split(stack)


def sse_events(stack: Stack, run_id: str, last_id: str | None = None) -> list[dict]:
    """Every event of a finished run's stream (it closes after ``complete``)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events, current = [], {}
    with (
        client(stack) as api,
        api.stream("GET", f"{API}/training/runs/{run_id}/stream", headers=headers) as resp,
    ):
        for line in resp.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
    return events


def test_a_small_cnn_learns_and_every_epoch_is_streamed(stack: Stack, split):
    project_id, split_id = split
    resp = submit(stack, project_id, split_id)
    assert resp.status_code == 202, resp.text
    queued = resp.json()["data"]
    assert queued["status"] in ("queued", "running")
    done = wait_status(stack, queued["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["best_val_accuracy"] >= 0.8  # chance is 0.5
    assert [e["epoch"] for e in done["history"]] == [1, 2, 3, 4]
    assert {k["kind"] for k in done["checkpoints"]} == {"last", "best"}
    assert all(len(k["sha256"]) == 64 for k in done["checkpoints"])
    # a client arriving after the end gets the whole history, then complete
    events = sse_events(stack, queued["id"])
    names = [e["event"] for e in events]
    assert names.count("epoch_end") == 4
    assert names[-1] == "complete"
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    # one that saw the second epoch gets exactly what came after it
    second = next(e for e in events if e["event"] == "epoch_end" and '"epoch":2' in e["data"])
    rest = sse_events(stack, queued["id"], second["id"])
    assert [e["id"] for e in rest] == [e["id"] for e in events if int(e["id"]) > int(second["id"])]


def test_the_same_seed_gives_the_same_curves(stack: Stack, split):
    project_id, split_id = split
    first = submit(stack, project_id, split_id, hyperparameters={"epochs": 2}).json()["data"]
    second = submit(stack, project_id, split_id, hyperparameters={"epochs": 2}).json()["data"]
    a = wait_status(stack, first["id"], "completed")
    b = wait_status(stack, second["id"], "completed")
    assert curves(a) == curves(b)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hyperparameters": {"model": "vgg99"}}, "hyperparameters.model"),
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"learning_rate": -1}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"optimizer": "lion"}}, "hyperparameters.optimizer"),
        ({"split_id": "0" * 32}, "split_id"),
    ],
)
def test_bad_runs_are_refused_with_422_naming_the_field(stack: Stack, split, change, field):
    project_id, split_id = split
    body = {"split_id": split_id} | change
    resp = submit(stack, project_id, body.pop("split_id"), **body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_a_split_with_one_class_or_no_validation_images_is_refused(stack: Stack, split):
    project_id, _ = split
    with client(stack) as api:
        only_train = api.post(
            f"{API}/splits",
            json={
                "project_id": project_id,
                "name": "all-train",
                "ratios": {"train": 1.0, "val": 0.0, "test": 0.0},
            },
        ).json()["data"]
    resp = submit(stack, project_id, only_train["id"])
    assert resp.status_code == 422
    assert "validation" in resp.json()["error"]["message"]


def test_unknown_runs_get_404(stack: Stack):
    with client(stack) as api:
        for call in (
            api.get(f"{API}/training/runs/{'0' * 32}"),
            api.post(f"{API}/training/runs/{'0' * 32}/stop"),
            api.post(f"{API}/training/runs/{'0' * 32}/resume"),
        ):
            assert call.status_code == 404, call.text


def test_stop_then_resume_gives_the_same_curves_as_an_uninterrupted_run(stack: Stack, split):
    project_id, split_id = split
    hyper = {"epochs": 5, "schedule": "cosine", "seed": 11}
    whole = submit(stack, project_id, split_id, hyperparameters=hyper).json()["data"]
    reference = wait_status(stack, whole["id"], "completed")
    cut = submit(stack, project_id, split_id, hyperparameters=hyper).json()["data"]
    wait(lambda: len(run(stack, cut["id"])["history"]) >= 2)
    with client(stack) as api:
        stopped = api.post(f"{API}/training/runs/{cut['id']}/stop")
        assert stopped.status_code == 202, stopped.text
    halted = wait_status(stack, cut["id"], "stopped", "completed")
    if halted["status"] == "stopped":
        assert halted["epochs_done"] < 5
        with client(stack) as api:
            resumed = api.post(f"{API}/training/runs/{cut['id']}/resume")
            assert resumed.status_code == 202, resumed.text
    finished = wait_status(stack, cut["id"], "completed")
    assert curves(finished) == curves(reference)


def test_resume_may_raise_the_number_of_epochs(stack: Stack, split):
    project_id, split_id = split
    first = submit(stack, project_id, split_id, hyperparameters={"epochs": 2}).json()["data"]
    wait_status(stack, first["id"], "completed")
    with client(stack) as api:
        lower = api.post(f"{API}/training/runs/{first['id']}/resume", json={"epochs": 1})
        assert lower.status_code == 422
        more = api.post(f"{API}/training/runs/{first['id']}/resume", json={"epochs": 3})
        assert more.status_code == 202, more.text
    done = wait_status(stack, first["id"], "completed")
    assert [e["epoch"] for e in done["history"]] == [1, 2, 3]


def test_compare_and_queue_and_system(stack: Stack, split):
    project_id, split_id = split
    a = submit(stack, project_id, split_id, hyperparameters={"epochs": 1}).json()["data"]
    b = submit(stack, project_id, split_id, hyperparameters={"epochs": 1}).json()["data"]
    wait_status(stack, a["id"], "completed")
    wait_status(stack, b["id"], "completed")
    with client(stack) as api:
        both = api.get(f"{API}/training/compare", params={"run_ids": f"{a['id']},{b['id']}"})
        assert [len(r["history"]) for r in both.json()["data"]["runs"]] == [1, 1]
        assert api.get(f"{API}/training/compare", params={"run_ids": a["id"]}).status_code == 422
        queue = api.get(f"{API}/training/queue").json()["data"]
        assert set(queue) == {"running", "queued", "leases"}
        system = api.get(f"{API}/system").json()["data"]
        assert system["services"]["trainer"]["ok"] is True
        assert system["workspace"]["free"] > 0


def test_experiment_stream_over_sse_and_websocket(stack: Stack, split):
    project_id, split_id = split
    resp = submit(stack, project_id, split_id, hyperparameters={"epochs": 2})
    data = resp.json()["data"]
    wait_status(stack, data["id"], "completed")
    url = f"{API}/training/{project_id}/experiments/{data['experiment_id']}/stream"
    seen = []
    with client(stack) as api, api.stream("GET", url) as sse:
        for line in sse.iter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
                if seen[-1] == "complete":
                    break
    assert seen.count("epoch_end") == 2

    async def receive() -> list[str]:
        ws_url = stack.base_url.replace("http", "ws") + f"/ws/experiments/{data['experiment_id']}"
        kinds = []
        async with connect(ws_url, additional_headers=stack.headers()) as sock:
            while "complete" not in kinds:
                kinds.append(json.loads(await asyncio.wait_for(sock.recv(), 30))["type"])
        return kinds

    kinds = asyncio.run(receive())
    assert kinds.count("epoch_end") == 2


def test_live_batch_progress_is_streamed_while_a_run_trains(stack: Stack, split):
    project_id, split_id = split
    data = submit(stack, project_id, split_id, hyperparameters={"epochs": 8}).json()["data"]
    progress = []
    with client(stack) as api, api.stream("GET", f"{API}/training/runs/{data['id']}/stream") as sse:
        name = ""
        for line in sse.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == "progress":
                progress.append(json.loads(line.removeprefix("data: ")))
            if name == "complete":
                break
    assert progress, "no progress event arrived"
    assert {"epoch", "batch", "batches", "running_loss", "eta_s"} <= set(progress[-1])


def test_the_queue_tells_the_truth_and_if_busy_reject_answers_409(stack: Stack, split):
    project_id, split_id = split
    long = submit(stack, project_id, split_id, hyperparameters={"epochs": 200}).json()["data"]
    wait_status(stack, long["id"], "running")
    # when the device is busy, a run that will not wait is refused as the original API did
    busy = submit(stack, project_id, split_id, if_busy="reject")
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"]["message"] == "An experiment is already training"
    # and one that waits is shown queued, with its place
    waiting = submit(stack, project_id, split_id)
    assert waiting.status_code == 202
    assert (waiting.json()["data"]["status"], waiting.json()["data"]["position"]) == ("queued", 1)
    with client(stack) as api:
        queue = api.get(f"{API}/training/queue").json()["data"]
        assert [r["id"] for r in queue["running"]] == [long["id"]]
        assert [r["id"] for r in queue["queued"]] == [waiting.json()["data"]["id"]]
        assert len(queue["leases"]) == 1 and queue["leases"][0]["run_id"] == long["id"]
        # a queued run stops at once; a running one at its next batch, keeping its checkpoint
        stopped = api.post(f"{API}/training/runs/{waiting.json()['data']['id']}/stop")
        assert stopped.json()["data"]["status"] == "stopped"
        assert api.post(f"{API}/training/runs/{long['id']}/stop").status_code == 202
    halted = wait_status(stack, long["id"], "stopped", timeout=30)
    assert halted["epochs_done"] == len(halted["history"])
    with client(stack) as api:
        again = api.post(f"{API}/training/runs/{long['id']}/stop")
        assert again.status_code == 409


def test_a_split_with_a_single_class_is_refused(stack: Stack, tmp_path):
    with client(stack) as api:
        pid = api.post(f"{API}/projects", json={"name": "one class"}).json()["data"]["id"]
        root = imagesets.folder(stack.imports / uuid.uuid4().hex, {"only": 12})
        job = api.post(f"{API}/datasets/import/local", json={"project_id": pid, "path": str(root)})
        wait(
            lambda: (
                api.get(f"{API}/datasets/import/{job.json()['data']['id']}").json()["data"]["state"]
                == "completed"
            )
        )
        ratios = {"train": 0.5, "val": 0.5, "test": 0.0}
        split_id = api.post(
            f"{API}/splits", json={"project_id": pid, "name": "s", "ratios": ratios}
        ).json()["data"]["id"]
    resp = submit(stack, pid, split_id)
    assert resp.status_code == 422
    assert "two classes" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "pretrained",
    [
        "a" * 2000,  # longer than any weights path: used to answer 500 (File name too long)
        "/tmp/" + "w" * 300 + ".pt",  # a file name no file system holds
        "/tmp/weights\x00.pt",  # a NUL byte
    ],
)
def test_a_pretrained_path_no_file_system_can_hold_gets_422(stack: Stack, split, pretrained):
    project_id, split_id = split
    resp = submit(stack, project_id, split_id, hyperparameters={"pretrained": pretrained})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "hyperparameters.pretrained"


async def test_the_trainer_answers_a_file_system_error_on_pretrained_with_422(stack: Stack, split):
    # given a StartRun that bypasses the gateway's bounds (another client of the bus)
    project_id, split_id = split
    command = c.StartRun(
        run_id=uuid.uuid4().hex,
        experiment_id=uuid.uuid4().hex,
        project_id=project_id,
        split_id=split_id,
        hyperparameters=c.Hyperparameters(pretrained="/tmp/" + "w" * 300 + ".pt"),
    )
    nc = await nats.connect(stack.nats_url)
    try:
        msg = await nc.request(c.Subjects.START_RUN, msgspec.json.encode(command), timeout=15)
    finally:
        await nc.close()
    # then the trainer refuses it as invalid input (ENAMETOOLONG), not as its own failure
    reply = msgspec.json.decode(msg.data, type=common.CommandAccepted | common.CommandRejected)
    assert isinstance(reply, common.CommandRejected), reply
    assert (reply.code, reply.field) == ("VALIDATION_ERROR", "hyperparameters.pretrained")


def test_malformed_ids_get_404_in_paths_and_422_in_bodies(stack: Stack, split):
    project_id, split_id = split
    bad = "%C3%A9t%C3%A9"  # "été"
    with client(stack) as api:
        for call in (
            api.get(f"{API}/training/runs/{bad}"),
            api.post(f"{API}/training/runs/{bad}/stop"),
            api.post(f"{API}/training/runs/{bad}/resume"),
            api.get(f"{API}/evaluation/{bad}"),
            api.get(f"{API}/evaluation/{bad}/cell", params={"true": "a", "predicted": "b"}),
            api.get(f"{API}/export/{bad}"),
            api.get(f"{API}/export/{bad}/download"),
        ):
            assert call.status_code == 404, call.text
            assert call.json()["error"]["code"] == "NOT_FOUND"
        for path, body, field in (
            ("/training/run", {"project_id": "été", "split_id": split_id}, "project_id"),
            ("/training/run", {"project_id": project_id, "split_id": "a.b"}, "split_id"),
            (
                "/training/run",
                {"project_id": project_id, "split_id": split_id, "experiment_id": "x y"},
                "experiment_id",
            ),
            ("/evaluation/run", {"run_id": "a*"}, "run_id"),
            ("/export/run", {"run_id": "r" * 129}, "run_id"),
        ):
            resp = api.post(f"{API}{path}", json=body)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["field"] == field
        for path, params, field in (
            ("/training/runs", {"project_id": "été"}, "project_id"),
            ("/training/compare", {"run_ids": "a,b.c"}, "run_ids"),
            ("/evaluation", {"run_id": "a b"}, "run_id"),
            ("/export", {"run_id": "a:b"}, "run_id"),
            (
                "/evaluation/" + "0" * 32 + "/cell",
                {"true": "a", "predicted": "b", "limit": 10**30},
                "limit",
            ),
        ):
            resp = api.get(f"{API}{path}", params=params)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["field"] == field
    assert "invalid aggregate id" not in stack.log("trainer")


@pytest.mark.parametrize("after", ["%C2%B2", "9" * 5000])  # "²", and past int()'s digits
async def test_a_websocket_last_event_id_that_is_no_sequence_gets_an_error(stack: Stack, after):
    url = f"ws://127.0.0.1:{stack.port}/ws/experiments/{'0' * 32}?last_event_id={after}"
    async with connect(url, additional_headers=stack.headers()) as socket:
        message = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert message["type"] == "error"
    assert message["payload"]["code"] == "VALIDATION_ERROR"
