"""A claimed ``Idempotency-Key`` whose gateway died is taken over; a live one never is.

An in-memory KV with revisions (compare-and-set as JetStream's) stands for the bucket; the
lease and heartbeat are shortened. Imports: services.gateway.idempotency.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from services.gateway import idempotency
from services.gateway.envelope import ApiError
from services.gateway.idempotency import Claim, Idempotency


class Kv:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[bytes, int]] = {}
        self.revision = 0

    def _put(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = (value, self.revision)
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        if key in self.entries:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._put(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if key not in self.entries or self.entries[key][1] != last:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        return self._put(key, value)

    async def get(self, key: str) -> Any:
        if key not in self.entries:
            raise KeyNotFoundError()
        value, revision = self.entries[key]
        return SimpleNamespace(value=value, revision=revision)

    async def delete(self, key: str, last: int) -> None:
        if key in self.entries and self.entries[key][1] != last:
            raise KeyWrongLastSequenceError(description="wrong last sequence")
        self.entries.pop(key, None)


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(idempotency, "LEASE_S", 0.4)
    monkeypatch.setattr(idempotency, "IN_FLIGHT_WAIT_S", 3.0)


async def test_a_claim_left_by_a_dead_gateway_is_taken_over_and_answered_once():
    kv = Kv()
    dead, alive = Idempotency(kv), Idempotency(kv)  # type: ignore[arg-type]
    # given a claim whose gateway died: nobody renews it
    left = await dead.claim("u", "k", "fp")
    assert isinstance(left, Claim)
    # when a retry comes, it takes the claim over once the lease has run out
    taken = await alive.claim("u", "k", "fp")
    assert isinstance(taken, Claim) and taken.owner != left.owner
    await alive.complete(taken, 202, {"id": "i1"}, {})
    # then the answer is the key's, and a late write of the dead claim's changes nothing
    await dead.complete(left, 500, {"id": "never"}, {})
    assert await alive.claim("u", "k", "fp") == (202, {"id": "i1"}, {})
    # and the key with another body is still refused
    with pytest.raises(ApiError) as refused:
        await alive.claim("u", "k", "other")
    assert refused.value.status == 422


async def test_a_slow_request_that_renews_its_claim_is_waited_for_not_taken_over():
    kv = Kv()
    first, second = Idempotency(kv), Idempotency(kv)  # type: ignore[arg-type]
    claim = await first.claim("u", "k", "fp")
    assert isinstance(claim, Claim)

    async def slow_request() -> None:
        async with first.held(claim):
            await asyncio.sleep(1.2)  # three leases long, renewed all along
        await first.complete(claim, 201, {"id": "p1"}, {})

    running = asyncio.create_task(slow_request())
    # the retry waits for the first answer rather than running the request again
    assert await second.claim("u", "k", "fp") == (201, {"id": "p1"}, {})
    await running


async def test_two_retries_of_a_dead_claim_take_it_over_once():
    kv = Kv()
    left = await Idempotency(kv).claim("u", "k", "fp")  # type: ignore[arg-type]
    assert isinstance(left, Claim)
    a, b = Idempotency(kv), Idempotency(kv)  # type: ignore[arg-type]
    won = await a.claim("u", "k", "fp")
    assert isinstance(won, Claim)

    async def answer() -> None:
        async with a.held(won):
            await asyncio.sleep(0.6)  # longer than the lease: its heartbeat keeps it
        await a.complete(won, 202, {"id": "j"}, {})

    answering = asyncio.create_task(answer())
    assert await b.claim("u", "k", "fp") == (202, {"id": "j"}, {})
    await answering


class FakeGateway:
    def __init__(self) -> None:
        self.looked = 0

    async def current(self) -> bool:
        self.looked += 1
        return True


async def test_a_start_refused_because_its_job_exists_answers_for_that_job():
    from fastapi.responses import JSONResponse

    from contracts import common
    from services.gateway.api.idempotent import _started

    async def refused() -> Any:
        raise ApiError(common.CONFLICT, "import i1 already exists")

    async def job() -> Any:
        return JSONResponse({"id": "i1"}, 202)

    async def no_job() -> Any:
        return None

    gateway = FakeGateway()
    # the job the key names exists: its 202, after the read model caught up
    answer = await _started(gateway, refused, job)  # type: ignore[arg-type]
    assert answer.status_code == 202 and gateway.looked == 1
    # no such job, or a route that cannot tell: the refusal stands
    for existing in (no_job, None):
        with pytest.raises(ApiError) as kept:
            await _started(gateway, refused, existing)  # type: ignore[arg-type]
        assert kept.value.code == common.CONFLICT
