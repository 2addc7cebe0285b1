"""The gateway's port to the files other services keep: a dataset's images and thumbnails, an
export's model file and bundle. The gateway never opens another service's folders, so that it
can run on another machine than they do.

- **Images and thumbnails come by query** (``qry.datasets.blob``): the datasets service reads
  them from its own blob store and answers a piece of at most ``BLOB_CHUNK_MAX`` bytes at a
  time, so an image of any size is streamed without being whole in a message or in memory.
  Chosen over copying every image into the Object Store: an import of 50,000 images would write
  each of them twice (and a thumbnail twice), while a query reads the one copy the datasets
  service has, and answers for the dataset itself, so an image deleted from a dataset is no
  longer served through it. A thumbnail is one small answer. There is no local fast path
  beside it: through the query a thumbnail takes about 4 ms and a 6.8 MB original about 55 ms
  (gateway to client, loaded 2-core machine), and one path is one thing to test.
- **Export files come from the Object Store** (``contracts.exports.EXPORTS_BUCKET``, under
  ``export_object(export_id, name)``): the exporter puts them there before it records the
  export completed (files before facts). They are streamed chunk by chunk
  (``kernel.artifacts.read``), never whole in memory, whatever their size.

Routes reach both through the ``Blobs`` protocol (``blobs_of(request)``); the app may set
another implementation on ``app.state.blobs`` (a test's, say). ``send_export_file`` turns an
export's file into a download (checksum headers, one byte range). Imports ``contracts``, the
kernel and the gateway's own modules.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from contracts import common
from contracts import datasets as d
from contracts import exports as x
from services.gateway.envelope import REQUEST_ID, ApiError
from services.gateway.gateway import Gateway, get_gateway
from services.kernel import artifacts


@dataclass(frozen=True)
class Blob:
    """A file being read: its whole ``size``, and its bytes from where the read starts."""

    size: int
    chunks: AsyncIterator[bytes]


class FileMissing(Exception):
    """No file is kept under that name (anymore)."""


class Blobs(Protocol):
    async def image(
        self, request: Request, dataset_id: str, image_id: str, kind: d.BlobKind
    ) -> Blob:
        """An image's (``kind="image"``) or thumbnail's bytes; ``ApiError`` NOT_FOUND when the
        dataset does not hold it or its file is missing."""
        ...

    async def export_file(self, object_name: str, start: int = 0) -> Blob:
        """An export's file from byte ``start``; ``FileMissing`` when it is not kept."""
        ...


class NatsBlobs:
    """``Blobs`` over NATS: the datasets service's query, and the exports bucket."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def image(
        self, request: Request, dataset_id: str, image_id: str, kind: d.BlobKind
    ) -> Blob:
        # The first piece is asked for before anything is sent, so a refusal is still an error
        # answer (404) rather than a response cut short.
        first = await self._piece(request, dataset_id, image_id, kind, 0)
        return Blob(first.size, self._pieces(request, first))

    async def _pieces(self, request: Request, first: d.BlobChunk) -> AsyncIterator[bytes]:
        piece = first
        while True:
            if piece.data:
                yield piece.data
            offset = piece.offset + len(piece.data)
            if offset >= piece.size or not piece.data:
                return
            piece = await self._piece(request, first.dataset_id, first.image_id, first.kind, offset)

    async def _piece(
        self, request: Request, dataset_id: str, image_id: str, kind: str, offset: int
    ) -> d.BlobChunk:
        query = d.GetBlob(
            dataset_id=dataset_id,
            image_id=image_id,
            kind=kind,  # type: ignore[arg-type]  # one of d.BlobKind, as asked first
            offset=offset,
            correlation_id=REQUEST_ID.get(),
        )
        return await self.gateway.ask(d.Subjects.BLOB, query, d.BlobChunk, request)

    async def export_file(self, object_name: str, start: int = 0) -> Blob:
        try:
            stream = await artifacts.read(self.gateway.js, x.EXPORTS_BUCKET, object_name, start)
        except artifacts.ArtifactMissing:
            raise FileMissing(object_name) from None
        return Blob(stream.size, stream.chunks)


def blobs_of(request: Request) -> Blobs:
    """The app's ``Blobs``: ``app.state.blobs`` when set, else NATS's (made once)."""
    state = request.app.state
    if getattr(state, "blobs", None) is None:
        state.blobs = NatsBlobs(get_gateway(request))
    blobs: Blobs = state.blobs
    return blobs


def export_missing(export_id: str) -> ApiError:
    return ApiError(
        common.NOT_FOUND,
        f"the files of export {export_id} are not kept (it was made before exports were kept "
        "in the Object Store, or they were removed): export the run again",
    )


async def send_export_file(
    request: Request,
    export_id: str,
    object_name: str,
    filename: str,
    sha256: str,
    media: str | None,
) -> Response:
    """An export's file as a download: streamed from the ``Blobs`` port, its sha256 in
    ``X-Checksum-SHA256`` and ``Repr-Digest``; one byte range (``Range: bytes=…``) is honoured
    with a 206, several ranges are answered with the whole file."""
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    headers = {
        "X-Checksum-SHA256": sha256,
        "Repr-Digest": f"sha-256=:{digest}:",
        "ETag": f'"{sha256}"',
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    blobs = blobs_of(request)
    try:
        blob = await blobs.export_file(object_name)
        wanted = _range(request.headers, headers["ETag"], blob.size)
        if wanted is None:
            headers["Content-Length"] = str(blob.size)
            return StreamingResponse(blob.chunks, media_type=media, headers=headers)
        if wanted == UNSATISFIABLE:
            headers["Content-Range"] = f"bytes */{blob.size}"
            return Response(status_code=416, headers=headers)
        start, end = wanted
        part = await blobs.export_file(object_name, start)
    except FileMissing:
        raise export_missing(export_id) from None
    headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    headers["Content-Length"] = str(end - start + 1)
    body = _first(part.chunks, end - start + 1)
    return StreamingResponse(body, status_code=206, media_type=media, headers=headers)


UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _range(headers: Mapping[str, str], etag: str, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as (first, last) byte; None for the whole file (no range,
    several, a malformed one, or an ``If-Range`` that no longer matches); ``UNSATISFIABLE``."""
    asked = _RANGE.fullmatch((headers.get("range") or "").strip())
    if_range = headers.get("if-range")
    if asked is None or (if_range is not None and if_range != etag):
        return None
    first, last = asked.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return UNSATISFIABLE
    return start, end


async def _first(chunks: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """The first ``length`` bytes of ``chunks``; the rest is not read."""
    async for chunk in chunks:
        yield chunk[:length]
        length -= len(chunk)
        if length <= 0:
            await chunks.aclose()  # type: ignore[attr-defined]
            return
