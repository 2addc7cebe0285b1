"""Running one decision against one aggregate: load, decide, stamp, append, reply.

Shared by every service's handlers. A refusal from the domain is answered (never retried);
a concurrent write is retried when the caller did not pin a version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar, overload

import msgspec

from contracts import Message, common
from contracts.common import CommandAccepted, CommandRejected, Reply
from services.kernel.domain import DomainError
from services.kernel.eventstore import ConcurrencyConflict, check_id
from services.kernel.repository import Repository
from services.kernel.tracing import attached, parent

S = TypeVar("S")
E = TypeVar("E", bound=Message)

#: Without an expected version a command is retried on a concurrent write, then refused.
ATTEMPTS = 3


def stamp(events: Sequence[E], command: Message) -> Sequence[E]:
    """Give each event its envelope; ids derive from the command's, so a retry is recognised.
    A decision that is not a list or tuple (a lazy one, too large to hold: an import's
    commit) is stamped lazily, each event when it is read."""
    now = datetime.now(UTC)
    if not isinstance(events, list | tuple):
        return Stamped(events, command, now)
    return [_stamped(event, i, command, now) for i, event in enumerate(events)]


def _stamped(event: E, i: int, command: Message, now: datetime) -> E:
    return msgspec.structs.replace(
        event,
        message_id=f"{command.message_id}-{i}",
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        actor=command.actor,
        occurred_at=now,
    )


class Stamped(Sequence[E]):
    """``events`` stamped as they are read (by index, so the same ids every time)."""

    def __init__(self, events: Sequence[E], command: Message, now: datetime) -> None:
        self.events, self.command, self.now = events, command, now

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, i: int) -> E: ...
    @overload
    def __getitem__(self, i: slice) -> list[E]: ...
    def __getitem__(self, i: int | slice) -> E | list[E]:
        if isinstance(i, slice):
            return [self[n] for n in range(*i.indices(len(self)))]
        n = i + len(self) if i < 0 else i
        return _stamped(self.events[n], n, self.command, self.now)


def rejected(err: DomainError) -> CommandRejected:
    """A domain refusal as a reply: its code says what happened, so it carries no HTTP status
    (the gateway maps the code to one)."""
    return CommandRejected(code=err.code, message=err.message, field=err.field)


async def execute(
    repo: Repository[S],
    aggregate_id: str,
    command: Message,
    decide: Callable[[S], Sequence[Message]],
    *,
    headers: Mapping[str, str],
    refusals: tuple[type[DomainError], ...],
    expected: int | None = None,
    noun: str = "it",
    offload: bool = False,
) -> Reply:
    """Decide ``command`` against the stored aggregate and store what it decided.

    ``expected`` is the aggregate's version (its count of events) the caller last saw;
    ``offload`` decides in a worker thread, for a decision that takes long enough to stall the
    service's loop (states are never changed in place, so the thread reads a stable one).

    What it stores belongs to the current span's trace, or else (a job's outcome, a run's
    step, outside any span) to the one ``headers`` carry."""
    try:
        check_id(aggregate_id)
    except ValueError:
        return CommandRejected(code=common.NOT_FOUND, message=f"{noun} {aggregate_id!r} not found")
    with attached(parent(headers)):
        return await _execute(
            repo, aggregate_id, command, decide, expected=expected, refusals=refusals, noun=noun,
            offload=offload,
        )  # fmt: skip


async def _execute(
    repo: Repository[S],
    aggregate_id: str,
    command: Message,
    decide: Callable[[S], Sequence[Message]],
    *,
    expected: int | None,
    refusals: tuple[type[DomainError], ...],
    noun: str,
    offload: bool,
) -> Reply:
    for attempt in range(1, ATTEMPTS + 1):
        state, position, version = await repo.load(aggregate_id)
        if expected is not None and expected != version:
            return stale(noun, aggregate_id, expected, version)
        try:
            events = await asyncio.to_thread(decide, state) if offload else decide(state)
        except refusals as err:
            return rejected(err)
        if not events:
            return accepted(command, aggregate_id, version, position, 0)
        try:
            sequence = await repo.store.append(aggregate_id, stamp(events, command), position)
        except ConcurrencyConflict:
            if expected is not None or attempt == ATTEMPTS:
                now = (await repo.load(aggregate_id)).version
                return stale(noun, aggregate_id, version, now)
            continue
        return accepted(command, aggregate_id, version + len(events), sequence, len(events))
    raise AssertionError("unreachable")


def accepted(
    command: Message, aggregate_id: str, version: int, sequence: int, events: int
) -> CommandAccepted:
    return CommandAccepted(
        aggregate_id=aggregate_id,
        version=version,
        sequence=sequence,
        events=events,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
    )


def stale(noun: str, aggregate_id: str, expected: int, actual: int) -> CommandRejected:
    return CommandRejected(
        code=common.CONFLICT,
        message=f"{noun} {aggregate_id} was changed by someone else "
        f"(you had version {expected}, it is now at {actual}); reload and try again",
    )
