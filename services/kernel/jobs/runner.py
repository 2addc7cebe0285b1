"""The one job runner: long work that an accepted command started, run in the background to an
outcome that is stored through the job's decider, in the trace of the command that started it.

claim → run with a heartbeat → record → reap:

- the handler stores the job's start (its claim: the expected version makes it once) and hands
  the ``Job`` to ``JobRunner.start``, which holds its task (or the loop may collect it
  mid-work) and runs it within the runner's slots, calling its ``heartbeat`` meanwhile;
- the work returns its outcome, or raises; an exception is mapped by type (``failure_of``): a
  domain refusal (``Refused``) says its own code, a NATS outage past its retries
  ``UNAVAILABLE`` (no fault of the job), a full disk ``DISK_FULL`` (say so, not a crash),
  anything else ``Outcomes.crash`` with its type and message (a bug, or a library failing in
  its own way, which the job says rather than hides);
- the outcome is decided against the stored job and appended with ``execute``; an outcome that
  cannot be stored fails the job with why, if that can be stored; what cannot is logged, as a
  background task can say no more;
- ``reap`` ends as interrupted, once the read model has caught up, the jobs this instance left
  running when it stopped, so that none stays running forever.

Imports asyncio, ``contracts``' envelope and common codes, and the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import Message
from contracts.common import DISK_FULL, UNAVAILABLE, CommandAccepted, Reply
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.jobs.table import left_running
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT

log = logging.getLogger(__name__)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 (an outcome)

#: How often a running job's heartbeat is called (its live progress).
HEARTBEAT_S = 0.25
#: How long a reaper waits for the read model to catch up with the job's stream.
CATCH_UP_S = 120.0
INTERRUPTED = "INTERRUPTED"


class CatchesUp(Protocol):
    async def caught_up(self, timeout: float) -> bool: ...


@dataclass(frozen=True)
class Failure:
    """Why a job failed: a code for clients to act on, and a message for people."""

    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class Job(Generic[O]):
    """One accepted job: its ids, its work, and what it was started in."""

    job_id: str
    #: What the job belongs to (its run, its dataset): failures name it.
    parent_id: str
    work: Callable[[], Awaitable[O]]
    #: The starting command's trace headers: its outcome is stored in that trace.
    trace: Mapping[str, str] = field(default_factory=dict)
    #: The starting command: the outcome's ids derive from its id, so that a store retried is
    #: one write (``None``: the runner's own message, with fresh ids).
    cause: Message | None = None
    #: Called every ``HEARTBEAT_S`` while the work runs (live progress; its errors are ignored).
    heartbeat: Callable[[], Awaitable[None]] | None = None
    #: Called once the job has ended, its outcome stored or not (its temporary files go).
    tidy: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Outcomes(Generic[S, O]):
    """How one kind of job ends: its outcome decided against its aggregate, and its failures."""

    noun: str
    #: Decides an outcome against the stored aggregate (the job's decider).
    finish: Callable[[S, O], Sequence[Message]]
    #: The outcome a failure of the job (its id, its parent's) is.
    failed: Callable[[str, str, Failure], O]
    #: The code of an exception nobody foresaw, e.g. ``EXPORT_FAILED``.
    crash: str
    #: The outcome is stored in the parent's aggregate (an import in its dataset's).
    in_parent: bool = False


def failure_of(exc: BaseException, crash: str) -> Failure:
    """An exception the work raised, as the failure it means, by its type."""
    if isinstance(exc, DomainError):  # ``Refused`` included: its code names its condition
        return Failure(exc.code, exc.message, exc.field)
    if isinstance(exc, TRANSIENT):  # past the calls' own retries: not the job's fault
        message = f"NATS was unreachable ({type(exc).__name__}); try again once it is back"
        return Failure(UNAVAILABLE, message)
    full = disk_full(exc)
    if full is not None:
        return Failure(DISK_FULL, f"the disk is full ({full}); free space and try again")
    return Failure(crash, f"{type(exc).__name__}: {exc}")


def disk_full(exc: BaseException | None) -> str | None:
    """What says the disk is full in ``exc`` or what it was raised from (torch and SQLite wrap
    the ``ENOSPC`` of their writes in errors of their own); None when nothing does."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):  # blobstore.DiskFull too
            if isinstance(exc, OSError):
                return f"{exc.strerror} writing {exc.filename}" if exc.filename else exc.strerror
            return str(exc)
        if "database or disk is full" in str(exc):  # SQLite's SQLITE_FULL, errno not kept
            return "database or disk is full"
        exc = exc.__cause__ or exc.__context__
    return None


