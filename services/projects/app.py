"""Composition root of the projects service: the event store, the repository, the endpoints."""

from __future__ import annotations

from functools import partial

from faststream.nats import NatsBroker

from contracts import projects as c
from services.kernel.eventstore import EventStore
from services.kernel.repository import Repository
from services.kernel.service import Parts, answer_commands, run
from services.kernel.settings import Settings
from services.kernel.streams import StreamSpec, ensure_stream
from services.projects import domain
from services.projects.handlers import handle

SERVICE = "projects"
STREAM = StreamSpec(c.STREAM, (c.EVENTS,))
COMMANDS: tuple[tuple[str, type[c.Command]], ...] = (
    (c.Subjects.CREATE, c.CreateProject),
    (c.Subjects.UPDATE, c.UpdateProject),
    (c.Subjects.ARCHIVE, c.ArchiveProject),
    (c.Subjects.RESTORE, c.RestoreProject),
    (c.Subjects.ADD_MEMBER, c.AddMember),
    (c.Subjects.CHANGE_MEMBER_ROLE, c.ChangeMemberRole),
    (c.Subjects.REMOVE_MEMBER, c.RemoveMember),
)


async def wire(broker: NatsBroker, settings: Settings) -> Parts:
    await ensure_stream(broker.connection.jetstream(), STREAM, settings.stream_replicas)
    store: EventStore[c.Event] = EventStore(
        broker.connection, stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    projects = Repository(store, domain.evolve, None)
    handler = partial(handle, projects=projects)
    answer_commands(broker, SERVICE, [(s, t, handler) for s, t in COMMANDS])
    return Parts()


def main() -> None:
    run(SERVICE, wire)


if __name__ == "__main__":
    main()
