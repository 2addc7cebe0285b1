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
#: A project's version once created: a create decides ProjectCreated and its creator's
#: MemberAdded (as owner), so every version below counts from there.
CREATED = len(domain.decide(None, c.CreateProject(project_id=PID, name="any")))


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


async def test_a_created_project_is_at_the_version_of_its_creation_events() -> None:
    # given an empty store, when alice creates a project
    store = projects_store()
    create = c.CreateProject(project_id=PID, name="Cats", actor="alice")
    reply = await run(repository(store), create)
    # then it is accepted at version 2: the project, and alice as its owner, are stored in one
    # append, each event with its envelope
    assert isinstance(reply, CommandAccepted)
    assert (reply.version, reply.sequence, reply.events) == (2, 2, 2) == (CREATED,) * 3
    project, owner = await store.load(PID)
    assert isinstance(project.event, c.ProjectCreated) and project.event.name == "Cats"
    assert isinstance(owner.event, c.MemberAdded)
    assert (owner.event.user_id, owner.event.role) == ("alice", "owner")
    for stored in (project, owner):
        assert stored.headers["Studio-Causation-Id"] == reply.causation_id
        assert stored.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_a_stale_expected_version_is_refused_and_nothing_is_stored() -> None:
    # given a project renamed once since its creation
    store = projects_store()
    projects = repository(store)
    await run(projects, c.CreateProject(project_id=PID, name="Cats"))
    await run(projects, c.UpdateProject(project_id=PID, name="Dogs"), expected=CREATED)
    # when a writer who saw it as created renames it
    reply = await run(projects, c.UpdateProject(project_id=PID, name="Birds"), expected=CREATED)
    # then it is refused with both versions, nothing is stored, and it keeps the newer name
    assert isinstance(reply, CommandRejected) and reply.code == "CONFLICT"
    assert f"you had version {CREATED}, it is now at {CREATED + 1}" in reply.message
    assert len(store.events()) == CREATED + 1
    state = (await repository(store).load(PID)).state
    assert state is not None and state.name == "Dogs"


async def test_a_writer_that_lost_the_race_is_retried_against_the_new_state() -> None:
    # given two service instances, the second with a cached (now old) view of the project
    store = projects_store()
    first, second = repository(store), repository(store)
    await run(first, c.CreateProject(project_id=PID, name="Cats"))
    assert (await second.load(PID)).version == CREATED
    await run(first, c.UpdateProject(project_id=PID, name="Dogs"))
    # when the second renames without pinning a version, it decides again on the new state
    reply = await run(second, c.UpdateProject(project_id=PID, description="Woof"))
    # then its change lands after the first's
    assert isinstance(reply, CommandAccepted) and reply.version == CREATED + 2


async def test_a_retried_command_is_stored_once() -> None:
    # given a create whose reply was lost, and a service restarted with an empty cache
    store = projects_store()
    command = c.CreateProject(project_id=PID, name="Cats", message_id="cmd-1")
    assert isinstance(await run(repository(store), command), CommandAccepted)
    # when the same command (same message id) is sent again, to this or a fresh instance
    again = await run(repository(store), command)
    # then it is accepted without a new event, and the stream holds the first create's events
    assert isinstance(again, CommandAccepted)
    assert (again.version, again.events) == (CREATED, 0)
    assert [s.headers["Nats-Msg-Id"] for s in store.events()] == [
        f"cmd-1-{i}" for i in range(CREATED)
    ]


async def test_a_retried_append_of_a_stamped_decision_is_stored_once() -> None:
    # given the events of one command stored, whose ack never came back
    store = projects_store()
    command = c.UpdateProject(project_id=PID, name="Dogs", description="Woof", message_id="u")
    await run(repository(store), c.CreateProject(project_id=PID, name="Cats"))
    reply = await run(repository(store), command, expected=CREATED)
    assert isinstance(reply, CommandAccepted) and reply.events == 2
    # when the very same events are appended again at the version they were decided on (one
    # project alone in the stream: its version is its stream position)
    events = [s.event for s in await store.load(PID, after=CREATED)]
    # then the store answers where they are, and nothing is added
    assert await store.append(PID, events, CREATED) == reply.sequence
    assert len(store.events()) == CREATED + 2
