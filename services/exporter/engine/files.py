"""Writing an output file so readers see the old one or the whole new one, never a part."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def temp_for(out: Path) -> Path:
    """A sibling of ``out`` on the same file system (so ``os.replace`` is atomic), keeping
    its suffix because exporters pick the format from it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")


def publish(tmp: Path, out: Path) -> None:
    """Moves the finished ``tmp`` onto ``out``, both durable on return."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, out)


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
