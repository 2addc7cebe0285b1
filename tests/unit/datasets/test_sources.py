"""Extracting uploaded ZIPs safely and resolving server folders, given hostile or broken input.

Every refusal must name its code and leave the destination empty: users' archives are untrusted.
"""

from __future__ import annotations

import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from services.datasets import sources
from services.datasets.sources import SourceError, ZipLimits, extract_zip, resolve_local
from tests.unit.datasets.fixtures_formats import png_bytes, write_zip

PNG = png_bytes()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


def refused(archive: Path, dest: Path, limits: ZipLimits = sources.DEFAULT_LIMITS) -> SourceError:
    """Extracts expecting a refusal; checks nothing was left behind."""
    with pytest.raises(SourceError) as caught:
        extract_zip(archive, dest, limits)
    assert list(dest.iterdir()) == []
    return caught.value


def patch_sizes(path: Path, *, file_size: int, crc: int | None = None) -> None:
    """Rewrites the single entry's declared size (and CRC) in both its headers, as a liar would."""
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, 22, file_size)
    struct.pack_into("<I", data, central + 24, file_size)
    if crc is not None:
        struct.pack_into("<I", data, 14, crc)
        struct.pack_into("<I", data, central + 16, crc)
    path.write_bytes(bytes(data))


# -- extract_zip: what is accepted ------------------------------------------------------------


def test_extracts_files_and_skips_folders_and_mac_clutter(tmp_path: Path, dest: Path) -> None:
    # Given an archive with nested files, a folder entry and macOS clutter
    archive = write_zip(
        tmp_path / "a.zip",
        {
            "set/": b"",
            "set/cat/1.png": PNG,
            "set/dog/2.png": PNG,
            "__MACOSX/set/._1.png": b"junk",
            "set/.DS_Store": b"junk",
        },
    )
    # When it is extracted
    count = extract_zip(archive, dest)
    # Then only the real files are there, byte for byte
    assert count == 2
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert written == ["set/cat/1.png", "set/dog/2.png"]
    assert (dest / "set/cat/1.png").read_bytes() == PNG


def test_backslash_separators_are_read_as_folders(tmp_path: Path, dest: Path) -> None:
    # Given an archive from an old Windows tool that separates folders with backslashes
    archive = write_zip(tmp_path / "a.zip", {"cat\\1.png": PNG})
    # When it is extracted
    extract_zip(archive, dest)
    # Then the backslash became a folder, not part of a file name
    assert (dest / "cat" / "1.png").read_bytes() == PNG


def test_small_files_that_compress_well_are_not_bombs(tmp_path: Path, dest: Path) -> None:
    # Given a blank 500 KB mask, which compresses far beyond the ratio limit
    archive = write_zip(tmp_path / "a.zip", {"mask.bmp": bytes(500_000)})
    # When it is extracted, then it is accepted: it is too small to hurt
    assert extract_zip(archive, dest) == 1


# -- extract_zip: unsafe names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "..\\x.png", "a/.."])
def test_refuses_entries_that_climb_out(tmp_path: Path, dest: Path, name: str) -> None:
    # Given a good entry followed by one that climbs out of the destination with '..'
    archive = write_zip(tmp_path / "a.zip", {"ok.png": PNG, name: PNG})
    # When it is extracted, then it is refused as unsafe before anything was written
    error = refused(archive, dest)
    assert (error.code, error.status) == ("UNSAFE_ARCHIVE", 422)
    assert "'..'" in error.message
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["/abs/x.png", "\\abs\\x.png", "C:/x.png", "c:\\x.png"])
def test_refuses_absolute_paths_and_drive_letters(tmp_path: Path, dest: Path, name: str) -> None:
    # Given an entry with an absolute path or a drive letter
    archive = write_zip(tmp_path / "a.zip", {"ok.png": PNG, name: PNG})
    # When it is extracted, then it is refused and nothing was written
    error = refused(archive, dest)
    assert error.code == "UNSAFE_ARCHIVE"
    assert "absolute path" in error.message


