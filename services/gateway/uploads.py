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
from typing import IO, TYPE_CHECKING, Any

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from contracts import common
from services.gateway.envelope import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

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
    form = _Form(Upload(dest, ""), out, limit)
    parser = MultipartParser(boundary, form.callbacks())
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except Exception as exc:
            raise ApiError(common.VALIDATION_ERROR, f"malformed multipart body: {exc}") from None
        if form.errors:
            raise form.errors[0]
    with contextlib.suppress(Exception):
        parser.finalize()
    if not form.upload.filename:
        raise ApiError(common.VALIDATION_ERROR, "the form has no file part", field="file")
    return form.upload


class _Form:
    """The parser's callbacks: the one file part streams to ``out`` (up to ``limit`` bytes),
    text fields (up to ``MAX_FIELD_BYTES``) go to ``upload.fields``. The callbacks cannot raise
    through the parser, so what goes wrong is kept in ``errors`` for the reader to raise."""

    def __init__(self, upload: Upload, out: IO[bytes], limit: int) -> None:
        self.upload, self.out, self.limit = upload, out, limit
        self.errors: list[ApiError] = []
        self.part: dict[str, Any] = {}
        self.headers: dict[bytes, bytes] = {}
        self.header_name = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.header_name.clear,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = bytes(self.header_name).lower()
        self.headers[key] = self.headers.get(key, b"") + data[start:end]

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.part.update(name=name, file=filename is not None, value=bytearray())
        if filename is not None:
            if self.upload.filename:
                self.errors.append(ApiError(common.VALIDATION_ERROR, "send one file", field="file"))
            self.upload.filename = filename.decode("utf-8", "replace") or "upload.zip"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.get("file"):
            self.upload.size += end - start
            if self.upload.size > self.limit:
                self.errors.append(_too_large(self.limit))
                return
            self.out.write(data[start:end])
        elif len(self.part["value"]) + end - start > MAX_FIELD_BYTES:
            self.errors.append(ApiError(common.VALIDATION_ERROR, "a form field is too long"))
        else:
            self.part["value"].extend(data[start:end])

    def on_part_end(self) -> None:
        if not self.part.get("file"):
            self.upload.fields[self.part["name"]] = self.part["value"].decode("utf-8", "replace")
        self.headers.clear()
        self.part.clear()


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
