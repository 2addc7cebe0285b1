"""Content-addressed file store for dataset images and their thumbnails.

Layout under ``root``: ``blobs/<aa>/<bb>/<sha256>`` for originals and
``thumbs/<aa>/<bb>/<sha256>.jpg`` for thumbnails. Every write lands in a temp file in the target
folder, is fsynced and then renamed over the final name, so readers never see a partial file and
two processes storing the same blob at once both succeed. The temp file is created world-readable
under a name unique to this process (no ``mkstemp`` + ``chmod``: two system calls per file that an
import of 10,000 images paid 20,000 times), and folders are only made when a write finds them
missing. A full disk raises ``DiskFull`` (never a bare ``OSError``, which readers of files take
for an unreadable file) and leaves no temp file behind. Pure filesystem: imports nothing from
``services``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Temp names unique to this process (its pid can be reused by a process on another machine
#: sharing the folder; the token cannot), numbered by a counter safe across its threads.
_TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"
_SERIAL = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class BlobStore:
    """Content-addressed files under a root: ``blobs/<aa>/<bb>/<sha256>`` and
    ``thumbs/<aa>/<bb>/<sha256>.jpg``."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        """``durable=False`` skips the per-file fsyncs: a bulk writer calls ``sync()`` once
        before it records anything that refers to what it wrote (an import: 3 times faster)."""
        self.root = Path(root)
        self.durable = durable
        self._root = str(self.root)

    def sync(self) -> None:
        """Flush every file written so far to disk."""
        os.sync()

    def blob_path(self, sha256: str) -> Path:
        return Path(self._file("blobs", sha256, ""))

    def thumb_path(self, sha256: str) -> Path:
        return Path(self._file("thumbs", sha256, ".jpg"))

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self._file("blobs", sha256, ""))

    def has_thumb(self, sha256: str) -> bool:
        return os.path.isfile(self._file("thumbs", sha256, ".jpg"))

    def put(self, src: Path, sha256: str) -> bool:
        """Copy ``src`` in unless already stored; True if this call stored it.

        The caller vouches that ``sha256`` is the digest of ``src``. Under a race two callers
        may both return True: each renames identical bytes over the same name, which is harmless.
        """
        dest = self._file("blobs", sha256, "")
        if os.path.isfile(dest):
            return False
        with open(src, "rb") as source:
            _write_atomic(dest, lambda out: shutil.copyfileobj(source, out, 1 << 20), self.durable)
        return True

    def put_bytes(self, data: bytes, sha256: str) -> bool:
        """Store ``data`` unless already stored; True if this call stored it (as :meth:`put`)."""
        dest = self._file("blobs", sha256, "")
        if os.path.isfile(dest):
            return False
        _write_atomic(dest, lambda out: out.write(data), self.durable)
        return True

    def put_thumb(self, sha256: str, data: bytes) -> None:
        _write_atomic(
            self._file("thumbs", sha256, ".jpg"), lambda out: out.write(data), self.durable
        )

    def _file(self, kind: str, sha256: str, suffix: str) -> str:
        """The file's path as a string: an import writes two files per image, and building them
        as ``Path`` objects cost more than the writes themselves on small images."""
        # Validating here keeps a crafted id such as "../../etc" from ever reaching a path.
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return f"{self._root}/{kind}/{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


class DiskFull(Exception):
    """The store's disk (or quota) is full: a failure of the store, not of the file being
    stored, so no reader of files may take it for an unreadable one (an ``OSError``). Carries
    ``errno`` (ENOSPC) and survives pickling, for a pool process to hand it back whole."""

    def __init__(self, message: str, code: int = errno.ENOSPC) -> None:
        super().__init__(message, code)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def _write_atomic(dest: str, fill: Callable[[BinaryIO], object], durable: bool = True) -> None:
    try:
        tmp, fd = _create_temp(dest)
    except OSError as exc:
        _raise_if_full(exc, dest)
        raise
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        _unlink(tmp)  # a half-written temp file is never left to fill the disk
        _raise_if_full(exc, dest)
        raise
    except BaseException:
        _unlink(tmp)
        raise
    if durable:
        _fsync_dir(os.path.dirname(dest))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _raise_if_full(exc: OSError, dest: str) -> None:
    """``DiskFull`` (from ``exc``) when ``exc`` says the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(f"{exc.strerror} writing {dest}", exc.errno) from exc


def _create_temp(dest: str) -> tuple[str, int]:
    """A new temp file beside ``dest``, readable by all (blobs are served by other processes)."""
    folder, name = os.path.split(dest)
    while True:
        tmp = f"{folder}/.{name}.{_TOKEN}-{next(_SERIAL)}.tmp"
        try:
            return tmp, os.open(tmp, _CREATE, 0o644)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            continue  # left by a process that crashed with our pid and token: next number


def _fsync_dir(folder: str) -> None:
    # The rename is only durable once the folder entry is on disk; not every OS allows this.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
