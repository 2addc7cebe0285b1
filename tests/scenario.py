"""Given/when/then for any decider: given past events, when a command, then events or a refusal.

A decider is pure: ``decide(state, command) -> events`` and ``evolve(state, event) -> state``,
from the state before any event. Describe it once per test module, then read each test as a
sentence::

    project = Decider(evolve=domain.evolve, initial=None, decide=domain.decide)
    project.given(created).when(rename).then(renamed)
    project.given().when(rename).then_refused(ProjectNotFound)

A decider written as one function per command is driven by a callable instead of a command:
``dataset.given(*history).when(lambda state: domain.relabel(state, command))``.

Events are compared on their payload, their tag and fields without the envelope (ids, time,
actor), since the handler stamps the envelope later. Every decided event must also fold back
into the state (``evolve`` accepts it), as it will when it is loaded from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any, Generic, TypeVar

import msgspec
import pytest

from contracts.envelope import tag_of

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E", bound=msgspec.Struct)
Refusal = TypeVar("Refusal", bound=Exception)

#: The fields a handler stamps on every event, not the decider.
ENVELOPE = frozenset({"message_id", "correlation_id", "causation_id", "actor", "occurred_at"})


def payload(event: msgspec.Struct) -> tuple[str, dict[str, Any]]:
    """What a decider decides about an event: its type and fields, less the envelope."""
    fields = msgspec.structs.asdict(event)
    return tag_of(type(event)), {k: v for k, v in fields.items() if k not in ENVELOPE}


@dataclass(frozen=True)
class Decider(Generic[S, C, E]):
    """One aggregate's pure functions; ``decide`` may be absent for per-command functions."""

    evolve: Callable[[S, E], S]
    initial: S
    decide: Callable[[S, C], Sequence[E]] | None = None

    def given(self, *history: E) -> Scenario[S, C, E]:
        return Scenario(self, history)

    def fold(self, events: Sequence[E]) -> S:
        """The state the events fold into, from the state before any event."""
        return reduce(self.evolve, events, self.initial)


@dataclass(frozen=True)
class Scenario(Generic[S, C, E]):
    decider: Decider[S, C, E]
    history: tuple[E, ...]
    action: Callable[[S], Sequence[E]] | None = None

    @property
    def state(self) -> S:
        """The state the past events fold into."""
        return self.decider.fold(self.history)

    def when(self, command: C | Callable[[S], Sequence[E]]) -> Scenario[S, C, E]:
        """A command for ``decide``, or a function of the state that decides."""
        if callable(command) and not isinstance(command, msgspec.Struct):
            return replace(self, action=command)
        decide = self.decider.decide
        assert decide is not None, "this decider has no decide(): pass when(lambda state: ...)"
        return replace(self, action=lambda state: decide(state, command))

    def then(self, *expected: E) -> None:
        """Exactly these events, in this order (none: the command changes nothing)."""
        assert [payload(e) for e in self.decided()] == [payload(e) for e in expected]

    def then_refused(self, error: type[Refusal], *, field: str | None = None) -> Refusal:
        """Refused with exactly ``error`` (not a subclass), naming ``field`` (or none)."""
        with pytest.raises(error) as refused:
            self._decide()
        assert type(refused.value) is error, f"refused with {type(refused.value).__name__}"
        assert getattr(refused.value, "field", None) == field
        return refused.value

    def decided(self) -> list[E]:
        """The decided events, for assertions ``then`` cannot say; they must fold."""
        events = self._decide()
        reduce(self.decider.evolve, events, self.state)
        return events

    def after(self) -> S:
        """The state once the decided events are stored."""
        return reduce(self.decider.evolve, self.decided(), self.state)

    def _decide(self) -> list[E]:
        assert self.action is not None, "say when(command) first"
        return list(self.action(self.state))
