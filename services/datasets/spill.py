"""SQLite in the datasets service's own folder, so that neither an import nor a dataset has to
be held in memory whole: a running import's records (``StagedFile``, one file per import,
deleted when it ends) and every dataset's image index (``IndexFile``: the images as the
dataset's events leave them, with the stream position they are folded up to).

Both are caches of facts kept elsewhere: a staging file of an import that ended (or of a crash)
is worth nothing, and the index file can be deleted at any time (a damaged one is replaced at
open) — the datasets' events rebuild it. Imports ``contracts``, the dataset's pure
``imageindex``, ``claims`` and the standard library.
A staging file is claimed (``claims``) by its import's process for its life, so that no sweep
of another datasets instance on the same workspace removes it while it is used.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from contracts import datasets as c
from services.datasets.claims import CLAIM_WAIT_S, Claim, claim_of
from services.datasets.imageindex import Image, ImageIndex, image_of

log = logging.getLogger(__name__)
#: Rows read per query when a whole index or staging file is walked.
PAGE = 2000
_RECORD = msgspec.json.Decoder(c.ImageRecord)
_BOXES = msgspec.json.Decoder(tuple[c.Box, ...])
_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    dataset_id TEXT NOT NULL, image_id TEXT NOT NULL, filename TEXT NOT NULL,
    label TEXT NOT NULL, phash TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    near_hash TEXT NOT NULL, boxes BLOB NOT NULL DEFAULT '',
    PRIMARY KEY (dataset_id, image_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folds (
    dataset_id TEXT PRIMARY KEY, position INTEGER NOT NULL, version INTEGER NOT NULL,
    state BLOB NOT NULL);
"""


def _connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL" if durable else "PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=NORMAL" if durable else "PRAGMA synchronous=OFF")
    return db


