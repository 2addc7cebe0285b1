"""One request, one trace across processes: a real studio whose every process exports its spans
over OTLP/HTTP to a receiver this test runs, as it would to an OpenTelemetry collector.

Creating a project is the gateway's HTTP span → ``send`` → the projects service's ``handle`` →
``append`` → the gateway's ``project`` span, in the trace the client's ``traceparent`` named;
a training run's ``run`` span is in the trace of the request that queued it, linked to it."""

from __future__ import annotations

import gzip
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from contracts import projects as p
from tests import training_helpers as th
from tests.stack import API, Stack

pytestmark = pytest.mark.integration

STACK_SERVICES = ("identity", "projects", "datasets", "trainer")


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[tuple[str, str], ...]


class Receiver:
    """An OTLP/HTTP trace endpoint (``POST /v1/traces``, protobuf) keeping every span."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def take(self, request: ExportTraceServiceRequest) -> None:
        got = []
        for resource in request.resource_spans:
            names = [a.value.string_value for a in resource.resource.attributes]
            keys = [a.key for a in resource.resource.attributes]
            service = dict(zip(keys, names, strict=True)).get("service.name", "")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    links = tuple((li.trace_id.hex(), li.span_id.hex()) for li in s.links)
                    ids = (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex())
                    got.append(Received(service, s.name, s.kind, *ids, links))
        with self.lock:
            self.spans.extend(got)

    def wait(self, found: Callable[[list[Received]], bool], timeout: float = 30) -> list[Received]:
        """Every span received, once ``found`` says they include what the test waits for."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            assert time.monotonic() < deadline, f"spans received: {sorted({s.name for s in spans})}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def traced(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's studio, every process exporting its spans to ``receiver`` (a tenth of a
    second after they end, rather than the SDK's five)."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    stack = Stack(tmp_path_factory.mktemp("traced"), STACK_SERVICES, **env)
    try:
        yield stack.up(timeout=120)  # the trainer imports torch: slow on a busy machine
    finally:
        stack.down()


def caller() -> tuple[str, str, dict[str, str]]:
    """A client's own trace and span ids, and the ``traceparent`` header naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def of(spans: list[Received], trace_id: str) -> dict[str, list[Received]]:
    """The spans of one trace, by name."""
    by_name: dict[str, list[Received]] = {}
    for s in spans:
        if s.trace_id == trace_id:
            by_name.setdefault(s.name, []).append(s)
    return by_name


def test_creating_a_project_is_one_trace_across_the_gateway_and_the_projects_service(
    traced: Stack, receiver: Receiver
):
    trace_id, span_id, header = caller()
    wanted = {
        "HTTP POST /api/v1/projects",
        "send CreateProject",
        "handle CreateProject",
        f"append {p.STREAM}",
        "project projects",
    }
    # when a client in a trace creates a project
    with traced.sync_client(timeout=30) as api:
        answer = api.post(f"{API}/projects", json={"name": "traced"}, headers=header)
    assert answer.status_code == 201, answer.text
    # then the request's spans, in both processes, are in the client's trace
    spans = of(receiver.wait(lambda s: wanted <= set(of(s, trace_id))), trace_id)
    request = spans["HTTP POST /api/v1/projects"][0]
    sent, handled = spans["send CreateProject"][0], spans["handle CreateProject"][0]
    appended = spans[f"append {p.STREAM}"][0]
    projected = spans["project projects"][0]
    assert request.parent_id == span_id and request.service == "gateway"
    assert sent.service == "gateway" and sent.parent_id == request.span_id
    assert handled.service == "projects" and handled.parent_id == sent.span_id
    assert appended.service == "projects" and appended.parent_id == handled.span_id
    assert projected.service == "gateway" and projected.parent_id == appended.span_id
    assert len({s.service for group in spans.values() for s in group}) >= 2


def test_a_training_run_is_a_span_linked_to_the_request_that_queued_it(
    traced: Stack, receiver: Receiver
):
    project_id, split_id = th.learnable_split(traced, per_class=8)
    trace_id, _, header = caller()
    hyper = th.FAST | {"epochs": 1}
    body = {"project_id": project_id, "split_id": split_id, "hyperparameters": hyper}
    # when a client in a trace queues a run, and the trainer trains it
    with traced.sync_client(timeout=30) as api:
        answer = api.post(f"{API}/training/run", json=body, headers=header)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["data"]["id"]
    th.wait_status(traced, run_id, "completed", timeout=90)
    # then the run's span, in the trainer, is in that trace and links to its queuing
    spans = receiver.wait(lambda s: any(x.name == f"run {run_id}" for x in s))
    run = next(s for s in spans if s.name == f"run {run_id}")
    assert run.service == "trainer"
    assert run.trace_id == trace_id
    assert run.links and all(link[0] == trace_id for link in run.links)
    queued = {s.span_id for s in spans if s.trace_id == trace_id and s.name.startswith("append")}
    assert {link[1] for link in run.links} <= queued
    # and its epoch is under it
    epochs = [s for s in spans if s.name == "epoch 1" and s.parent_id == run.span_id]
    assert len(epochs) == 1
