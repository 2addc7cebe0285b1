"""Every JetStream call rides out a leader election or a node restart: fakes that fail the way
a cluster does while a stream has no leader (no response, a 500, no peers, a timeout) a few
times, then succeed. Bounded: past the retry budget the failure is raised, and an endpoint
answers it as UNAVAILABLE, never INTERNAL."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServerError,
)

from contracts import projects as p
from contracts.common import INTERNAL, UNAVAILABLE
from services.gateway import idempotency
from services.gateway.idempotency import Claim, Idempotency
from services.kernel import artifacts, bus, transient
from services.kernel.streams import StreamSpec, ensure_stream
from services.kernel.transient import is_transient, retry_transient


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transient, "FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(transient, "MAX_DELAY_S", 0.002)


class Flaky:
    """``await flaky()`` fails with each of ``failures`` in turn, then answers ``value``."""

    def __init__(self, failures: list[Exception], value: Any = "ok") -> None:
        self.failures, self.value, self.calls = list(failures), value, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.value


def election() -> list[Exception]:
    """What a call meets while a replicated stream elects its leader."""
    return [
        NoStreamResponseError(),
        ServerError(code=500, err_code=10118, description="stream is offline"),
        BadRequestError(code=400, err_code=10005, description="no suitable peers for placement"),
        TimeoutError(),
    ]


def test_what_an_election_answers_is_transient_and_a_refusal_is_not():
    assert all(is_transient(exc) for exc in election())
    assert not is_transient(BadRequestError(code=400, err_code=10071, description="wrong last"))
    assert not is_transient(NotFoundError(code=404, err_code=10059, description="no stream"))
    assert not is_transient(ValueError("a bug"))


async def test_a_call_is_retried_through_an_election_then_answers():
    flaky = Flaky(election(), "stored")
    assert await retry_transient(flaky, what="append", retry_for=5) == "stored"
    assert flaky.calls == len(election()) + 1


async def test_an_election_longer_than_the_budget_raises_its_failure():
    flaky = Flaky([NoStreamResponseError()] * 1000)
    started = time.monotonic()
    with pytest.raises(NoStreamResponseError):
        await retry_transient(flaky, what="append", retry_for=0.05)
    assert time.monotonic() - started < 5 and flaky.calls > 1


async def test_a_refusal_is_raised_at_once():
    flaky = Flaky([BadRequestError(code=400, err_code=10071, description="wrong last")])
    with pytest.raises(BadRequestError):
        await retry_transient(flaky, what="append", retry_for=5)
    assert flaky.calls == 1


async def test_a_stream_is_created_once_the_cluster_answers():
    # given a cluster that has no meta leader for three calls, then no such stream
    js = SimpleNamespace(
        stream_info=Flaky([*election()[:3], NotFoundError(code=404, err_code=10059)]),
        add_stream=Flaky([]),
    )
    # when a service makes its stream
    await ensure_stream(js, StreamSpec("S", ("s.>",)), replicas=3)  # type: ignore[arg-type]
    # then it is created once, replicated as asked
    assert js.add_stream.calls == 1


async def test_a_command_whose_handler_outlived_the_retries_answers_unavailable():
    async def outage(command: Any, headers: Any) -> Any:
        raise NoStreamResponseError()

    async def bug(command: Any, headers: Any) -> Any:
        raise ValueError("a bug")

    command = p.CreateProject(project_id="p1", name="n", correlation_id="c")
    msg = SimpleNamespace(body=msgspec.json.encode(command), headers={})
    for handle, code in ((outage, UNAVAILABLE), (bug, INTERNAL)):
        endpoint = bus.command_endpoint("projects", p.CreateProject, handle)
        reply = msgspec.json.decode((await endpoint(msg)).body)  # type: ignore[arg-type]
        assert reply["code"] == code, reply


class LostAckKv:
    """A KV whose first write of each kind is stored but its reply lost (the node died)."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.revision = 0
        self.lost = {"create", "update"}

    def _store(self, value: bytes, kind: str) -> int:
        self.value, self.revision = value, self.revision + 1
        if kind in self.lost:
            self.lost.discard(kind)
            raise NoStreamResponseError()
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        if self.value is not None:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._store(value, "create")

    async def update(self, key: str, value: bytes, last: int) -> int:
        if last != self.revision:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._store(value, "update")

    async def get(self, key: str) -> Any:
        if self.value is None:
            raise KeyNotFoundError()
        return SimpleNamespace(value=self.value, revision=self.revision)


