"""Exported files kept before the exports bucket existed, put there once at start.

An export's model file and bundle are served from the Object Store (``EXPORTS_BUCKET``), where
the export job puts them before it records the export completed. Exports completed before that
have their files only in this exporter's work folder (``<workdir>/<export id>/``):
``keep_earlier`` puts each such file the bucket lacks under its declared name, so downloads of
an existing studio keep working after an upgrade. Only a folder holding a bundle is taken: the
bundle is written last, once parity has passed. Imports ``contracts`` and the kernel.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import exports as x
from services.kernel import artifacts

log = logging.getLogger(__name__)

#: The model file names an export job writes (ONNX, TorchScript).
MODEL_FILES = ("model.onnx", "model.pt")


async def keep_earlier(files: ObjectStore, workdir: Path) -> list[str]:
    """Puts in the bucket every exported file of ``workdir`` it lacks; returns their names."""
    try:
        kept = {info.name for info in await files.list(ignore_deletes=True)}
    except NotFoundError:  # an empty bucket
        kept = set()
    put: list[str] = []
    for folder, paths in await asyncio.to_thread(_exported, workdir):
        for path in paths:
            name = x.export_object(folder, path.name)
            if name not in kept:
                await artifacts.upload(files, name, path)
                put.append(name)
    if put:
        log.info("put %d exported files of earlier exports in %s", len(put), x.EXPORTS_BUCKET)
    return put


def _exported(workdir: Path) -> list[tuple[str, list[Path]]]:
    """(export id, its model file and bundle) of each export folder that holds a bundle."""
    if not workdir.is_dir():
        return []
    found = []
    for folder in sorted(p for p in workdir.iterdir() if p.is_dir()):
        bundle = folder / x.BUNDLE_NAME
        models = [folder / name for name in MODEL_FILES if (folder / name).is_file()]
        if bundle.is_file() and models:
            found.append((folder.name, [*models, bundle]))
    return found
