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


async def test_a_new_aggregate_is_at_version_1_whatever_the_stream_position() -> None:
    # given a stream that already holds another project's events
    store = InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=OTHER, name="first"))
    await run(projects, c.UpdateProject(project_id=OTHER, name="first, renamed"))
    # when a project is created
    reply = await run(projects, c.CreateProject(project_id=PID, name="mine"))
    # then its version is 1 and its sequence is where the stream stands
    assert isinstance(reply, CommandAccepted)
    assert (reply.version, reply.sequence) == (1, 3)
    loaded = await projects.load(PID)
    assert (loaded.version, loaded.position) == (1, 3)


async def test_each_event_adds_one_to_the_version_also_through_the_cache() -> None:
    store = InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.CreateProject(project_id=OTHER, name="b"))
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=1)
    assert isinstance(reply, CommandAccepted) and reply.version == 2
    # a second service instance (a cold cache) counts the same
    assert (await repo(store).load(PID)).version == 2
    assert (await projects.load(PID)).version == 2


async def test_a_stale_expected_version_is_refused_with_both_versions() -> None:
    store = InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.UpdateProject(project_id=PID, name="b"))
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=1)
    assert isinstance(reply, CommandRejected) and reply.code == "CONFLICT"
    assert "you had version 1, it is now at 2" in reply.message
    state = (await projects.load(PID)).state
    assert state is not None and state.name == "b"


async def test_an_offloaded_decision_runs_off_the_loop_and_refusals_still_answer() -> None:
    store = InMemoryEventStore(stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
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
    assert isinstance(first, CommandAccepted) and first.version == 1
    assert isinstance(again, CommandRejected) and again.code == "CONFLICT"
    assert seen and all(ident != loop_thread for ident in seen)
