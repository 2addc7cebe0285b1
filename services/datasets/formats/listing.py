"""A folder's names in order, in memory that does not grow with the folder: the walk's one
listing (``tree.walk``) of a flat class folder of 100,000 images would otherwise hold all of its
names while it is walked (and, as pathlib interns each name it makes a path of, the
interpreter's table of interned strings would grow to hold them all too).

Up to ``HELD`` names are sorted in a list; past that they go, ``HELD`` at a time, into a
private temporary SQLite database (on disk once past its small page cache, deleted when
closed) and come back a page at a time in the same order: SQLite compares the names' UTF-8
bytes (``surrogatepass``, so a name that is not UTF-8 keeps its place), which is the order of
their code points, as Python sorts them. Imports the standard library only.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

#: Names a listing holds in memory; a larger folder is sorted on disk.
HELD = 10_000
#: Names read back from disk per query.
PAGE = 1000


class Listing:
    """Names added in any order, given back sorted (once)."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._db: sqlite3.Connection | None = None

    def add(self, name: str) -> None:
        self._names.append(name)
        if len(self._names) >= HELD:
            self._spill()

    def __iter__(self) -> Iterator[str]:
        if self._db is None:
            self._names.sort()
            yield from self._names
            return
        self._spill()
        try:
            yield from self._sorted(self._db)
        finally:
            self._db.close()

    def _spill(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("", isolation_level=None)  # "": temporary, private
            self._db.execute("CREATE TABLE names (name BLOB PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO names VALUES (?)", ((_key(n),) for n in self._names))
        self._db.execute("COMMIT")
        self._names = []

    @staticmethod
    def _sorted(db: sqlite3.Connection) -> Iterator[str]:
        after = b""
        sql = "SELECT name FROM names WHERE name > ? ORDER BY name LIMIT ?"
        while rows := db.execute(sql, (after, PAGE)).fetchall():
            yield from (bytes(raw).decode("utf-8", "surrogatepass") for (raw,) in rows)
            after = rows[-1][0]


def listing(
    folder: Path, name: Callable[[os.DirEntry[str]], str], skip: Callable[[str], bool]
) -> Listing:
    """``name(entry)`` of each entry of ``folder`` whose name ``skip`` does not refuse; raises
    what listing the folder raises (``OSError``)."""
    found = Listing()
    with os.scandir(folder) as entries:
        for entry in entries:
            if not skip(entry.name):
                found.add(name(entry))
    return found


def _key(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")
