"""Decodes an import's files in a pool of processes, one per core: digest, decode, hashes,
thumbnail and the two writes of ``imaging.inspect``, in order, with a bounded window in flight.

Threads cannot do this work side by side (Pillow and numpy hold the GIL for much of a small
image), so the import runs it in processes. They are *spawned* (the service has threads, which
``fork`` would copy mid-flight), started on the first import that needs them and kept for the
next ones; each starts light, importing only ``imaging`` and the blob store. Files go out in
batches (one message per file would cost as much as a small image's decoding), at most twice
as many batches as workers in flight, so memory stays flat however large the import. An import
of one batch or less is decoded in the calling thread: starting processes would cost more.

A pool process ends when the service does, even when the service is killed.
A file that kills its process (a decoder crashing on crafted input) is reported corrupt, alone:
the pool is started again and the files of the batches lost with it are decoded one at a time.

Imports ``imaging`` and the kernel's blob store only.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from services.datasets.imaging import CorruptImage, ImageInfo, inspect
from services.kernel.blobstore import BlobStore

#: Files sent to a process in one message.
BATCH = 32
#: What one file becomes: described, refused with a reason, or None when cancelled before it.
Result = ImageInfo | CorruptImage | None
#: Why a file whose decoding killed its process is refused.
CRASHED = "the image decoder crashed on this file"


def decode_file(path: Path, store: BlobStore) -> ImageInfo | CorruptImage:
    """One file's outcome as a value: an unreadable file is refused like a corrupt one."""
    try:
        return inspect(path, store)
    except CorruptImage as exc:
        return exc
    except OSError as exc:
        return CorruptImage(f"cannot read the file: {exc.strerror or exc}")


def decode_batch(root: str, durable: bool, paths: list[str]) -> list[ImageInfo | CorruptImage]:
    """What a pool process runs: a batch of files, into the store at ``root``."""
    store = BlobStore(Path(root), durable=durable)
    return [decode_file(Path(path), store) for path in paths]


#: What a process runs on a batch: (store root, durable, paths) -> one outcome per path.
Work = Callable[[str, bool, list[str]], list[ImageInfo | CorruptImage]]


def cores() -> int:
    """The cores this process may run on (not the machine's: a container may get fewer)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Decoder:
    """Decodes files into ``store`` in ``workers`` processes (default: one per core).

    ``work`` is what a process runs on a batch (a module-level function, as ``decode_batch``).
    """

    def __init__(
        self, store: BlobStore, workers: int = 0, *, batch: int = BATCH, work: Work | None = None
    ) -> None:
        self.store = store
        self.workers = workers or cores()
        self._batch = batch
        self._work = work or decode_batch
        self._pool: ProcessPoolExecutor | None = None
        # Imports running at once share the pool: one of them starts it, or starts it again.
        self._lock = threading.Lock()

    def decode(
        self, paths: Iterable[Path], cancelled: Callable[[], bool]
    ) -> Generator[Result, None, None]:
        """One result per path, in order; once ``cancelled()``, None for each file left.
        Closing it early (``contextlib.closing``) withdraws the batches not yet started."""
        files = iter(paths)
        first = list(islice(files, self._batch + 1))
        if len(first) <= self._batch:
            yield from self._here(first, cancelled)
            return
        yield from self._pooled(_chain(first, files), cancelled)

    def close(self) -> None:
        """Stops the processes (they start again on the next import that needs them)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _here(self, paths: list[Path], cancelled: Callable[[], bool]) -> Iterator[Result]:
        for path in paths:
            yield None if cancelled() else decode_file(path, self.store)

    def _pooled(self, files: Iterator[Path], cancelled: Callable[[], bool]) -> Iterator[Result]:
        window: deque[_Sent] = deque()
        batches = _batches(files, self._batch)
        try:
            while True:
                while len(window) < 2 * self.workers and not cancelled():
                    batch = next(batches, None)
                    if batch is None:
                        break
                    window.append(self._submit(batch))
                if not window:
                    break
                yield from self._outcome(window.popleft(), cancelled)
        finally:
            for sent in window:
                sent.future.cancel()
        for batch in batches:  # cancelled: the files never sent
            yield from (None for _ in batch)

    def _outcome(self, sent: _Sent, cancelled: Callable[[], bool]) -> Iterator[Result]:
        if cancelled() and sent.future.cancel():
            yield from (None for _ in sent.batch)
            return
        try:
            results = sent.future.result()
        except BrokenProcessPool:
            # Every batch in flight is lost with the pool, and each comes here in turn.
            self._discard(sent.pool)
            results = [self._alone(path) for path in sent.batch]
        yield from results

    def _alone(self, path: str) -> ImageInfo | CorruptImage:
        """One file in a pool of its own making: if it breaks the pool again, it is the culprit."""
        sent = self._submit([path])
        try:
            return sent.future.result()[0]
        except BrokenProcessPool:
            self._discard(sent.pool)
            return CorruptImage(CRASHED)

    def _submit(self, batch: list[str]) -> _Sent:
        root, durable = str(self.store.root), self.store.durable
        pool = self._current()
        try:
            return _Sent(batch, pool.submit(self._work, root, durable, batch), pool)
        except (BrokenProcessPool, RuntimeError):  # broke (or was shut down) since: a new one
            self._discard(pool)
        pool = self._current()
        return _Sent(batch, pool.submit(self._work, root, durable, batch), pool)

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, multiprocessing.get_context("spawn"), initializer=_in_pool
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not pool:  # another import has started a new one already
                return
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Sent:
    """A batch in flight, and the pool it went to."""

    batch: list[str]
    future: Future[list[ImageInfo | CorruptImage]]
    pool: ProcessPoolExecutor


def _in_pool() -> None:
    """A pool process ends with the service, however the service ends: the pool stops it on a
    clean exit, but a killed service would leave it (and the memory it holds) behind. Ctrl-C
    is the service's to handle, not each process's to print a traceback for."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable once the service is gone
    os._exit(1)


def _chain(first: list[Path], rest: Iterator[Path]) -> Iterator[Path]:
    yield from first
    yield from rest


def _batches(files: Iterator[Path], size: int) -> Iterator[list[str]]:
    while batch := [str(path) for path in islice(files, size)]:
        yield batch
