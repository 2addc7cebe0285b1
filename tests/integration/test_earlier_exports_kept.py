"""Exports completed before their files went to the Object Store: the exporter puts their files
there at start (``services.exporter.files.keep_earlier``), against a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from contracts import exports as x
from services.exporter.files import keep_earlier
from services.kernel import artifacts

pytestmark = pytest.mark.integration


def folder(workdir: Path, export_id: str, *names: str) -> None:
    (workdir / export_id).mkdir(parents=True)
    for name in names:
        (workdir / export_id / name).write_bytes(f"{export_id}/{name}".encode())


async def read(nc: NATS, name: str) -> bytes:
    stream = await artifacts.read(nc.jetstream(), x.EXPORTS_BUCKET, name)
    return b"".join([chunk async for chunk in stream.chunks])


async def test_an_earlier_exports_files_are_put_once_and_unfinished_ones_are_not(
    nc: NATS, tmp_path: Path
):
    files = await nc.jetstream().create_object_store(x.EXPORTS_BUCKET)
    workdir = tmp_path / "exports"
    folder(workdir, "done", "model.onnx", x.BUNDLE_NAME, "checkpoint.pt")
    folder(workdir, "script", "model.pt", x.BUNDLE_NAME)
    folder(workdir, "unfinished", "model.onnx", "checkpoint.pt")  # no bundle: never completed
    (workdir / "stray.txt").write_text("not an export")

    put = await keep_earlier(files, workdir)

    assert sorted(put) == sorted(
        x.export_object(e, n)
        for e, n in (
            ("done", "model.onnx"),
            ("done", x.BUNDLE_NAME),
            ("script", "model.pt"),
            ("script", x.BUNDLE_NAME),
        )
    )
    assert await read(nc, x.export_object("done", "model.onnx")) == b"done/model.onnx"
    assert await keep_earlier(files, workdir) == []  # once only


async def test_no_work_folder_puts_nothing(nc: NATS, tmp_path: Path):
    files = await nc.jetstream().create_object_store(x.EXPORTS_BUCKET)
    assert await keep_earlier(files, tmp_path / "none") == []
