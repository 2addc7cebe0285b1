"""A running import's manifest entries on disk: what ``formats.read_manifest`` hands on, kept in
a table of the import's staging file (``spill.StagedFile``) until the decoding reads them back,
a page at a time and in the order they were read, so that reading and decoding an import's
manifest holds a page of entries, not the whole source. The table goes with the staging file
when the import ends. Imports ``formats`` and the standard library.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from services.datasets.formats import Box, Entry

#: Entries read back per query.
PAGE = 1000


class ManifestFile:
    """The entries of one import, in the staging file whose connection is given."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS entries (n INTEGER PRIMARY KEY, path BLOB NOT NULL,"
            " name TEXT NOT NULL, label TEXT, split TEXT, boxes TEXT NOT NULL)"
        )
        self.count = 0

    def add(self, entries: Sequence[Entry]) -> None:
        """Appends a batch (a ``formats`` sink)."""
        rows = [(os.fsencode(e.path), e.name, e.label, e.split, _boxes(e.boxes)) for e in entries]
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO entries (path, name, label, split, boxes) VALUES (?, ?, ?, ?, ?)", rows
        )
        self._db.execute("COMMIT")
        self.count += len(rows)

    def entries(self) -> Iterator[Entry]:
        """Every entry, in the order added; each page is read whole, so the connection is free
        for other statements between pages."""
        last = 0
        while rows := self._db.execute(
            "SELECT n, path, name, label, split, boxes FROM entries WHERE n > ? ORDER BY n LIMIT ?",
            (last, PAGE),
        ).fetchall():
            for n, path, name, label, split, boxes in rows:
                last = n
                yield Entry(Path(os.fsdecode(path)), name, label, split, _unboxed(boxes))


def _boxes(boxes: tuple[Box, ...]) -> str:
    # repr-exact floats: json writes the shortest text that reads back as the same float.
    return json.dumps([[b.label, b.x, b.y, b.w, b.h] for b in boxes]) if boxes else ""


def _unboxed(text: str) -> tuple[Box, ...]:
    return tuple(Box(*box) for box in json.loads(text)) if text else ()
