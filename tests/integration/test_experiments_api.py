"""The experiments API against the running studio: every bad input of the issue is a 422 naming
its field and leaves nothing behind; the original documents' three fields start a search once
the project and split are named; a small real search (2 trials of 1 epoch, the small CNN on a
generated set) is listed, read, watched over the WebSocket as the original documents' test
does, stopped and resumed, and shows as a task."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from services.gateway.app import create_app
from services.kernel.settings import Settings
from tests.stack import Stack
from tests.training_helpers import API, client, learnable_split, wait

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets", "trainer", "exporter")
#: A space that trains in seconds on a CPU: the small CNN, small images, a learning-rate range.
FAST_SPACE: dict[str, Any] = {
    "model": {"type": "fixed", "value": "smallcnn"},
    "learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
    "batch_size": {"type": "fixed", "value": 8},
    "image_size": {"type": "fixed", "value": 32},
    "augmentation": {"type": "fixed", "value": "none"},
}
WAIT_S = 120.0
TWO = [
    {"metric": "val_accuracy", "direction": "maximize"},
    {"metric": "params", "direction": "minimize"},
]


@pytest.fixture(scope="module")
def split(stack: Stack) -> tuple[str, str]:
    """A small learnable set with a test subset: a promoted trial is evaluated on it."""
    return learnable_split(stack, per_class=12, test=0.25)


class Watcher(threading.Thread):
    """A WebSocket client of ``/ws/experiments/{id}`` in a thread: every message until the
    server closes the socket, and the close code."""

    def __init__(self, stack: Stack, experiment_id: str) -> None:
        super().__init__(daemon=True)
        self.url = stack.base_url.replace("http", "ws", 1) + f"/ws/experiments/{experiment_id}"
        self.headers = stack.headers()
        self.messages: list[dict[str, Any]] = []
        self.code: int | None = None
        self.connected = threading.Event()

    def run(self) -> None:
        with connect(self.url, additional_headers=self.headers) as sock:
            self.connected.set()
            try:
                while True:
                    raw = sock.recv(timeout=WAIT_S)
                    assert isinstance(raw, str), "a binary frame"
                    self.messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
        self.code = sock.close_code


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json()["data"]


def space(**params: dict[str, Any]) -> dict[str, Any]:
    return {"search_config": params}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("malformed space", {"search_config": "resnet"}, "search_config"),
    (
        "a parameter of no kind",
        space(learning_rate={"type": "normal"}),
        "search_config.learning_rate",
    ),
    (
        "a parameter not an object",
        space(learning_rate=[0.1, 0.2]),
        "search_config.learning_rate",
    ),
    (
        "empty choices",
        space(model={"type": "categorical", "choices": []}),
        "search_config.model.choices",
    ),
    (
        "unknown hyperparameter",
        space(dropout={"type": "float", "low": 0.1, "high": 0.5}),
        "search_config.dropout",
    ),
    ("epochs searched", space(epochs={"type": "int", "low": 1, "high": 3}), "search_config.epochs"),
    (
        "unknown model",
        space(model={"type": "categorical", "choices": ["resnet999"]}),
        "search_config.model.choices.0",
    ),
    (
        "a model outside the family",
        {"architecture_type": "resnet"} | space(model={"type": "fixed", "value": "smallcnn"}),
        "search_config.model.value",
    ),
    (
        "low above high",
        space(learning_rate={"type": "float", "low": 0.1, "high": 0.01}),
        "search_config.learning_rate.low",
    ),
    (
        "a log range from zero",
        space(learning_rate={"type": "float", "low": 0, "high": 0.1, "log": True}),
        "search_config.learning_rate.low",
    ),
    ("unknown family", {"architecture_type": "transformer"}, "architecture_type"),
    (
        "unknown metric",
        {"objectives": [{"metric": "f2", "direction": "maximize"}]},
        "objectives.0.metric",
    ),
    (
        "unknown direction",
        {"objectives": [{"metric": "val_loss", "direction": "down"}]},
        "objectives.0.direction",
    ),
    ("a metric twice", {"objectives": [TWO[0], TWO[0]]}, "objectives.1.metric"),
    ("no objective", {"objectives": []}, "objectives"),
    ("no trials", {"max_trials": 0}, "max_trials"),
    ("too many trials", {"max_trials": 501}, "max_trials"),
    ("no epoch per trial", {"budget": {"epochs_per_trial": 0}}, "budget.epochs_per_trial"),
    ("too many at once", {"budget": {"max_concurrent_trials": 17}}, "budget.max_concurrent_trials"),
    ("a wall time below one epoch", {"budget": {"wall_time_s": 0.5}}, "budget.wall_time_s"),
    ("pruning two objectives", {"objectives": TWO, "pruning": {"kind": "median"}}, "pruning.kind"),
    ("unknown pruner", {"pruning": {"kind": "hyperband"}}, "pruning.kind"),
    ("an empty name", {"name": "  "}, "name"),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_422_naming_the_field(stack: Stack, split, case, change, field):
    project_id, split_id = split
    body = {"project_id": project_id, "split_id": split_id, "name": "s", "max_trials": 2} | change
    with client(stack) as api:
        resp = api.post(f"{API}/experiments", json=body)
        assert resp.status_code == 422, f"{case}: {resp.text}"
        error = resp.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["field"] == field, (case, error)
        # and nothing was started
        assert ok(api.get(f"{API}/experiments", params={"project_id": project_id}))["total"] == 0


def test_the_original_three_fields_name_what_is_missing(stack: Stack, split):
    """The original tests posted only these: without a project or a split there is nothing
    to search, so the answer names the field to add."""
    project_id, _ = split
    original = {"name": "search", "architecture_type": "smallcnn", "max_trials": 2}
    with client(stack) as api:
        resp = api.post(f"{API}/experiments", json=original)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "project_id"
        resp = api.post(f"{API}/experiments", json=original | {"project_id": project_id})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "split_id"
        # a split of another project is refused too
        _, other_split = learnable_split(stack, per_class=6)
        body = original | {"project_id": project_id, "split_id": other_split}
        resp = api.post(f"{API}/experiments", json=body)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "split_id"
        unknown = original | {"project_id": project_id, "split_id": uuid.uuid4().hex}
        assert api.post(f"{API}/experiments", json=unknown).status_code == 404


def finished(api: httpx.Client, experiment_id: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        detail = ok(api.get(f"{API}/experiments/{experiment_id}"))
        return detail if detail["status"] == "completed" else None

    return wait(done, timeout, every=0.5)  # type: ignore[no-any-return]


def test_a_small_search_runs_is_listed_read_and_a_task(stack: Stack, split, tmp_path: Path):
    project_id, split_id = split
    body = {
        "project_id": project_id,
        "split_id": split_id,
        "name": "lr search",
        "architecture_type": "smallcnn",
        "max_trials": 2,
        "search_config": FAST_SPACE,
        "budget": {"epochs_per_trial": 1},
        "pruning": {"kind": "none"},
        "seed": 3,
    }
    with client(stack) as api:
        created = ok(api.post(f"{API}/experiments", json=body), 202)
        experiment_id = created["id"]
        watcher = Watcher(stack, experiment_id)  # watching it live from its start
        watcher.start()
        assert watcher.connected.wait(WAIT_S)
        # a 202 like every job's: its task and where to read it
        assert created["task_id"] == experiment_id
        assert created["check_url"] == f"/api/v1/tasks/{experiment_id}"
        assert created["status"] == "running" and created["max_trials"] == 2
        assert created["objectives"] == [{"metric": "val_accuracy", "direction": "maximize"}]
        detail = finished(api, experiment_id)
        listed = ok(api.get(f"{API}/experiments", params={"project_id": project_id}))
        task = ok(api.get(f"{API}/tasks/{experiment_id}"))
    # then it ran exactly its two trials, each a run of the experiment with its parameters
    trials = detail["trials"]
    assert [t["trial"] for t in trials] == [0, 1]
    assert {t["state"] for t in trials} == {"completed"}
    for trial in trials:
        assert trial["params"]["model"] == "smallcnn"
        assert 0.001 <= trial["params"]["learning_rate"] <= 0.01
        assert 0 <= trial["values"]["val_accuracy"] <= 1 and trial["run_id"]
    assert detail["front"] and set(detail["front"]) <= {0, 1}
    assert detail["best"]["val_accuracy"] in (0, 1) and detail["reason"] == "max_trials"
    assert [e["id"] for e in listed["items"]] == [experiment_id] and listed["total"] == 1
    assert task["kind"] == "experiment" and task["status"] == "completed"
    assert task["progress"] == 1.0 and task["project_id"] == project_id
    # the live socket saw the trials start, train, complete and the front move, then the end
    watcher.join(WAIT_S)
    assert watcher.code == 1000
    kinds = [m["type"] for m in watcher.messages]
    assert kinds[0] == "snapshot" and kinds[-1] == "complete" and kinds.count("complete") == 1
    assert kinds.count("trial_started") == 2 and kinds.count("trial_completed") == 2
    assert "front_updated" in kinds
    epochs = [m["payload"] for m in watcher.messages if m["type"] == "epoch_end"]
    assert sorted(p["trial"] for p in epochs) == [0, 1]
    # a client that connects late, as the original documents' test does, gets a snapshot first
    original_documents_websocket_test(stack, tmp_path, experiment_id, trials)
    promote(stack, experiment_id, detail["best"]["val_accuracy"], trials)


def promote(stack: Stack, experiment_id: str, best: int, trials: list[dict[str, Any]]) -> None:
    """The best trial is promoted: its run is evaluated on the test subset and exported."""
    with client(stack) as api:
        path = f"{API}/experiments/{experiment_id}/trials/{best}/promote"
        promoted = ok(api.post(path, json={"format": "onnx"}), 202)
        assert promoted["run_id"] == trials[best]["run_id"] and promoted["trial"] == best
        assert promoted["task_id"] == promoted["export_id"]
        export = f"{API}/export/{promoted['export_id']}"
        done = ("completed", "failed")
        wait(lambda: api.get(export).status_code == 200, WAIT_S, every=0.5)
        exported = wait(lambda: (d := ok(api.get(export)))["status"] in done and d, WAIT_S)
        assert exported["status"] == "completed" and exported["run_id"] == promoted["run_id"]
        evaluation = ok(api.get(f"{API}/evaluation/{promoted['evaluation_id']}"))
        assert evaluation["subset"] == "test" and evaluation["run_id"] == promoted["run_id"]

        def recorded() -> Any:
            trial = ok(api.get(f"{API}/experiments/{experiment_id}"))["trials"][best]
            return trial["promoted"]

        ids = wait(recorded, WAIT_S, every=0.5)
        assert ids == {k: promoted[k] for k in ("evaluation_id", "export_id")}


def original_documents_websocket_test(
    stack: Stack, tmp_path: Path, experiment_id: str, trials: list[dict[str, Any]]
) -> None:
    """The source documents' WebSocket test, against a gateway of its own on the same NATS."""
    settings = Settings(
        nats_url=stack.nats_url,
        workspace=tmp_path,
        instance="testclient",
        services=STACK_SERVICES,
        jwt_secret=stack.jwt_secret,
    )
    with (
        TestClient(create_app(settings)) as test_client,
        test_client.websocket_connect(
            f"/ws/experiments/{experiment_id}", headers=stack.headers()
        ) as ws,
    ):
        data = ws.receive_json()
        assert "type" in data and "payload" in data
    assert data["type"] == "snapshot"
    assert [t["run_id"] for t in data["payload"]["trials"]] == [t["run_id"] for t in trials]
    assert data["payload"]["experiment"]["status"] == "completed"


