"""Races: many writers at one expected version, many holders wanting one device.

- N writers append to one aggregate at once with the same expected version (one event or an
  atomic batch each): exactly one is stored, every other gets ``ConcurrencyConflict``.
- N clients rename one project at once with the same ``If-Match``: one 200, the rest a clean
  409, and the project holds the one winning rename.
- N contenders race for one device lease, round after round, the holder dying (its connection
  gone, no release) each round: never two holders at any instant, checked from every write the
  lease's key had (its KV stream, server timestamps) rather than by sampling; the next holder
  takes over within TTL + 1 s of the death.
- Trainer processes sharing one device (one ``STUDIO_TRAINER_SLOT``) race for its lease while
  runs are queued; the one training is SIGKILLed: never two holders (the lease key's writes),
  never two runs on the device at once (the ``RunStarted`` events and what ended each
  attempt), the next trainer takes over within TTL + 1 s, and every run completes (``soak``:
  trainer processes and their runs take minutes on a busy machine; the in-process race above
  checks the lease itself inside ``make test``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts import projects as c
from contracts import training as t
from services.kernel.eventstore import ConcurrencyConflict, EventStore
from services.kernel.lease import BUCKET, LeaseInfo, Leases
from services.kernel.nats_server import EmbeddedNats
from services.kernel.streams import StreamSpec, ensure_stream
from tests.reliability import figures
from tests.stack import API, Stack
from tests.training_helpers import learnable_split, run, submit, wait, wait_status

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)

SOAK = bool(os.environ.get("STUDIO_SOAK"))
#: Writers at once: ``make test``'s size, and the soak's.
WRITERS = [16, pytest.param(64, marks=pytest.mark.soak)]
#: (contenders, rounds): each round kills the holder.
CONTENDERS = [(6, 3), pytest.param(16, 12, marks=pytest.mark.soak)]
TTL_S = 1.0
#: How often a contender without the lease tries to take it (a trainer looks about every second).
POLL_S = 0.1


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.mark.parametrize("writers", WRITERS)
@pytest.mark.parametrize("size", [1, 3])
async def test_concurrent_writers_at_one_expected_version_exactly_one_wins(store, size, writers):
    # given one aggregate at version v
    v = await store.append("p1", [c.ProjectCreated(project_id="p1", name="n")], 0)

    async def write(i: int) -> int | None:
        events = [c.ProjectRenamed(project_id="p1", name=f"w{i}-{j}") for j in range(size)]
        try:
            return await store.append("p1", events, v)
        except ConcurrencyConflict:
            return None

    # when N writers append after v at once
    results = await asyncio.gather(*(write(i) for i in range(writers)))
    # then one append is stored, whole, and every other writer was told it lost
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = await store.load("p1", after=v)
    assert len(stored) == size
    assert len({s.event.name.split("-")[0] for s in stored}) == 1
    figures.record(
        f"races: {writers} writers, one expected version ({size} events)",
        events_appended=len(stored),
        duplicates_applied=len(stored) - size,
    )


@pytest.mark.parametrize("writers", WRITERS)
def test_concurrent_renames_with_one_if_match_exactly_one_wins(stack: Stack, writers: int):
    with stack.sync_client() as api:
        created = api.post(f"{API}/projects", json={"name": "racy"})
        assert created.status_code == 201, created.text
        project_id, etag = created.json()["data"]["id"], created.headers["ETag"]

    async def rename(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"name": f"racer {i}"}
        return await client.patch(
            f"{API}/projects/{project_id}", json=body, headers={"If-Match": etag}
        )

    async def race() -> list[httpx.Response]:
        async with stack.client(timeout=60) as client:
            return await asyncio.gather(*(rename(client, i) for i in range(writers)))

    answers = asyncio.run(race())
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * (writers - 1), [
        a.text for a in answers if a.status_code != 409
    ]
    winner = next(a for a in answers if a.status_code == 200).json()["data"]["name"]
    for lost in (a for a in answers if a.status_code == 409):
        assert lost.json()["error"]["code"] == "CONFLICT"
    with stack.sync_client() as api:
        assert api.get(f"{API}/projects/{project_id}").json()["data"]["name"] == winner


# --- one device lease, many contenders ---------------------------------------------------------


@dataclass
class Write:
    """One write of the lease's key, as the server stored it."""

    at: float  # server timestamp
    holder: str | None  # None: a delete


@dataclass
class Contender:
    name: str
    nc: NATS
    die: asyncio.Event = field(default_factory=asyncio.Event)
    died_at: float | None = None


