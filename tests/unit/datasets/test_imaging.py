"""Reading one image at import: formats and modes, EXIF orientation, corrupt files, the dHash."""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageEnhance

from services.datasets.imaging import (
    THUMB_MAX,
    CorruptImage,
    ImageInfo,
    hamming,
    inspect,
    mime_of,
)
from services.kernel.blobstore import BlobStore


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like picture: a gradient with random shapes, different for every seed."""
    rng = random.Random(seed)
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(10):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(4, size[0] // 2 + 5), rng.randrange(4, size[1] // 2 + 5)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=colour)
    return img


def save(tmp_path: Path, img: Image.Image, name: str, **params: Any) -> Path:
    path = tmp_path / name
    img.save(path, **params)
    return path


def thumbnail(store: BlobStore, info: ImageInfo) -> Image.Image:
    """The stored thumbnail, which is always an RGB JPEG within THUMB_MAX."""
    with Image.open(store.thumb_path(info.sha256)) as img:
        assert (img.format, img.mode) == ("JPEG", "RGB")
        assert max(img.size) <= THUMB_MAX
        img.load()
        return img.copy()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def test_a_jpeg_is_described_stored_and_thumbnailed(tmp_path: Path, store: BlobStore) -> None:
    # given a JPEG photo
    path = save(tmp_path, scene(1, (640, 480)), "a.jpg", quality=90)
    # when it is inspected
    info = inspect(path, store)
    # then its digest, size, format and dimensions are reported
    data = path.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (info.size, info.width, info.height) == (len(data), 640, 480)
    assert (info.format, info.mime) == ("JPEG", "image/jpeg")
    assert len(info.phash) == 16 and int(info.phash, 16) >= 0
    # and the original and a JPEG thumbnail at most 256 px are stored
    assert store.blob_path(info.sha256).read_bytes() == data
    assert thumbnail(store, info).size == (THUMB_MAX, 192)


def test_a_big_photo_keeps_its_full_size_but_a_small_thumbnail(
    tmp_path: Path, store: BlobStore
) -> None:
    # given a 3000x2000 JPEG (decoded at reduced scale for speed)
    path = save(tmp_path, scene(2, (3000, 2000)), "big.jpg", quality=80)
    # when it is inspected
    info = inspect(path, store)
    # then the header size is reported, not the reduced decode size
    assert (info.width, info.height) == (3000, 2000)
    assert max(thumbnail(store, info).size) == THUMB_MAX


def test_exif_orientation_swaps_the_size_and_rotates_the_thumbnail(
    tmp_path: Path, store: BlobStore
) -> None:
    # given a 1200x800 JPEG stored sideways: red top-left corner, orientation 6 (rotate 90° CW)
    img = Image.new("RGB", (1200, 800), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, img, "sideways.jpg", exif=exif.tobytes(), quality=95)
    # when it is inspected
    info = inspect(path, store)
    # then it is portrait and the red corner is now at the top right
    assert (info.width, info.height) == (800, 1200)
    thumb = thumbnail(store, info)
    assert thumb.size == (171, THUMB_MAX)
    top_right, top_left = thumb.getpixel((thumb.width - 3, 2)), thumb.getpixel((2, 2))
    assert isinstance(top_right, tuple) and isinstance(top_left, tuple)
    assert top_right[0] > 200 and top_right[2] < 60
    assert top_left[2] > 200 and top_left[0] < 60


def test_a_png_with_alpha_is_composited_on_white(tmp_path: Path, store: BlobStore) -> None:
    # given an RGBA PNG whose left half is fully transparent
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 100, 100))
    path = save(tmp_path, img, "a.png")
    # when it is inspected
    info = inspect(path, store)
    # then the transparent half is white in the thumbnail and the rest black
    assert (info.format, info.mime, info.width, info.height) == ("PNG", "image/png", 200, 100)
    thumb = thumbnail(store, info)
    assert min(thumb.getpixel((10, 50))) > 245  # type: ignore[arg-type]
    assert max(thumb.getpixel((190, 50))) < 10  # type: ignore[arg-type]


def test_a_palette_png_with_a_transparent_index(tmp_path: Path, store: BlobStore) -> None:
    # given a palette PNG whose index 0 (red) is transparent and index 1 is green
    img = Image.new("P", (64, 64), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(0, (0, 0, 32, 64))
    path = save(tmp_path, img, "p.png", transparency=0)
    # when it is inspected
    info = inspect(path, store)
    # then transparent pixels are white, not red, and opaque ones keep their colour
    thumb = thumbnail(store, info)
    assert min(thumb.getpixel((5, 30))) > 245  # type: ignore[arg-type]
    left_green = thumb.getpixel((58, 30))
    assert isinstance(left_green, tuple) and left_green[1] > 200 and left_green[0] < 60


def test_a_cmyk_jpeg_becomes_an_rgb_thumbnail(tmp_path: Path, store: BlobStore) -> None:
    # given a red CMYK JPEG
    path = save(tmp_path, Image.new("CMYK", (120, 80), (0, 255, 255, 0)), "cmyk.jpg")
    # when it is inspected
    info = inspect(path, store)
    # then the thumbnail is RGB and still red
    thumb = thumbnail(store, info)
    assert (info.width, info.height, thumb.mode) == (120, 80, "RGB")
    red = thumb.getpixel((60, 40))
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60 and red[2] < 60


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path, store: BlobStore) -> None:
    # given a 16-bit grey PNG at 40000/65535 (61% grey)
    path = save(tmp_path, Image.new("I;16", (50, 40), 40000), "deep.png")
    # when it is inspected
    info = inspect(path, store)
    # then the thumbnail is mid grey, not clipped to white
    grey = thumbnail(store, info).getpixel((25, 20))
    assert isinstance(grey, tuple) and 140 < grey[0] < 170
    assert (info.width, info.height) == (50, 40)


@pytest.mark.parametrize(
    ("fmt", "name", "mime"), [("GIF", "a.gif", "image/gif"), ("WEBP", "a.webp", "image/webp")]
)
def test_gif_and_webp(tmp_path: Path, store: BlobStore, fmt: str, name: str, mime: str) -> None:
    # given an animated GIF or a WebP
    frames = [scene(3, (90, 60)), scene(4, (90, 60))]
    path = save(tmp_path, frames[0], name, save_all=True, append_images=frames[1:])
    # when it is inspected
    info = inspect(path, store)
    # then the first frame is described
    assert (info.format, info.mime, info.width, info.height) == (fmt, mime, 90, 60)
    assert thumbnail(store, info).size == (90, 60)


def test_a_truncated_jpeg_is_corrupt(tmp_path: Path, store: BlobStore) -> None:
    # given a JPEG cut in half
    whole = io.BytesIO()
    scene(5, (400, 300)).save(whole, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    # when it is inspected then it is refused as truncated and nothing is stored
    with pytest.raises(CorruptImage, match="truncated file"):
        inspect(path, store)
    assert not store.root.exists() or not any(store.root.rglob("*.*"))


def test_a_truncated_png_is_corrupt(tmp_path: Path, store: BlobStore) -> None:
    # given a PNG cut in half
    whole = io.BytesIO()
    scene(6).save(whole, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    # when it is inspected then it is refused as truncated
    with pytest.raises(CorruptImage, match="truncated file"):
        inspect(path, store)


def test_a_png_failing_its_checksum_is_corrupt(tmp_path: Path, store: BlobStore) -> None:
    # given a PNG whose pixel data decodes but whose IDAT checksum is wrong (a flipped bit)
    whole = io.BytesIO()
    scene(6).save(whole, "PNG")
    data = bytearray(whole.getvalue())
    data[data.index(b"IEND") - 5] ^= 0xFF  # last byte of the IDAT CRC
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    # when it is inspected then verify() catches what decoding alone would let through
    with pytest.raises(CorruptImage, match="checksum"):
        inspect(path, store)


@pytest.mark.parametrize(
    ("content", "reason"), [(b"just some notes\n", "not an image"), (b"", "empty file")]
)
def test_a_file_that_is_not_an_image(
    tmp_path: Path, store: BlobStore, content: bytes, reason: str
) -> None:
    # given a text (or empty) file named like a JPEG
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    # when it is inspected then it is refused with a short reason
    with pytest.raises(CorruptImage) as caught:
        inspect(path, store)
    assert str(caught.value) == reason


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_corrupt(tmp_path: Path, store: BlobStore) -> None:
    # given a tiny PNG whose header claims 100000x100000 pixels
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    # when it is inspected then it is refused without decoding
    with pytest.raises(CorruptImage, match="decompression bomb"):
        inspect(path, store)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_in_the_warning_band_is_corrupt_too(
    tmp_path: Path, store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a pixel limit for which a 40x40 image only draws Pillow's warning (1x to 2x)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(tmp_path, scene(7, (40, 40)), "band.png")
    # when it is inspected then it is refused all the same
    with pytest.raises(CorruptImage, match="decompression bomb"):
        inspect(path, store)


def test_an_existing_thumbnail_is_not_rewritten(tmp_path: Path, store: BlobStore) -> None:
    # given an image already in the store, original and thumbnail
    path = save(tmp_path, scene(8), "a.png")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    store.put_bytes(path.read_bytes(), sha)
    store.put_thumb(sha, b"already here")
    # when it is inspected again
    inspect(path, store)
    # then the stored thumbnail is left alone
    assert store.thumb_path(sha).read_bytes() == b"already here"


def test_a_stored_original_missing_its_thumbnail_gets_one(tmp_path: Path, store: BlobStore) -> None:
    # given an original stored without its thumbnail (a crash between the two writes)
    path = save(tmp_path, scene(8), "a.png")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    store.put_bytes(path.read_bytes(), sha)
    # when it is inspected again
    inspect(path, store)
    # then its thumbnail is written
    with Image.open(store.thumb_path(sha)) as thumb:
        assert thumb.format == "JPEG"


def test_near_identical_images_have_close_phashes(tmp_path: Path, store: BlobStore) -> None:
    # given a photo, the same re-encoded at low quality, a brightened copy and another photo
    original = scene(9)
    brighter = ImageEnhance.Brightness(original).enhance(1.1)
    paths = [
        save(tmp_path, original, "a.jpg", quality=95),
        save(tmp_path, original, "b.jpg", quality=30),
        save(tmp_path, brighter, "c.png"),
        save(tmp_path, scene(10), "d.jpg", quality=95),
    ]
    # when they are inspected
    a, b, c, d = (inspect(p, store).phash for p in paths)
    # then copies are within 4 bits and the other photo is far away
    assert hamming(a, b) <= 4
    assert hamming(a, c) <= 4
    assert hamming(a, d) > 12


def test_hamming_counts_differing_bits() -> None:
    assert hamming("0000000000000000", "0000000000000000") == 0
    assert hamming("0000000000000000", "ffffffffffffffff") == 64
    assert hamming("8000000000000001", "0000000000000000") == 2


def test_mime_of_known_and_unknown_formats() -> None:
    assert mime_of("PNG") == "image/png"
    assert mime_of("MPO") == "image/jpeg"  # phones' multi-picture JPEGs
    assert mime_of("NOPE") == "application/octet-stream"


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_many_inspections_leak_no_file_handles(tmp_path: Path, store: BlobStore) -> None:
    # given a few images, one of them corrupt
    good = save(tmp_path, scene(11, (64, 64)), "a.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    before = len(os.listdir("/proc/self/fd"))
    # when they are inspected again and again
    for _ in range(100):
        inspect(good, store)
        with pytest.raises(CorruptImage):
            inspect(bad, store)
    # then no file stays open
    assert len(os.listdir("/proc/self/fd")) <= before