def test_refuses_symlink_entries(tmp_path: Path, dest: Path) -> None:
    # Given an entry whose unix mode says it is a symbolic link to /etc/passwd
    archive = tmp_path / "a.zip"
    link = zipfile.ZipInfo("data/passwd.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.png", PNG)
        zf.writestr(link, "/etc/passwd")
    # When it is extracted, then it is refused and no link exists
    error = refused(archive, dest)
    assert error.code == "UNSAFE_ARCHIVE"
    assert "symbolic link" in error.message


def test_refuses_password_protected_entries(tmp_path: Path, dest: Path) -> None:
    # Given an entry flagged as encrypted (zipfile cannot write one, so the flag is set by hand)
    archive = write_zip(tmp_path / "a.zip", {"a.png": PNG})
    data = bytearray(archive.read_bytes())
    data[6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    archive.write_bytes(bytes(data))
    # When it is extracted, then the user is told to remove the password
    error = refused(archive, dest)
    assert error.code == "UNSAFE_ARCHIVE"
    assert "password" in error.message


@pytest.mark.parametrize(
    ("names", "why"),
    [(["a.png", "a.png"], "appears twice"), (["a", "a/b.png"], "both a file and a folder")],
)
def test_refuses_clashing_names(tmp_path: Path, dest: Path, names: list[str], why: str) -> None:
    # Given two entries that would land on the same path
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate we mean to write
        for name in names:
            zf.writestr(name, PNG)
    # When it is extracted, then it is refused rather than half-written
    error = refused(archive, dest)
    assert error.code == "UNSAFE_ARCHIVE"
    assert why in error.message


def test_refuses_compression_it_cannot_stream(tmp_path: Path, dest: Path) -> None:
    # Given an entry compressed with bzip2, which zipfile inflates without a memory cap
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.png", PNG)
    # When it is extracted, then the user is asked for a standard ZIP
    error = refused(archive, dest)
    assert error.code == "UNSAFE_ARCHIVE"
    assert "bzip2" in error.message and "deflate" in error.message


# -- extract_zip: not a ZIP, empty, damaged ---------------------------------------------------


def test_refuses_a_file_that_is_not_a_zip(tmp_path: Path, dest: Path) -> None:
    # Given a PNG uploaded as if it were a ZIP
    archive = tmp_path / "a.zip"
    archive.write_bytes(PNG)
    # When it is extracted, then it is refused as an unsupported media type
    error = refused(archive, dest)
    assert (error.code, error.status) == ("NOT_A_ZIP", 415)


def test_refuses_a_truncated_zip(tmp_path: Path, dest: Path) -> None:
    # Given an upload cut off half way
    archive = write_zip(tmp_path / "a.zip", {"a.png": PNG, "b.png": PNG})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    # When it is extracted, then it is refused without a traceback
    assert refused(archive, dest).code in ("NOT_A_ZIP", "CORRUPT_ARCHIVE")


def test_refuses_damaged_data_and_removes_what_was_written(tmp_path: Path, dest: Path) -> None:
    # Given a good entry and one whose compressed bytes were damaged after it
    archive = write_zip(tmp_path / "a.zip", {"a.png": PNG, "b.bin": bytes(range(256)) * 64})
    data = bytearray(archive.read_bytes())
    second = data.index(b"PK\x03\x04", 4)
    data[second + 60] ^= 0xFF
    archive.write_bytes(bytes(data))
    # When it is extracted, then it is refused as corrupt and a.png, written first, is gone
    error = refused(archive, dest)
    assert error.code == "CORRUPT_ARCHIVE"
    assert "b.bin" in error.message


@pytest.mark.parametrize(
    "entries", [{}, {"folder/": b"", "__MACOSX/._a.png": b"x", ".DS_Store": b"x"}]
)
def test_refuses_an_archive_without_files(
    tmp_path: Path, dest: Path, entries: dict[str, bytes]
) -> None:
    # Given an archive with no entries, or only folders and clutter
    archive = write_zip(tmp_path / "a.zip", entries)
    # When it is extracted, then it is refused as empty
    assert refused(archive, dest).code == "EMPTY_ARCHIVE"


# -- extract_zip: size limits and bombs -------------------------------------------------------


def test_refuses_an_upload_over_the_archive_limit(tmp_path: Path, dest: Path) -> None:
    # Given an archive larger than the upload limit
    archive = write_zip(tmp_path / "a.zip", {"a.png": PNG})
    # When it is extracted, then it is refused as too large
    error = refused(archive, dest, ZipLimits(max_archive_bytes=100))
    assert (error.code, error.status) == ("ARCHIVE_TOO_LARGE", 413)


def test_refuses_too_many_entries(tmp_path: Path, dest: Path) -> None:
    # Given four entries when three are allowed
    archive = write_zip(tmp_path / "a.zip", {f"{i}.png": PNG for i in range(4)})
    # When it is extracted, then it is refused as too large
    error = refused(archive, dest, ZipLimits(max_entries=3))
    assert (error.code, error.status) == ("ARCHIVE_TOO_LARGE", 413)
    assert "4 entries" in error.message


def test_refuses_a_declared_total_over_the_limit(tmp_path: Path, dest: Path) -> None:
    # Given entries that declare more bytes in all than allowed
    archive = write_zip(tmp_path / "a.zip", {"a.png": PNG, "b.png": PNG})
    # When it is extracted with a total just under their sum, then it is refused
    error = refused(archive, dest, ZipLimits(max_total_bytes=2 * len(PNG) - 1))
    assert (error.code, error.status) == ("ARCHIVE_TOO_LARGE", 413)


def test_refuses_a_zip_bomb_by_entry_ratio(tmp_path: Path, dest: Path) -> None:
    # Given 50 MB of zeros compressed to a few dozen KB
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("a.png", "w") as f:
        for _ in range(50):
            f.write(bytes(1024 * 1024))
    # When it is extracted, then it is refused as a bomb before a byte was inflated
    error = refused(archive, dest)
    assert (error.code, error.status) == ("ZIP_BOMB", 422)
    assert "a.png" in error.message


def test_refuses_a_zip_bomb_by_overall_ratio(tmp_path: Path, dest: Path) -> None:
    # Given many entries each too small to judge alone, that together compress 1000:1
    archive = write_zip(tmp_path / "a.zip", {f"{i}.bmp": bytes(600_000) for i in range(4)})
    # When it is extracted, then the archive as a whole is refused as a bomb
    error = refused(archive, dest)
    assert error.code == "ZIP_BOMB"
    assert "the archive is compressed" in error.message


def test_a_header_that_understates_the_size_writes_no_more(tmp_path: Path, dest: Path) -> None:
    # Given an entry of 1 MB whose headers claim 1000 bytes
    payload = bytes(range(256)) * 4096
    archive = write_zip(tmp_path / "a.zip", {"a.bin": payload})
    patch_sizes(archive, file_size=1000)
    # When it is extracted, then it is refused (its checksum no longer matches) and nothing stays
    assert refused(archive, dest).code in ("CORRUPT_ARCHIVE", "ZIP_BOMB")
    # And given the same lie with a checksum forged to match the first 1000 bytes
    patch_sizes(archive, file_size=1000, crc=zlib.crc32(payload[:1000]))
    extract_zip(archive, dest)
    # Then no more than the declared bytes were written
    assert (dest / "a.bin").stat().st_size == 1000


def test_aborts_when_the_running_total_passes_the_limit(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two entries, and the declared-size check blinded as if the headers had lied
    archive = write_zip(tmp_path / "a.zip", {"a.bin": bytes(3000), "b.bin": bytes(3000)})
    monkeypatch.setattr(sources, "_check_declared", lambda members, limits: None)
    # When it is extracted with room for only one of them
    error = refused(archive, dest, ZipLimits(max_total_bytes=4000))
    # Then counting the bytes actually written stops it, and a.bin is removed again
    assert error.code == "ZIP_BOMB"


def test_the_destination_must_be_empty(tmp_path: Path, dest: Path) -> None:
    # Given a destination that already holds a file
    (dest / "keep.txt").write_text("mine")
    archive = write_zip(tmp_path / "a.zip", {"../x": PNG})
    # When an archive is extracted into it, then that is a programming error, and the file stays
    with pytest.raises(ValueError, match="empty"):
        extract_zip(archive, dest)
    assert (dest / "keep.txt").read_text() == "mine"


# -- resolve_local ----------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "cats").mkdir(parents=True)
    (tmp_path / "root" / "notes.txt").write_text("x")
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def path_refused(raw: str, roots: list[Path]) -> SourceError:
    with pytest.raises(SourceError) as caught:
        resolve_local(raw, roots)
    assert caught.value.field == "path"
    return caught.value


def test_resolves_an_absolute_folder_inside_a_root(root: Path) -> None:
    # Given a folder inside the allowed root, when it is named by its absolute path
    found = resolve_local(str(root / "cats"), [root])
    # Then its real path comes back
    assert found == (root / "cats").resolve()


def test_takes_a_relative_path_from_the_roots(tmp_path: Path, root: Path) -> None:
    # Given two roots, the second holding "cats", when "cats" is asked for
    found = resolve_local("cats", [tmp_path / "outside", root])
    # Then it is found in the root that has it
    assert found == (root / "cats").resolve()


def test_accepts_a_root_reached_through_a_link(tmp_path: Path, root: Path) -> None:
    # Given an allowed root configured through a symbolic link
    (tmp_path / "link").symlink_to(root)
    # When the folder is named by its real path, then it is inside the root
    assert resolve_local(str(root / "cats"), [tmp_path / "link"]) == (root / "cats").resolve()


@pytest.mark.parametrize("raw", ["{outside}", "{root}/../outside", "../outside"])
def test_refuses_paths_outside_the_roots(tmp_path: Path, root: Path, raw: str) -> None:
    # Given a folder outside the allowed root, named directly or by climbing out
    text = raw.format(outside=tmp_path / "outside", root=root)
    # When it is resolved, then it is forbidden
    error = path_refused(text, [root])
    assert (error.code, error.status) == ("PATH_NOT_ALLOWED", 403)


def test_refuses_a_link_inside_a_root_that_points_outside(tmp_path: Path, root: Path) -> None:
    # Given a symbolic link inside the root to a folder outside it
    (root / "escape").symlink_to(tmp_path / "outside")
    # When it is resolved, then its real place decides: forbidden
    assert path_refused(str(root / "escape"), [root]).code == "PATH_NOT_ALLOWED"


def test_reports_a_missing_folder_inside_a_root(root: Path) -> None:
    # Given a path inside the root that does not exist, when it is resolved
    error = path_refused(str(root / "dogs"), [root])
    # Then it is not found
    assert (error.code, error.status) == ("NOT_FOUND", 404)


def test_does_not_reveal_whether_paths_outside_exist(tmp_path: Path, root: Path) -> None:
    # Given a path outside the root that does not exist, when it is resolved
    error = path_refused(str(tmp_path / "nowhere"), [root])
    # Then the answer is the same as for one that exists: forbidden, not "not found"
    assert error.code == "PATH_NOT_ALLOWED"


def test_refuses_a_file(root: Path) -> None:
    # Given a file inside the root, when it is resolved, then it is not a directory
    error = path_refused(str(root / "notes.txt"), [root])
    assert (error.code, error.status) == ("NOT_A_DIRECTORY", 422)


def test_refuses_everything_when_no_roots_are_configured(root: Path) -> None:
    # Given no allowed roots, when any path is resolved
    error = path_refused(str(root / "cats"), [])
    # Then the message tells the operator how to turn the feature on
    assert (error.code, error.status) == ("PATH_NOT_ALLOWED", 403)
    assert "STUDIO_IMPORT_ROOTS" in error.message


@pytest.mark.parametrize("raw", ["", "   ", "cats\0"])
def test_refuses_an_empty_or_malformed_path(root: Path, raw: str) -> None:
    # Given a blank path or one with a NUL byte, then it is a validation error, not a crash
    assert path_refused(raw, [root]).code == "VALIDATION_ERROR"