async def history(nc: NATS, key: str) -> AsyncIterator[Write]:
    """Every write of ``key`` as it is stored (the bucket keeps one revision, so this is read
    live, from before the first)."""
    sub = await nc.jetstream().subscribe(f"$KV.{BUCKET}.{key}", ordered_consumer=True)
    try:
        while True:
            msg: Msg = await sub.next_msg(timeout=None)
            at = msg.metadata.timestamp.timestamp()
            op = (msg.headers or {}).get("KV-Operation")
            holder = None if op else msgspec.json.decode(msg.data, type=LeaseInfo).holder
            yield Write(at, holder)
    finally:
        await sub.unsubscribe()


def tenures(writes: list[Write], ttl: float) -> list[tuple[str, float, float]]:
    """(holder, from, until) of each holding: from its first write to its delete, or to its
    last write + ``ttl`` (when the server lets the key expire)."""
    out: list[tuple[str, float, float]] = []
    current: list = []
    for w in writes:
        if w.holder is None:
            if current:
                out.append((current[0], current[1], w.at))
            current = []
        elif current and current[0] == w.holder:
            current[2] = w.at
        else:
            if current:
                out.append((current[0], current[1], current[2] + ttl))
            current = [w.holder, w.at, w.at]
    if current:
        out.append((current[0], current[1], current[2] + ttl))
    return out


async def contend(who: Contender, key: str, held: list[str]) -> None:
    """Take the lease whenever it is free; hold it until told to die, then die without
    releasing it (the connection gone, as with a SIGKILL)."""
    leases = Leases(who.nc.jetstream(), ttl=TTL_S)
    await leases.open()
    while True:
        lease = await leases.acquire(key, who.name)
        if lease is None:
            await asyncio.sleep(POLL_S)
            continue
        held.append(who.name)
        async with lease.keep_alive():
            await who.die.wait()
            who.died_at = time.time()
            await who.nc.close()  # its release then fails: the key expires by its TTL
        return


@pytest.mark.parametrize(("contenders", "rounds"), CONTENDERS)
async def test_contenders_for_one_lease_never_overlap_and_take_over_within_ttl(
    nats_srv: EmbeddedNats, contenders: int, rounds: int
):
    key = "race-gpu0"
    watcher = await nats.connect(nats_srv.url)
    await Leases(watcher.jetstream(), ttl=TTL_S).open()
    writes: list[Write] = []

    async def record() -> None:
        async for w in history(watcher, key):
            writes.append(w)

    recorder = asyncio.create_task(record())
    who = [Contender(f"c{i}", await nats.connect(nats_srv.url)) for i in range(contenders)]
    held: list[str] = []
    tasks = [asyncio.create_task(contend(c, key, held)) for c in who]
    takeovers: list[float] = []
    try:
        for _ in range(rounds):
            holder = await wait_for(lambda: len(held) > len(takeovers) and held[len(takeovers)])
            # held a while: renewed at least once
            await wait_for(lambda h=holder: sum(w.holder == h for w in writes) >= 2)
            dead = next(c for c in who if c.name == holder)
            dead.die.set()
            successor = await wait_for(
                lambda: len(held) > len(takeovers) + 1 and held[len(takeovers) + 1], 10 * TTL_S
            )
            start = next(w.at for w in reversed(writes) if w.holder == successor)
            assert dead.died_at is not None
            takeovers.append(start - dead.died_at)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        for conn in [*(c.nc for c in who), watcher]:
            if not conn.is_closed:
                await conn.close()
    spans = tenures(writes, TTL_S)
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[1] < a[2])
    assert [s[0] for s in spans][: len(held)] == held[: len(spans)]
    assert overlaps == 0, spans
    assert max(takeovers) <= TTL_S + 1.0, takeovers
    figures.record(
        f"races: {contenders} contenders for one lease, {rounds} holders killed",
        lease_overlaps=overlaps,
        worst_takeover_s=round(max(takeovers), 2),
    )


async def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
    return value


# --- trainer processes sharing one device --------------------------------------------------------

TRAINERS = 3 if SOAK else 2
RUNS = 4 if SOAK else 2
TRAINER_TTL_S = 2.0
HYPER = {"epochs": 3, "seed": 5}
ENDS = (t.RunCompleted, t.RunFailed, t.RunStopped, t.RunInterrupted)


