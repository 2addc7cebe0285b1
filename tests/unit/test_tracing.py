"""Tracing without NATS: off it records nothing yet carries a caller's context on; on, the
gateway's HTTP span, the kernel's decision against an in-memory store and a run's spans hang
together as one trace."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contracts import datasets as d
from contracts import exports as x
from contracts import projects as p
from contracts import training as c
from services.datasets import app as datasets_app
from services.exporter import handlers as exporter
from services.gateway.tracing_http import TracingMiddleware
from services.kernel import tracing
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.trainer import domain
from services.trainer.runstore import RunStore
from tests.tracing_helpers import header_ids, ids, named, parent_id, record_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE}-00f067aa0ba902b7-01"
RUN = "r" * 32


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return record_spans(monkeypatch)


# --- off ---------------------------------------------------------------------------------------


def test_off_nothing_is_recorded_and_no_header_is_made_from_nothing():
    # given no tracer provider (no OTEL_EXPORTER_OTLP_ENDPOINT)
    assert not tracing.enabled()
    # when a span is opened with no caller's context
    with tracing.span("send X") as span:
        headers = tracing.inject({})
    # then it records nothing and no trace context is invented
    assert not span.is_recording()
    assert headers == {}


def test_off_a_callers_context_still_reaches_what_the_block_sends():
    with tracing.span("handle X", context=tracing.extract({"traceparent": CALLER})):
        headers = tracing.inject({})
    assert headers["traceparent"] == CALLER


def test_setup_installs_nothing_without_an_endpoint(monkeypatch: pytest.MonkeyPatch):
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tracing.setup_tracing("projects", settings=None)  # type: ignore[arg-type]
    assert not tracing.enabled()


# --- the kernel's decision ---------------------------------------------------------------------


def projects() -> Repository[None]:
    store: InMemoryEventStore[p.Event] = InMemoryEventStore(
        stream=p.STREAM, subject=p.event_subject, event_type=p.Event
    )
    return Repository(store, lambda state, event: state, None)


def create(project_id: str) -> p.CreateProject:
    return p.CreateProject(project_id=project_id, name="n")


async def test_a_decision_stores_its_events_in_the_current_span(spans: InMemorySpanExporter):
    repo = projects()
    command = create("a1")
    # given a command being handled (its span current), with a stale caller header
    with tracing.span("handle CreateProject", kind=SpanKind.SERVER) as handling:
        await execute(
            repo,
            "a1",
            command,
            lambda _: [p.ProjectCreated(project_id="a1", name="n")],
            headers={"traceparent": CALLER},
            refusals=(DomainError,),
        )
    # then the event stored names the handling span: the current span wins
    stored = (await repo.store.load("a1"))[0]
    assert header_ids(stored.headers["traceparent"]) == ids(handling)
    assert handling.get_span_context().trace_id != int(TRACE, 16)


async def test_outside_any_span_a_decision_follows_the_headers_trace(spans: InMemorySpanExporter):
    repo = projects()
    await execute(
        repo,
        "a2",
        create("a2"),
        lambda _: [p.ProjectCreated(project_id="a2", name="n")],
        headers={"traceparent": CALLER},
        refusals=(DomainError,),
    )
    stored = (await repo.store.load("a2"))[0]
    assert stored.headers["traceparent"] == CALLER


# --- the gateway's HTTP span -------------------------------------------------------------------


def app() -> FastAPI:
    api = FastAPI(telemetry={"tracing": False})  # as the gateway: one span, tracing_http's

    @api.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "sent": tracing.inject({}).get("traceparent", "")}

    @api.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    api.add_middleware(TracingMiddleware)
    return api


async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def test_a_request_is_one_server_span_named_by_its_route(spans: InMemorySpanExporter):
    # when a caller in a trace asks for an item
    answer = await get("/items/42", {"traceparent": CALLER})
    # then one SERVER span named by the route template, child of the caller's span
    span = named(spans.get_finished_spans(), "HTTP GET /items/{item_id}")
    assert span.kind == SpanKind.SERVER
    assert span.context.trace_id == int(TRACE, 16)
    assert parent_id(span) == int("00f067aa0ba902b7", 16)
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.route"] == "/items/{item_id}"
    # and what the route sends on is in that span
    assert header_ids(answer.json()["sent"]) == ids(span)


async def test_a_request_without_a_caller_starts_a_trace(spans: InMemorySpanExporter):
    await get("/items/1")
    span = named(spans.get_finished_spans(), "HTTP GET /items/{item_id}")
    assert span.parent is None


async def test_a_failing_request_marks_its_span_failed(spans: InMemorySpanExporter):
    answer = await get("/broken")
    assert answer.status_code == 500
    span = named(spans.get_finished_spans(), "HTTP GET /broken")
    assert span.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)


async def test_probes_make_no_span(spans: InMemorySpanExporter):
    assert (await get("/health")).status_code == 200
    assert spans.get_finished_spans() == ()


async def test_off_the_request_carries_its_callers_context_on():
    answer = await get("/items/7", {"traceparent": CALLER})
    assert answer.json()["sent"] == CALLER


# --- a run's spans -----------------------------------------------------------------------------


def queued() -> c.RunQueued:
    return c.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id="p" * 32, split_id="s" * 32,
        hyperparameters=c.Hyperparameters(epochs=2), classes=["a", "b"],
        train_images=10, val_images=4,
    )  # fmt: skip


def epoch(n: int) -> c.EpochCompleted:
    return c.EpochCompleted(
        run_id=RUN, epoch=n, train_loss=1.0, val_loss=1.0, val_accuracy=0.5,
        learning_rate=0.1, seconds=2.0, images_per_second=5.0,
    )  # fmt: skip


def checkpoint(n: int) -> c.CheckpointSaved:
    return c.CheckpointSaved(
        run_id=RUN, epoch=n, kind="last", sha256="0" * 64, size=1, object_name=f"{RUN}/e{n}.pt"
    )


async def test_a_run_is_a_span_in_its_queuing_requests_trace_with_its_epochs_under_it(
    spans: InMemorySpanExporter,
):
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    runs = RunStore(Repository(store, domain.evolve, None), instance="t1")
    # given a run queued by a request (its first event carries the request's context)
    await store.append(RUN, [queued()], 0, headers={"traceparent": CALLER})
    assert await runs.claim(RUN, device="cpu", lease="slot")
    # when the trainer trains it: an epoch, then a failure
    async with runs.traced(RUN):
        run = await runs.get(RUN)
        assert isinstance(run, domain.Run)
        await runs.epoch(run, epoch(1), [checkpoint(1)])
        await runs.fail(RUN, RuntimeError("out of memory"))
    finished = spans.get_finished_spans()
    run_span, epoch_span = named(finished, f"run {RUN}"), named(finished, "epoch 1")
    # then the run span is in the request's trace, linked to the span that queued it
    assert run_span.context.trace_id == int(TRACE, 16)
    assert parent_id(run_span) == int("00f067aa0ba902b7", 16)
    assert [link.context.span_id for link in run_span.links] == [int("00f067aa0ba902b7", 16)]
    assert run_span.status.status_code == StatusCode.ERROR
    # and the epoch is under it, began when the engine began it, and its event names it
    assert parent_id(epoch_span) == ids(run_span)[1]
    assert (epoch_span.end_time or 0) - (epoch_span.start_time or 0) >= 2_000_000_000
    stored = {type(s.event).__name__: s.headers for s in await store.load(RUN)}
    assert header_ids(stored["EpochCompleted"]["traceparent"]) == ids(epoch_span)
    assert header_ids(stored["RunFailed"]["traceparent"]) == ids(run_span)


# --- the exporter's own query endpoint ---------------------------------------------------------


async def test_a_prediction_is_answered_in_a_query_span_in_the_askers_trace(
    spans: InMemorySpanExporter,
):
    async def predict(query: x.Predict, headers: Mapping[str, str]) -> x.Predictions:
        return x.Predictions(export_id=query.export_id, results=[])

    answer = exporter.query_endpoint(x.Predict, predict)
    asked = SimpleNamespace(
        body=b'{"export_id": "e", "images": []}', headers={"traceparent": CALLER}
    )
    await answer(asked)  # type: ignore[arg-type]
    span = named(spans.get_finished_spans(), "query Predict")
    assert span.kind == SpanKind.SERVER
    assert span.context.trace_id == int(TRACE, 16)
    assert parent_id(span) == int("00f067aa0ba902b7", 16)


async def test_off_a_run_reads_nothing_more_and_still_stores_in_its_queuing_trace():
    class Counting(InMemoryEventStore[c.Event]):
        loads = 0

        async def load(self, aggregate_id: str, after: int = 0) -> Any:
            Counting.loads += 1
            return await super().load(aggregate_id, after)

    store = Counting(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    runs = RunStore(Repository(store, domain.evolve, None), instance="t1")
    await store.append(RUN, [queued()], 0, headers={"traceparent": CALLER})
    assert await runs.claim(RUN, device="cpu", lease="slot")
    before = Counting.loads
    async with runs.traced(RUN):
        pass
    assert Counting.loads == before
    run = await runs.get(RUN)
    assert isinstance(run, domain.Run)
    await runs.epoch(run, epoch(1), [checkpoint(1)])
    last = (await store.load(RUN))[-1]
    assert last.headers["traceparent"].split("-")[1] == TRACE


async def test_a_dataset_health_report_is_answered_in_a_query_span(spans: InMemorySpanExporter):
    async def get_health(query: d.GetHealth) -> dict[str, str]:
        return {"dataset_id": query.dataset_id}

    answer = datasets_app.health_endpoint(SimpleNamespace(get_health=get_health))  # type: ignore[arg-type]
    body = msgspec.json.encode(d.GetHealth(dataset_id="d" * 32))
    await answer(SimpleNamespace(body=body, headers={"traceparent": CALLER}))  # type: ignore[arg-type]
    span = named(spans.get_finished_spans(), "query GetHealth")
    assert span.kind == SpanKind.SERVER
    assert parent_id(span) == int("00f067aa0ba902b7", 16)
