"""Where an import's files come from: an uploaded ZIP extracted safely, or a server folder inside
the roots the operator allowed.

Filesystem only: no bus, no asyncio, nothing from other ``services`` packages. Users' files enter
the studio here, so every refusal is a ``SourceError`` carrying the code and HTTP status the API
answers with, and nothing is ever written outside the destination.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK_BYTES = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
# Only these can be streamed with bounded memory: zipfile hands bzip2/lzma whole reads of
# compressed data to a decompressor with no output cap, so a small chunk may inflate to gigabytes.
_STREAMABLE = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 9: "deflate64"}
_ENCRYPTED = 0x01 | 0x40  # traditional and strong encryption flag bits
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError)


class SourceError(Exception):
    """A whole-import problem: answered to the user as a 4xx, nothing imported."""

    def __init__(self, code: str, message: str, *, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True)
class ZipLimits:
    max_archive_bytes: int = 2 * 1024**3  # the uploaded file itself
    max_entries: int = 200_000
    max_total_bytes: int = 20 * 1024**3  # sum of uncompressed sizes
    max_ratio: float = 200.0  # uncompressed/compressed, per entry and overall
    # Below this many uncompressed bytes the ratio is not checked: a blank 100 KB mask compresses
    # 500:1 yet cannot hurt anyone, and a bomb must be big to be a bomb.
    ratio_floor_bytes: int = 1024**2


DEFAULT_LIMITS = ZipLimits()


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]


def extract_zip(archive: Path, dest: Path, limits: ZipLimits = DEFAULT_LIMITS) -> int:
    """Extract safely into dest (which must exist and be empty); returns the number of files."""
    if any(dest.iterdir()):
        raise ValueError(f"{dest} must be an empty folder")  # the caller's bug, not the user's
    if archive.stat().st_size > limits.max_archive_bytes:
        raise _too_large(f"the archive is larger than {_size(limits.max_archive_bytes)}")
    root = dest.resolve()
    try:
        with _open_zip(archive) as zf:
            members = _plan(zf.infolist(), root, limits)
            _check_declared(members, limits)
            return _extract_all(zf, members, root, limits)
    except BaseException:
        _empty(dest)
        raise


def resolve_local(raw: str, allowed_roots: Sequence[Path]) -> Path:
    """The real directory `raw` names, if it lies inside one of allowed_roots.

    A relative `raw` is taken from each root in turn (the first that exists wins): the server's
    working directory means nothing to the person typing the path.
    """
    if not allowed_roots:
        message = "imports from server paths are off until the operator sets STUDIO_IMPORT_ROOTS"
        raise _path_error("PATH_NOT_ALLOWED", message, 403)
    text = raw.strip()
    if not text or "\0" in text:
        raise _path_error("VALIDATION_ERROR", "enter the path of a folder on the server", 422)
    roots = [Path(root).resolve() for root in allowed_roots]
    candidates = [Path(os.path.abspath(text))] if os.path.isabs(text) else [r / text for r in roots]
    chosen = next((c for c in candidates if _exists(c)), candidates[0])
    real = _real_path(chosen, roots)
    if not real.is_dir():
        raise _path_error("NOT_A_DIRECTORY", f"{real} is a file, not a folder", 422)
    return real


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a folder on the way that the studio may not read
        return False


def _real_path(candidate: Path, roots: list[Path]) -> Path:
    # Containment is checked before existence so paths outside the roots cannot be probed.
    try:
        loose = candidate.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        loose = Path(os.path.normpath(candidate))
    if not any(loose.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise _path_error("PATH_NOT_ALLOWED", f"{candidate} is not inside {allowed}", 403)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _path_error("NOT_FOUND", f"{candidate} does not exist", 404) from None
    if not any(real.is_relative_to(root) for root in roots):  # it changed under us
        raise _path_error("PATH_NOT_ALLOWED", f"{candidate} is not inside the allowed roots", 403)
    return real


def _path_error(code: str, message: str, status: int) -> SourceError:
    return SourceError(code, message, status=status, field="path")


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    # A damaged central directory surfaces as any of these, e.g. a seek to a negative offset.
    except (*_CORRUPT, OSError, ValueError, struct.error) as exc:
        message = "the upload is not a ZIP archive, or it was cut short"
        raise SourceError("NOT_A_ZIP", message, status=415) from exc
    except NotImplementedError as exc:  # e.g. a newer ZIP version than Python reads
        message = f"the archive uses a ZIP feature the studio cannot unpack ({exc})"
        raise SourceError("CORRUPT_ARCHIVE", message) from exc


def _plan(infos: list[zipfile.ZipInfo], root: Path, limits: ZipLimits) -> list[_Member]:
    """Every entry is vetted before a byte is written; returns the files to extract."""
    if len(infos) > limits.max_entries:
        raise _too_large(f"the archive has {len(infos)} entries; the limit is {limits.max_entries}")
    members: list[_Member] = []
    for info in infos:
        parts = _safe_parts(info, root)
        if _wanted(info, parts):
            _check_readable(info)
            members.append(_Member(info, parts))
    if not members:
        raise SourceError("EMPTY_ARCHIVE", "the archive contains no files")
    _check_layout(members)
    return members


def _safe_parts(info: zipfile.ZipInfo, root: Path) -> tuple[str, ...]:
    # Backslashes are separators to Windows tools: read them as such, then judge the path.
    name = info.filename.replace("\\", "/")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _unsafe(info, "is a symbolic link")
    if name.startswith("/") or _DRIVE.match(name):
        raise _unsafe(info, "has an absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _unsafe(info, "climbs out of the archive with '..'")
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in parts):
        raise _unsafe(info, "has a name too long for the file system")
    if not root.joinpath(*parts).resolve().is_relative_to(root):
        raise _unsafe(info, "would land outside the extraction folder")
    return parts


def _wanted(info: zipfile.ZipInfo, parts: tuple[str, ...]) -> bool:
    is_dir = info.filename.endswith(("/", "\\")) or stat.S_ISDIR(info.external_attr >> 16)
    return bool(parts) and not is_dir and parts[0] != "__MACOSX" and parts[-1] != ".DS_Store"


def _check_readable(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & _ENCRYPTED:
        raise _unsafe(info, "is password-protected; upload an archive without a password")
    if info.compress_type not in _STREAMABLE:
        method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
        raise _unsafe(
            info,
            f"uses {method} compression, which the studio does not unpack; "
            "re-create the ZIP with standard (deflate) compression",
        )


def _check_layout(members: list[_Member]) -> None:
    files: set[tuple[str, ...]] = set()
    folders = {m.parts[:i] for m in members for i in range(1, len(m.parts))}
    for member in members:
        if member.parts in files:
            raise _unsafe(member.info, "appears twice")
        if member.parts in folders:
            raise _unsafe(member.info, "is both a file and a folder")
        files.add(member.parts)


def _check_declared(members: list[_Member], limits: ZipLimits) -> None:
    total, limit = sum(m.info.file_size for m in members), limits.max_total_bytes
    if total > limit:
        raise _too_large(f"the archive unpacks to {_size(total)}; the limit is {_size(limit)}")
    for member in members:
        name = member.info.filename
        if _over_ratio(member.info.file_size, member.info.compress_size, limits):
            raise _bomb(f"the archive entry {name!r} is compressed suspiciously well")
    if _over_ratio(total, sum(m.info.compress_size for m in members), limits):
        raise _bomb("the archive is compressed suspiciously well")


def _over_ratio(unpacked: int, packed: int, limits: ZipLimits) -> bool:
    return unpacked >= limits.ratio_floor_bytes and unpacked > limits.max_ratio * max(packed, 1)


def _extract_all(zf: zipfile.ZipFile, members: list[_Member], root: Path, limits: ZipLimits) -> int:
    written = 0
    for member in members:
        target = root.joinpath(*member.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        written += _extract_one(zf, member.info, target, limits.max_total_bytes - written)
    return len(members)


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, allowance: int) -> int:
    try:
        # "xb": never overwrite, and never write through a link someone planted.
        with _open_member(zf, info) as src, target.open("xb") as dst:
            return _copy_capped(src, dst, info, allowance)
    except _CORRUPT as exc:
        raise _corrupt(info, exc) from exc


def _open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    try:
        return zf.open(info)
    # A bad header offset makes the seek fail (OSError); odd flags make zipfile give up.
    except (*_CORRUPT, NotImplementedError, OSError, ValueError) as exc:
        raise _corrupt(info, exc) from exc


def _copy_capped(src: IO[bytes], dst: IO[bytes], info: zipfile.ZipInfo, allowance: int) -> int:
    """Copy in chunks, counting real bytes: the sizes in a ZIP's headers can lie."""
    written = 0
    while chunk := src.read(CHUNK_BYTES):
        written += len(chunk)
        if written > info.file_size:
            raise _bomb(f"the archive entry {info.filename!r} unpacks to more than it declares")
        if written > allowance:
            raise _bomb("the archive unpacks to more than the size limit")
        dst.write(chunk)
    return written


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _unsafe(info: zipfile.ZipInfo, why: str) -> SourceError:
    message = f"the archive entry {info.filename!r} {why}; nothing was extracted"
    return SourceError("UNSAFE_ARCHIVE", message)


def _corrupt(info: zipfile.ZipInfo, exc: BaseException) -> SourceError:
    message = f"the archive entry {info.filename!r} is damaged ({exc})"
    return SourceError("CORRUPT_ARCHIVE", message)


def _too_large(message: str) -> SourceError:
    return SourceError("ARCHIVE_TOO_LARGE", message, status=413)


def _bomb(message: str) -> SourceError:
    return SourceError("ZIP_BOMB", f"{message}; it looks like a ZIP bomb and was refused")


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
