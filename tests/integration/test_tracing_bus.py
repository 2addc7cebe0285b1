"""Trace context on every NATS hop, against a real nats-server: a command is ``send`` →
``handle`` → ``append``, its reply carries the handler's context back, its event stores the
append's context and a projection applies it in a ``project`` span under that append; a query
is ``query`` on both sides. Spans are kept in memory (``tests.tracing_helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from faststream.nats import NatsBroker
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Table
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as p
from contracts.common import CommandAccepted
from services.kernel import bus, queries, tracing
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.nats_server import EmbeddedNats
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.repository import Repository
from services.kernel.sqlite import create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from tests.tracing_helpers import header_ids, ids, named, parent_id, record_spans

pytestmark = pytest.mark.integration

COMMAND = "cmd.tracing.create"
QUERY = "qry.tracing.look"


class Applied(SQLModel, table=True):
    __tablename__ = "test_traced"
    sequence: int = Field(primary_key=True)


class Recorder(Decodes):
    name = "recorder"
    stream = p.STREAM
    filter_subject = p.EVENTS
    tables: Sequence[Table] = (Applied.__table__,)  # type: ignore[attr-defined]
    event_type = p.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        db.add(Applied(sequence=stored.sequence))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    return record_spans(monkeypatch)


@pytest.fixture
async def broker(nats_srv: EmbeddedNats) -> AsyncIterator[NatsBroker]:
    """A projects-like service on the bus: a command that stores ProjectCreated, a query."""
    b = bus.make_broker(nats_srv.url, name="tracing-test")
    await bus.connect(b, nats_srv.url, timeout=10)
    js = b.connection.jetstream()
    await ensure_stream(js, StreamSpec(p.STREAM, (p.EVENTS,)))
    store = EventStore(b.connection, stream=p.STREAM, subject=p.event_subject, event_type=p.Event)
    repo: Repository[None] = Repository(store, lambda state, event: state, None)

    async def create(command: p.CreateProject, headers: Mapping[str, str]) -> Any:
        event = p.ProjectCreated(project_id=command.project_id, name=command.name)
        return await execute(
            repo, command.project_id, command, lambda _: [event], headers=headers,
            refusals=(DomainError,),
        )  # fmt: skip

    async def look(query: p.CreateProject, headers: Mapping[str, str]) -> CommandAccepted:
        return CommandAccepted(aggregate_id=query.project_id, version=0, sequence=0, events=0)

    b.subscriber(COMMAND)(bus.command_endpoint("projects", p.CreateProject, create))
    b.subscriber(QUERY)(queries.query_endpoint("projects", p.CreateProject, look))
    await b.start()
    yield b
    await bus.stop_broker(b)


async def send(broker: NatsBroker, project_id: str) -> Any:
    command = p.CreateProject(project_id=project_id, name="n")
    with tracing.span("HTTP POST /projects", kind=SpanKind.SERVER):
        return await bus.ask(
            broker.connection, COMMAND, msgspec.json.encode(command), timeout=10,
            name="CreateProject",
        )  # fmt: skip


async def test_a_command_is_one_trace_from_sender_to_stored_event(broker, spans):
    # when a request sends a command that its service decides and stores
    reply = await send(broker, "p1")
    assert msgspec.json.decode(reply.data)["events"] == 1
    finished = spans.get_finished_spans()
    request = named(finished, "HTTP POST /projects")
    sent, handled = named(finished, "send CreateProject"), named(finished, "handle CreateProject")
    appended = named(finished, f"append {p.STREAM}")
    # then each hop is the child of the one before, all in one trace
    assert (sent.kind, handled.kind, appended.kind) == (
        SpanKind.CLIENT,
        SpanKind.SERVER,
        SpanKind.PRODUCER,
    )
    assert parent_id(sent) == ids(request)[1]
    assert parent_id(handled) == ids(sent)[1]
    assert parent_id(appended) == ids(handled)[1]
    assert {s.context.trace_id for s in (request, sent, handled, appended)} == {ids(request)[0]}
    # the reply carries the handler's context back
    assert header_ids(reply.headers["traceparent"]) == ids(handled)
    # and the event stored names the append's span
    stored = await broker.connection.jetstream().get_last_msg(p.STREAM, p.event_subject("p1"))
    assert header_ids(stored.headers["traceparent"]) == ids(appended)


async def test_a_projection_applies_an_event_under_the_span_that_appended_it(
    broker, spans, tmp_path: Path
):
    await send(broker, "p2")
    engine = create_engine(tmp_path / "model.db")
    runner = ProjectionRunner(broker.connection, engine, [Recorder()], consumer_prefix="trace")
    try:
        await runner.start()
        assert await runner.caught_up(timeout=10)
    finally:
        await runner.stop()
        await engine.dispose()
    finished = spans.get_finished_spans()
    projected = named(finished, "project recorder")
    assert projected.kind == SpanKind.CONSUMER
    assert parent_id(projected) == ids(named(finished, f"append {p.STREAM}"))[1]
    assert projected.context.trace_id == ids(named(finished, "HTTP POST /projects"))[0]


async def test_a_query_is_a_span_on_both_sides(broker, spans):
    look = p.CreateProject(project_id="p3", name="n")
    with tracing.span("HTTP GET /look"):
        reply = await bus.query(broker, QUERY, look, CommandAccepted, timeout=10)
    assert isinstance(reply, CommandAccepted)
    asked, answered = [s for s in spans.get_finished_spans() if s.name == "query CreateProject"]
    client, server = sorted((asked, answered), key=lambda s: s.kind != SpanKind.CLIENT)
    assert (client.kind, server.kind) == (SpanKind.CLIENT, SpanKind.SERVER)
    assert parent_id(server) == ids(client)[1]


async def test_off_a_callers_trace_still_reaches_the_event(broker):
    # given no tracer provider, and a caller in a trace
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    command = p.CreateProject(project_id="p4", name="n")
    with tracing.attached(tracing.extract({"traceparent": caller})):
        reply = await bus.ask(broker.connection, COMMAND, msgspec.json.encode(command), timeout=10)
    # then the event stores that trace context as it came, and the reply carries it back
    stored = await broker.connection.jetstream().get_last_msg(p.STREAM, p.event_subject("p4"))
    assert stored.headers["traceparent"] == caller
    assert reply.headers["traceparent"] == caller
