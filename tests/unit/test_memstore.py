"""The in-memory event store passes the event store's contract, and carries a service's
Repository and ``execute`` as JetStream does: versions, stale writers, retried commands."""

from __future__ import annotations

import msgspec
import pytest

from contracts import datasets
from contracts import projects as c
from contracts.common import CommandAccepted, CommandRejected
from services.kernel.commands import execute
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.projects import domain
from tests.contract.eventstore_suite import EventStoreContract, StreamSize, created

PID = "p" * 32


def projects_store() -> InMemoryEventStore[c.Event]:
    return InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
def store() -> InMemoryEventStore[c.Event]:
    return projects_store()


@pytest.fixture
def stream_size(store: InMemoryEventStore[c.Event]) -> StreamSize:
    async def size() -> int:
        return len(store.events())

    return size


class TestInMemoryEventStore(EventStoreContract):
    """The shared contract, in memory."""


async def test_an_event_that_would_not_load_is_refused_before_anything_is_stored(store):
    # given a stored project, when a batch holds an event of another context's contract
    v1 = await store.append("p1", [created()], 0)
    alien = datasets.ImageDeleted(dataset_id="d1", image_id="i1")
    # then the append fails as loading it would, and the batch's good event is not kept either
    with pytest.raises(msgspec.ValidationError):
        await store.append("p1", [created("p1", "m2"), alien], v1)
    assert [s.sequence for s in store.events()] == [v1]


async def test_events_lists_the_whole_stream_in_order(store):
    await store.append("p1", [created("p1", "a")], 0)
    await store.append("p2", [created("p2", "b")], 0)
    assert [(s.sequence, s.subject, s.event.message_id) for s in store.events()] == [
        (1, c.event_subject("p1"), "a"),
        (2, c.event_subject("p2"), "b"),
    ]


# --- a service's repository and execute, on the in-memory store ----------------------------


def repository(store: InMemoryEventStore[c.Event]) -> Repository[domain.State]:
    return Repository(store, domain.evolve, None)


async def run(
    repo: Repository[domain.State], command: c.Command, expected: int | None = None
) -> CommandAccepted | CommandRejected:
    reply = await execute(
        repo,
        command.project_id,
        command,
        lambda state: domain.decide(state, command),
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        refusals=(domain.DomainError,),
        expected=expected,
        noun="project",
    )
    assert isinstance(reply, CommandAccepted | CommandRejected)
    return reply


async def test_a_created_project_is_at_version_1() -> None:
    # given an empty store, when a project is created
    store = projects_store()
    reply = await run(repository(store), c.CreateProject(project_id=PID, name="Cats"))
    # then it is accepted at version 1, and its one event is stored with its envelope
    assert isinstance(reply, CommandAccepted)
    assert (reply.version, reply.sequence, reply.events) == (1, 1, 1)
    [stored] = await store.load(PID)
    assert stored.event.name == "Cats"
    assert stored.headers["Studio-Causation-Id"] == reply.causation_id
    assert stored.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_a_stale_expected_version_is_refused_and_nothing_is_stored() -> None:
    # given a project renamed once (version 2)
    store = projects_store()
    projects = repository(store)
    await run(projects, c.CreateProject(project_id=PID, name="Cats"))
    await run(projects, c.UpdateProject(project_id=PID, name="Dogs"), expected=1)
    # when a writer who saw version 1 renames it
    reply = await run(projects, c.UpdateProject(project_id=PID, name="Birds"), expected=1)
    # then it is refused with both versions, and the project keeps the newer name
    assert isinstance(reply, CommandRejected) and reply.code == "CONFLICT"
    assert "you had version 1, it is now at 2" in reply.message
    assert [s.event.name for s in await store.load(PID)] == ["Cats", "Dogs"]


async def test_a_writer_that_lost_the_race_is_retried_against_the_new_state() -> None:
    # given two service instances, the second with a cached (now old) view of the project
    store = projects_store()
    first, second = repository(store), repository(store)
    await run(first, c.CreateProject(project_id=PID, name="Cats"))
    assert (await second.load(PID)).version == 1
    await run(first, c.UpdateProject(project_id=PID, name="Dogs"))
    # when the second renames without pinning a version, it decides again on the new state
    reply = await run(second, c.UpdateProject(project_id=PID, description="Woof"))
    assert isinstance(reply, CommandAccepted) and reply.version == 3


async def test_a_retried_command_is_stored_once() -> None:
    # given a create whose reply was lost, and a service restarted with an empty cache
    store = projects_store()
    command = c.CreateProject(project_id=PID, name="Cats", message_id="cmd-1")
    assert isinstance(await run(repository(store), command), CommandAccepted)
    # when the same command (same message id) is sent again, to this or a fresh instance
    again = await run(repository(store), command)
    # then it is accepted without a new event, and the stream holds the one event
    assert isinstance(again, CommandAccepted)
    assert (again.version, again.events) == (1, 0)
    assert [s.headers["Nats-Msg-Id"] for s in store.events()] == ["cmd-1-0"]


async def test_a_retried_append_of_a_stamped_decision_is_stored_once() -> None:
    # given the events of one command stored, whose ack never came back
    store = projects_store()
    command = c.UpdateProject(project_id=PID, name="Dogs", description="Woof", message_id="u")
    await run(repository(store), c.CreateProject(project_id=PID, name="Cats"))
    reply = await run(repository(store), command, expected=1)
    assert isinstance(reply, CommandAccepted) and reply.events == 2
    # when the very same events are appended again at the version they were decided on
    events = [s.event for s in await store.load(PID, after=1)]
    # then the store answers where they are, and nothing is added
    assert await store.append(PID, events, 1) == reply.sequence
    assert len(store.events()) == 3