class Recorder:
    """Every write of every lease key while a scenario runs, read live in a thread of its own."""

    def __init__(self, url: str) -> None:
        self.url, self.writes = url, {}
        self.ready, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        assert self.ready.wait(30), "the lease recorder did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)

    async def _run(self) -> None:
        nc = await nats.connect(self.url)
        try:
            sub = await nc.jetstream().subscribe(f"$KV.{BUCKET}.>", ordered_consumer=True)
            self.ready.set()
            while not self.done.is_set():
                try:
                    msg = await sub.next_msg(timeout=0.2)
                except nats.errors.TimeoutError:
                    continue
                key = msg.subject.removeprefix(f"$KV.{BUCKET}.")
                op = (msg.headers or {}).get("KV-Operation")
                holder = None if op else msgspec.json.decode(msg.data, type=LeaseInfo).holder
                at = msg.metadata.timestamp.timestamp()
                self.writes.setdefault(key, []).append(Write(at, holder))
        finally:
            await nc.close()


def attempts(stored: list, killed: dict[str, float]) -> list[tuple[str, float, float]]:
    """(run, from, until) of each attempt on the device: from its ``RunStarted`` to what ended
    it; an attempt whose trainer was killed ends at the kill (its ``RunInterrupted`` comes
    later, from another trainer that saw the lease expire)."""
    out = []
    for i, s in enumerate(stored):
        if not isinstance(s.event, t.RunStarted):
            continue
        end = next(e.event for e in stored[i + 1 :] if isinstance(e.event, ENDS))
        until = end.occurred_at.timestamp()
        if isinstance(end, t.RunInterrupted):
            until = min(until, killed[s.event.instance])
        out.append((s.event.run_id, s.event.occurred_at.timestamp(), until))
    return out


async def run_events(url: str, run_ids: list[str]) -> list:
    nc = await nats.connect(url)
    try:
        store = EventStore(nc, stream=t.STREAM, subject=t.event_subject, event_type=t.Event)
        return [s for run_id in run_ids for s in await store.load(run_id)]
    finally:
        await nc.close()


@pytest.fixture
def trainers(tmp_path) -> Iterator[Stack]:
    """A studio whose trainers (``test``, ``t1``…) all train on one device slot."""
    s = Stack(
        tmp_path,
        ("projects", "datasets", "trainer"),
        STUDIO_LEASE_TTL=str(TRAINER_TTL_S),
        STUDIO_TRAINER_SLOT="shared",
        STUDIO_LOG_LEVEL="INFO",
    )
    try:
        s.up(timeout=150)
        for i in range(1, TRAINERS):
            s.start(f"trainer-{i}", module="trainer", STUDIO_INSTANCE=f"t{i}")
        yield s
    finally:
        s.down()


@pytest.mark.soak  # trainer processes and real runs: a minute or two on two busy cores
def test_trainers_sharing_one_device_never_train_together_and_take_over_when_one_dies(trainers):
    stack = trainers
    procs = {"test": "trainer", **{f"t{i}": f"trainer-{i}" for i in range(1, TRAINERS)}}
    project_id, split_id = learnable_split(stack, per_class=24)
    for name in procs.values():
        wait(lambda n=name: "trainer is running" in stack.log(n), timeout=150)
    killed: dict[str, float] = {}
    with Recorder(stack.nats_url) as recorder:
        ids = [
            submit(stack, project_id, split_id, hyperparameters=HYPER).json()["data"]["id"]
            for _ in range(RUNS)
        ]
        # when the trainer training the first run dies mid-run (SIGKILL)
        first = wait(lambda: (r := run(stack, ids[0]))["history"] and r)
        killed[first["instance"]] = time.time()
        stack.kill(procs[first["instance"]])
        # then every run completes on the trainers left
        for run_id in ids:
            assert wait_status(stack, run_id, "completed", "failed")["status"] == "completed"
    stored = asyncio.run(run_events(stack.nats_url, ids))
    spans = sorted(attempts(stored, killed), key=lambda a: a[1])
    # never two runs on the device at once
    busy = sum(1 for a, b in itertools.pairwise(spans) if b[1] < a[2])
    # never two holders of its lease
    (key,) = {s.event.lease for s in stored if isinstance(s.event, t.RunStarted)}
    writes = recorder.writes[key]
    holdings = tenures(writes, TRAINER_TTL_S)
    overlaps = sum(1 for a, b in itertools.pairwise(holdings) if b[1] < a[2])
    # and the next holder took the lease within TTL + 1 s of the death
    dead = next(iter(killed))
    takeover = next(w.at for w in writes if w.at > killed[dead] and w.holder not in (dead, None))
    assert (busy, overlaps) == (0, 0), (spans, holdings)
    assert takeover - killed[dead] <= TRAINER_TTL_S + 1.0
    figures.record(
        f"races: {TRAINERS} trainers on one device, the training one killed",
        events_appended=len(stored),
        lease_overlaps=overlaps + busy,
        worst_takeover_s=round(takeover - killed[dead], 2),
    )
