"""``client.experiments`` against ``httpx.MockTransport``: the body a search is created with,
typed answers and refusals, the SSE feed ending at the experiment's own ``complete`` (not a
trial's) or at a stop that still holds, the blocking client's parity, and ``websockets``
imported only when a socket is opened (the socket itself: ``test_experiment_socket``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from studio_client import (
    AsyncStudioClient,
    RetryPolicy,
    StudioClient,
    ValidationFailed,
)
from studio_client.experiments import choice, float_range, int_range, objective
from tests.unit.client.test_surface import public_methods, shape

FAST = RetryPolicy(attempts=4, backoff=0.001, max_backoff=0.002)
EXPERIMENT = {
    "experiment_id": "e1",
    "project_id": "p1",
    "split_id": "s1",
    "name": "search",
    "status": "running",
    "max_trials": 2,
    "objectives": [{"metric": "val_accuracy", "direction": "maximize"}],
    "trials": [
        {
            "trial": 0,
            "run_id": "r0",
            "state": "completed",
            "params": {"model": "smallcnn"},
            "values": {"val_accuracy": 0.5},
            "new_field": 1,
        },
        {"trial": 1, "run_id": "r1", "state": "running", "params": {"model": "resnet18"}},
    ],
    "front": [0],
    "best": {"val_accuracy": 0},
    "importances": {"model": 1.0},
}
Handler = Callable[[httpx.Request], httpx.Response]
#: The body ``create`` sends for the search of the first test below.
SENT = {
    "project_id": "p1",
    "split_id": "s1",
    "name": "search",
    "architecture_type": "smallcnn",
    "search_config": {
        "model": {"type": "categorical", "choices": ["smallcnn"]},
        "learning_rate": {
            "type": "float",
            "low": 1e-4,
            "high": 1e-1,
            "step": None,
            "log": True,
        },
        "batch_size": {"type": "int", "low": 8, "high": 32, "step": 8, "log": False},
    },
    "max_trials": 4,
    "objectives": [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "latency_ms", "direction": "minimize"},
        {"metric": "params", "direction": "minimize"},
    ],
    "budget": {"epochs_per_trial": 2},
    "pruning": {"kind": "none"},
    "seed": 7,
}


def ok(data: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"status": "ok", "data": data})


def studio(handler: Handler) -> StudioClient:
    transport = httpx.MockTransport(handler)
    return StudioClient("http://s", token="t", retry=FAST, transport=transport)


def sse(*events: tuple[str, int | None, dict[str, Any]]) -> bytes:
    out = b""
    for name, seq, data in events:
        out += (f"id: {seq}\n" if seq is not None else "").encode()
        out += f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    return out


def test_a_search_is_created_with_its_space_objectives_budget_and_one_key_across_retries():
    # given a gateway that answers 503 once, then accepts the search
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({}, 503) if len(seen) == 1 else ok({"experiment_id": "e1", "task_id": "t"}, 202)

    # when a search is created with helpers for its space and short objectives
    with studio(handler) as s:
        experiment = s.experiments.create(
            "p1",
            "s1",
            "search",
            architecture_type="smallcnn",
            search_config={
                "model": choice("smallcnn"),
                "learning_rate": float_range(1e-4, 1e-1, log=True),
                "batch_size": int_range(8, 32, step=8),
            },
            max_trials=4,
            objectives=["val_accuracy", "latency_ms", ("params", "minimize")],
            epochs_per_trial=2,
            pruning="none",
            seed=7,
        )

    # then one body was sent twice under one key, and the answer names the experiment
    assert experiment.id == experiment.experiment_id == "e1" and experiment.task_id == "t"
    assert [r.url.path for r in seen] == ["/api/v1/experiments"] * 2
    assert seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
    body = json.loads(seen[1].content)
    assert body == SENT


def test_the_studios_defaults_are_left_to_it_and_a_refusal_names_its_field():
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        error = {"code": "VALIDATION_ERROR", "message": "1 to 500", "field": "max_trials"}
        return httpx.Response(422, json={"status": "error", "error": error, "request_id": "q"})

    with studio(handler) as s, pytest.raises(ValidationFailed) as refused:
        s.experiments.create("p1", "s1", "x", max_trials=501)
    assert refused.value.field == "max_trials" and refused.value.status == 422
    assert set(seen[0]) == {
        "project_id", "split_id", "name", "architecture_type", "search_config", "max_trials",
    }  # fmt: skip


def test_an_objective_reads_a_metric_alone_with_a_direction_a_pair_or_a_mapping():
    assert objective("val_loss") == {"metric": "val_loss", "direction": "minimize"}
    assert objective("macro_f1") == {"metric": "macro_f1", "direction": "maximize"}
    assert objective("latency_ms:maximize")["direction"] == "maximize"
    assert objective({"metric": "params"}) == {"metric": "params", "direction": "minimize"}


def test_an_experiment_is_read_listed_stopped_resumed_and_a_trial_promoted():
    seen: list[tuple[str, str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.url.query.decode()))
        if request.url.path.endswith("/promote"):
            assert json.loads(request.content) == {"format": "onnx"}
            return ok({"experiment_id": "e1", "trial": 0, "evaluation_id": "v", "export_id": "x"})
        if request.url.path == "/api/v1/experiments":
            return ok({"items": [EXPERIMENT], "total": 1, "limit": 10, "offset": 0})
        return ok(EXPERIMENT | {"id": "e1"})

    with studio(handler) as s:
        got = s.experiments.get("e1")
        page = s.experiments.list(project_id="p1", limit=10)
        s.experiments.stop("e1")
        s.experiments.resume("e1")
        promotion = s.experiments.promote("e1", 0)

    trial = got.trial(0)
    assert trial is not None and trial.values == {"val_accuracy": 0.5} and trial.run_id == "r0"
    assert got.front == [0] and got.best == {"val_accuracy": 0} and not got.done
    assert page.total == 1 and page.items[0].id == "e1"
    assert promotion.export_id == "x" and promotion.evaluation_id == "v"
    assert seen == [
        ("GET", "/api/v1/experiments/e1", ""),
        ("GET", "/api/v1/experiments", "project_id=p1&limit=10&offset=0"),
        ("POST", "/api/v1/experiments/e1/stop", ""),
        ("POST", "/api/v1/experiments/e1/resume", ""),
        ("POST", "/api/v1/experiments/e1/trials/0/promote", ""),
    ]


def test_follow_goes_past_a_trials_complete_and_ends_at_the_experiments_own():
    # given a feed where a trial's run completes, the stream breaks, then the search completes
    streams = [
        sse(
            ("snapshot", None, {"trials": []}),
            ("trial_started", 3, {"trial": 0, "run_id": "r0"}),
            ("complete", 4, {"type": "training.run_completed.v1", "run_id": "r0"}),
        ),
        sse(
            ("trial_completed", 5, {"trial": 0, "values": {"val_accuracy": 0.5}}),
            ("complete", 6, {"type": "training.experiment_completed.v1", "trials": 1}),
            ("epoch_end", 7, {"trial": 9}),
        ),
    ]
    asked: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.path, request.headers.get("Last-Event-ID")))
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, content=streams.pop(0))
        return ok(EXPERIMENT)

    # when it is followed
    with studio(handler) as s:
        events = [(e.event, e.id) for e in s.experiments.follow("e1")]

    # then it read the experiment's project, resumed after 4, and stopped at the search's end
    assert events == [
        ("snapshot", None),
        ("trial_started", 3),
        ("complete", 4),
        ("trial_completed", 5),
        ("complete", 6),
    ]
    stream = "/api/v1/training/p1/experiments/e1/stream"
    assert asked == [("/api/v1/experiments/e1", None), (stream, None), (stream, "4")]


def test_follow_ends_when_the_gateway_says_the_feed_is_over_or_the_search_stays_stopped():
    stopped = sse(("status", 8, {"type": "training.experiment_stopped.v1", "status": "stopped"}))
    answers = [
        ok(EXPERIMENT),
        httpx.Response(200, content=stopped),
        ok(EXPERIMENT | {"status": "stopped"}),
    ]
    with studio(lambda r: answers.pop(0)) as s:
        assert [e.id for e in s.experiments.follow("e1")] == [8]
    assert not answers
    over = [ok(EXPERIMENT), httpx.Response(204)]
    with studio(lambda r: over.pop(0)) as s:
        assert list(s.experiments.follow("e1")) == []


def test_the_blocking_client_offers_the_same_experiment_calls():
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    with StudioClient("http://s", transport=transport) as blocking:
        aio = AsyncStudioClient("http://s", transport=transport)
        sync_methods = public_methods(blocking.experiments)
        async_methods = public_methods(aio.experiments)
        assert sorted(sync_methods) == sorted(async_methods)
        for method, signature in async_methods.items():
            assert shape(sync_methods[method]) == shape(signature), method
        wanted = {"create", "list", "get", "stop", "resume", "promote", "follow"}
        assert wanted | {"connect_websocket", "wait"} <= set(async_methods)


def test_the_client_imports_websockets_only_when_a_socket_is_opened():
    code = "import sys, studio_client; print('websockets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
