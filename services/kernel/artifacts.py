"""A file a stored record names by an Object Store object and a sha256, brought to this machine.

A record (an event such as a saved checkpoint) names a file by its object name and the sha256
it had when it was stored. ``fetch`` hands back that very file: the copy already on this machine
when its sha256 matches, else the object fetched into place and checked. A NATS restart is
ridden out (the get is retried for a while, each try from the file's start, into a temporary
file, so no half-written file is ever in place). A file that cannot be had as recorded raises
``ArtifactMissing`` or ``ArtifactCorrupt``; the caller says it in its own words and codes.

``upload`` puts a file (files before facts: before the record that names it is stored);
``read`` hands an object's bytes out piece by piece, each chunk fetched when the previous one was
consumed, so a file of any size is served without ever being whole in memory; each request of
it rides out an election as the get does.

Knows no context: no contract, no bucket or object-name rule. Imports nats-py and
``services.kernel`` only.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nats.js.api import ObjectInfo, ObjectStoreConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, ObjectStore

from services.kernel.jobs import sha256_file
from services.kernel.transient import retry_transient

#: How long a get waits for NATS to come back, as event-store appends do.
OBJECT_RETRY_S = 60.0


class ArtifactUnavailable(Exception):
    """The file a record names cannot be had as recorded."""

    def __init__(self, object_name: str) -> None:
        super().__init__(object_name)
        self.object_name = object_name


class ArtifactMissing(ArtifactUnavailable):
    """Neither on this machine nor in the Object Store."""


class ArtifactCorrupt(ArtifactUnavailable):
    """Found, but not the bytes whose sha256 was recorded."""


async def fetch(
    objects: ObjectStore,
    object_name: str,
    sha256: str,
    local: Path,
    *,
    copy: Path | None = None,
    mismatch: Literal["fetch", "refuse"] = "fetch",
    retry_for: float = OBJECT_RETRY_S,
) -> Path:
    """The recorded file, sha256 checked: ``local`` when it matches, else the Object Store's
    put in ``local``'s place. With ``copy``, a private copy there instead (a link where
    possible), which no pruning of ``local``'s folder removes while the caller reads it.

    ``mismatch="refuse"`` reports a local file that does not match as corrupt rather than
    fetching it again, for a reader that must not paper over a damaged file (the exporter's
    rule: a damaged checkpoint fails the export, and the operator sees it)."""
    if await _usable(local, sha256, mismatch, object_name):
        if copy is None:
            return local
        try:
            await asyncio.to_thread(_link_or_copy, local, copy)
            return copy
        except FileNotFoundError:
            pass  # pruned meanwhile: the Object Store may still have it
    target = copy or local
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.fetch")

    async def get() -> None:
        with tmp.open("wb") as file:  # each try from the start
            await objects.get(object_name, writeinto=file)

    try:
        await retry_transient(get, what=f"fetching {object_name}", retry_for=retry_for)
    except NotFoundError:
        tmp.unlink(missing_ok=True)
        raise ArtifactMissing(object_name) from None
    if await asyncio.to_thread(sha256_file, tmp) != sha256:
        tmp.unlink(missing_ok=True)
        raise ArtifactCorrupt(object_name)
    os.replace(tmp, target)
    return target


async def _usable(local: Path, sha256: str, mismatch: str, object_name: str) -> bool:
    """Whether the local file is the recorded one (absent or damaged: it is not)."""
    try:
        if await asyncio.to_thread(sha256_file, local) == sha256:
            return True
    except (FileNotFoundError, IsADirectoryError):
        return False  # not here, or pruned meanwhile
    if mismatch == "refuse":
        raise ArtifactCorrupt(object_name)
    return False


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        shutil.copyfile(source, target)


async def upload(
    objects: ObjectStore, object_name: str, path: Path, *, retry_for: float = OBJECT_RETRY_S
) -> None:
    """Put the file at ``path`` under ``object_name``, riding out a NATS restart (each try from
    the file's start; a put that lands twice leaves the same object)."""

    async def put() -> None:
        with path.open("rb") as file:
            await objects.put(object_name, file)

    await retry_transient(put, what=f"uploading {object_name}", retry_for=retry_for)


async def ensure_object_store(
    js: JetStreamContext, bucket: str, replicas: int = 1, *, retry_for: float = OBJECT_RETRY_S
) -> ObjectStore:
    """The bucket, created with ``replicas`` when missing (an existing one is left as it is);
    rides out an election or a node restart for ``retry_for``."""

    async def once() -> ObjectStore:
        try:
            return await js.object_store(bucket)
        except NotFoundError:
            config = ObjectStoreConfig(bucket=bucket, replicas=replicas)
            # nats-py sets config.bucket to its bucket argument, even when that is None
            return await js.create_object_store(bucket, config=config)

    return await retry_transient(once, what=f"opening bucket {bucket}", retry_for=retry_for)


@dataclass(frozen=True)
class ObjectStream:
    """An object being read: its whole ``size``, and its bytes from where the read starts."""

    size: int
    chunks: AsyncIterator[bytes]


async def read(js: JetStreamContext, bucket: str, object_name: str, start: int = 0) -> ObjectStream:
    """The object's bytes from ``start``, chunk by chunk. ``ArtifactMissing`` when the bucket or
    the object is not there. The chunks are checked against the object's digest as they come:
    the last one raises ``ArtifactCorrupt`` instead when they do not match (a reader that has
    sent the rest on can only break off, and should)."""

    async def look() -> ObjectInfo:
        return await (await js.object_store(bucket)).get_info(object_name)

    try:
        info = await retry_transient(look, what=f"reading {object_name}", retry_for=OBJECT_RETRY_S)
    except NotFoundError:  # the bucket, or the object
        raise ArtifactMissing(object_name) from None
    if not info.nuid or info.is_link():
        raise ArtifactMissing(object_name)
    return ObjectStream(info.size or 0, _chunks(js, bucket, info, start))


async def _chunks(
    js: JetStreamContext, bucket: str, info: ObjectInfo, start: int
) -> AsyncIterator[bytes]:
    # Each chunk is the next message on the object's chunk subject: one small request apiece,
    # made only once the previous chunk was taken, which is what bounds the memory.
    size, digest = info.size or 0, info.digest or ""
    subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
    seen, sequence, sha = 0, 0, hashlib.sha256()
    while seen < size:
        msg = await retry_transient(  # one chunk, asked again after an election
            functools.partial(
                js.get_msg, f"OBJ_{bucket}", seq=sequence + 1, subject=subject, next=True
            ),
            what=f"reading {info.name}",
            retry_for=OBJECT_RETRY_S,
        )
        data, sequence = msg.data or b"", msg.seq or sequence + 1
        if not data:
            raise ArtifactCorrupt(info.name)
        sha.update(data)
        seen += len(data)
        if seen >= size and not _digest_matches(sha.digest(), digest):
            raise ArtifactCorrupt(info.name)
        if seen > start:
            yield data[max(start - (seen - len(data)), 0) :]


def _digest_matches(sha: bytes, digest: str) -> bool:
    """``digest`` as the Object Store records it: ``SHA-256=`` and the url-safe base64."""
    encoded = digest.split("=", 1)[1] if "=" in digest else digest
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) == sha
