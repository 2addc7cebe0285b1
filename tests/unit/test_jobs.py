"""The kernel's jobs, on a job kind of this test's own (the kernel knows no context):

- the job decider (``Lifecycle``), given past events, when a start or an outcome, then events
  or a refusal;
- the job runner on the in-memory event store: each way a job ends (its outcome, a refusal, a
  NATS outage, a crash, an outcome the store will not take) and what it is stored with (the
  starting command's trace and ids), its slots and heartbeat, and the reaping of what a stop
  left running, from the job table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from contracts import Message
from contracts.common import UNAVAILABLE
from services.kernel.domain import Conflict, NotFound, Refused
from services.kernel.eventstore import StoredEvent
from services.kernel.jobs import COMPLETED, FAILED, RUNNING, Lifecycle
from services.kernel.jobs.runner import Failure, Job, JobRunner, Outcomes, failure_of
from services.kernel.jobs.table import JobTable, fold_job, left_running, running_elsewhere
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.kernel.sqlite import create_engine, session
from tests.scenario import Decider

J, P = "j" * 32, "p" * 32
TRACE = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}


class Started(Message, frozen=True, tag="test.thumbnail_started.v1"):
    job_id: str
    parent_id: str
    instance: str


class Completed(Message, frozen=True, tag="test.thumbnail_completed.v1"):
    job_id: str
    parent_id: str
    size: int


class Failed(Message, frozen=True, tag="test.thumbnail_failed.v1"):
    job_id: str
    parent_id: str
    code: str
    message: str


Event = Started | Completed | Failed
THUMBNAIL = Lifecycle("thumbnail", "job_id", "parent_id", Started, Completed, Failed)


@dataclass(frozen=True)
class Thumbnail:
    job_id: str
    status: str
    size: int = 0


def evolve(state: Thumbnail | None, event: Any) -> Thumbnail | None:
    if isinstance(event, Started):
        return Thumbnail(event.job_id, RUNNING)
    if isinstance(event, Completed):
        return THUMBNAIL.ended(state, event, size=event.size)
    return THUMBNAIL.ended(state, event)


def status(state: Thumbnail | None) -> str | None:
    return state.status if state is not None else None


def start() -> Any:
    return lambda state: THUMBNAIL.start(status(state), STARTED)


def finish(outcome: Any) -> Any:
    return lambda state: THUMBNAIL.finish(status(state), outcome)


JOB: Decider[Thumbnail | None, Any, Any] = Decider(evolve=evolve, initial=None)
given = JOB.given
STARTED = Started(job_id=J, parent_id=P, instance="host-1")
COMPLETED_ = Completed(job_id=J, parent_id=P, size=64)
FAILED_ = Failed(job_id=J, parent_id=P, code="X", message="why")


# --- the job decider --------------------------------------------------------------------------


def test_a_job_starts_running() -> None:
    scenario = given().when(start())
    scenario.then(STARTED)
    assert scenario.after() == Thumbnail(J, RUNNING)


def test_a_job_id_is_started_once() -> None:
    error = given(STARTED).when(start()).then_refused(Conflict)
    assert error.message == f"thumbnail {J} already exists"
    given(STARTED, COMPLETED_).when(start()).then_refused(Conflict)


def test_a_running_job_completes_or_fails_once() -> None:
    completed = given(STARTED).when(finish(COMPLETED_))
    completed.then(COMPLETED_)
    assert completed.after() == Thumbnail(J, COMPLETED, size=64)
    failed = given(STARTED).when(finish(FAILED_))
    failed.then(FAILED_)
    assert failed.after() == Thumbnail(J, FAILED)


@pytest.mark.parametrize(
    ("history", "why"),
    [
        ((), f"thumbnail {J} does not exist"),
        ((STARTED, COMPLETED_), f"thumbnail {J} has already completed"),
        ((STARTED, FAILED_), f"thumbnail {J} has already failed"),
    ],
)
def test_only_a_running_job_ends(history: tuple[Any, ...], why: str) -> None:
    for outcome in (COMPLETED_, FAILED_):
        assert given(*history).when(finish(outcome)).then_refused(Conflict).message == why


def test_a_context_refuses_with_its_own_errors() -> None:
    class Taken(Conflict): ...

    class Unknown(NotFound): ...

    class Ended(Conflict): ...

    own = Lifecycle(
        "thumbnail", "job_id", "parent_id", Started, Completed, Failed,
        exists=Taken, unknown=Unknown, not_running=Ended,
    )  # fmt: skip
    given(STARTED).when(lambda s: own.start(status(s), STARTED)).then_refused(Taken)
    given().when(lambda s: own.finish(status(s), COMPLETED_)).then_refused(Unknown)
    given(STARTED, FAILED_).when(lambda s: own.finish(status(s), FAILED_)).then_refused(Ended)


def test_only_an_outcome_ends_a_job() -> None:
    with pytest.raises(TypeError):
        THUMBNAIL.finish(RUNNING, STARTED)


def test_an_outcome_without_a_start_folds_into_nothing() -> None:
    assert JOB.fold([COMPLETED_]) is None and JOB.fold([FAILED_]) is None
    assert THUMBNAIL.evolve(None, COMPLETED_) is None


def test_the_status_follows_the_events() -> None:
    assert THUMBNAIL.evolve(None, STARTED) == RUNNING
    assert THUMBNAIL.evolve(RUNNING, COMPLETED_) == COMPLETED
    assert THUMBNAIL.evolve(RUNNING, FAILED_) == FAILED
    assert THUMBNAIL.evolve(RUNNING, Message()) == RUNNING  # not the job's: no change


# --- the job runner ---------------------------------------------------------------------------


def failed(job_id: str, parent_id: str, failure: Failure) -> Failed:
    return Failed(job_id=job_id, parent_id=parent_id, code=failure.code, message=failure.message)


def outcomes(**changes: Any) -> Outcomes[Any, Any]:
    kind: dict[str, Any] = {
        "noun": "thumbnail",
        "finish": lambda state, outcome: THUMBNAIL.finish(status(state), outcome),
        "failed": failed,
        "crash": "THUMBNAIL_FAILED",
    }
    return Outcomes(**(kind | changes))


def repository() -> Repository[Thumbnail | None]:
    store = InMemoryEventStore(stream="TEST", subject=lambda i: f"evt.test.{i}", event_type=Event)
    return Repository(store, evolve, None)


async def started(repo: Repository[Any], job_id: str = J, parent_id: str = P) -> None:
    event = Started(job_id=job_id, parent_id=parent_id, instance="host-1")
    await repo.store.append(job_id, [event], await repo.store.version(job_id))


def job(work: Callable[[], Awaitable[Any]], **more: Any) -> Job[Any]:
    return Job(J, P, work, TRACE, **more)


async def returns(value: Any) -> Any:
    return value


async def raises(error: BaseException) -> Any:
    raise error


async def stored(repo: Repository[Any], aggregate_id: str = J) -> list[StoredEvent[Any]]:
    return list(await repo.store.load(aggregate_id))


async def run(work: Callable[[], Awaitable[Any]], **more: Any) -> list[Any]:
    """Starts the job, runs it to its end, and answers the events stored of it."""
    repo = repository()
    await started(repo)
    jobs = JobRunner(repo, outcomes(), instance="host-1")
    await jobs.start(job(work, **more))
    assert not jobs.tasks and not jobs.running
    return [s.event for s in await stored(repo)]


async def test_a_job_stores_its_outcome_in_the_trace_of_the_command_that_started_it() -> None:
    repo = repository()
    await started(repo)
    tidied = asyncio.Event()

    async def tidy() -> None:
        tidied.set()

    jobs = JobRunner(repo, outcomes(), instance="host-1")
    task = jobs.start(job(lambda: returns(COMPLETED_), tidy=tidy))
    assert jobs.tasks == {task} and jobs.running == {J}  # held while it runs
    await task
    outcome = (await stored(repo))[-1]
    assert isinstance(outcome.event, Completed) and outcome.event.size == 64
    assert outcome.event.actor == "host-1"
    assert outcome.headers["traceparent"].split("-")[1] == "1" * 32
    assert tidied.is_set() and not jobs.tasks and not jobs.running


async def test_a_refusal_fails_the_job_with_its_own_code() -> None:
    events = await run(lambda: raises(Refused("SOURCE_GONE", "the source is gone", "source")))
    assert isinstance(events[-1], Failed) and events[-1].code == "SOURCE_GONE"
    assert events[-1].message == "the source is gone"


async def test_a_nats_outage_fails_the_job_unavailable_not_as_its_own_fault() -> None:
    events = await run(lambda: raises(NatsTimeoutError()))
    assert isinstance(events[-1], Failed) and events[-1].code == UNAVAILABLE
    assert "NATS was unreachable" in events[-1].message


async def test_a_crash_fails_the_job_with_its_kind_s_code_and_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        events = await run(lambda: raises(RuntimeError("boom")))
    assert isinstance(events[-1], Failed) and events[-1].code == "THUMBNAIL_FAILED"
    assert events[-1].message == "RuntimeError: boom"
    assert any(r.exc_info for r in caplog.records)  # a traceback for the operator


def test_failures_are_mapped_by_type() -> None:
    assert failure_of(Refused("GONE", "m", "f"), "X") == Failure("GONE", "m", "f")
    assert failure_of(NotFound("m"), "X").code == "NOT_FOUND"
    assert failure_of(TimeoutError(), "X").code == UNAVAILABLE
    assert failure_of(ValueError("v"), "X") == Failure("X", "ValueError: v")


async def test_an_outcome_the_decider_refuses_is_logged_and_nothing_is_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = repository()
    await started(repo)
    await repo.store.append(J, [FAILED_], await repo.store.version(J))  # ended meanwhile
    jobs = JobRunner(repo, outcomes(), instance="host-1")
    with caplog.at_level(logging.ERROR):
        await jobs.start(job(lambda: returns(COMPLETED_)))
    assert [type(s.event) for s in await stored(repo)] == [Started, Failed]
    assert "could not store its outcome" in caplog.text and "has already failed" in caplog.text


async def test_an_outcome_that_cannot_be_stored_fails_the_job_with_why() -> None:
    def finish(state: Any, outcome: Any) -> Sequence[Message]:
        if isinstance(outcome, Completed):
            raise RuntimeError("the outcome does not fit")  # a bug deciding it
        return THUMBNAIL.finish(status(state), outcome)

    repo = repository()
    await started(repo)
    await JobRunner(repo, outcomes(finish=finish), instance="host-1").start(
        job(lambda: returns(COMPLETED_))
    )
    outcome = (await stored(repo))[-1].event
    assert isinstance(outcome, Failed) and outcome.code == "THUMBNAIL_FAILED"
    assert outcome.message == "RuntimeError: the outcome does not fit"


async def test_a_store_out_of_reach_is_logged_and_the_task_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository()
    await started(repo)

    async def append(*args: Any, **kwargs: Any) -> int:
        raise NatsTimeoutError

    monkeypatch.setattr(repo.store, "append", append)
    jobs = JobRunner(repo, outcomes(), instance="host-1")
    with caplog.at_level(logging.ERROR):
        await jobs.start(job(lambda: returns(COMPLETED_)))  # does not raise
    assert [type(s.event) for s in await stored(repo)] == [Started]
    assert "could not store its outcome" in caplog.text
    assert not jobs.tasks and not jobs.running


async def test_with_a_cause_the_outcome_s_ids_derive_from_the_starting_command() -> None:
    repo = repository()
    await started(repo)
    cause = Message(actor="ada")
    await JobRunner(repo, outcomes(), instance="host-1").start(
        job(lambda: returns(COMPLETED_), cause=cause)
    )
    outcome = (await stored(repo))[-1].event
    assert outcome.message_id == f"{cause.message_id}.ended-0" and outcome.actor == "ada"


async def test_a_job_kept_in_its_parent_s_aggregate_ends_there() -> None:
    repo = repository()
    await started(repo, job_id=P)  # the parent's stream holds the job's start
    kind = outcomes(in_parent=True)
    await JobRunner(repo, kind, instance="host-1").start(
        Job(P, P, lambda: returns(Completed(job_id=P, parent_id=P, size=1)))
    )
    assert isinstance((await stored(repo, P))[-1].event, Completed)


async def test_slots_bound_how_many_jobs_run_at_once() -> None:
    repo = repository()
    ids = [f"{i}" * 32 for i in range(3)]
    for job_id in ids:
        await started(repo, job_id)
    now, most = 0, 0

    async def work(job_id: str) -> Completed:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        now -= 1
        return Completed(job_id=job_id, parent_id=P, size=1)

    jobs = JobRunner(repo, outcomes(), instance="host-1", slots=1)
    tasks = [jobs.start(Job(i, P, lambda i=i: work(i))) for i in ids]  # type: ignore[misc]
    await asyncio.gather(*tasks)
    assert most == 1
    for job_id in ids:
        assert isinstance((await stored(repo, job_id))[-1].event, Completed)


async def test_a_heartbeat_beats_while_the_work_runs() -> None:
    beat, release = asyncio.Event(), asyncio.Event()

    async def heartbeat() -> None:
        beat.set()
        raise RuntimeError("a failing heartbeat fails nothing")

    async def work() -> Completed:
        await release.wait()
        return COMPLETED_

    repo = repository()
    await started(repo)
    task = JobRunner(repo, outcomes(), instance="host-1").start(job(work, heartbeat=heartbeat))
    await asyncio.wait_for(beat.wait(), timeout=10)
    release.set()
    await task
    assert isinstance((await stored(repo))[-1].event, Completed)


# --- reaping what a stop left running ----------------------------------------------------------


class ReadModel:
    def __init__(self, caught_up: bool) -> None:
        self.up = caught_up

    async def caught_up(self, timeout: float) -> bool:
        return self.up


async def job_table(tmp_path: Path, events: list[Any]) -> Any:
    """The job table of ``events``, folded as the projection runner folds them."""
    engine = create_engine(tmp_path / "jobs.db")
    table = JobTable("test-jobs", "TEST", "evt.test.>", Event, [THUMBNAIL])
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: SQLModel.metadata.create_all(c, tables=list(table.tables)))
    for sequence, event in enumerate(events, 1):
        async with session(engine) as db:
            await table.apply(db, StoredEvent(sequence, "evt.test.x", event, {}))
            await db.commit()
    return engine


async def test_the_jobs_a_stop_left_running_end_interrupted_once_the_model_caught_up(
    tmp_path: Path,
) -> None:
    mine, ended, elsewhere, running_here = "a" * 32, "b" * 32, "c" * 32, "d" * 32
    history = [
        Started(job_id=mine, parent_id=P, instance="host-1"),
        Started(job_id=ended, parent_id=P, instance="host-1"),
        Completed(job_id=ended, parent_id=P, size=1),
        Started(job_id=elsewhere, parent_id=P, instance="host-2"),
        Started(job_id=running_here, parent_id=P, instance="host-1"),
    ]
    engine = await job_table(tmp_path, history)
    try:
        assert sorted(await left_running(engine, "thumbnail", "host-1")) == [
            (mine, P),
            (running_here, P),
        ]
        assert await running_elsewhere(engine, "thumbnail", "host-1") == {elsewhere}
        repo = repository()
        for job_id in (mine, running_here):
            await started(repo, job_id)
        jobs = JobRunner(repo, outcomes(), instance="host-1")
        jobs.running.add(running_here)  # this runner runs it: not the stop's
        assert await jobs.reap(ReadModel(caught_up=False), engine, "stopped") == []
        assert await jobs.reap(ReadModel(caught_up=True), engine, "stopped") == [mine]
        outcome = (await stored(repo, mine))[-1].event
        assert isinstance(outcome, Failed) and (outcome.code, outcome.message) == (
            "INTERRUPTED",
            "stopped",
        )
        assert len(await stored(repo, running_here)) == 1
    finally:
        await engine.dispose()


async def test_a_job_on_its_way_in_is_not_reaped(tmp_path: Path) -> None:
    engine = await job_table(tmp_path, [STARTED])
    try:
        repo = repository()
        await started(repo)
        jobs = JobRunner(repo, outcomes(), instance="host-1")
        assert await jobs.reap(ReadModel(True), engine, "stopped", keep={J}) == []
    finally:
        await engine.dispose()


async def test_an_interrupt_of_a_job_that_already_ended_stores_nothing() -> None:
    repo = repository()
    await started(repo)
    jobs = JobRunner(repo, outcomes(), instance="host-1")
    await jobs.interrupt(J, P, "stopped")
    await jobs.interrupt(J, P, "stopped")  # refused, logged
    assert [type(s.event) for s in await stored(repo)] == [Started, Failed]


# --- a job's row in a read model clients see ----------------------------------------------------


class ThumbnailRow(SQLModel, table=True):
    __tablename__ = "test_thumbnails"
    job_id: str = Field(primary_key=True)
    parent_id: str
    state: str
    size: int | None = None
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    started_at: datetime
    finished_at: datetime | None = None
    actor: str = "anonymous"


async def fold(tmp_path: Path, *events: Any) -> tuple[ThumbnailRow | None, list[Any]]:
    """Folds ``events`` into the row as a projector would; answers the row and what
    ``fold_job`` returned for each event."""
    engine = create_engine(tmp_path / "rows.db")
    async with engine.begin() as conn:
        tables = [ThumbnailRow.__table__]  # type: ignore[attr-defined]
        await conn.run_sync(lambda c: SQLModel.metadata.create_all(c, tables=tables))
    returned = []
    try:
        for event in events:
            async with session(engine) as db:
                returned.append(await fold_job(db, ThumbnailRow, THUMBNAIL, event, status="state"))
                await db.commit()
        async with session(engine) as db:
            return await db.get(ThumbnailRow, J), returned
    finally:
        await engine.dispose()


async def test_a_job_s_row_starts_running_with_what_its_start_says(tmp_path: Path) -> None:
    start = Started(job_id=J, parent_id=P, instance="host-1", actor="ada")
    row, returned = await fold(tmp_path, start)
    assert row is not None and returned == [None]
    assert (row.job_id, row.parent_id, row.state, row.actor) == (J, P, RUNNING, "ada")
    assert row.started_at.replace(tzinfo=None) == start.occurred_at.replace(tzinfo=None)
    assert row.finished_at is None


async def test_a_job_s_row_ends_with_its_outcome(tmp_path: Path) -> None:
    row, returned = await fold(tmp_path, STARTED, COMPLETED_)
    assert row is not None and row.state == COMPLETED and row.finished_at is not None
    assert returned[-1] is not None and row.error is None  # returned for what else it says
    (tmp_path / "failed").mkdir()
    row, _ = await fold(tmp_path / "failed", STARTED, FAILED_)
    assert row is not None and row.state == FAILED
    assert row.error == {"code": "X", "message": "why"}


async def test_an_outcome_of_a_job_never_seen_or_another_event_folds_nothing(
    tmp_path: Path,
) -> None:
    row, returned = await fold(tmp_path, COMPLETED_, Message())
    assert row is None and returned == [None, None]
