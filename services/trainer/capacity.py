"""How many devices the studio's trainers have: each live trainer announces its own count in a
JetStream KV bucket (``studio_trainers``, one key per trainer, dropped by the bucket's TTL once
the trainer stops announcing), so a trainer answering a ``StartRun`` knows the most devices any
run can get (``largest``), whichever trainer answers.

A run asking more than that would wait for ever: it is refused instead. A trainer that just
started may not have announced yet; one's own count always counts. Every call rides out a NATS
outage (``retry_transient``); the announcing loop logs a failure and tries again.
Imports nats-py, msgspec and ``services.kernel`` only.
"""

from __future__ import annotations

import asyncio
import logging
import re

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from services.kernel.transient import TRANSIENT, retry_transient

BUCKET = "studio_trainers"
RETRY_FOR_S = 30.0

log = logging.getLogger(__name__)


class Announcement(msgspec.Struct, frozen=True):
    trainer: str
    devices: int


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Announcement).decode


def trainer_key(name: str) -> str:
    """A KV key for the trainer named ``name`` (its first device lease: unique per trainer)."""
    return re.sub(r"[^A-Za-z0-9_=-]", "_", name)


class Capacity:
    """This trainer's announcement, and the largest device count of every live trainer."""

    def __init__(
        self, js: JetStreamContext, name: str, devices: int, *, ttl: float, replicas: int = 1
    ) -> None:
        self.me = Announcement(trainer_key(name), devices)
        self.ttl, self._js, self._replicas = ttl, js, replicas
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        """Gets or creates the bucket, and announces this trainer. NATS away past the retries
        is no reason not to start: ``forever`` tries again, and until then only this trainer's
        devices count."""
        try:
            await self._open_and_announce()
        except TRANSIENT:
            log.warning("the trainers' bucket is not reachable yet; announcing later")

    async def _open_and_announce(self) -> None:
        if self._kv is None:
            self._kv = await retry_transient(
                self._bucket_once, what="opening the trainers' bucket", retry_for=RETRY_FOR_S
            )
        await self.announce()

    async def _bucket_once(self) -> KeyValue:
        try:
            return await self._js.key_value(BUCKET)
        except BucketNotFoundError:
            config = api.KeyValueConfig(
                bucket=BUCKET, ttl=self.ttl, history=1, replicas=self._replicas
            )
            try:
                return await self._js.create_key_value(config)
            except BadRequestError:  # created meanwhile by another trainer
                return await self._js.key_value(BUCKET)

    async def announce(self) -> None:
        assert self._kv is not None, "open() first"
        kv = self._kv
        await retry_transient(
            lambda: kv.put(self.me.trainer, _encode(self.me)),
            what="announcing this trainer's devices",
            retry_for=RETRY_FOR_S,
        )

    async def withdraw(self) -> None:
        """Removes this trainer's entry (a clean stop); a crash leaves it to the TTL."""
        if self._kv is not None:
            try:
                await self._kv.delete(self.me.trainer)
            except Exception as exc:  # the TTL drops it all the same
                log.warning("withdrawing this trainer's devices failed (%r)", exc)

    async def forever(self) -> None:
        """Announces this trainer every third of the TTL, so its entry never lapses."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._open_and_announce()
            except Exception:  # the loop's guard: the next announcement may get through
                log.exception("announcing this trainer's devices failed")

    async def largest(self) -> int:
        """The most devices of any live trainer (this one's at least)."""
        if self._kv is None:
            return self.me.devices
        try:
            found = await retry_transient(
                self._all_once, what="reading the trainers' devices", retry_for=RETRY_FOR_S
            )
        except TRANSIENT:
            log.warning("the trainers' devices are unknown (NATS is away): counting only mine")
            found = []
        return max([self.me.devices, *(a.devices for a in found)])

    async def _all_once(self) -> list[Announcement]:
        assert self._kv is not None, "open() first"
        kv = self._kv
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        found = []
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # expired between listing and reading
                continue
            if entry.value:
                found.append(_decode(entry.value))
        return found
