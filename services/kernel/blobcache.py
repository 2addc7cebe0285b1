"""This machine's copy of files another service keeps, fetched over NATS by content hash.

A trainer or an exporter reads a dataset's images, which the datasets service keeps in its own
folder, possibly on another machine. ``BlobCache`` gives each file a local path by its sha256
(``<root>/<aa>/<bb>/<sha256>``) and, when the file is not there yet, fetches it piece by piece
through ``fetch`` (a query such as ``qry.datasets.blob``, made by ``query_pieces``):

- **verified**: the bytes fetched must hash to the name they are kept under, else nothing is
  kept and ``BlobCorrupt`` is raised; so a file in the cache is always the file its name says,
  and a run that reads it twice reads the same bytes;
- **atomic**: each file is written to a temporary name beside its own, fsynced and renamed, so
  a reader (another process of this machine included) never sees part of one, and a crash
  leaves at most a temporary file, swept by ``sweep``;
- **bounded**: at most ``concurrency`` fetches at once, each holding one piece (≤ 1 MiB) in
  memory, whatever the number and size of the files; a file asked for twice at once is fetched
  once;
- **counted**: ``studio_blob_cache_total{outcome="hit|miss"}`` (a miss is a file fetched) and
  ``studio_blob_cache_fetched_bytes_total``, so "a second run reads no image over the network"
  can be seen on ``/metrics``.

Nothing is evicted: the cache holds what this machine trained on, and may be deleted at any
moment (it fills again). Knows no context: imports ``contracts``'s common replies,
``prometheus_client`` and ``services.kernel``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from prometheus_client import Counter

from contracts import Message
from contracts.common import UNAVAILABLE, CommandRejected
from services.kernel import bus
from services.kernel.domain import Refused
from services.kernel.transient import retry_transient

log = logging.getLogger(__name__)
W = TypeVar("W")
_SHA256 = re.compile(r"[0-9a-f]{64}")

#: Fetches at once per cache: enough to hide a round trip, few enough to spare the service.
CONCURRENCY = 8
#: How long one piece waits for its service (restarting) or for NATS (reconnecting).
PIECE_RETRY_S = 30.0

LOOKUPS = Counter(
    "studio_blob_cache_total",
    "Files asked of this machine's blob cache: hit (kept here already) or miss (fetched).",
    ["outcome"],
)
FETCHED_BYTES = Counter(
    "studio_blob_cache_fetched_bytes_total", "Bytes fetched over NATS into the blob cache."
)
for _outcome in ("hit", "miss"):
    LOOKUPS.labels(_outcome)


class Piece(Protocol):
    """Bytes of a file from some offset, and the whole file's size."""

    @property
    def data(self) -> bytes: ...

    @property
    def size(self) -> int: ...


#: ``fetch(where, offset)``: the piece of the file ``where`` names, from ``offset``.
Fetch = Callable[[W, int], Awaitable[Piece]]


class BlobCorrupt(Exception):
    """The bytes fetched are not the file their sha256 names (or it changed while read)."""


