"""An import whose datasets instance dies is ended by another instance, honestly and once.

The instance running an import holds a lease on it (``services.datasets.importlease``); another
instance that sees the lease expire takes it over by compare-and-set and ends the import as
failed (``INTERRUPTED``), through the dataset's decider at the version it read. Shown at three
levels: the lease's take-over on a real nats-server; the reaper against a dataset, racing a
slow owner and another reaper; and the real studio with two datasets instances, the one
running an import SIGSTOPped past its lease (a slow owner: its late commit is refused) and then
one SIGKILLed and never restarted (the survivor ends the import; a retry there commits whole).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import datasets as c
from services import bus_access
from services.datasets import domain, importlease
from services.datasets.importlease import Reaper, key
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.eventstore import EventStore
from services.kernel.jobs.table import JobRow
from services.kernel.lease import Leases
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from services.kernel.sqlite import session
from tests import imagesets
from tests.reliability import figures
from tests.stack import API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
TTL = 1.0
#: The studio's lease TTL in the stack test: short, yet three renewals long.
STACK_TTL_S = 3.0
D = "ds1"
#: The stack's two datasets instances: process name → its ``STUDIO_INSTANCE``.
INSTANCES = {"datasets": "test", "datasets-b": "ds-b"}


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within}s"
        await asyncio.sleep(0.05)


@pytest.fixture
async def leases(nc: NATS) -> Leases:
    bucket = Leases(nc.jetstream(), ttl=TTL, bucket=importlease.BUCKET)
    await bucket.open()
    return bucket


def test_the_datasets_service_may_use_the_import_leases_bucket():
    (datasets,) = [user for user in bus_access.SERVICES if user.name == "datasets"]
    assert importlease.BUCKET == bus_access.IMPORT_LEASES
    assert any(b.name == importlease.BUCKET and b.write for b in datasets.buckets)


# --- the lease: taken over by compare-and-set ----------------------------------------------------


async def test_a_live_holder_keeps_its_lease_and_of_many_takers_of_a_gone_one_one_wins(leases):
    # given an import's lease held by instance a
    held = await leases.acquire(key("i1"), "a")
    assert held is not None
    # when another instance tries to take it over while a is alive, then it is refused
    assert await leases.take_over(key("i1"), "b", gone=lambda h: False) is None
    # when five takers race for it, each knowing a is gone (a restart of a's name, say)
    won = await asyncio.gather(
        *(leases.take_over(key("i1"), f"r{i}", gone=lambda h: h.holder == "a") for i in range(5))
    )
    # then exactly one has it, and a's own renewal finds it lost
    (winner,) = [lease for lease in won if lease is not None]
    assert (await leases.holder(key("i1"))) == winner.info
    assert await held.renew() is False and held.lost.is_set()


async def test_an_expired_lease_is_taken_by_one_of_several_takers(leases):
    # given a lease whose holder died: it expires by the TTL
    assert await leases.acquire(key("i2"), "dead") is not None

    async def expired() -> bool:
        return await leases.holder(key("i2")) is None

    await eventually(expired, within=TTL + 3)
    # when three reapers take it over at once, then one wins
    won = await asyncio.gather(
        *(leases.take_over(key("i2"), f"r{i}", gone=lambda h: False) for i in range(3))
    )
    assert len([lease for lease in won if lease is not None]) == 1


async def test_a_restarted_instance_takes_its_own_lease_of_a_command_sent_again(leases):
    # given instance x killed right after taking the lease of an import it was starting
    assert await importlease.ImportLeases(leases, "x").take("i3") is not None
    # when the command is sent again and another instance gets it, then it is refused
    assert await importlease.ImportLeases(leases, "y").take("i3") is None
    # and when x, restarted, gets it, then x takes its own lease over at once (no TTL wait)
    again = await importlease.ImportLeases(leases, "x").take("i3")
    assert again is not None and (await leases.holder(key("i3"))) == again.info


# --- the reaper: one outcome per import, whoever races --------------------------------------


def started(import_id: str, instance: str) -> c.ImportStarted:
    return c.ImportStarted(dataset_id=D, import_id=import_id, source_kind="local", source="/x",
                           format="folder", instance=instance)  # fmt: skip


async def jobs_table(path: Path, rows: list[tuple[str, str]]) -> AsyncEngine:
    """A read model whose ``jobs`` table has these (import id, instance) running."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: JobRow.metadata.create_all(sync, [JobRow.__table__]))
    async with session(engine) as s:
        for import_id, instance in rows:
            s.add(JobRow(kind="import", job_id=import_id, parent_id=D, instance=instance,
                         status="running"))  # fmt: skip
        await s.commit()
    return engine


