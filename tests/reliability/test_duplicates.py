"""Duplicates: whatever is delivered, sent or appended twice has its effect once.

- An event redelivered because its ack was withheld past the consumer's AckWait, and events
  delivered again by a consumer deleted and recreated (from the start of the stream, or by the
  runner itself), are each applied once: the projection stores its position with the update.
- The same command sent with one ``Idempotency-Key`` to two gateways at once makes one project,
  and both answers are the same answer.
- An append whose ack was lost (stored, then the reply never came) and that is retried is
  stored once, for one event and for an atomic batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from sqlalchemy import Table, func
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.nats_server import free_port
from services.kernel.natsauth import secrets_dir
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.sqlite import create_engine, session
from services.kernel.streams import StreamSpec, ensure_stream
from tests.reliability import figures
from tests.stack import ADMIN, API, Stack

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects",)


class Applied(SQLModel, table=True):
    """One row per application: an event applied twice shows as two rows (no unique key that
    would fail the second application and hide it)."""

    __tablename__ = "dup_applied"
    id: int | None = Field(default=None, primary_key=True)
    sequence: int = Field(index=True)


class Counter(Decodes):
    name = "counter"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (Applied.__table__,)  # type: ignore[attr-defined]
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        db.add(Applied(sequence=stored.sequence))


DURABLE = "dups-counter"  # the runner's consumer: ``<prefix>-<projector>``


@pytest.fixture
async def store(nc: NATS) -> EventStore[c.Event]:
    await ensure_stream(nc.jetstream(), StreamSpec(c.STREAM, (c.EVENTS,)))
    return EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)


@pytest.fixture
async def runner(nc: NATS, tmp_path: Path) -> AsyncIterator[ProjectionRunner]:
    engine = create_engine(tmp_path / "model.db")
    r = ProjectionRunner(nc, engine, [Counter()], consumer_prefix="dups")
    yield r
    await r.stop()
    await engine.dispose()


async def write(store: EventStore[c.Event], projects: int, first: int = 0) -> int:
    last = 0
    for i in range(first, first + projects):
        pid = f"p{i}"
        last = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
        last = await store.append(pid, [c.ProjectRenamed(project_id=pid, name="m")], last)
    return last


async def applications(runner: ProjectionRunner) -> dict[int, int]:
    """How many times each stream sequence was applied."""
    async with session(runner._engine) as db:
        query = select(Applied.sequence, func.count()).group_by(Applied.sequence)
        return {seq: n for seq, n in (await db.exec(query)).all()}


async def test_an_event_redelivered_after_its_ack_wait_is_applied_once(
    nc, store, runner, monkeypatch
):
    # given the runner's consumer with a one-second AckWait, and the runner's first ack lost
    last = await write(store, projects=5)
    await nc.jetstream().add_consumer(
        c.STREAM,
        api.ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=c.EVENTS,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=1.0,
        ),
    )
    acked, real_ack = [], Msg.ack

    async def ack(msg: Msg) -> None:
        acked.append(msg.metadata.num_delivered)
        if len(acked) > 1:  # the first is withheld: the server redelivers after its AckWait
            await real_ack(msg)

    monkeypatch.setattr(Msg, "ack", ack)
    # when the runner consumes, is redelivered everything past the AckWait, and acks that
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=10)
    deadline = time.monotonic() + 30
    while not acked or acked[-1] < 2:
        assert time.monotonic() < deadline, f"no redelivery: {acked}"
        await asyncio.sleep(0.05)
    # then each event was applied once
    counts = await applications(runner)
    assert sorted(counts) == list(range(1, last + 1))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates == 0
    figures.record(
        "duplicates: redelivered past AckWait",
        events_appended=last,
        events_lost=last - len(counts),
        duplicates_applied=duplicates,
    )


async def test_a_consumer_deleted_and_recreated_applies_nothing_twice(nc, store, runner):
    js = nc.jetstream()
    last = await write(store, projects=4)
    await runner.start()
    assert await runner.wait_for(c.STREAM, last, timeout=10)
    # when its consumer is deleted and made again delivering the whole stream from the start
    await js.delete_consumer(c.STREAM, DURABLE)
    config = api.ConsumerConfig(
        durable_name=DURABLE, filter_subject=c.EVENTS, ack_policy=api.AckPolicy.ALL
    )
    await js.add_consumer(c.STREAM, config)
    last = await write(store, projects=4, first=4)
    assert await runner.wait_for(c.STREAM, last, timeout=30)
    # and when it is deleted and left for the runner to make again
    await js.delete_consumer(c.STREAM, DURABLE)
    last = await write(store, projects=4, first=8)
    assert await runner.wait_for(c.STREAM, last, timeout=30)
    # then every event was applied once
    counts = await applications(runner)
    assert sorted(counts) == list(range(1, last + 1))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates == 0
    figures.record(
        "duplicates: consumer deleted and recreated",
        events_appended=last,
        events_lost=last - len(counts),
        duplicates_applied=duplicates,
    )


class LostAck:
    """``js.publish`` whose first reply is lost: the message is stored, the caller times out."""

    def __init__(self, publish: Any) -> None:
        self.publish, self.lost = publish, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ack = await self.publish(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            raise nats.errors.TimeoutError
        return ack


@pytest.mark.parametrize("size", [1, 3])
async def test_an_append_retried_after_a_lost_ack_is_stored_once(store, size):
    # given a stream whose first append reply is lost
    v = await store.append("p1", [c.ProjectCreated(project_id="p1", name="n")], 0)
    lossy = store._js.publish = LostAck(store._js.publish)  # type: ignore[method-assign]
    events = [c.ProjectRenamed(project_id="p1", name=f"n{i}") for i in range(size)]
    # when the append is retried through the lost reply
    sequence = await store.append("p1", events, v)
    # then it was stored once, at the sequence the append answered
    stored = await store.load("p1", after=v)
    assert lossy.lost == 1
    assert [s.event.message_id for s in stored] == [e.message_id for e in events]
    assert stored[-1].sequence == sequence
    figures.record(
        f"duplicates: append retried after a lost ack ({size} events)",
        events_appended=size,
        events_lost=size - len(stored),
        duplicates_applied=len(stored) - size,
    )


# --- one Idempotency-Key, two gateways at once ----------------------------------------------


def kv_key(key: str) -> str:
    """The idempotency bucket's key of the admin's ``key`` (``services.gateway.idempotency``)."""
    return hashlib.sha256(f"{ADMIN}\n{key}".encode()).hexdigest()


async def claimed(url: str, key: str, timeout: float = 15.0) -> None:
    """Wait until a gateway has claimed ``key`` (its record is in the bucket)."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("studio_idempotency")
        deadline = time.monotonic() + timeout
        while True:
            try:
                await kv.get(kv_key(key))
                return
            except nats.js.errors.KeyNotFoundError:
                assert time.monotonic() < deadline, f"{key} never claimed"
                await asyncio.sleep(0.02)
    finally:
        await nc.close()


