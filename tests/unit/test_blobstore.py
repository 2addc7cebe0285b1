"""The content-addressed blob store: layout, idempotent and atomic writes, id validation."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from services.kernel.blobstore import BlobStore


def _file(tmp_path: Path, data: bytes, name: str = "src.bin") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def test_put_copies_the_file_under_a_two_level_fanout(tmp_path: Path) -> None:
    # given a file and an empty store
    src, sha = _file(tmp_path, b"pixels")
    store = BlobStore(tmp_path / "store")
    # when it is put
    stored = store.put(src, sha)
    # then it sits at blobs/<aa>/<bb>/<sha> with the same bytes
    assert stored is True
    assert store.blob_path(sha) == tmp_path / "store" / "blobs" / sha[:2] / sha[2:4] / sha
    assert store.blob_path(sha).read_bytes() == b"pixels"
    assert store.has(sha)
    assert store.thumb_path(sha) == tmp_path / "store" / "thumbs" / sha[:2] / sha[2:4] / (
        sha + ".jpg"
    )


def test_putting_the_same_blob_twice_stores_it_once(tmp_path: Path) -> None:
    # given a blob already stored
    src, sha = _file(tmp_path, b"pixels")
    store = BlobStore(tmp_path / "store")
    store.put(src, sha)
    # when it is put again
    again = store.put(src, sha)
    # then nothing is written and the caller is told so
    assert again is False
    assert store.blob_path(sha).read_bytes() == b"pixels"
    assert _leftovers(store.root) == []


def test_concurrent_puts_of_one_blob_all_succeed(tmp_path: Path) -> None:
    # given sixteen writers released at the same instant with the same 2 MiB blob
    src, sha = _file(tmp_path, bytes(range(256)) * 8192)
    store = BlobStore(tmp_path / "store")
    start = threading.Barrier(16)
    results: list[bool] = []
    errors: list[BaseException] = []

    def writer() -> None:
        start.wait()
        try:
            results.append(store.put(src, sha))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(16)]
    # when they all put it
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then none fails, the blob is whole and no temp file is left behind
    assert errors == []
    assert len(results) == 16 and any(results)
    assert hashlib.sha256(store.blob_path(sha).read_bytes()).hexdigest() == sha
    assert _leftovers(store.root) == []


def test_put_thumb_replaces_atomically(tmp_path: Path) -> None:
    # given a thumbnail already written
    store = BlobStore(tmp_path)
    sha = "ab" * 32
    store.put_thumb(sha, b"old")
    # when it is written again
    store.put_thumb(sha, b"new")
    # then readers see the new bytes and no temp file remains
    assert store.thumb_path(sha).read_bytes() == b"new"
    assert store.has_thumb(sha)
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    # given a write that fails half way (not bytes)
    store = BlobStore(tmp_path)
    sha = "cd" * 32
    # when it is attempted
    with pytest.raises(TypeError):
        store.put_thumb(sha, "not bytes")  # type: ignore[arg-type]
    # then neither the thumbnail nor its temp file exists
    assert not store.has_thumb(sha)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "bad", ["", "ab" * 31, "AB" * 32, "g" * 64, "../" + "a" * 61, "a" * 63 + "/", "a" * 65]
)
def test_a_malformed_sha256_is_refused(tmp_path: Path, bad: str) -> None:
    # given a store
    store = BlobStore(tmp_path)
    # when a malformed id is used for any path then it is refused before touching the disk
    for call in (store.blob_path, store.thumb_path, store.has):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError):
        store.put(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []
