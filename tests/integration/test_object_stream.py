"""Reading an Object Store object piece by piece (``kernel.artifacts.read``) and putting a file
(``kernel.artifacts.upload``), against a real nats-server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.kernel import artifacts

pytestmark = pytest.mark.integration

BUCKET = "test_files"
#: Several of the Object Store's 128 KiB chunks, the last one partial.
SIZE = 5 * 128 * 1024 + 777


async def joined(stream: artifacts.ObjectStream) -> bytes:
    return b"".join([chunk async for chunk in stream.chunks])


@pytest.fixture
async def stored(nc: NATS, tmp_path: Path) -> bytes:
    js = nc.jetstream()
    objects = await js.create_object_store(BUCKET)
    data = os.urandom(SIZE)
    (tmp_path / "f").write_bytes(data)
    await artifacts.upload(objects, "a/f.bin", tmp_path / "f")
    # another object put between, so the chunks of one are not consecutive in the stream
    await objects.put("b", os.urandom(300 * 1024))
    return data


async def test_an_object_is_read_whole_chunk_by_chunk(nc: NATS, stored: bytes):
    stream = await artifacts.read(nc.jetstream(), BUCKET, "a/f.bin")
    assert stream.size == SIZE
    chunks = [chunk async for chunk in stream.chunks]
    assert len(chunks) == 6 and max(len(c) for c in chunks) <= 128 * 1024
    assert b"".join(chunks) == stored


@pytest.mark.parametrize("start", [1, 128 * 1024, 128 * 1024 + 5, SIZE - 1, SIZE])
async def test_an_object_is_read_from_any_offset(nc: NATS, stored: bytes, start: int):
    stream = await artifacts.read(nc.jetstream(), BUCKET, "a/f.bin", start=start)
    assert stream.size == SIZE
    assert await joined(stream) == stored[start:]


async def test_a_missing_object_or_bucket_is_missing(nc: NATS, stored: bytes):
    with pytest.raises(artifacts.ArtifactMissing):
        await artifacts.read(nc.jetstream(), BUCKET, "nope")
    with pytest.raises(artifacts.ArtifactMissing):
        await artifacts.read(nc.jetstream(), "no_such_bucket", "a/f.bin")


async def test_an_empty_object_is_empty(nc: NATS, tmp_path: Path):
    objects = await nc.jetstream().create_object_store(BUCKET)
    (tmp_path / "empty").write_bytes(b"")
    await artifacts.upload(objects, "empty", tmp_path / "empty")
    stream = await artifacts.read(nc.jetstream(), BUCKET, "empty")
    assert stream.size == 0 and await joined(stream) == b""


async def test_chunks_that_do_not_match_the_digest_are_refused_at_the_end(nc: NATS, stored):
    js = nc.jetstream()
    info = await (await js.object_store(BUCKET)).get_info("a/f.bin")
    forged = info.digest.split("=", 1)[0] + "=" + "A" * 43 + "="  # another sha256
    info.digest = forged
    chunks = artifacts._chunks(js, BUCKET, info, 0)
    with pytest.raises(artifacts.ArtifactCorrupt):
        async for _ in chunks:
            pass
