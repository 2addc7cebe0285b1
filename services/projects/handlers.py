"""Command handlers: load the project, decide, stamp and append the events, reply.

Imports the domain, ``contracts`` and kernel ports; the event store is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from contracts import common
from contracts.common import CommandAccepted, CommandRejected, Reply
from contracts.projects import Command, Event
from services.kernel.eventstore import ConcurrencyConflict, check_id
from services.kernel.repository import Repository
from services.kernel.telemetry import child_traceparent
from services.projects import domain

#: Without an expected version a command is retried on a concurrent write, then refused.
ATTEMPTS = 3


async def handle(
    command: Command, headers: Mapping[str, str], *, projects: Repository[domain.State]
) -> Reply:
    """Decide ``command`` against the stored project and store what it decided."""
    project_id = command.project_id
    try:
        check_id(project_id)
    except ValueError:
        return CommandRejected(
            code=common.VALIDATION_ERROR, message="invalid project id", field="project_id"
        )
    trace = {"traceparent": child_traceparent(headers.get("traceparent"))}
    expected = getattr(command, "expected_version", None)
    for attempt in range(1, ATTEMPTS + 1):
        state, version = await projects.get(project_id)
        if expected is not None and expected != version:
            return _stale(project_id, expected, version)
        try:
            events = domain.decide(state, command)
        except domain.DomainError as err:
            return CommandRejected(code=err.code, message=err.message, field=err.field)
        if not events:
            return _accepted(command, version, 0)
        try:
            sequence = await projects.store.append(
                project_id, stamp(events, command), version, headers=trace
            )
        except ConcurrencyConflict:
            if expected is not None or attempt == ATTEMPTS:
                return _stale(project_id, version, await projects.store.version(project_id))
            continue
        return _accepted(command, sequence, len(events))
    raise AssertionError("unreachable")


def stamp(events: Sequence[Event], command: Command) -> list[Event]:
    """Give each event its envelope; ids derive from the command's, so a retry is recognised."""
    now = datetime.now(UTC)
    return [
        msgspec.structs.replace(
            event,
            message_id=f"{command.message_id}-{i}",
            correlation_id=command.correlation_id,
            causation_id=command.message_id,
            actor=command.actor,
            occurred_at=now,
        )
        for i, event in enumerate(events)
    ]


def _accepted(command: Command, version: int, events: int) -> CommandAccepted:
    return CommandAccepted(
        aggregate_id=command.project_id,
        version=version,
        sequence=version,
        events=events,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
    )


def _stale(project_id: str, expected: int, actual: int) -> CommandRejected:
    return CommandRejected(
        code=common.CONFLICT,
        message=f"project {project_id} was changed by someone else "
        f"(you had version {expected}, it is now at {actual}); reload and try again",
    )
