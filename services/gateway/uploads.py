"""Streams an uploaded archive straight to a file, never whole in memory, within a size limit.

Accepts ``multipart/form-data`` (one file part plus small text fields) or a raw body
(``application/zip`` / ``application/octet-stream``). Anything over the limit stops the upload
at once with 413 and leaves no file behind.

A staged file is the gateway's until the datasets service claims it by moving it into its own
staging folder: whatever the import's answer (accepted, refused, 503), what is still under the
gateway's name is deleted. What a crashed gateway left is swept once it has lain untouched for
``STALE_AFTER_S``: a file being received is written to all the time, and a received one is
claimed (or deleted) within a request's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from contracts import common
from services.gateway.envelope import ApiError

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 4096
#: A staged upload not written for this long belongs to no request any more.
STALE_AFTER_S = 3600.0
#: How often uploads sweep the folder of what crashes left.
SWEEP_EVERY_S = 600.0
RAW_TYPES = (b"application/zip", b"application/x-zip-compressed", b"application/octet-stream")


@dataclass
class Upload:
    path: Path
    filename: str
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        "ARCHIVE_TOO_LARGE", f"the upload is larger than {limit} bytes", field="file", status=413
    )


async def receive(request: Request, dest: Path, limit: int) -> Upload:
    """Write the request's archive to ``dest``; returns it with the form's text fields."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    try:
        with dest.open("wb") as out:
            if kind == b"multipart/form-data" and b"boundary" in params:
                upload = await _multipart(request, params[b"boundary"], out, dest, limit)
            elif kind in RAW_TYPES:
                upload = await _raw(request, out, dest, limit)
            else:
                raise ApiError(
                    "UNSUPPORTED_MEDIA_TYPE",
                    "send the archive as multipart/form-data (field 'file') or as application/zip",
                    field="file",
                    status=415,
                )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if upload.size == 0:
        dest.unlink(missing_ok=True)
        raise ApiError(common.VALIDATION_ERROR, "no file was uploaded", field="file")
    return upload


async def _raw(request: Request, out: IO[bytes], dest: Path, limit: int) -> Upload:
    upload = Upload(dest, request.query_params.get("filename") or "upload.zip")
    async for chunk in request.stream():
        upload.size += len(chunk)
        if upload.size > limit:
            raise _too_large(limit)
        out.write(chunk)
    return upload


async def _multipart(
    request: Request, boundary: bytes, out: IO[bytes], dest: Path, limit: int
) -> Upload:
    upload = Upload(dest, "")
    part: dict[str, Any] = {}
    headers: dict[bytes, bytes] = {}
    header_name = bytearray()
    errors: list[ApiError] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = bytes(header_name).lower()
        headers[key] = headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        header_name.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        part.update(name=name, file=filename is not None, value=bytearray())
        if filename is not None:
            if upload.filename:
                errors.append(ApiError(common.VALIDATION_ERROR, "send one file", field="file"))
            upload.filename = filename.decode("utf-8", "replace") or "upload.zip"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("file"):
            upload.size += end - start
            if upload.size > limit:
                errors.append(_too_large(limit))
                return
            out.write(data[start:end])
        elif len(part["value"]) + end - start > MAX_FIELD_BYTES:
            errors.append(ApiError(common.VALIDATION_ERROR, "a form field is too long"))
        else:
            part["value"].extend(data[start:end])

    def on_part_end() -> None:
        if not part.get("file"):
            upload.fields[part["name"]] = part["value"].decode("utf-8", "replace")
        headers.clear()
        part.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except Exception as exc:
            raise ApiError(common.VALIDATION_ERROR, f"malformed multipart body: {exc}") from None
        if errors:
            raise errors[0]
    with contextlib.suppress(Exception):
        parser.finalize()
    if not upload.filename:
        raise ApiError(common.VALIDATION_ERROR, "the form has no file part", field="file")
    return upload


def sweep(folder: Path, stale_after: float = STALE_AFTER_S) -> list[Path]:
    """Delete the staged uploads in ``folder`` nobody has written for ``stale_after`` seconds."""
    cutoff = time.time() - stale_after
    removed = []
    for path in folder.glob("*.zip"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # claimed or deleted meanwhile
            continue
    if removed:
        log.warning("removed %d staged uploads left by a crash", len(removed))
    return removed


class Sweeper:
    """Sweeps an upload folder now and then: at most once every ``every`` seconds."""

    def __init__(self, every: float = SWEEP_EVERY_S) -> None:
        self.every = every
        self._last = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True
