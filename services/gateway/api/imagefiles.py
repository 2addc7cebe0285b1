"""An image's or thumbnail's bytes, served through the ``Blobs`` port: the access check, the
lookup in the read model, the ETag (an image id is the sha256 of its bytes), the stream."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from contracts import common
from contracts import datasets as c
from services.gateway.access import require
from services.gateway.blobs import blobs_of
from services.gateway.envelope import ApiError
from services.gateway.readmodels import datasets as read

MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}


async def serve_image(
    request: Request,
    db: Any,
    project_id: str,
    image_id: str,
    kind: c.BlobKind,
    if_none_match: str | None,
) -> Response:
    """The image's or thumbnail's bytes through the ``Blobs`` port, streamed; 304 when the
    client has them (an image id is the sha256 of its bytes: they never change)."""
    await require(request, project_id, "viewer")
    row = await image_row(db, project_id, image_id)
    if kind == "thumbnail":
        media_type, tag = "image/jpeg", f'"t-{row.image_id}"'
    else:
        media_type, tag = MIME.get(row.format, "application/octet-stream"), f'"{row.image_id}"'
    headers = {"ETag": tag, "Cache-Control": "private, max-age=31536000, immutable"}
    if if_none_match and tag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    blob = await blobs_of(request).image(request, row.dataset_id, row.image_id, kind)
    headers["Content-Length"] = str(blob.size)
    return StreamingResponse(blob.chunks, media_type=media_type, headers=headers)


async def image_row(db: Any, project_id: str, image_id: str) -> read.ImageRow:
    row = await read.get_image(db, dataset_id=project_id, image_id=image_id)
    if row is None:
        raise ApiError(common.NOT_FOUND, f"image {image_id} is not in this dataset")
    return row
