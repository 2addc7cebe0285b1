"""An aggregate's version counts its events, while appends are checked against its stream
position: given/when/then on the in-memory store, whose one stream interleaves aggregates."""

from __future__ import annotations

import threading

from contracts import projects as c
from contracts.common import CommandAccepted, CommandRejected
from services.kernel.commands import execute
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.projects import domain

PID, OTHER = "p" * 32, "q" * 32
#: A project's version once created: a create decides ProjectCreated and its creator's
#: MemberAdded (as owner), so a new project's version and stream position both move by two.
CREATED = len(domain.decide(None, c.CreateProject(project_id=PID, name="any")))


def projects_store() -> InMemoryEventStore[c.Event]:
    return InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


def repo(store: InMemoryEventStore[c.Event]) -> Repository[domain.State]:
    return Repository(store, domain.evolve, None)


async def run(r: Repository[domain.State], command: c.Command, expected: int | None = None):
    def decide(state: domain.State) -> list[domain.Event]:
        return domain.decide(state, command)

    return await execute(
        r,
        command.project_id,
        command,
        decide,
        headers={},
        refusals=(domain.DomainError,),
        expected=expected,
        noun="project",
    )


async def test_a_new_aggregate_counts_its_own_events_whatever_the_stream_position() -> None:
    # given a stream that already holds another project's events (created, then renamed)
    store = projects_store()
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=OTHER, name="first"))
    await run(projects, c.UpdateProject(project_id=OTHER, name="first, renamed"))
    # when a project is created
    reply = await run(projects, c.CreateProject(project_id=PID, name="mine"))
    # then its version counts its own creation events only, while its sequence is where the
    # stream stands after them
    assert isinstance(reply, CommandAccepted)
    assert (reply.version, reply.sequence) == (CREATED, 2 * CREATED + 1)
    loaded = await projects.load(PID)
    assert (loaded.version, loaded.position) == (CREATED, 2 * CREATED + 1)


async def test_each_event_adds_one_to_the_version_also_through_the_cache() -> None:
    store = projects_store()
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.CreateProject(project_id=OTHER, name="b"))
    # when the first project is renamed after the second one was created
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=CREATED)
    # then its version grows by its one new event, not by the other project's
    assert isinstance(reply, CommandAccepted) and reply.version == CREATED + 1
    # a second service instance (a cold cache) counts the same
    assert (await repo(store).load(PID)).version == CREATED + 1
    assert (await projects.load(PID)).version == CREATED + 1


async def test_a_stale_expected_version_is_refused_with_both_versions() -> None:
    store = projects_store()
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.UpdateProject(project_id=PID, name="b"))
    # a writer who saw the project as created renames it after someone else did
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=CREATED)
    assert isinstance(reply, CommandRejected) and reply.code == "CONFLICT"
    assert f"you had version {CREATED}, it is now at {CREATED + 1}" in reply.message
    state = (await projects.load(PID)).state
    assert state is not None and state.name == "b"


async def test_an_offloaded_decision_runs_off_the_loop_and_refusals_still_answer() -> None:
    store = projects_store()
    projects = repo(store)
    loop_thread = threading.get_ident()
    seen: list[int] = []

    async def offloaded(command: c.CreateProject) -> object:
        def decide(state: domain.State) -> list[domain.Event]:
            seen.append(threading.get_ident())
            return domain.decide(state, command)

        refusals = (domain.DomainError,)
        return await execute(
            projects, PID, command, decide, headers={}, refusals=refusals, offload=True
        )

    first = await offloaded(c.CreateProject(project_id=PID, name="slow to decide"))
    again = await offloaded(c.CreateProject(project_id=PID, name="a second one"))
    assert isinstance(first, CommandAccepted) and first.version == CREATED
    assert isinstance(again, CommandRejected) and again.code == "CONFLICT"
    assert seen and all(ident != loop_thread for ident in seen)
