"""An aggregate's version counts its events, while appends are checked against its stream
position; given/when/then against a small in-memory store that interleaves other aggregates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contracts import projects as c
from contracts.common import CommandAccepted, CommandRejected
from services.kernel.commands import execute
from services.kernel.eventstore import ConcurrencyConflict, StoredEvent
from services.kernel.repository import Repository
from services.projects import domain

PID, OTHER = "p" * 32, "q" * 32


class SharedStream:
    """One stream for every aggregate, as in JetStream: sequences are global."""

    def __init__(self) -> None:
        self.events: list[StoredEvent[Any]] = []

    async def version(self, aggregate_id: str) -> int:
        mine = [e.sequence for e in self.events if e.subject == aggregate_id]
        return mine[-1] if mine else 0

    async def load(self, aggregate_id: str, after: int = 0) -> Sequence[StoredEvent[Any]]:
        return [e for e in self.events if e.subject == aggregate_id and e.sequence > after]

    async def append(
        self,
        aggregate_id: str,
        events: Sequence[Any],
        expected_version: int,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        if await self.version(aggregate_id) != expected_version:
            raise ConcurrencyConflict(aggregate_id, expected_version)
        for event in events:
            self.events.append(StoredEvent(len(self.events) + 1, aggregate_id, event, {}))
        return len(self.events)


def repo(store: SharedStream) -> Repository[domain.State]:
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
    store = SharedStream()
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
    store = SharedStream()
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.CreateProject(project_id=OTHER, name="b"))
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=1)
    assert isinstance(reply, CommandAccepted) and reply.version == 2
    # a second service instance (a cold cache) counts the same
    assert (await repo(store).load(PID)).version == 2
    assert (await projects.load(PID)).version == 2


async def test_a_stale_expected_version_is_refused_with_both_versions() -> None:
    store = SharedStream()
    projects = repo(store)
    await run(projects, c.CreateProject(project_id=PID, name="a"))
    await run(projects, c.UpdateProject(project_id=PID, name="b"))
    reply = await run(projects, c.UpdateProject(project_id=PID, name="c"), expected=1)
    assert isinstance(reply, CommandRejected) and reply.code == "CONFLICT"
    assert "you had version 1, it is now at 2" in reply.message
    state = (await projects.load(PID)).state
    assert state is not None and state.name == "b"