async def test_an_idempotency_claim_and_answer_stored_unseen_are_known_as_ours(monkeypatch):
    monkeypatch.setattr(idempotency, "IN_FLIGHT_WAIT_S", 0.5)
    kv = LostAckKv()
    keys = Idempotency(kv)  # type: ignore[arg-type]
    # when the claim is stored but its reply lost, the retry finds its own claim, not "in flight"
    claim = await keys.claim("u", "key-1", "fp")
    assert isinstance(claim, Claim) and claim.revision == 1
    # and an answer stored unseen is not stored twice nor refused
    await keys.complete(claim, 201, {"id": "p1"}, {})
    assert await keys.claim("u", "key-1", "fp") == (201, {"id": "p1"}, {})


async def test_reading_an_object_rides_out_an_election_chunk_by_chunk():
    data = b"checkpoint bytes"
    import base64
    import hashlib

    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    info = SimpleNamespace(
        nuid="N1", name="ckpt", size=len(data), digest=digest, is_link=lambda: False
    )
    chunks = [SimpleNamespace(data=data[:8], seq=1), SimpleNamespace(data=data[8:], seq=2)]
    get_msg = Flaky([NoStreamResponseError(), TimeoutError()])

    async def next_chunk(*args: Any, seq: int, **kwargs: Any) -> Any:
        await get_msg()
        return chunks[seq - 1]

    store = SimpleNamespace(get_info=Flaky([NoStreamResponseError()], info))
    js = SimpleNamespace(object_store=Flaky([], store), get_msg=next_chunk)
    stream = await artifacts.read(js, "b", "ckpt")  # type: ignore[arg-type]
    assert b"".join([c async for c in stream.chunks]) == data
    assert store.get_info.calls == 2 and get_msg.calls == 4


async def test_a_read_model_asked_whether_it_caught_up_waits_out_an_election():
    from services.kernel.projection import ProjectionRunner

    # given a stream that has no leader for two looks, then shows its end
    info = SimpleNamespace(state=SimpleNamespace(last_seq=0))
    js = SimpleNamespace(stream_info=Flaky([NoStreamResponseError(), TimeoutError()], info))
    nc = SimpleNamespace(jetstream=lambda: js)
    projector = SimpleNamespace(name="p", stream="S")
    runner = ProjectionRunner(nc, None, [projector], consumer_prefix="t")  # type: ignore[arg-type]
    # then asking whether the read model caught up answers, after the election
    assert await runner.caught_up(timeout=5)
    assert js.stream_info.calls == 3


class Stop(BaseException):
    """Ends a projector's loop in a test."""


async def test_a_projector_fetches_through_an_election_on_the_subscription_it_has(monkeypatch):
    from nats.js.errors import ServiceUnavailableError

    from services.kernel import projection

    # given a consumer whose leader is being elected: three fetches answer 503, then a fourth
    # comes (the test stops there)
    fetches: list[Any] = []

    async def fetch(sub: Any, *args: Any, **kwargs: Any) -> list[Any]:
        fetches.append(sub)
        if len(fetches) <= 3:
            raise ServiceUnavailableError()
        raise Stop

    monkeypatch.setattr(projection.pull, "fetch", fetch)
    runner = projection.ProjectionRunner(
        SimpleNamespace(jetstream=lambda: None),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        [],
        consumer_prefix="t",
    )
    group = SimpleNamespace(name="g")
    # when it consumes, then it keeps fetching on the same subscription (no new one set up,
    # which waited out 5 s JetStream calls mid-election)
    with pytest.raises(Stop):
        await runner._consume(group, "the subscription")  # type: ignore[arg-type]
    assert fetches == ["the subscription"] * 4
    # and an election longer than the ride-out is raised, for the projector to subscribe anew
    fetches.clear()
    monkeypatch.setattr(projection, "RIDE_OUT_S", -1.0)
    with pytest.raises(ServiceUnavailableError):
        await runner._consume(group, "the subscription")  # type: ignore[arg-type]
    assert len(fetches) == 1