def test_stop_and_resume_a_search(stack: Stack, split):
    project_id, split_id = split
    body = {
        "project_id": project_id,
        "split_id": split_id,
        "name": "stopped",
        "architecture_type": "smallcnn",
        "max_trials": 3,
        "search_config": FAST_SPACE,
        "budget": {"epochs_per_trial": 200},
        "objectives": TWO,  # two objectives: pruning defaults to none
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with client(stack) as api:
        created = ok(api.post(f"{API}/experiments", json=body, headers=key), 202)
        experiment_id = created["id"]
        assert created["pruning"]["kind"] == "none"
        # a retry of the same request (its answer lost) names the same search, started once
        again = api.post(f"{API}/experiments", json=body, headers=key)
        assert ok(again, 202)["id"] == experiment_id
        assert again.headers["Idempotent-Replayed"] == "true"
        listed = ok(api.get(f"{API}/experiments", params={"project_id": project_id}))
        assert [e["id"] for e in listed["items"]].count(experiment_id) == 1
        wait(lambda: ok(api.get(f"{API}/experiments/{experiment_id}"))["trials"])
        stopped = ok(api.post(f"{API}/experiments/{experiment_id}/stop"), 202)
        assert stopped["status"] == "stopped" and stopped["task_id"] == experiment_id
        task = ok(api.get(f"{API}/tasks/{experiment_id}"))
        assert task["status"] == "cancelled" and task["state"] == "stopped"
        resumed = ok(api.post(f"{API}/experiments/{experiment_id}/resume"), 202)
        assert resumed["status"] == "running"
        assert ok(api.get(f"{API}/tasks/{experiment_id}"))["status"] == "processing"
        ok(api.post(f"{API}/experiments/{experiment_id}/stop"), 202)
        # an unknown search, and a trial it does not have
        unknown = uuid.uuid4().hex
        assert api.post(f"{API}/experiments/{unknown}/stop").status_code == 404
        assert api.get(f"{API}/experiments/{unknown}").status_code == 404
        missing = api.post(f"{API}/experiments/{experiment_id}/trials/99/promote")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "trial"
