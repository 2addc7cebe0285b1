"""Replies every command handler answers with, error codes, and service control subjects."""

from __future__ import annotations

from typing import Annotated, Final, NamedTuple

import msgspec

from contracts.envelope import Message

#: Error codes shared by replies and the REST envelope.
VALIDATION_ERROR: Final = "VALIDATION_ERROR"
NOT_FOUND: Final = "NOT_FOUND"
CONFLICT: Final = "CONFLICT"
UNAVAILABLE: Final = "UNAVAILABLE"
INTERNAL: Final = "INTERNAL"
#: A job could not write its files: the disk (or its quota) is full. Try again once freed.
DISK_FULL: Final = "DISK_FULL"

#: What an aggregate id may be. It becomes a NATS subject token (``evt.<context>.<id>``), so
#: no dots, spaces or wildcards. The event store, the services and the gateway all check ids
#: against this one pattern (match the whole string: ``$`` alone would let a newline through).
ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
ID_MAX: Final = 128
#: An id field of a command or query.
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=ID_MAX)]
#: The longest file-system path a command carries (Linux's PATH_MAX).
PATH_MAX: Final = 4096
#: The longest short keyword a command carries (a format, a strategy, a subset...).
KEYWORD_MAX: Final = 32
Keyword = Annotated[str, msgspec.Meta(max_length=KEYWORD_MAX)]


def health_subject(service: str) -> str:
    """Request/reply subject every running instance of ``service`` answers a Ping on."""
    return f"svc.health.{service}"


def rebuild_subject(service: str) -> str:
    """Request/reply subject that asks ``service`` to drop and replay its read model."""
    return f"svc.rebuild.{service}"


class CommandAccepted(Message, frozen=True, tag="common.command_accepted.v1"):
    """The command was decided and its events are stored.

    ``version`` counts the aggregate's events (1 once created, one more per event): what users
    see and send back as ``If-Match``; ``sequence`` is the stream position of its last event,
    which a read model must reach to show the result.
    """

    aggregate_id: str
    version: int
    sequence: int
    events: int = 0


class CommandRejected(Message, frozen=True, tag="common.command_rejected.v1"):
    """The command was refused; nothing was stored. ``field`` names the offending input."""

    code: str
    message: str
    field: str | None = None
    #: The HTTP status the refusal deserves when its code alone does not say (0: by code).
    status: int = 0


class Ping(Message, frozen=True, tag="common.ping.v1"):
    """Asks a service whether it is alive."""


class Pong(Message, frozen=True, tag="common.pong.v1"):
    """A service instance's answer to a Ping."""

    service: str
    instance: str
    started_at: str
    metrics_url: str | None = None


class RebuildReadModel(Message, frozen=True, tag="common.rebuild_read_model.v1"):
    """Asks a service to drop its read model and rebuild it by replaying its streams."""


class ReadModelRebuilt(Message, frozen=True, tag="common.read_model_rebuilt.v1"):
    """A read model was rebuilt: ``events`` replayed, now at ``positions`` per stream."""

    service: str
    events: int
    positions: dict[str, int]


Reply = CommandAccepted | CommandRejected


class JobEvents(NamedTuple):
    """The events of one kind of background job (an import, an evaluation, an export), declared
    once beside them for every service that decides or folds them (the kernel's job decider
    and job tables): what the job is called, the fields of its events holding its id and what
    it belongs to, its start and its two outcomes."""

    noun: str
    key: str
    parent: str
    started: type[Message]
    completed: type[Message]
    failed: type[Message]


ALL: tuple[type[Message], ...] = (
    CommandAccepted,
    CommandRejected,
    Ping,
    Pong,
    RebuildReadModel,
    ReadModelRebuilt,
)