class BlobCache(Generic[W]):
    """Content-addressed files under ``root``, fetched through ``fetch`` when missing."""

    def __init__(self, root: Path, fetch: Fetch[W], *, concurrency: int = CONCURRENCY) -> None:
        self.root, self.fetch, self.concurrency = Path(root), fetch, concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[Path]] = {}

    def path(self, sha256: str) -> Path:
        """Where the file lies once fetched (``ValueError`` for a name that is no sha256)."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def get(self, sha256: str, where: W) -> Path:
        """The file's local path, fetched first when it is not here."""
        [path] = await self.prefetch([(sha256, where)])
        return path

    async def prefetch(self, wanted: Iterable[tuple[str, W]]) -> list[Path]:
        """Every file of ``wanted`` (sha256, where to fetch it) on this machine; their paths in
        the same order. The first failure (``Refused``, ``BlobCorrupt``, NATS out of reach past
        the retries) stops the rest and is raised."""
        wanted = list(wanted)
        paths = [self.path(sha) for sha, _ in wanted]
        missing = await asyncio.to_thread(_absent, dict(zip(paths, wanted, strict=True)))
        LOOKUPS.labels("hit").inc(len(wanted) - len(missing))
        queue = iter(missing)
        try:
            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(self.concurrency, len(missing))):
                    tasks.create_task(self._drain(queue))
        except ExceptionGroup as failed:  # the first failure stopped the others: it is the cause
            raise failed.exceptions[0] from None
        return paths

    async def _drain(self, queue: Iterator[tuple[str, W]]) -> None:
        for sha, where in queue:  # the workers share one iterator: each file is taken once
            await self._one(sha, where)

    async def _one(self, sha256: str, where: W) -> Path:
        while (running := self._inflight.get(sha256)) is not None:
            await asyncio.wait([running])  # another prefetch is fetching it: wait for that one
            if not running.cancelled():  # (cancelled: its prefetch stopped; fetch it here)
                LOOKUPS.labels("hit").inc()
                return running.result()
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._inflight[sha256] = future
        try:
            async with self._limit:
                path = await self._download(sha256, where)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: one failure is not also logged as never awaited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._inflight[sha256]
        future.set_result(path)
        return path

    async def _download(self, sha256: str, where: W) -> Path:
        dest = self.path(sha256)
        if dest.is_file():  # fetched by someone else since it was found missing
            LOOKUPS.labels("hit").inc()
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{sha256}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                digest = await self._copy(where, out)
                await asyncio.to_thread(os.fsync, out.fileno())
            if digest != sha256:
                raise BlobCorrupt(f"the bytes fetched for {sha256} hash to {digest}")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        LOOKUPS.labels("miss").inc()
        return dest

    async def _copy(self, where: W, out: Any) -> str:
        """Every piece of the file into ``out``; its sha256."""
        digest, offset = hashlib.sha256(), 0
        while True:
            piece = await self.fetch(where, offset)
            if piece.data:
                await asyncio.to_thread(out.write, piece.data)
                digest.update(piece.data)
                offset += len(piece.data)
                FETCHED_BYTES.inc(len(piece.data))
            if offset >= piece.size:
                return digest.hexdigest()
            if not piece.data:  # the file shrank while it was read
                raise BlobCorrupt(f"the file ended at {offset} of {piece.size} bytes")

    def sweep(self) -> int:
        """Removes the temporary files a crash left mid-fetch; how many there were."""
        stale = list(self.root.glob("*/*/.*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("removed %d partial files of the blob cache %s", len(stale), self.root)
        return len(stale)


def _absent(wanted: dict[Path, tuple[str, W]]) -> list[tuple[str, W]]:
    """The wanted files that are not on this machine (each once)."""
    return [item for path, item in wanted.items() if not path.is_file()]


def query_pieces(
    nc: NATS,
    subject: str,
    query: Callable[[W, int], Message],
    reply_type: type[Any],
    *,
    timeout: float = 30.0,
    retry_for: float = PIECE_RETRY_S,
) -> Fetch[W]:
    """A ``Fetch`` that asks ``subject`` for each piece: ``query(where, offset)`` is the query,
    ``reply_type`` its answer (``data`` and ``size``). A refusal is raised as ``Refused`` (its
    code and message); the service or NATS out of reach is retried for ``retry_for`` seconds,
    then raised, as any paged query does."""
    decoder = bus.reply_decoder(reply_type)

    async def fetch(where: W, offset: int) -> Piece:
        asked = query(where, offset)

        async def ask() -> Piece:
            data = msgspec.json.encode(asked)
            msg = await bus.ask(nc, subject, data, timeout=timeout, name=type(asked).__name__)
            reply = decoder.decode(msg.data)
            if isinstance(reply, CommandRejected):
                if reply.code == UNAVAILABLE:  # the service's own NATS calls failed: retry
                    raise TimeoutError(reply.message)
                raise Refused(reply.code, reply.message, reply.field)
            piece: Piece = reply
            return piece

        return await retry_transient(ask, what=f"asking {subject}", retry_for=retry_for)

    return fetch
