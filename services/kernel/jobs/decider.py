"""The one job decider every background job shares (an import, an evaluation, an export): a
job is started once, then ends once — completed or failed — while it runs; anything else is
refused.

A ``Lifecycle`` names one kind of job: its noun, the fields its events carry its id and its
parent's id in, its three event types — as its contract declares them once in a
``contracts.common.JobEvents`` (``Lifecycle(*x.EXPORT_JOB)``) — and the refusals its context
raises (the kernel's ``Conflict`` unless the context names its own). ``start`` and
``finish`` decide on the job's status as its context keeps it (``None``: never started),
``evolve`` folds an event into that status, and ``ended`` folds an outcome into a job's
dataclass state. The kernel knows no context: the event types are given. Pure: imports
``services.kernel.domain`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from services.kernel.domain import Conflict, DomainError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

E = TypeVar("E")
J = TypeVar("J", bound="DataclassInstance")

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


@dataclass(frozen=True)
class Lifecycle:
    """One kind of job: what it is called, its events, and how its context refuses."""

    noun: str
    #: The field of its events that holds the job's id (``export_id``).
    key: str
    #: The field of its events that holds what it belongs to (``run_id``, ``dataset_id``).
    parent: str
    started: type
    completed: type
    failed: type
    #: Raised when a job id is started a second time.
    exists: type[DomainError] = Conflict
    #: Raised when a job that never started is to end.
    unknown: type[DomainError] = Conflict
    #: Raised when a job that has already ended is to end again.
    not_running: type[DomainError] = Conflict

    def job_id(self, event: Any) -> str:
        return str(getattr(event, self.key))

    def parent_id(self, event: Any) -> str:
        return str(getattr(event, self.parent))

    def is_outcome(self, event: Any) -> bool:
        return isinstance(event, self.completed | self.failed)

    def owns(self, event: Any) -> bool:
        """Whether ``event`` is one of this kind of job's."""
        return isinstance(event, self.started) or self.is_outcome(event)

    def start(self, status: str | None, started: E) -> list[E]:
        """``started``, if its job id was never used."""
        if status is not None:
            raise self.exists(f"{self.noun} {self.job_id(started)} already exists")
        return [started]

    def running(self, status: str | None, job_id: str) -> None:
        """Refuses unless the job runs."""
        if status is None:
            raise self.unknown(f"{self.noun} {job_id} does not exist")
        if status != RUNNING:
            raise self.not_running(f"{self.noun} {job_id} has already {status}")

    def finish(self, status: str | None, outcome: E) -> list[E]:
        """``outcome`` (its completion or its failure), once, while the job runs."""
        if not self.is_outcome(outcome):
            raise TypeError(f"{type(outcome).__name__} is no outcome of a {self.noun}")
        self.running(status, self.job_id(outcome))
        return [outcome]

    def evolve(self, status: str | None, event: Any) -> str | None:
        """The job's status after ``event``; an outcome with no start before it (none is stored
        so, but a fold takes whatever it is given) changes nothing."""
        if isinstance(event, self.started):
            return RUNNING
        if status is None:
            return None
        if isinstance(event, self.completed):
            return COMPLETED
        if isinstance(event, self.failed):
            return FAILED
        return status

    def ended(self, state: J | None, event: Any, **changes: Any) -> J | None:
        """A job's dataclass state (with a ``status``) once ``event``, its outcome, is stored;
        ``changes`` are what else the outcome sets."""
        if state is None or not self.is_outcome(event):
            return state
        status = self.evolve(state.status, event)  # type: ignore[attr-defined]
        return replace(state, status=status, **changes)
