"""An import that uses every core: files decoded in a pool of processes answer exactly as one
process would, in order, a crashing file alone is refused, a cancel stops the sending, the
processes die with the service; each file is read once and opened as an image once, and the
blob store writes world-readable files without a chmod per file."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from contracts import datasets as c
from services.datasets import domain, imaging, sources
from services.datasets.decoding import CRASHED, Decoder, decode_file
from services.datasets.imaging import CorruptImage, ImageInfo, inspect
from services.datasets.importer import Importer, Job
from services.kernel.blobstore import BlobStore
from services.kernel.memstore import InMemoryEventStore
from services.kernel.repository import Repository
from tests import imagesets
from tests.unit.datasets.crashing import crash_on_bomb

BATCH = 4


def mixed_folder(root: Path, good: int) -> list[Path]:
    """``good`` images (JPEG and PNG) with, among them, each kind of file an import refuses."""
    kinds = [("png", "PNG"), ("jpg", "JPEG")]
    paths = [
        imagesets.write(root / f"{i:03d}.{kinds[i % 2][0]}", i, kinds[i % 2][1])
        for i in range(good)
    ]
    whole = paths[1].read_bytes()
    bad = {
        "cut.jpg": whole[: len(whole) // 2],
        "notes.jpg": b"just some notes\n",
        "empty.png": b"",
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    refused = [root / name for name in bad] + [root / "gone.png"]  # the last one does not exist
    for i, path in enumerate(refused):
        paths.insert(3 + i * 5, path)
    return paths


def outcome(result: ImageInfo | CorruptImage | None) -> Any:
    """A result as a comparable value (exceptions compare by identity)."""
    return ("refused", str(result)) if isinstance(result, CorruptImage) else result


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Decoder]:
    """Two processes, shared by the tests that do not break them."""
    pooled = Decoder(BlobStore(tmp_path_factory.mktemp("pooled"), durable=False), 2, batch=BATCH)
    yield pooled
    pooled.close()


def test_processes_answer_in_order_what_one_process_answers(
    tmp_path: Path, decoder: Decoder
) -> None:
    # given images among corrupt, empty, non-image and missing files
    paths = mixed_folder(tmp_path / "src", 30)
    here = BlobStore(tmp_path / "here")
    expected = [outcome(decode_file(path, here)) for path in paths]
    # when the pool decodes them
    results = [outcome(r) for r in decoder.decode(iter(paths), lambda: False)]
    # then each file gets what one process gives it, in order, refusals worded the same
    assert results == expected
    assert ("refused", "truncated file") in results and ("refused", "empty file") in results
    assert any(isinstance(r, tuple) and r[1].startswith("cannot read the file") for r in results)
    # in processes other than this one, as many as asked
    assert len(multiprocessing.active_children()) >= decoder.workers == 2
    # and they stored the same files, readable by every user
    for info in (r for r in results if isinstance(r, ImageInfo)):
        blob, thumb = (
            decoder.store.blob_path(info.sha256),
            decoder.store.thumb_path(info.sha256),
        )
        assert blob.read_bytes() == here.blob_path(info.sha256).read_bytes()
        assert thumb.read_bytes() == here.thumb_path(info.sha256).read_bytes()
        assert blob.stat().st_mode & 0o444 == 0o444


def test_a_cancel_stops_sending_files_and_the_pool_goes_on(
    tmp_path: Path, decoder: Decoder
) -> None:
    # given many files, and a cancel coming after the first result
    paths = [imagesets.write(tmp_path / f"{i}.png", 1000 + i) for i in range(120)]
    cancel = threading.Event()
    results = []
    # when they are decoded
    for result in decoder.decode(paths, cancel.is_set):
        results.append(result)
        cancel.set()
    # then one result per file, the files never sent (most of them) none
    assert len(results) == len(paths)
    decoded = [r for r in results if r is not None]
    assert 1 <= len(decoded) <= (2 * decoder.workers + 1) * BATCH
    assert all(r is None for r in results[len(decoded) :])
    # and the next import decodes everything
    assert all(isinstance(r, ImageInfo) for r in decoder.decode(paths, lambda: False))


def test_a_small_import_starts_no_process(tmp_path: Path) -> None:
    # given as many files as one batch
    paths = [imagesets.write(tmp_path / f"{i}.png", i) for i in range(BATCH)]
    here = Decoder(BlobStore(tmp_path / "store"), 2, batch=BATCH)
    # when they are decoded then they are, without a pool
    assert all(isinstance(r, ImageInfo) for r in here.decode(paths, lambda: False))
    assert here._pool is None


def test_a_file_that_kills_its_process_is_refused_alone(tmp_path: Path) -> None:
    # given images and, among them, a file the decoder dies on
    paths = [imagesets.write(tmp_path / f"{i}.png", 2000 + i) for i in range(2 * BATCH - 1)]
    paths.insert(BATCH + 1, imagesets.write(tmp_path / "bomb.png", 7))
    pooled = Decoder(BlobStore(tmp_path / "store"), 1, batch=BATCH, work=crash_on_bomb)
    try:
        # when they are decoded
        results = list(pooled.decode(paths, lambda: False))
    finally:
        pooled.close()
    # then that file is refused as the crash, and every other file is decoded
    assert [str(r) for r in results if isinstance(r, CorruptImage)] == [CRASHED]
    assert isinstance(results[BATCH + 1], CorruptImage)
    assert sum(isinstance(r, ImageInfo) for r in results) == 2 * BATCH - 1


def test_a_pool_shut_down_under_a_decode_is_started_again(tmp_path: Path) -> None:
    # given a decoder whose processes were stopped behind its back (as a broken pool refuses)
    paths = [imagesets.write(tmp_path / f"{i}.png", 3000 + i) for i in range(2 * BATCH)]
    pooled = Decoder(BlobStore(tmp_path / "store"), 1, batch=BATCH)
    try:
        assert all(isinstance(r, ImageInfo) for r in pooled.decode(paths, lambda: False))
        assert pooled._pool is not None
        pooled._pool.shutdown()
        # when it decodes again then a new pool does the work
        assert all(isinstance(r, ImageInfo) for r in pooled.decode(paths, lambda: False))
    finally:
        pooled.close()


SERVICE = """
import sys, time
from pathlib import Path
from services.datasets.decoding import Decoder
from services.kernel.blobstore import BlobStore

