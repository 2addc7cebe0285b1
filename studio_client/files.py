"""Files to and from the studio, streamed from and to disk, never whole in memory.

``multipart_upload`` makes a ``multipart/form-data`` body of one file part (the gateway's
``file`` field) read from disk in chunks as it is sent, with its exact length known up front
and a progress callback. ``download`` writes an answer to a temporary file beside the target,
hashing as it writes, and renames it into place only when its sha256 is the one the gateway
announced (``X-Checksum-SHA256``), or, for an answer streamed as it is made (no checksum up
front, e.g. a dataset export), when a ``check`` of the file (``zip_problem``) finds it whole:
a broken or corrupted download never leaves a file that looks whole. Imports httpx and the
package's errors only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from studio_client.errors import ChecksumMismatch, StudioError

__all__ = ["CHUNK", "Progress", "Upload", "download", "multipart_upload", "zip_problem"]

#: Bytes read from disk or the network at a time.
CHUNK = 256 * 1024
#: ``progress(done, total)``: bytes sent or received so far, and of how many (``None``:
#: unknown). Called from the thread the client's event loop runs in.
Progress = Callable[[int, int | None], None]
CHECKSUM_HEADER = "x-checksum-sha256"


@dataclass(frozen=True)
class Upload:
    """A multipart body ready to send: its headers and a maker of its byte stream."""

    content_type: str
    length: int
    stream: Callable[[], AsyncIterator[bytes]]


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")


def multipart_upload(
    path: Path,
    *,
    field: str = "file",
    content_type: str = "application/zip",
    fields: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Upload:
    """The body of a form with ``fields`` and the file ``path`` as ``field``."""
    boundary = f"studio-{uuid.uuid4().hex}"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n'.encode()
        + f"{v}\r\n".encode()
        for k, v in (fields or {}).items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(field)}"; '
        f'filename="{_quote(path.name)}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        if progress:
            progress(0, size)
        yield head
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                sent += len(chunk)
                yield chunk
                if progress:
                    progress(sent, size)
        yield tail

    return Upload(
        content_type=f"multipart/form-data; boundary={boundary}",
        length=len(head) + size + len(tail),
        stream=stream,
    )


async def download(
    response: httpx.Response,
    target: Path,
    progress: Progress | None = None,
    *,
    check: Callable[[Path], str | None] | None = None,
) -> str:
    """Write the streamed ``response`` to ``target``; returns its sha256 (hex), verified
    against the header, and ``check(file)`` (why it is not whole, or None) where given; an
    answer with neither is refused."""
    expected = (response.headers.get(CHECKSUM_HEADER) or "").strip().lower()
    if not expected and check is None:
        raise StudioError("NO_CHECKSUM", "the download carries no X-Checksum-SHA256 header")
    total = (
        int(response.headers["content-length"]) if "content-length" in response.headers else None
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        actual = await _write(response, fd, total, progress)
        if expected and actual != expected:
            raise ChecksumMismatch(
                "CHECKSUM_MISMATCH",
                f"the download's sha256 is {actual}, the studio announced {expected}; "
                "nothing was written",
                request_id=response.headers.get("x-request-id"),
                status=response.status_code,
            )
        problem = check(temp) if check is not None else None
        if problem:
            raise StudioError(
                "INCOMPLETE_DOWNLOAD",
                f"the download is not whole ({problem}); nothing was written",
                request_id=response.headers.get("x-request-id"),
                status=response.status_code,
            )
        os.replace(temp, target)
        return actual
    finally:
        temp.unlink(missing_ok=True)


async def _write(
    response: httpx.Response, fd: int, total: int | None, progress: Progress | None
) -> str:
    digest = hashlib.sha256()
    received = 0
    with os.fdopen(fd, "wb") as out:
        if progress:
            progress(0, total)
        async for chunk in response.aiter_bytes(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            if progress:
                progress(received, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def zip_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a whole ZIP (its directory, every member's CRC), or
    None. Members are read in chunks, never whole in memory."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a whole ZIP: {exc}"
    return f"member {bad!r} fails its CRC" if bad is not None else None
