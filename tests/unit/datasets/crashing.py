"""A decoding process's work that dies on a file, as a crashing codec would: in a module of its
own, so that the processes unpickling it import only ``decoding`` (not a test module's imports)."""

from __future__ import annotations

import os

from services.datasets.decoding import decode_batch
from services.datasets.imaging import CorruptImage, ImageInfo


def crash_on_bomb(root: str, durable: bool, paths: list[str]) -> list[ImageInfo | CorruptImage]:
    """Dies on any batch holding a file named like a bomb; decodes any other."""
    if any("bomb" in os.path.basename(path) for path in paths):
        os._exit(3)
    return decode_batch(root, durable, paths)