class IndexFile:
    """Every dataset's image index in one SQLite file; one connection, shared by the service's
    loop and the threads its long decisions run in, each statement under one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:  # damaged: it is a cache, rebuilt by replay
            log.warning(
                "the image index %s was unreadable (%s): rebuilt from the events", path, exc
            )
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = _connect(self.path, durable=True)
        columns = {row[1] for row in db.execute("PRAGMA table_info(images)")}
        if columns and "boxes" not in columns:  # an index from before boxes: rebuilt by replay
            log.info("the image index %s predates boxes: rebuilt from the events", self.path)
            db.executescript("DROP TABLE images; DROP TABLE IF EXISTS folds;")
        db.executescript(_INDEX_SCHEMA)
        db.execute("SELECT count(*) FROM folds").fetchone()
        return db

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        with self.lock:
            self.db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes that land together or not at all (a fold and the position it reached)."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def index(self, dataset_id: str) -> SqliteIndex:
        return SqliteIndex(self, dataset_id)

    def fold(self, dataset_id: str) -> tuple[int, int, bytes] | None:
        """Where the dataset's index was folded to: (position, version, the rest of its state)."""
        found = self.rows(
            "SELECT position, version, state FROM folds WHERE dataset_id = ?", dataset_id
        )
        return (found[0][0], found[0][1], bytes(found[0][2])) if found else None

    def save_fold(self, dataset_id: str, position: int, version: int, state: bytes) -> None:
        sql = "INSERT OR REPLACE INTO folds VALUES (?, ?, ?, ?)"
        self.write(sql, [(dataset_id, position, version, state)])

    def clear(self, dataset_id: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM images WHERE dataset_id = ?", (dataset_id,))
            self.db.execute("DELETE FROM folds WHERE dataset_id = ?", (dataset_id,))

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _image(row: tuple[Any, ...]) -> Image:
    """An index row (its ``SqliteIndex._COLUMNS``) as an ``Image``."""
    filename, label, phash, width, height, near_hash, boxes = row
    decoded = _BOXES.decode(boxes) if boxes else ()
    return Image(filename, label, phash, width, height, near_hash, decoded)


class SqliteIndex(ImageIndex):
    """One dataset's rows of an ``IndexFile``. Its changes write the file and answer the same
    index: only the aggregate's fold calls them, for stored events, in order."""

    _COLUMNS = "filename, label, phash, width, height, near_hash, boxes"

    def __init__(self, file: IndexFile, dataset_id: str) -> None:
        self.file, self.dataset_id = file, dataset_id

    def __getitem__(self, image_id: str) -> Image:
        found = self.file.rows(
            f"SELECT {self._COLUMNS} FROM images WHERE dataset_id = ? AND image_id = ?",
            self.dataset_id,
            image_id,
        )
        if not found:
            raise KeyError(image_id)
        return _image(found[0])

    def __len__(self) -> int:
        sql = "SELECT count(*) FROM images WHERE dataset_id = ?"
        return int(self.file.rows(sql, self.dataset_id)[0][0])

    def __iter__(self) -> Iterator[str]:
        return (image_id for image_id, _ in self.items())

    def items(self) -> Iterator[tuple[str, Image]]:  # type: ignore[override]
        """Every image in id order, read a page at a time (never the whole index at once)."""
        after = ""
        sql = (
            f"SELECT image_id, {self._COLUMNS} FROM images WHERE dataset_id = ? AND image_id > ?"
            f" ORDER BY image_id LIMIT {PAGE}"
        )
        while page := self.file.rows(sql, self.dataset_id, after):
            yield from ((row[0], _image(row[1:])) for row in page)
            after = page[-1][0]

    def with_added(self, records: Sequence[c.ImageRecord]) -> ImageIndex:
        rows = []
        for r in records:
            i = image_of(r)
            boxes = msgspec.json.encode(i.boxes) if i.boxes else b""
            rows.append((self.dataset_id, r.image_id, i.filename, i.label, i.phash, i.width,
                         i.height, i.near_hash, boxes))  # fmt: skip
        sql = "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self.file.write(sql, rows)
        return self

    def with_label(self, image_id: str, label: str) -> ImageIndex:
        sql = "UPDATE images SET label = ? WHERE dataset_id = ? AND image_id = ?"
        self.file.write(sql, [(label, self.dataset_id, image_id)])
        return self

    def without(self, image_id: str) -> ImageIndex:
        sql = "DELETE FROM images WHERE dataset_id = ? AND image_id = ?"
        self.file.write(sql, [(self.dataset_id, image_id)])
        return self


class StagedFile:
    """A running import's records in file order, in a SQLite file of its own (``Staged``):
    what it read waits there, not in memory, until it commits; the file goes when it ends. Its
    ``Claim`` is held meanwhile, so no sweep (of any instance) removes it while it is used."""

    def __init__(self, path: Path) -> None:
        self.path = path
        claim = Claim.take(claim_of(path), CLAIM_WAIT_S)
        if claim is None:
            raise RuntimeError(f"the staging file {path} is held by another process")
        self.claim = claim
        path.unlink(missing_ok=True)  # a dead owner's
        self.db = _connect(path, durable=False)
        self.db.executescript(
            "CREATE TABLE records (n INTEGER PRIMARY KEY, image_id TEXT NOT NULL,"
            " filename TEXT NOT NULL, label TEXT NOT NULL, body BLOB NOT NULL);"
            "CREATE INDEX records_image ON records (image_id);"
            "CREATE TABLE kept (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
        )
        self.count = 0

    def add(self, records: Sequence[c.ImageRecord]) -> None:
        rows = [(r.image_id, r.filename, r.label, msgspec.json.encode(r)) for r in records]
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO records (image_id, filename, label, body) VALUES (?, ?, ?, ?)", rows
        )
        self.db.execute("COMMIT")
        self.count += len(rows)

    def image_ids(self) -> Iterator[str]:
        """Every image id staged so far (what a garbage collector must keep)."""
        for (image_id,) in self.db.execute("SELECT DISTINCT image_id FROM records"):
            yield image_id

    def plan(self, index: Mapping[str, Image]) -> tuple[int, list[c.DuplicateRecord]]:
        """The first copy of each file is kept unless ``index`` has it; every other copy is a
        duplicate, reported with the label of the copy kept."""
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM kept")
        known: dict[str, str] = {}  # ids the dataset has already: their label
        duplicates, kept = [], 0
        cursor = db.execute(
            "SELECT r.n, r.image_id, r.filename, r.label, f.n, f.label FROM records r"
            " JOIN records f ON f.n = (SELECT min(n) FROM records WHERE image_id = r.image_id)"
            " ORDER BY r.n"
        )
        while page := cursor.fetchmany(PAGE):
            keep = []
            for n, image_id, filename, label, first, first_label in page:
                if n == first and (had := index.get(image_id)) is not None:
                    known[image_id] = had.label
                if n == first and image_id not in known:
                    keep.append((n,))
                    continue
                kept_label = known.get(image_id, first_label)
                duplicates.append(c.DuplicateRecord(filename, label, image_id, kept_label))
            db.executemany("INSERT INTO kept (n) VALUES (?)", keep)
            kept += len(keep)
        db.execute("COMMIT")
        return kept, duplicates

    def kept(self, start: int, stop: int) -> list[c.ImageRecord]:
        rows = self.db.execute(
            "SELECT r.body FROM kept k JOIN records r ON r.n = k.n WHERE k.k > ? AND k.k <= ?"
            " ORDER BY k.k",
            (start, stop),
        )
        return [_RECORD.decode(body) for (body,) in rows]

    def sizes(self) -> Iterator[int]:
        rows = self.db.execute(
            "SELECT length(r.body) FROM kept k JOIN records r ON r.n = k.n ORDER BY k.k"
        )
        return (size for (size,) in rows)

    def close(self) -> None:
        """Closes and deletes the file, then lets its claim go."""
        self.db.close()
        self.path.unlink(missing_ok=True)
        self.claim.release()
