"""The blob cache: a file fetched once by its sha256, verified, written atomically, fetched a
bounded number at a time; and its NATS fetch, whose refusals and outages are told apart.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY

from contracts import common
from contracts import datasets as d
from services.kernel import blobcache
from services.kernel.blobcache import BlobCache, BlobCorrupt, query_pieces
from services.kernel.domain import Refused


@dataclass
class Piece:
    data: bytes
    size: int


@dataclass
class Source:
    """Files served piece by piece (``chunk`` bytes each), counting what is asked."""

    files: dict[str, bytes]
    chunk: int = 1000
    asked: list[tuple[str, int]] = field(default_factory=list)
    running: int = 0
    most: int = 0
    gate: asyncio.Event | None = None

    async def fetch(self, where: str, offset: int) -> Piece:
        self.asked.append((where, offset))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0)
            if self.gate is not None:
                await self.gate.wait()
            if where not in self.files:
                raise Refused(common.NOT_FOUND, f"{where} is not in this dataset")
            data = self.files[where]
            return Piece(data[offset : offset + self.chunk], len(data))
        finally:
            self.running -= 1

    def fetched(self) -> set[str]:
        return {where for where, _ in self.asked}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(n: int, size: int = 2500) -> dict[str, bytes]:
    """``n`` files of ``size`` bytes, by name."""
    return {f"img{i}": (b"%d-" % i * size)[:size] for i in range(n)}


def wanted(source: Source) -> list[tuple[str, str]]:
    return [(sha(data), where) for where, data in source.files.items()]


def lookups(outcome: str) -> float:
    return REGISTRY.get_sample_value("studio_blob_cache_total", {"outcome": outcome}) or 0.0


async def test_a_file_is_fetched_once_then_read_from_this_machine(tmp_path: Path) -> None:
    # Given a cache and a source of three files of several pieces each
    source = Source(files(3))
    cache = BlobCache(tmp_path, source.fetch)
    hits, misses = lookups("hit"), lookups("miss")
    # When they are prefetched twice
    first = await cache.prefetch(wanted(source))
    asked = len(source.asked)
    second = await cache.prefetch(wanted(source))
    # Then each came over in pieces once, and the second time nothing was asked
    assert asked == 3 * 3 and len(source.asked) == asked
    assert first == second == [cache.path(s) for s, _ in wanted(source)]
    assert [p.read_bytes() for p in first] == list(source.files.values())
    assert (lookups("miss") - misses, lookups("hit") - hits) == (3, 3)


async def test_bytes_that_do_not_hash_to_their_name_are_not_kept(tmp_path: Path) -> None:
    source = Source({"img": b"what the service has now"})
    cache = BlobCache(tmp_path, source.fetch)
    claimed = sha(b"what the listing said")
    with pytest.raises(BlobCorrupt):
        await cache.get(claimed, "img")
    assert not cache.path(claimed).exists()
    assert list(tmp_path.rglob("*.tmp")) == []


async def test_a_file_that_shrinks_while_read_is_refused(tmp_path: Path) -> None:
    data = b"x" * 3000

    async def shrinking(where: str, offset: int) -> Piece:
        return Piece(data[offset : offset + 1000] if offset == 0 else b"", len(data))

    cache = BlobCache(tmp_path, shrinking)
    with pytest.raises(BlobCorrupt, match="ended at 1000 of 3000"):
        await cache.get(sha(data), "img")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


async def test_at_most_concurrency_files_are_fetched_at_once(tmp_path: Path) -> None:
    source = Source(files(30, size=500))
    cache = BlobCache(tmp_path, source.fetch, concurrency=4)
    await cache.prefetch(wanted(source))
    assert source.most == 4
    assert source.fetched() == set(source.files)


async def test_a_file_asked_twice_at_once_is_fetched_once(tmp_path: Path) -> None:
    # Given two prefetches of the same files, started together while the source is held
    source = Source(files(5), gate=asyncio.Event())
    cache = BlobCache(tmp_path, source.fetch)
    both = asyncio.gather(*(cache.prefetch(wanted(source)) for _ in range(2)))
    await asyncio.sleep(0.01)
    source.gate.set()  # type: ignore[union-attr]
    first, second = await both
    # Then both have every file, and each piece was asked once
    assert first == second
    assert len(source.asked) == len(set(source.asked)) == 5 * 3


async def test_a_refusal_stops_the_prefetch_and_is_raised(tmp_path: Path) -> None:
    source = Source(files(6))
    cache = BlobCache(tmp_path, source.fetch, concurrency=2)
    with pytest.raises(Refused):
        await cache.prefetch([*wanted(source), (sha(b"gone"), "gone")])
    assert list(tmp_path.rglob("*.tmp")) == []
    # and the files that did arrive are whole
    kept = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(sha(p.read_bytes()) == p.name for p in kept)


async def test_sweep_removes_what_a_crash_left_mid_fetch(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, Source({}).fetch)
    name = sha(b"x")
    partial = cache.path(name).parent / f".{name}.abc.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    assert cache.sweep() == 1 and not partial.exists()


def test_a_name_that_is_no_sha256_never_becomes_a_path(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, Source({}).fetch)
    for bad in ("../../etc/passwd", "A" * 64, "a" * 63):
        with pytest.raises(ValueError):
            cache.path(bad)


# --- over NATS ------------------------------------------------------------------------------


def asked_with(replies: list[Any], monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """``bus.ask`` answering each of ``replies`` in turn (an exception is raised)."""
    sent: list[bytes] = []

    async def ask(nc: Any, subject: str, data: bytes, **kwargs: Any) -> Any:
        sent.append(data)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return SimpleNamespace(data=msgspec.json.encode(reply))

    monkeypatch.setattr(blobcache.bus, "ask", ask)
    return sent


def blob_query(where: tuple[str, str], offset: int) -> d.GetBlob:
    return d.GetBlob(dataset_id=where[0], image_id=where[1], offset=offset)


def chunk(data: bytes) -> d.BlobChunk:
    return d.BlobChunk(dataset_id="p", image_id="i", kind="image", offset=0, size=4, data=data)


async def test_the_nats_fetch_retries_an_outage_and_returns_the_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unavailable = common.CommandRejected(code=common.UNAVAILABLE, message="NATS is away")
    sent = asked_with([TimeoutError(), unavailable, chunk(b"abcd")], monkeypatch)
    fetch = query_pieces(None, d.Subjects.BLOB, blob_query, d.BlobChunk)  # type: ignore[arg-type]
    piece = await fetch(("p" * 32, "i" * 32), 0)
    assert (piece.data, piece.size, len(sent)) == (b"abcd", 4, 3)
    assert msgspec.json.decode(sent[0], type=d.GetBlob).image_id == "i" * 32


async def test_the_nats_fetch_raises_a_refusal_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = common.CommandRejected(code=common.NOT_FOUND, message="not in this dataset")
    sent = asked_with([missing], monkeypatch)
    fetch = query_pieces(None, d.Subjects.BLOB, blob_query, d.BlobChunk)  # type: ignore[arg-type]
    with pytest.raises(Refused) as refused:
        await fetch(("p" * 32, "i" * 32), 0)
    assert (refused.value.code, len(sent)) == (common.NOT_FOUND, 1)