class JobRunner(Generic[S, O]):
    """Runs one kind of job for one instance; ``slots`` bounds how many run at once."""

    def __init__(
        self,
        repo: Repository[S],
        outcomes: Outcomes[S, O],
        *,
        instance: str,
        slots: int | None = None,
    ) -> None:
        self.repo, self.outcomes, self.instance = repo, outcomes, instance
        self.slots = asyncio.Semaphore(slots) if slots else None
        #: The jobs' tasks, held until they end.
        self.tasks: set[asyncio.Task[None]] = set()
        #: The ids of the jobs this runner runs now.
        self.running: set[str] = set()

    def start(self, job: Job[O]) -> asyncio.Task[None]:
        self.running.add(job.job_id)
        task = asyncio.create_task(self.run(job), name=f"{self.outcomes.noun}:{job.job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self, job: Job[O]) -> None:
        """The job to its end: its work, then its outcome stored (or why not, logged)."""
        try:
            async with self.slots or contextlib.nullcontext():
                outcome = await self._work(job)
            await self.record(job, outcome, "ended")
        finally:
            self.running.discard(job.job_id)
            if job.tidy is not None:
                await job.tidy()

    async def _work(self, job: Job[O]) -> O:
        beat = asyncio.create_task(_beat(job.heartbeat)) if job.heartbeat else None
        try:
            return await job.work()
        except Exception as exc:
            return self._failed(job, exc)
        finally:
            if beat is not None:
                beat.cancel()

    def _failed(self, job: Job[O], exc: Exception) -> O:
        failure = failure_of(exc, self.outcomes.crash)
        if failure.code == self.outcomes.crash:
            log.error("%s %s failed", self.outcomes.noun, job.job_id, exc_info=exc)
        else:
            log.warning("%s %s failed: %s %s", self.outcomes.noun, job.job_id, *_said(failure))
        return self.outcomes.failed(job.job_id, job.parent_id, failure)

    async def record(self, job: Job[O], outcome: O, step: str) -> Reply | None:
        """Stores ``outcome`` in the job's trace; one that cannot be stored (an exception, not
        a refusal) fails the job with why. ``None``: nothing could be stored."""
        try:
            return await self.store(job, outcome, step)
        except Exception as exc:
            log.error("%s %s: storing its outcome failed", self.noun, job.job_id, exc_info=exc)
            failed = self._failed(job, exc) if step != "failed" else None
        if failed is None:
            return None
        try:
            return await self.store(job, failed, "failed")
        except Exception:  # past the store's own retries: a background task can only say so
            log.exception("%s %s: could not store its outcome", self.noun, job.job_id)
            return None

    async def store(self, job: Job[O], outcome: O, step: str) -> Reply:
        """Stores ``outcome`` (or a milestone of the job on its way, decided as one) in the
        job's trace, with ids derived from its cause's and ``step``; raises what the store
        raises past its retries. A refusal is answered and logged."""
        cause = job.cause or Message(actor=self.instance)
        if job.cause is not None:
            cause = msgspec.structs.replace(job.cause, message_id=f"{cause.message_id}.{step}")
        aggregate_id = job.parent_id if self.outcomes.in_parent else job.job_id
        reply = await execute(
            self.repo,
            aggregate_id,
            cause,
            lambda state: self.outcomes.finish(state, outcome),
            headers=job.trace,
            refusals=(DomainError,),
            noun=self.noun,
        )
        if not isinstance(reply, CommandAccepted):
            why = f"({step}) {reply.code}: {reply.message}"
            log.error("%s %s: could not store its outcome %s", self.noun, job.job_id, why)
        return reply

    async def interrupt(self, job_id: str, parent_id: str, message: str) -> None:
        """Ends a job this instance ran when it stopped: failed as ``INTERRUPTED``."""
        outcome = self.outcomes.failed(job_id, parent_id, Failure(INTERRUPTED, message))
        job: Job[O] = Job(job_id, parent_id, _never)
        await self.record(job, outcome, "failed")

    async def reap(
        self,
        read_model: CatchesUp,
        db: AsyncEngine,
        message: str,
        *,
        keep: Container[str] = frozenset(),
    ) -> list[str]:
        """Once ``read_model`` has caught up, interrupts the jobs of this kind that this
        instance left running (as its ``JobTable`` in ``db`` has them) and that neither this
        runner runs nor ``keep`` names (jobs on their way in); returns their ids."""
        if not await read_model.caught_up(timeout=CATCH_UP_S):
            log.error("could not read the %s history; unfinished ones stay open", self.noun)
            return []
        reaped = []
        for job_id, parent_id in await left_running(db, self.noun, self.instance):
            if job_id in self.running or job_id in keep:
                continue
            await self.interrupt(job_id, parent_id, message)
            log.warning("%s %s was interrupted by a stop; marked failed", self.noun, job_id)
            reaped.append(job_id)
        return reaped

    @property
    def noun(self) -> str:
        return self.outcomes.noun


async def _beat(heartbeat: Callable[[], Awaitable[None]]) -> None:
    while True:
        with contextlib.suppress(Exception):  # progress is disposable: never fail a job on it
            await heartbeat()
        await asyncio.sleep(HEARTBEAT_S)


async def _never() -> Any:
    raise AssertionError("an interrupted job has no work left")


def _said(failure: Failure) -> tuple[str, str]:
    return failure.code, failure.message