def repository(store: InMemoryEventStore[c.Event]) -> Repository[domain.Dataset]:
    """A process's view of the datasets stream (each process its own cache)."""
    return Repository(store, domain.evolve, domain.Dataset())


async def store(repo: Repository[domain.Dataset], decide) -> object:
    return await execute(repo, D, c.DeleteImage(dataset_id=D, image_id="x"), decide, headers={},
                         refusals=(DomainError,), noun="dataset")  # fmt: skip


def outcomes(store_: InMemoryEventStore[c.Event], import_id: str) -> list[str]:
    return [
        type(s.event).__name__
        for s in store_.events()
        if isinstance(s.event, c.ImportCompleted | c.ImportFailed | c.ImagesAdded)
        and s.event.import_id == import_id
    ]


def commit(import_id: str):
    report = c.ImportReport(format="folder", files=1, imported=1)
    records = [c.ImageRecord(image_id="a" * 64, filename="f.png", label="x", width=1, height=1,
                             size=1, format="PNG", phash="0")]  # fmt: skip
    return lambda state: domain.commit(state, D, import_id, records, report)


async def test_an_import_whose_lease_expired_ends_once_though_two_reapers_and_its_owner_race(
    leases, tmp_path: Path
):
    events: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    owner = repository(events)
    # given two imports of instance x, running, their leases held by x
    for import_id in ("slow", "dead"):
        await store(owner, lambda _, i=import_id: [started(i, "x")])
        assert await leases.acquire(key(import_id), "x") is not None
    engine = await jobs_table(tmp_path / "rm.db", [("slow", "x"), ("dead", "x")])
    reapers = [
        Reaper(leases, repository(events), engine, instance=name, active=set())
        for name in ("y", "z")
    ]
    # when the reapers look while x's leases live, then they leave the imports alone
    assert await reapers[0].reap() == []
    # when x stops renewing and the leases expire
    for import_id in ("slow", "dead"):
        await eventually(lambda i=import_id: _free(leases, i), within=TTL + 3)
    # and x, slow but alive, commits "slow" just as both reapers look
    won = await asyncio.gather(store(owner, commit("slow")), *(r.reap() for r in reapers))
    # then each import has one outcome: "slow" the owner's commit whole, or the failure
    assert outcomes(events, "slow") in (["ImagesAdded", "ImportCompleted"], ["ImportFailed"])
    assert outcomes(events, "dead") == ["ImportFailed"]
    # and a reaper ended "dead" (one of them), saying which instance died and to retry
    ended = [pair for reaped in won[1:] for pair in reaped]  # type: ignore[union-attr]
    assert ("dead", "x") in ended and len(ended) == len(set(ended))
    (failed,) = [s.event for s in events.events() if isinstance(s.event, c.ImportFailed)
                 and s.event.import_id == "dead"]  # fmt: skip
    assert failed.code == "INTERRUPTED" and "'x'" in failed.message
    assert "start it again" in failed.message
    # and the lease it took is released
    assert await leases.holder(key("dead")) is None
    await engine.dispose()


async def _free(leases: Leases, import_id: str) -> bool:
    return await leases.holder(key(import_id)) is None


# --- the studio: two datasets instances, one stalled, one killed --------------------------


@pytest.fixture(scope="module")
def slow_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return imagesets.heavy(tmp_path_factory.mktemp("slow"), 60, size=256)


def get(stack: Stack, path: str) -> dict:
    resp = httpx.get(f"{stack.base_url}{API}{path}", headers=stack.headers(), timeout=15)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def post(stack: Stack, path: str, body: dict) -> dict:
    resp = httpx.post(f"{stack.base_url}{API}{path}", json=body, headers=stack.headers(),
                      timeout=30)  # fmt: skip
    assert resp.status_code in (201, 202), resp.text
    return resp.json()["data"]


