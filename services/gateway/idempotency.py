"""``Idempotency-Key`` on POST: a retried request gets the first one's answer, once.

Keys live in a JetStream KV bucket shared by every gateway instance, for a day. A key is
claimed atomically (KV ``create``) before the request runs, so two racing retries never both
run; the loser waits for the first's answer (bounded, then 409), so both get the same answer.
A key reused for a different request answers 422. Creates additionally derive their ids from
the key (see ``derived_id``), so even a lost KV entry cannot make a second project.

Every KV call rides out a leader election or a node restart for ``CALL_RETRY_S`` (then the
outage is raised, which the API answers 503 UNAVAILABLE). A retried write whose first try was
stored unseen is recognised by its value: a claim finds its own record, not another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts import common
from services.gateway.envelope import ApiError
from services.kernel.transient import retry_transient

BUCKET = "studio_idempotency"
TTL_S = 24 * 3600.0
#: A claim older than this was left by a gateway that died mid-request: it may be taken over.
STALE_CLAIM_S = 60.0
#: How long opening the bucket at start waits for NATS, as a first connect does.
OPEN_RETRY_S = 10.0
#: How long a request waits for the answer of its key's first request, still running.
IN_FLIGHT_WAIT_S = 20.0
IN_FLIGHT_POLL_S = 0.05
#: How long a claim, a stored answer or a release waits for NATS (an election, a node restart).
CALL_RETRY_S = 10.0
_NAMESPACE = uuid.UUID("6f1d8a52-3f2e-4a8e-9a7c-2d1b5e0c9f10")


class Record(msgspec.Struct, frozen=True):
    fingerprint: str
    claimed_at: float
    status: int = 0  # 0 while the first request is still running
    body: Any = None
    headers: dict[str, str] = {}


class InFlight(Exception):
    """The key's first request is still running: look again."""


@dataclass(frozen=True)
class Claim:
    key: str
    fingerprint: str
    revision: int


def derived_id(actor: str, key: str, purpose: str) -> str:
    """A stable id for what a keyed request creates: the same key gives the same id."""
    return uuid.uuid5(_NAMESPACE, f"{actor}\n{key}\n{purpose}").hex


async def open_store(
    js: JetStreamContext, replicas: int = 1, retry_for: float = OPEN_RETRY_S
) -> KeyValue:
    """The keys' bucket, created when it does not exist yet. Only a bucket that is not there is
    created: a NATS outage is waited out (then raised), any other failure raised at once."""
    try:
        return await retry_transient(
            lambda: js.key_value(BUCKET), what="opening the idempotency bucket", retry_for=retry_for
        )
    except BucketNotFoundError:
        pass
    config = api.KeyValueConfig(bucket=BUCKET, ttl=TTL_S, replicas=replicas, history=1)
    # Creating a bucket with the same configuration twice is no error, so a retry is safe.
    return await retry_transient(
        lambda: js.create_key_value(config),
        what="creating the idempotency bucket",
        retry_for=retry_for,
    )


class Idempotency:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @staticmethod
    def validate(key: str) -> str:
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise ApiError(
                common.VALIDATION_ERROR,
                "Idempotency-Key must be 1 to 255 printable characters",
                field="Idempotency-Key",
            )
        return key

    async def claim(
        self, actor: str, key: str, request_fingerprint: str
    ) -> Claim | tuple[int, Any, dict[str, str]]:
        """Claim ``key``, or return the stored (status, body, headers) of its first request.
        While that request is still running (on this gateway or another), wait for its answer
        (up to ``IN_FLIGHT_WAIT_S``, then 409), so that both callers get the same answer."""
        kv_key = hashlib.sha256(f"{actor}\n{self.validate(key)}".encode()).hexdigest()
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            # One record for every try of this claim: a try stored unseen is known as ours.
            fresh = msgspec.json.encode(Record(request_fingerprint, time.time()))
            try:
                return await retry_transient(
                    functools.partial(self._claim_once, kv_key, request_fingerprint, fresh),
                    what="claiming an idempotency key",
                    retry_for=CALL_RETRY_S,
                )
            except InFlight:
                if time.monotonic() >= deadline:
                    raise ApiError(
                        common.CONFLICT,
                        "a request with this Idempotency-Key is still being processed",
                    ) from None
            await asyncio.sleep(IN_FLIGHT_POLL_S)

    async def _claim_once(
        self, kv_key: str, request_fingerprint: str, fresh: bytes
    ) -> Claim | tuple[int, Any, dict[str, str]]:
        try:
            return Claim(kv_key, request_fingerprint, await self._kv.create(kv_key, fresh))
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(kv_key)
        except KeyNotFoundError:  # released (its request failed for a passing reason) meanwhile
            raise InFlight from None
        if entry.value == fresh and entry.revision:  # this very claim, its reply lost
            return Claim(kv_key, request_fingerprint, entry.revision)
        record = msgspec.json.decode(entry.value or b"", type=Record)
        if record.fingerprint != request_fingerprint:
            raise ApiError(
                common.VALIDATION_ERROR,
                "this Idempotency-Key was already used for a different request",
                field="Idempotency-Key",
            )
        if record.status:
            return record.status, record.body, record.headers
        if time.time() - record.claimed_at < STALE_CLAIM_S:
            raise InFlight
        revision = await self._kv.update(kv_key, fresh, last=entry.revision)
        return Claim(kv_key, request_fingerprint, revision)

    async def complete(self, claim: Claim, status: int, body: Any, headers: dict[str, str]) -> None:
        record = Record(claim.fingerprint, time.time(), status, body, headers)
        value = msgspec.json.encode(record)
        await retry_transient(
            lambda: self._complete_once(claim, value),
            what="storing an idempotent answer",
            retry_for=CALL_RETRY_S,
        )

    async def _complete_once(self, claim: Claim, value: bytes) -> None:
        try:
            await self._kv.update(claim.key, value, last=claim.revision)
        except KeyWrongLastSequenceError:
            entry = await self._kv.get(claim.key)
            if entry.value != value:  # not a try of ours that was stored unseen
                raise

    async def release(self, claim: Claim) -> None:
        """Forget a claim whose request failed for a passing reason, so a retry may run."""

        async def delete() -> None:
            with contextlib.suppress(KeyNotFoundError, KeyWrongLastSequenceError):
                await self._kv.delete(claim.key, last=claim.revision)

        await retry_transient(delete, what="releasing an idempotency key", retry_for=CALL_RETRY_S)


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()
