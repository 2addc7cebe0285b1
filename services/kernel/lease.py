"""Leases: one key per device in a JetStream KV bucket, so a crashed trainer frees its device
(and, in a bucket of their own, one per running import, so another datasets instance can end the
import of one that died: ``services.datasets.importlease``).

A lease is taken atomically (``kv.create``), renewed by an optimistic ``kv.update`` that resets the
key's age, and dropped by the bucket TTL once its holder stops renewing. Measured on nats-server
2.14: a key is never removed before its TTL and is gone 0.03-0.35 s after it (the server checks
ages at most every 250 ms), so the TTL is the least time a dead holder blocks a device.

A holder known to be gone (this very holder before its restart) is replaced by ``take_over``,
a compare-and-set on the key's revision. Opening the bucket, taking a lease and reading holders
ride out a NATS restart: transient failures are retried for up to ``retry_for`` seconds;
renewals retry until the TTL runs out.

Imports nats-py, msgspec and ``services.kernel.transient`` only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import EllipsisType

import msgspec
import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from services.kernel.transient import retry_transient

BUCKET = "studio_leases"

log = logging.getLogger(__name__)

# KV keys are subject tokens: no empty token, so no leading, trailing or doubled dot.
_KEY_RE = re.compile(r"[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]+)*")
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream error codes for a failed expected-last check
#: Failures of NATS rather than of the lease: a renewal retries them until the TTL runs out.
_OUTAGE = (nats.errors.Error, TimeoutError, OSError)
_RETRY_S = 0.25


class LeaseInfo(msgspec.Struct, frozen=True):
    key: str
    holder: str
    run_id: str | None
    since: float
    renewed: float


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaseInfo).decode


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid lease key, else raise ``ValueError``."""
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"invalid lease key {key!r}: use letters, digits, '-', '_', '=', '.'")
    return key


async def _read(kv: KeyValue, key: str) -> tuple[LeaseInfo, int] | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # never taken, expired, or released (a delete marker)
        return None
    return (_decode(entry.value), entry.revision) if entry.value and entry.revision else None