def wait(stack: Stack, import_id: str, done: Callable[[dict], bool], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = get(stack, f"/datasets/import/{import_id}")
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def ended(data: dict) -> bool:
    return data["state"] not in ("running", "importing")


def stream_of(stack: Stack, project_id: str) -> list[c.Event]:
    async def read() -> list[c.Event]:
        nc = await nats.connect(stack.nats_url)
        try:
            store = EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
            return [stored.event for stored in await store.load(project_id)]
        finally:
            await nc.close()

    return asyncio.run(read())


def collect_garbage(stack: Stack) -> dict:
    """``studio gc --delete`` with no grace period, as NATS carries it."""

    async def ask() -> dict:
        nc = await nats.connect(stack.nats_url)
        try:
            command = msgspec.json.encode(c.CollectGarbage(delete=True, grace_s=0))
            reply = await nc.request(c.Subjects.COLLECT_GARBAGE, command, timeout=60)
            return dict(msgspec.json.decode(reply.data))
        finally:
            await nc.close()

    return asyncio.run(ask())


def caught_running(stack: Stack, source: Path) -> tuple[str, str, str]:
    """An import caught while it runs: both instances are paused the moment it is accepted;
    returns (project, import, the process running it), that process still paused."""
    for _ in range(5):
        project_id = post(stack, "/projects", {"name": "p"})["id"]
        body = {"project_id": project_id, "path": str(source)}
        import_id = post(stack, "/datasets/import/local", body)["id"]
        for name in INSTANCES:
            stack.pause(name)
        (owner,) = [
            e.instance
            for e in stream_of(stack, project_id)
            if isinstance(e, c.ImportStarted) and e.import_id == import_id
        ]
        name = next(n for n, instance in INSTANCES.items() if instance == owner)
        for other in INSTANCES:
            if other != name:
                stack.resume(other)
        if not ended(get(stack, f"/datasets/import/{import_id}")):
            return project_id, import_id, name
        stack.resume(name)
    pytest.fail("every import finished before the test could stop its instance")


def ready(stack: Stack, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while "datasets is running" not in stack.log(name):
        assert time.monotonic() < deadline, stack.log(name)[-2000:]
        time.sleep(0.05)


def interrupted_by_the_survivor(stack: Stack, import_id: str, dead: str) -> float:
    """Waits for the import to end; checks it ended as interrupted, naming ``dead``; returns
    how long that took."""
    since = time.monotonic()
    data = wait(stack, import_id, ended, timeout=STACK_TTL_S + 30)
    took = time.monotonic() - since
    assert data["state"] == "failed", data
    assert data["error"]["code"] == "INTERRUPTED", data
    assert repr(INSTANCES[dead]) in data["error"]["message"]
    assert "start it again" in data["error"]["message"]
    task = get(stack, f"/tasks/{import_id}")
    assert task["status"] == "failed" and task["error"]["code"] == "INTERRUPTED", task
    return took


def test_an_import_outliving_its_instance_is_ended_by_another_and_its_retry_commits(
    own_stack: Stack, slow_set: Path
):
    stack = own_stack
    source = Path(shutil.copytree(slow_set, stack.imports / "slow", copy_function=os.link))
    stack.extra_env["STUDIO_LEASE_TTL"] = str(STACK_TTL_S)
    stack.extra_env["STUDIO_LOG_LEVEL"] = "INFO"
    stack.start_nats()  # the second datasets instance starts beside the studio's services
    stack.start("datasets-b", module="datasets", STUDIO_INSTANCE="ds-b")
    stack.up()
    ready(stack, "datasets-b")

    # given an import whose instance stalls (SIGSTOP) past its lease, alive all along
    project_id, import_id, slow = caught_running(stack, source)
    # then the other instance ends it as interrupted, and the task view says so
    interrupted_by_the_survivor(stack, import_id, slow)
    # and when the stalled instance wakes up and finishes the import, its commit is refused
    stack.resume(slow)
    deadline = time.monotonic() + 60
    while f"import {import_id}: could not store its outcome" not in stack.log(slow):
        assert time.monotonic() < deadline, stack.log(slow)[-3000:]
        time.sleep(0.1)
    kept = (c.ImagesAdded, c.ImportCompleted, c.ImportFailed)
    kinds = [type(e).__name__ for e in stream_of(stack, project_id) if isinstance(e, kept)]
    assert kinds == ["ImportFailed"], kinds
    assert get(stack, f"/datasets/{project_id}")["images"] == 0

    # given another import whose instance is SIGKILLed mid-import and never restarted
    project_id, import_id, victim = caught_running(stack, source)
    stack.kill(victim)
    # then the survivor ends it within the lease's TTL and a few seconds
    took = interrupted_by_the_survivor(stack, import_id, victim)
    print(f"\nimport of a killed instance ended by the survivor after {took:.1f} s")
    figures.record("import: its datasets instance killed", worst_takeover_s=round(took, 2), kills=1)
    assert get(stack, f"/datasets/{project_id}")["images"] == 0
    # and the garbage collector, no import running to hold it off, takes what they stored
    report = collect_garbage(stack)
    assert report["deferred"] == "" and report["deleted"] and report["files"] > 0, report
    # and the same import, started again, runs on the survivor and commits whole
    retry = post(stack, "/datasets/import/local", {"project_id": project_id, "path": str(source)})
    done = wait(stack, retry["id"], ended, timeout=120)
    assert done["state"] == "completed", done
    assert done["report"]["imported"] == 60
    assert get(stack, f"/datasets/{project_id}")["images"] == 60
