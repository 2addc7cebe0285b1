"""Reads one image file for import: digest, validation, oriented size, perceptual hashes, thumbnail.

``inspect`` is the only entry point with side effects (it stores the original and a thumbnail in
a :class:`BlobStore`: the original first, so that a new one, the usual case, gets its thumbnail
without a look for one). It reads the file once (its bytes are hashed, decoded and stored from
memory; only a file over ``INLINE_MAX`` is streamed from disk instead) and opens it as an image
once: a PNG's checksums, the one thing ``verify()`` checks that decoding does not, are checked on
the same bytes without a second open. Pillow, numpy and the filesystem only; imports nothing from
``services`` but ``blobstore``, so the decoding processes (``decoding``) start light.

Two perceptual hashes are computed. ``dhash`` (64 bits) is kept for the record only: on small,
plain images (a handwritten character upscaled to 32 px) most of its bits compare equal
background pixels, so distinct images share it. ``near_hash`` is what near-duplicate detection
uses: 255 bits from the signs of a 32x32 grey thumbnail's lowest 16x16 DCT frequencies, cut at
their median so every hash is half ones whatever the image's brightness; an image with too little
detail to fill those bits with signal (blank, a smooth gradient) gets ``FLAT`` instead, and is
compared by exact bytes only.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from services.kernel.blobstore import BlobStore

THUMB_MAX = 256
THUMB_QUALITY = 85
_CHUNK = 1 << 20
#: Files up to this size are read into memory once; a bigger one is hashed in chunks and decoded
#: and copied from the file, so one huge file cannot take a decoding process's memory with it.
INLINE_MAX = 64 << 20
_ROTATES_90 = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_RESIZABLE = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})  # resized well by Pillow as they are
# What Pillow raises on malformed input varies by plugin; all of these mean "bad file" there.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class ImageInfo:
    sha256: str  # of the file's bytes as they are
    size: int  # bytes
    width: int  # after EXIF orientation is applied
    height: int
    format: str  # Pillow's format name, e.g. "JPEG", "PNG"
    mime: str  # e.g. "image/jpeg"
    phash: str  # 16 hex chars: 64-bit difference hash (dHash) of the oriented image
    near_hash: str = ""  # NEAR_HASH_HEX hex chars (255-bit DCT hash), or FLAT


class CorruptImage(Exception):
    """The file is not a usable image; ``str(exc)`` is a short reason for a person."""


def inspect(path: Path, store: BlobStore) -> ImageInfo:
    """Validate and describe one image, storing it and (once) its thumbnail in ``store``."""
    data = _read(path)
    if data is None:
        sha256, size = _digest(path)
    else:
        sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    if size == 0:
        raise CorruptImage("empty file")
    try:
        fmt, width, height, thumb = _decode(_Source(path, data))
    except _DECODE_ERRORS as exc:
        raise CorruptImage(_reason(exc)) from exc
    with thumb:
        grey = thumb.convert("L")
        phash, near = dhash(grey), near_hash(grey)
        stored = store.put(path, sha256) if data is None else store.put_bytes(data, sha256)
        # A new original gets its thumbnail without a look; a known one only if it lacks it.
        if stored or not store.has_thumb(sha256):
            store.put_thumb(sha256, _jpeg_bytes(thumb))
    return ImageInfo(sha256, size, width, height, fmt, mime_of(fmt), phash, near)


def mime_of(format: str) -> str:
    # MPO is how Pillow names the multi-picture JPEGs phones write; browsers see a JPEG.
    if format.upper() == "MPO":
        return "image/jpeg"
    Image.init()
    return Image.MIME.get(format.upper(), "application/octet-stream")


def dhash(img: Image.Image) -> str:
    """64-bit difference hash: is each pixel of a 9x8 grey thumbnail darker than its right one.

    Averaged down (BOX) from the thumbnail: a third of LANCZOS's cost, and as stable under
    re-encoding and brightness changes at this size.
    """
    grey = img if img.mode == "L" else img.convert("L")
    px = _pixels(grey.resize((9, 8), Image.Resampling.BOX))
    return np.packbits(px[:, 1:] > px[:, :-1]).tobytes().hex()  # row by row, first bit highest


#: Side of the grey thumbnail the DCT runs on, and of the block of low frequencies kept.
_DCT_INPUT = 32
_DCT_KEEP = 16
NEAR_HASH_BITS = _DCT_KEEP * _DCT_KEEP - 1  # every kept frequency but the mean (DC)
NEAR_HASH_HEX = 64  # the bits, with a leading zero, as hex
#: The near hash of an image with too little detail for one: never a near-duplicate of anything.
FLAT = "-"
#: A coefficient carries signal from this amplitude (grey levels, orthonormal DCT) up: JPEG
#: noise and 8-bit rounding stay below it.
DETAIL_LEVEL = 4.0
#: Fewer coefficients with signal than this (half of them), and most bits would be set by noise:
#: FLAT. Smooth gradients and stripes fall below it (distinct ones would otherwise collide), so do
#: about one in ten images of two or three plain shapes; photos and glyphs stay far above it.
DETAIL_MIN = 128


def _dct_basis(size: int, keep: int) -> np.ndarray:
    """Rows of the orthonormal DCT-II matrix: ``basis @ x`` is x's lowest ``keep`` frequencies."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    basis = np.sqrt(2 / size) * np.cos(np.pi * (2 * n + 1) * k / (2 * size))
    basis[0] /= np.sqrt(2)
    return basis


