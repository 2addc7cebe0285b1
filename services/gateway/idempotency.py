"""``Idempotency-Key`` on POST: a retried request gets the first one's answer, once.

Keys live in a JetStream KV bucket shared by every gateway instance, for a day. A key is
claimed atomically (KV ``create``) before the request runs, so two racing retries never both
run; the loser waits for the first's answer (bounded, then 409), so both get the same answer.
A key reused for a different request answers 422. Creates additionally derive their ids from
the key (see ``derived_id``), so even a lost KV entry cannot make a second project.

A claim names its owner (a token of its own) and is renewed every ``HEARTBEAT_S`` while its
request runs (``held``): its KV revision moves. A waiting retry that sees the revision stand
still for ``LEASE_S`` on its own clock (no clock shared between machines is trusted) knows the
gateway holding it died mid-request, and takes the claim over with a compare-and-set on that
revision: of several such retries one wins, the others wait for its answer.

Every KV call rides out a leader election or a node restart for ``CALL_RETRY_S``, or for the
time its request has left (``within``; then the outage is raised, which the API answers 503
UNAVAILABLE): a keyed request waits for NATS no longer than an unkeyed one. A retried write
whose first try was stored unseen is recognised by its owner: a claim finds its own record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from contracts import common
from services.gateway.envelope import ApiError
from services.kernel.transient import TRANSIENT, retry_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

BUCKET = "studio_idempotency"
TTL_S = 24 * 3600.0
#: How often a claim is renewed while its request runs.
HEARTBEAT_S = 1.0
#: A claim whose revision a waiter saw stand still this long (its own clock) is taken over.
LEASE_S = 5.0
#: A claim last renewed this long ago by its own stamp is taken over at once (a retry that
#: comes late need not watch it for ``LEASE_S``; generous for clocks that disagree).
STALE_CLAIM_S = 60.0
#: How long opening the bucket at start waits for NATS, as a first connect does.
OPEN_RETRY_S = 10.0
#: How long a request waits for the answer of its key's first request, still running.
IN_FLIGHT_WAIT_S = 20.0
IN_FLIGHT_POLL_S = 0.05
#: How long a claim, a stored answer or a release waits for NATS (an election, a node restart)
#: unless its request has less time left.
CALL_RETRY_S = 10.0
#: The shortest try of a KV call: a request out of time still gets one short try.
MIN_TRY_S = 0.1
_NAMESPACE = uuid.UUID("6f1d8a52-3f2e-4a8e-9a7c-2d1b5e0c9f10")


class Record(msgspec.Struct, frozen=True):
    fingerprint: str
    claimed_at: float
    status: int = 0  # 0 while the first request is still running
    body: Any = None
    headers: dict[str, str] = {}
    #: The claim's own token: which claim wrote this record.
    owner: str = ""
    #: When its owner last renewed it (wall clock).
    beat_at: float = 0.0


class InFlight(Exception):
    """The key's first request is still running: look again."""


@dataclass
class Claim:
    """A key held by this gateway; ``revision`` follows the heartbeats."""

    key: str
    fingerprint: str
    revision: int
    owner: str = ""
    claimed_at: float = 0.0

    def record(self) -> bytes:
        now = time.time()
        claimed = Record(self.fingerprint, self.claimed_at or now, owner=self.owner, beat_at=now)
        return msgspec.json.encode(claimed)


