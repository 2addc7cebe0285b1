"""The one byte range a download honours (``Range: bytes=…``), and the bytes it streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.gateway.blobs import UNSATISFIABLE, _first, _range

TAG = '"abc"'


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),  # more than there is: all of it
        ("bytes=990-5000", (990, 999)),  # a last byte past the end is the end
        ("bytes=1000-", UNSATISFIABLE),
        ("bytes=5-4", UNSATISFIABLE),
        ("bytes=-", None),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
        ("", None),
    ],
)
def test_a_range_is_read_as_its_first_and_last_byte(asked, expected):
    assert _range({"range": asked}, TAG, 1000) == expected


def test_a_range_whose_if_range_no_longer_matches_is_the_whole_file():
    assert _range({"range": "bytes=0-1", "if-range": '"old"'}, TAG, 1000) is None
    assert _range({"range": "bytes=0-1", "if-range": TAG}, TAG, 1000) == (0, 1)


async def test_only_the_first_bytes_asked_for_are_streamed_and_the_rest_is_not_read():
    read: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            read.append(i)
            yield bytes([i]) * 10

    got = b"".join([c async for c in _first(chunks(), 15)])
    assert got == b"\x00" * 10 + b"\x01" * 5
    assert read == [0, 1]