_BASIS = _dct_basis(_DCT_INPUT, _DCT_KEEP)


def near_hash(img: Image.Image) -> str:
    """255-bit DCT hash as NEAR_HASH_HEX hex chars, or FLAT for an image with too little detail.

    Resizing, re-encoding and brightness or contrast changes move few bits; a crop of a few
    percent moves more (see splits.NEAR_DISTANCE for where the line is drawn).
    """
    grey = img if img.mode == "L" else img.convert("L")
    pixels = _pixels(grey.resize((_DCT_INPUT, _DCT_INPUT), Image.Resampling.BOX))
    coefficients = (_BASIS @ pixels @ _BASIS.T).ravel()[1:]
    if np.count_nonzero(np.abs(coefficients) >= DETAIL_LEVEL) < DETAIL_MIN:
        return FLAT
    # The median of an odd count is its middle value: a partition finds it for a sixth of
    # np.median's cost, and the same number.
    median = np.partition(coefficients, _MIDDLE)[_MIDDLE]
    bits = np.concatenate(([False], coefficients > median))
    return np.packbits(bits).tobytes().hex()


_MIDDLE = NEAR_HASH_BITS // 2
assert NEAR_HASH_BITS % 2 == 1


def _pixels(grey: Image.Image) -> np.ndarray:
    """An L image's pixels as a float array (from its bytes: np.asarray on a Pillow image costs
    as much again through its array interface)."""
    width, height = grey.size
    return np.frombuffer(grey.tobytes(), np.uint8).reshape(height, width).astype(np.float64)


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class _Source:
    """One file to decode: its bytes when read whole, else its path."""

    path: Path
    data: bytes | None

    def open(self) -> IO[bytes]:
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")


def _read(path: Path) -> bytes | None:
    """The file's bytes from one open, or None when it is over INLINE_MAX."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > INLINE_MAX:
            return None
        return f.read()


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _decode(source: _Source) -> tuple[str, int, int, Image.Image]:
    """(format, oriented full width, oriented full height, RGB thumbnail)."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process flipped Pillow's global: half-grey images would pass as good.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    with source.open() as fp, Image.open(fp) as img:
        if img.format == "PNG":
            _verify_png(img, source)
        _refuse_bomb(img)
        fmt = img.format or "UNKNOWN"
        width, height = img.size
        if img.getexif().get(ExifTags.Base.Orientation, 1) in _ROTATES_90:
            width, height = height, width
        if fmt in ("JPEG", "MPO"):
            # Decode big photos at 1/2..1/8 scale: the thumbnail and dHash need no more.
            img.draft("RGB", (THUMB_MAX * 2, THUMB_MAX * 2))
        ImageOps.exif_transpose(img, in_place=True)  # loads the pixels
        if img.mode in _RESIZABLE:
            # Shrink first: converting to RGB copies every pixel of what it is given.
            img.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
        thumb = _to_rgb(img)
    thumb.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
    return fmt, width, height, thumb


def _verify_png(img: ImageFile.ImageFile, source: _Source) -> None:
    """What ``verify()`` adds to decoding a PNG: every chunk's CRC from the first IDAT on (a
    flipped bit in pixel data can still inflate), read from a second view of the same bytes so
    that the image itself is still decoded from its single open."""
    with source.open() as fp:
        fp.seek(img.tile[0][2] - 8)  # where Pillow's own verify() starts: the first IDAT
        PngImagePlugin.ChunkStream(fp).verify()


def _refuse_bomb(img: Image.Image) -> None:
    # Pillow only *warns* between 1x and 2x MAX_IMAGE_PIXELS; turning that warning into an error
    # would need warnings.catch_warnings, which is not thread-safe. Same limit, checked here.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels")


def _to_rgb(img: Image.Image) -> Image.Image:
    """A new RGB image: alpha composited on white, 16-bit and float scaled down to 8 bits."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if img.mode.startswith(("I", "F")):
        wide = img.convert("I") if img.mode.startswith("I;") else img
        if (wide.getextrema()[1] or 0) > 255:  # type: ignore[operator]
            wide = wide.point(lambda v: v / 256)
        return wide.convert("L").convert("RGB")
    return img.convert("RGB")


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "too many pixels (possible decompression bomb)"
    text = str(exc)
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return "truncated file"
    return f"unreadable image: {text[:120]}" if text else "unreadable image"