if __name__ == "__main__":
    paths = sorted(Path(sys.argv[1]).glob("*.png"))
    pooled = Decoder(BlobStore(Path(sys.argv[2])), 2, batch=2)
    assert all(r is not None for r in pooled.decode(paths, lambda: False))
    print(*(p.pid for p in pooled._pool._processes.values()), flush=True)
    time.sleep(120)
"""


def test_the_processes_die_with_a_killed_service(tmp_path: Path) -> None:
    # given a service that decoded with a pool and is then killed
    for i in range(6):
        imagesets.write(tmp_path / "src" / f"{i}.png", i)
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    cmd = [sys.executable, str(script), str(tmp_path / "src"), str(tmp_path / "store")]
    service = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert service.stdout is not None
    pids = [int(pid) for pid in service.stdout.readline().split()]
    assert len(pids) == 2
    service.send_signal(signal.SIGKILL)
    service.wait()
    # then its decoding processes end by themselves
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "a.jpg"), ("PNG", "a.png")])
def test_a_file_is_read_once_and_opened_as_an_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, name: str
) -> None:
    # given an image, and counters of the opens of its file and of Pillow's opens
    path = imagesets.write(tmp_path / name, 5, fmt)
    opens: list[str] = []
    images: list[object] = []
    real_open = Image.open

    def counted(fp: Any, *args: Any, **kwargs: Any) -> Any:
        images.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counted)
    _AUDIT.append((str(path), opens))
    try:
        # when it is inspected
        info = inspect(path, BlobStore(tmp_path / "store"))
    finally:
        _AUDIT.clear()
    # then its file was opened once, and decoded from one image open
    assert (info.format, len(opens), len(images)) == (fmt, 1, 1)


#: (path, list) while a test counts the opens of ``path``: an audit hook cannot be removed.
_AUDIT: list[tuple[str, list[str]]] = []


def _count_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _AUDIT and str(args[0]) == _AUDIT[0][0]:
        _AUDIT[0][1].append(event)


sys.addaudithook(_count_opens)


def test_a_png_failing_its_checksum_is_still_refused_from_one_open(tmp_path: Path) -> None:
    # given a PNG whose pixel data decodes but whose IDAT checksum is wrong
    data = bytearray(imagesets.write(tmp_path / "a.png", 9).read_bytes())
    data[data.index(b"IEND") - 5] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    # when it is inspected then the checksum is what refuses it, as verify() did
    with pytest.raises(CorruptImage, match=r"unreadable image: broken PNG file \(bad header"):
        inspect(tmp_path / "flipped.png", BlobStore(tmp_path / "store"))


def test_a_file_over_the_inline_limit_is_streamed_to_the_same_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an image, and the same image with a limit that makes it "big"
    path = imagesets.write(tmp_path / "a.jpg", 3, "JPEG")
    small = inspect(path, BlobStore(tmp_path / "small"))
    monkeypatch.setattr(imaging, "INLINE_MAX", 16)
    big_store = BlobStore(tmp_path / "big")
    # when it is inspected then it gets the same answer and stores the same bytes
    assert inspect(path, big_store) == small
    assert big_store.blob_path(small.sha256).read_bytes() == path.read_bytes()


def test_the_store_writes_readable_files_without_a_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given no chmod of any kind allowed
    def refuse(*args: object) -> None:
        raise AssertionError("chmod called")

    monkeypatch.setattr(os, "fchmod", refuse)
    monkeypatch.setattr(os, "chmod", refuse)
    store, sha = BlobStore(tmp_path, durable=False), hashlib.sha256(b"pixels").hexdigest()
    source = tmp_path / "src.bin"
    source.write_bytes(b"pixels")
    # when a blob is stored from bytes and from a file, and a thumbnail is stored
    assert store.put_bytes(b"pixels", sha) is True
    assert store.put_bytes(b"pixels", sha) is False
    store.put(source, hashlib.sha256(b"other").hexdigest())
    store.put_thumb(sha, b"thumb")
    # then every file is there, readable by all as the umask allows, and no temp file is left
    umask = os.umask(0)
    os.umask(umask)
    for path in (store.blob_path(sha), store.thumb_path(sha)):
        assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    assert not [p for p in tmp_path.rglob("*.tmp")]


async def test_an_import_through_the_pool_commits_whole_with_its_refusals(
    tmp_path: Path, decoder: Decoder
) -> None:
    # given a folder of 40 images and two files that are no images
    root = imagesets.folder(tmp_path / "src", {"cat": 25, "dog": 15})
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "cat" / "empty.png").write_bytes(b"")
    # when it is imported by an importer decoding in two processes
    events = await _import(root, decoder)
    # then it commits every image at once, with each refusal reported as before
    done = events[-1]
    assert isinstance(done, c.ImportCompleted), done
    added = [r for e in events if isinstance(e, c.ImagesAdded) for r in e.images]
    assert len(added) == 40 == done.report.imported
    assert sorted((p.file, p.reason) for p in done.report.corrupt) == [
        ("cat/empty.png", "empty file"),
        ("dog/broken.png", "not an image"),
    ]


async def _import(root: Path, decoder: Decoder) -> list[c.Event]:
    store: InMemoryEventStore[c.Event] = InMemoryEventStore(
        stream=c.STREAM, subject=c.event_subject, event_type=c.Event
    )
    datasets = Repository(store, domain.evolve, domain.Dataset())
    command = c.StartImport(
        dataset_id=uuid.uuid4().hex, import_id=uuid.uuid4().hex, source_kind="local",
        source=str(root), format="folder",
    )  # fmt: skip
    await store.append(command.dataset_id, domain.start(domain.Dataset(), command, "me"), 0)

    async def publish(job: Job) -> None:
        return None

    importer = Importer(
        decoder.store, datasets, publish, instance="me", zip_limits=sources.ZipLimits()
    )
    importer.decoder = decoder  # the module's pool: one start of processes for the module
    await importer.start(Job(command=command, root=root))
    return [s.event for s in await store.load(command.dataset_id)]


PINNED = """
import sys
from pathlib import Path
from services.datasets.decoding import Decoder
from services.kernel.blobstore import BlobStore
print(Decoder(BlobStore(Path(sys.argv[1]))).workers)
"""


def test_a_service_given_one_core_decodes_in_one_process(tmp_path: Path) -> None:
    # given a service started on one core only (as a container given one core, or the bench's
    # scaling figure: taskset / sched_setaffinity)
    core = min(os.sched_getaffinity(0))
    cmd = [sys.executable, "-c", PINNED, str(tmp_path / "store")]
    pinned = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    # then its pool has one process, where an unpinned one has one per core it may use
    assert pinned.stdout.split() == ["1"]
    assert Decoder(BlobStore(tmp_path / "store")).workers == len(os.sched_getaffinity(0))