def second_gateway(stack: Stack) -> str:
    """A gateway of its own, as on another machine: its own workspace (read model), the
    stack's NATS credentials."""
    port = free_port()
    stack.start(
        "gateway-2",
        module="gateway",
        STUDIO_PORT=str(port),
        STUDIO_INSTANCE="gw-2",
        STUDIO_WORKSPACE=str(stack.root / "gateway-2"),
        STUDIO_NATS_CREDS=str(secrets_dir(stack.workspace)),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, stack.log("gateway-2")[-2000:]
        time.sleep(0.1)


@pytest.mark.parametrize("races", [2, pytest.param(10, marks=pytest.mark.soak)])
def test_one_idempotency_key_sent_to_two_gateways_at_once_has_one_effect(stack: Stack, races: int):
    tag = uuid.uuid4().hex[:8]
    other = second_gateway(stack)
    try:
        answers = [race(stack, other, f"{tag}-{i}") for i in range(races)]
    finally:
        stack.resume("projects")
        stack.stop("gateway-2")
    for first, second in answers:
        # then both answers are the one answer
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        assert first.json()["data"] == second.json()["data"]
    # and one project was made of each key: one ProjectCreated in its stream
    ids = [first.json()["data"]["id"] for first, _ in answers]
    created = asyncio.run(creations(stack.nats_url, ids))
    assert created == [1] * races
    figures.record(
        "duplicates: one idempotency key, two gateways",
        events_appended=sum(created),
        duplicates_applied=sum(created) - len(ids),
    )


async def creations(url: str, project_ids: list[str]) -> list[int]:
    """How many ``ProjectCreated`` each project's stream holds."""
    nc = await nats.connect(url)
    try:
        store = EventStore(nc, stream=c.STREAM, subject=c.event_subject, event_type=c.Event)
        loaded = [await store.load(pid) for pid in project_ids]
    finally:
        await nc.close()
    return [sum(isinstance(s.event, c.ProjectCreated) for s in events) for events in loaded]


def race(stack: Stack, other: str, key: str) -> tuple[httpx.Response, httpx.Response]:
    """The same create, with one key, to each gateway: the second arrives while the first is
    in flight (the projects service is paused until then)."""
    body = {"name": f"twice {key}"}
    headers = stack.headers() | {"Idempotency-Key": key}
    out: dict[str, httpx.Response] = {}

    def send(name: str, url: str) -> None:
        out[name] = httpx.post(f"{url}{API}/projects", json=body, headers=headers, timeout=60)

    stack.pause("projects")  # the first request stays in flight, its key claimed
    first = threading.Thread(target=send, args=("first", stack.base_url))
    first.start()
    asyncio.run(claimed(stack.nats_url, key))
    second = threading.Thread(target=send, args=("second", other))
    second.start()
    second.join(timeout=1.0)  # a second that answers at once did not wait for the first
    stack.resume("projects")
    first.join()
    second.join()
    return out["first"], out["second"]