class Leases:
    """The lease bucket: take a device, or see who holds which."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        ttl: float = 10.0,
        replicas: int = 1,
        retry_for: float = 30.0,
        bucket: str = BUCKET,
    ) -> None:
        """``bucket``: the KV bucket, one per kind of lease (devices by default)."""
        if ttl <= 0:
            raise ValueError("a lease TTL must be positive")
        self.ttl = ttl
        #: How long a call keeps trying while NATS is unreachable.
        self.retry_for = retry_for
        self._js = js
        self.bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        """Get or create the bucket; an existing one keeps its TTL, which the leases then use."""
        await retry_transient(
            self._open_once, what="opening the lease bucket", retry_for=self.retry_for
        )

    async def _open_once(self) -> None:
        bucket = self.bucket
        config = api.KeyValueConfig(bucket=bucket, ttl=self.ttl, history=1, replicas=self._replicas)
        try:
            kv = await self._js.key_value(bucket)
        except BucketNotFoundError:
            try:
                kv = await self._js.create_key_value(config)
            except BadRequestError:  # created meanwhile by a peer with another config
                kv = await self._js.key_value(bucket)
        ttl = (await kv.status()).ttl
        if not ttl:
            log.warning("lease bucket %s has no TTL: a crashed holder keeps its lease", bucket)
        elif not math.isclose(ttl, self.ttl):
            log.warning(
                "lease bucket %s has a TTL of %ss, not %ss; using it", bucket, ttl, self.ttl
            )
            self.ttl = ttl  # renewals must keep pace with the TTL the server applies
        self._kv = kv

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Leases.open() was not awaited")
        return self._kv

    async def acquire(self, key: str, holder: str, run_id: str | None = None) -> Lease | None:
        """Take ``key`` for ``holder``; None when someone holds it."""
        check_key(key)
        now = time.time()
        info = LeaseInfo(key=key, holder=holder, run_id=run_id, since=now, renewed=now)
        # The first send, for all attempts: a create whose reply was lost started the TTL no
        # earlier than this.
        sent = time.monotonic()
        return await retry_transient(
            lambda: self._acquire_once(info, sent),
            what=f"taking lease {key}",
            retry_for=self.retry_for,
        )

    async def _acquire_once(self, info: LeaseInfo, sent: float) -> Lease | None:
        for _ in range(2):
            try:
                revision = await self._bucket().create(info.key, _encode(info))
            except KeyWrongLastSequenceError:
                # Held, perhaps by this very acquisition: an earlier attempt stored but its
                # reply was lost in an outage.
                read = await _read(self._bucket(), info.key)
                if read is None or read[0] != info:
                    return None
                revision = read[1]
            except KeyNotFoundError:
                # nats-py re-reads a delete marker to create over it; the marker expired in
                # between, which leaves the key free: try again.
                continue
            return Lease(self._bucket(), info, revision, ttl=self.ttl, written_at=sent)
        return None

    async def take_over(
        self, key: str, holder: str, gone: Callable[[LeaseInfo], bool], run_id: str | None = None
    ) -> Lease | None:
        """``acquire`` ``key``, or, where it is held but ``gone`` says its holder is (this very
        holder before a restart, say), replace it by a compare-and-set on its revision, so that
        of several takers one wins. None when a live holder has it or another taker won."""
        lease = await self.acquire(key, holder, run_id)
        if lease is not None:
            return lease
        now = time.time()
        info = LeaseInfo(key=key, holder=holder, run_id=run_id, since=now, renewed=now)
        sent = time.monotonic()
        return await retry_transient(
            lambda: self._take_over_once(info, gone, sent),
            what=f"taking over lease {key}",
            retry_for=self.retry_for,
        )

    async def _take_over_once(
        self, info: LeaseInfo, gone: Callable[[LeaseInfo], bool], sent: float
    ) -> Lease | None:
        read = await _read(self._bucket(), info.key)
        if read is None:  # expired since: free for the next acquire
            return None
        found, revision = read
        if found != info:  # else an earlier attempt stored it, its reply lost in an outage
            if not gone(found):
                return None
            try:
                revision = await self._bucket().update(info.key, _encode(info), last=revision)
            except KeyWrongLastSequenceError:  # renewed, or taken by another, since read
                return None
        return Lease(self._bucket(), info, revision, ttl=self.ttl, written_at=sent)

    async def holders(self) -> list[LeaseInfo]:
        """Every live lease, sorted by key."""
        return await retry_transient(
            self._holders_once, what="reading the lease holders", retry_for=self.retry_for
        )

    async def _holders_once(self) -> list[LeaseInfo]:
        try:
            keys = await self._bucket().keys()
        except NoKeysError:
            return []
        found = await asyncio.gather(*(_read(self._bucket(), key) for key in sorted(keys)))
        return [read[0] for read in found if read is not None]  # some expire while we read

    async def holder(self, key: str) -> LeaseInfo | None:
        """Who holds ``key``, if anyone."""
        check_key(key)
        read = await retry_transient(
            lambda: _read(self._bucket(), key),
            what=f"reading lease {key}",
            retry_for=self.retry_for,
        )
        return read[0] if read else None


class Lease:
    """One held device. Renew it faster than the TTL, or watch ``lost`` and stop using it."""

    def __init__(
        self, kv: KeyValue, info: LeaseInfo, revision: int, *, ttl: float, written_at: float
    ) -> None:
        self.key = info.key
        self.info = info
        self.revision = revision
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._kv = kv
        # Monotonic time the last good write was *sent*: the server starts the TTL no earlier.
        self._written_at = written_at

    async def renew(self, run_id: str | EllipsisType | None = ...) -> bool:
        """Reset the TTL (and set ``run_id`` if given); False, with ``lost`` set, if not held.
        A NATS outage is retried until the TTL may have run out, then raised."""
        if self.lost.is_set():
            return False
        info = msgspec.structs.replace(self.info, renewed=time.time())
        if not isinstance(run_id, EllipsisType):
            info = msgspec.structs.replace(info, run_id=run_id)
        sent = time.monotonic()
        # Retried through an outage while the lease may still be alive: a retry of a write
        # that landed unseen is recognised by ``_as_holder``.
        revision = await retry_transient(
            lambda: self._as_holder(
                lambda last: self._kv.update(self.key, _encode(info), last=last)
            ),
            what=f"renewing lease {self.key}",
            retry_for=max(self._time_left(), 0.0),
        )
        if revision is None:
            self.lost.set()
            return False
        self.info, self.revision, self._written_at = info, revision, sent
        return True

    async def release(self) -> None:
        """Free the device; quiet when the lease expired or another holder has it now."""
        await self._as_holder(self._delete)

    async def _delete(self, last: int) -> int:
        try:
            await self._kv.delete(self.key, last=last)
        except BadRequestError as err:  # nats-py maps this code for update, not for delete
            if err.err_code in _WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(description=err.description) from err
            raise
        return last

    async def _as_holder(self, write: Callable[[int], Awaitable[int]]) -> int | None:
        """``write(last)`` at this lease's revision; None when the key is no longer ours.

        A write whose reply was lost (an outage, a cancelled renewal) may still have been stored,
        moving the key past ``self.revision``: if the stored value is still this acquisition
        (same holder and ``since``), the write is retried at the revision found.
        """
        last = self.revision
        for _ in range(3):
            try:
                return await write(last)
            except KeyWrongLastSequenceError:
                read = await _read(self._kv, self.key)
                if read is None or read[1] == last:
                    return None
                found, revision = read
                if (found.holder, found.since) != (self.info.holder, self.info.since):
                    return None
                last = revision
        return None

    @asynccontextmanager
    async def keep_alive(self, interval: float | None = None) -> AsyncIterator[Lease]:
        """Renew every ``interval`` (ttl/3) while the block runs, then release the lease."""
        task = asyncio.create_task(self._keep_renewing(interval or self.ttl / 3))
        try:
            yield self
        finally:
            # Cancelling mid-renewal is safe: release adopts a renewal that landed unseen.
            task.cancel()
            await asyncio.wait({task})
            try:
                await self.release()
            except _OUTAGE as err:
                log.warning("lease %s not released (%s); it expires by its TTL", self.key, err)

    async def _keep_renewing(self, every: float) -> None:
        """Renew until cancelled; ride out a NATS outage until the TTL may have run out."""
        delay = every
        while True:
            await asyncio.sleep(min(delay, max(self._time_left(), 0)))
            left = self._time_left()
            if left <= 0:
                log.warning("lease %s lost: no renewal got through within the TTL", self.key)
                self.lost.set()
                return
            try:
                async with asyncio.timeout(left):  # a renewal that lands after the TTL is moot
                    held = await self.renew()
            except _OUTAGE as err:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Python 3.11's asyncio.timeout turns a cancel that lands as the timeout
                    # fires into TimeoutError: retrying then would renew forever, and the
                    # keep_alive waiting for this task to end would never return.
                    raise asyncio.CancelledError from err
                log.info("renewing lease %s failed (%r); retrying", self.key, err)
                delay = _RETRY_S
                continue
            except Exception:  # a bug: stop using the device rather than hold it blindly
                log.exception("renewing lease %s failed; giving it up", self.key)
                self.lost.set()
                return
            if not held:
                log.warning("lease %s lost: the key expired or another holder took it", self.key)
                return
            delay = every

    def _time_left(self) -> float:
        return self._written_at + self.ttl - time.monotonic()