@dataclass
class _Watch:
    """A waiter's view of a claim it does not hold: the revision it saw, and since when."""

    revision: int = 0
    since: float = field(default_factory=time.monotonic)

    def still(self, revision: int) -> float:
        """For how long the claim's revision has stood still, as seen here."""
        if revision != self.revision:
            self.revision, self.since = revision, time.monotonic()
        return time.monotonic() - self.since


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
        self, actor: str, key: str, request_fingerprint: str, within: float = CALL_RETRY_S
    ) -> Claim | tuple[int, Any, dict[str, str]]:
        """Claim ``key``, or return the stored (status, body, headers) of its first request.
        While that request is still running (on this gateway or another), wait for its answer
        (up to ``IN_FLIGHT_WAIT_S``, then 409), so that both callers get the same answer; a
        claim whose holder died (no heartbeat for ``LEASE_S``) is taken over. NATS out of
        reach is waited for ``within`` seconds at a time, then raised."""
        kv_key = hashlib.sha256(f"{actor}\n{self.validate(key)}".encode()).hexdigest()
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        # One owner for every try of this claim: a try stored unseen is known as ours.
        mine = Claim(kv_key, request_fingerprint, 0, uuid.uuid4().hex, time.time())
        watch = _Watch()
        while True:
            try:
                return await until(
                    functools.partial(self._claim_once, mine, watch),
                    what="claiming an idempotency key",
                    end=time.monotonic() + within,
                )
            except InFlight:  # NATS answered: the next look has ``within`` again
                if time.monotonic() >= deadline:
                    raise ApiError(
                        common.CONFLICT,
                        "a request with this Idempotency-Key is still being processed",
                    ) from None
            await asyncio.sleep(IN_FLIGHT_POLL_S)

    async def _claim_once(
        self, mine: Claim, watch: _Watch
    ) -> Claim | tuple[int, Any, dict[str, str]]:
        try:
            mine.revision = await self._kv.create(mine.key, mine.record())
            return mine
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(mine.key)
        except KeyNotFoundError:  # released (its request failed for a passing reason) meanwhile
            raise InFlight from None
        record = msgspec.json.decode(entry.value or b"", type=Record)
        if record.fingerprint != mine.fingerprint:
            raise ApiError(
                common.VALIDATION_ERROR,
                "this Idempotency-Key was already used for a different request",
                field="Idempotency-Key",
            )
        if record.status:
            return record.status, record.body, record.headers
        if record.owner == mine.owner:  # this very claim (or take-over), its reply lost
            mine.revision = entry.revision or 0
            return mine
        still = watch.still(entry.revision or 0)
        if still < LEASE_S and time.time() - max(record.beat_at, record.claimed_at) < STALE_CLAIM_S:
            raise InFlight
        try:
            mine.revision = await self._kv.update(mine.key, mine.record(), last=entry.revision)
        except KeyWrongLastSequenceError:  # renewed after all, or another retry took it over
            raise InFlight from None
        log.warning("idempotency key %s: took over a claim left unanswered %.1fs", mine.key, still)
        return mine

    @contextlib.asynccontextmanager
    async def held(self, claim: Claim) -> AsyncIterator[None]:
        """Renew ``claim`` every ``HEARTBEAT_S`` while the block runs, so that no waiting retry
        mistakes a slow request for one whose gateway died."""
        beating = asyncio.create_task(self._beat(claim))
        try:
            yield
        finally:
            beating.cancel()
            await asyncio.wait([beating])

    async def _beat(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                claim.revision = await self._kv.update(
                    claim.key, claim.record(), last=claim.revision
                )
            except KeyWrongLastSequenceError:
                if await self._ours(claim) is None:
                    log.warning("idempotency key %s: claim taken over while running", claim.key)
                    return
            except TRANSIENT as exc:  # the next beat tries again, well within the lease
                log.warning("idempotency key %s: heartbeat failed (%r)", claim.key, exc)

    async def _ours(self, claim: Claim) -> int | None:
        """The claim's revision if the key still holds it unanswered (a write of ours stored
        unseen moved it), else None: the key was taken over, answered or released."""
        try:
            entry = await self._kv.get(claim.key)
        except KeyNotFoundError:
            return None
        record = msgspec.json.decode(entry.value or b"", type=Record)
        if record.owner != claim.owner or record.status:
            return None
        claim.revision = entry.revision or 0
        return claim.revision

    async def complete(
        self,
        claim: Claim,
        status: int,
        body: Any,
        headers: dict[str, str],
        within: float = CALL_RETRY_S,
    ) -> None:
        record = Record(claim.fingerprint, claim.claimed_at, status, body, headers, claim.owner)
        value = msgspec.json.encode(record)
        await until(
            lambda: self._complete_once(claim, value),
            what="storing an idempotent answer",
            end=time.monotonic() + within,
        )

    async def _complete_once(self, claim: Claim, value: bytes) -> None:
        while True:
            try:
                await self._kv.update(claim.key, value, last=claim.revision)
                return
            except KeyWrongLastSequenceError:
                pass
            with contextlib.suppress(KeyNotFoundError):
                if (await self._kv.get(claim.key)).value == value:
                    return  # a try of ours, stored unseen
            if await self._ours(claim) is None:  # taken over: the taker stores its answer
                log.warning("idempotency key %s: answer not stored, claim taken over", claim.key)
                return

    async def release(self, claim: Claim, within: float = CALL_RETRY_S) -> None:
        """Forget a claim whose request failed for a passing reason, so a retry may run (one
        not released in time lapses: a retry takes it over after ``LEASE_S``)."""

        async def delete() -> None:
            while True:
                try:
                    await self._kv.delete(claim.key, last=claim.revision)
                    return
                except KeyNotFoundError:
                    return
                except APIError as err:
                    # A heartbeat stored unseen (its reply lost to a timeout or to the cancel
                    # that ends ``held``) moved the revision. Unlike ``update``, nats-py's
                    # ``delete`` says so with a bare 400 (err_code 10071), not as
                    # KeyWrongLastSequenceError: both mean "look again".
                    if not _wrong_last_sequence(err):
                        raise
                    if await self._ours(claim) is None:
                        return

        end = time.monotonic() + within
        await until(delete, what="releasing an idempotency key", end=end)


async def until(call: Callable[[], Awaitable[T]], *, what: str, end: float) -> T:
    """``retry_transient`` until ``end`` (monotonic) at the latest, each try cut at what is
    left (at least ``MIN_TRY_S``): a KV call otherwise waits its own 5 s past the end."""

    async def bounded() -> T:
        return await asyncio.wait_for(call(), max(end - time.monotonic(), MIN_TRY_S))

    left = max(end - time.monotonic(), MIN_TRY_S)
    return await retry_transient(bounded, what=what, retry_for=left)


def _wrong_last_sequence(err: APIError) -> bool:
    """Whether a KV write was refused because the key's revision was not the one expected."""
    # 10071: JSStreamWrongLastSequenceErrF; 10164: JSStreamWrongLastSequenceConstantErr.
    return isinstance(err, KeyWrongLastSequenceError) or err.err_code in (10071, 10164)


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()
