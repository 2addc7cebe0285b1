"""Uploaded archives handed over by the gateway through the Object Store (``UPLOADS_BUCKET``).

The gateway, which may run on another machine, streams an upload into the bucket and names the
object in ``StartImport.upload_object``. This service fetches it into the import's staging
folder (streamed chunk by chunk, its size and its digest checked), and deletes the object once
the import has claimed the archive or was refused. An object nobody claims (a gateway crashed
between its put and its command) is swept once it is an hour old.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import datasets as c
from services.kernel.transient import retry_transient

log = logging.getLogger(__name__)

#: An unclaimed object older than this was left by a gateway that crashed: it is swept.
STALE_AFTER_S = 3600.0
#: Sweeps run at start and then at most this often, when an upload arrives.
SWEEP_EVERY_S = 600.0


class UploadGone(Exception):
    """The object is not there (withdrawn by a gateway that gave up, or swept)."""


class UploadDamaged(Exception):
    """The fetched bytes are not the object the gateway put."""


class Uploads:
    """The uploads bucket, as this service uses it: fetch, discard, sweep."""

    def __init__(
        self,
        js: JetStreamContext,
        stale_after: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.js = js
        self.stale_after = stale_after
        self.clock = clock
        self._swept_at: float | None = None

    async def bucket(self) -> ObjectStore:
        try:
            return await self.js.object_store(c.UPLOADS_BUCKET)
        except NotFoundError:
            return await self.js.create_object_store(c.UPLOADS_BUCKET)

    async def fetch(self, name: str, target: Path) -> None:
        """The object into ``target`` (a temporary name first), streamed and checked."""
        objects = await self.bucket()
        tmp = target.with_name(f".{target.name}.fetch")

        async def get() -> int:
            with tmp.open("wb") as file:  # each try from the start
                result = await objects.get(name, writeinto=file)
            return result.info.size or 0

        try:
            size = await retry_transient(get, what=f"fetching {name}", retry_for=30.0)
        except NotFoundError:
            tmp.unlink(missing_ok=True)
            raise UploadGone(name) from None
        except Exception as exc:  # DigestMismatchError, a broken stream
            tmp.unlink(missing_ok=True)
            raise UploadDamaged(name) from exc
        if tmp.stat().st_size != size:
            tmp.unlink(missing_ok=True)
            raise UploadDamaged(name)
        tmp.replace(target)

    async def discard(self, name: str) -> None:
        """Delete the object (already gone: nothing to do); a failure is left to the sweep."""
        try:
            await (await self.bucket()).delete(name)
        except NotFoundError:
            pass
        except Exception:
            log.warning("could not delete the uploaded object %s", name, exc_info=True)

    async def sweep_if_due(self) -> list[str]:
        now = time.monotonic()
        if self._swept_at is not None and now - self._swept_at < SWEEP_EVERY_S:
            return []
        self._swept_at = now
        return await self.sweep()

    async def sweep(self) -> list[str]:
        """Delete every object older than ``stale_after``; returns their names."""
        try:
            objects = await self.bucket()
            infos = await objects.list(ignore_deletes=True)
        except NotFoundError:  # an empty bucket
            return []
        limit = self.clock() - self.stale_after
        swept = []
        for info in infos:
            if info.deleted or not info.name or _put_at(info.mtime) > limit:
                continue
            await self.discard(info.name)
            swept.append(info.name)
        return swept


def _put_at(mtime: str | None) -> float:
    """When the object was put (the put records it as an ISO time); unknown: now."""
    try:
        return datetime.fromisoformat((mtime or "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
