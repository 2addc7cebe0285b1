"""Garbage collection of the datasets service's stored images and thumbnails: the files of
failed, cancelled or interrupted imports, which no event names, listed or deleted.

Never a file an event names: the ids every ``ImagesAdded`` ever stored names (deleted images
included: a run's evaluation may still show them), and the imports running, are folded from the
datasets stream into a SQLite file of the service's own (``gc.db``), up to the stream's last
event, before each folder of files is decided. A file is deleted only when that set does not
name it, it is older than the grace period, and no import runs: an import in flight may be about
to name any file (even an old one: its content may be the same), so a collection that finds one
running deletes nothing and says so. Runs on demand (``CollectGarbage``: ``studio gc``) and as a
periodic pass. Imports ``contracts``, the kernel's blob store and nats-py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.js import JetStreamContext, api

from contracts import datasets as c
from contracts.envelope import tag_of
from services.kernel.blobstore import BlobStore
from services.kernel.eventstore import H_EVENT_TYPE

log = logging.getLogger(__name__)
#: Files younger than this are kept (seconds); ``STUDIO_GC_GRACE_S``.
GRACE_S = float(os.environ.get("STUDIO_GC_GRACE_S", "3600"))
#: Seconds between periodic passes (0: none); ``STUDIO_GC_INTERVAL_S``.
INTERVAL_S = float(os.environ.get("STUDIO_GC_INTERVAL_S", "21600"))
#: An import started longer ago than this and never ended is an interrupted one whose instance
#: did not come back: it no longer holds collection off.
STALE_S = 24 * 3600.0
SAMPLE = 20
_FOLDED: dict[str, type[c.Event]] = {
    tag_of(t): t for t in (c.ImagesAdded, c.ImportStarted, c.ImportCompleted, c.ImportFailed)
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS named (image_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS running (import_id TEXT PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS position (k INTEGER PRIMARY KEY CHECK (k = 0), seq INTEGER NOT NULL);
"""


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.executescript(_SCHEMA)
    return db


@dataclass
class Tally:
    files: int = 0
    thumbnails: int = 0
    bytes: int = 0
    recent: int = 0
    sample: list[str] = field(default_factory=list)
    deferred: str = ""


class Collector:
    def __init__(self, js: JetStreamContext, store: BlobStore, path: Path) -> None:
        self.js, self.store = js, store
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = _open(path)
        except sqlite3.DatabaseError as exc:  # damaged: a cache of the stream, folded again
            log.warning("%s was unreadable (%s): folded again from the events", path, exc)
            path.unlink()
            self.db = _open(path)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def collect(self, command: c.CollectGarbage) -> c.GarbageReport:
        grace = GRACE_S if command.grace_s is None else command.grace_s
        async with self._lock:  # one collection at a time
            tally = Tally()
            await self.catch_up()
            for prefix in await asyncio.to_thread(self._prefixes):
                files = await asyncio.to_thread(self._unnamed, prefix, grace, tally)
                if command.delete and files and not tally.deferred:
                    tally.deferred = await self._hold_off()
                    if not tally.deferred:  # named meanwhile? the set is up to date now
                        await asyncio.to_thread(self._delete, self._still_unnamed(files))
        named = self.db.execute("SELECT count(*) FROM named").fetchone()[0]
        deleted = command.delete and not tally.deferred and bool(tally.files + tally.thumbnails)
        return c.GarbageReport(
            files=tally.files, thumbnails=tally.thumbnails, bytes=tally.bytes, deleted=deleted,
            sample=tally.sample, recent=tally.recent, deferred=tally.deferred, named=named,
        )  # fmt: skip

    async def _hold_off(self) -> str:
        """Why nothing may be deleted now ("" if it may): the stream folded to its end first."""
        await self.catch_up()
        since = time.time() - STALE_S
        running = [
            i for (i,) in self.db.execute("SELECT import_id FROM running WHERE since > ?", (since,))
        ]
        if running:
            return f"{len(running)} import(s) running ({', '.join(sorted(running)[:3])})"
        return ""

    async def catch_up(self) -> int:
        """Folds the datasets stream's events since the last fold; answers its position."""
        last = (await self.js.stream_info(c.STREAM)).state.last_seq
        (seq,) = self.db.execute("SELECT coalesce(max(seq), 0) FROM position").fetchone()
        if seq >= last:
            return int(seq)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1
        )
        sub = await self.js.subscribe(c.EVENTS, ordered_consumer=True, config=config)
        try:
            while seq < last:
                msg = await sub.next_msg(timeout=5.0)
                seq = msg.metadata.sequence.stream
                kind = _FOLDED.get((msg.headers or {}).get(H_EVENT_TYPE, ""))
                if kind is not None:
                    self._fold(msgspec.json.decode(msg.data, type=kind), seq)
        finally:
            await sub.unsubscribe()
        self.db.execute("INSERT OR REPLACE INTO position VALUES (0, ?)", (seq,))
        return seq

    def _fold(self, event: c.Event, seq: int) -> None:
        db = self.db
        db.execute("BEGIN")
        match event:
            case c.ImagesAdded():
                rows = [(r.image_id,) for r in event.images]
                db.executemany("INSERT OR IGNORE INTO named VALUES (?)", rows)
            case c.ImportStarted():
                since = event.occurred_at.timestamp() if event.occurred_at else time.time()
                db.execute("INSERT OR REPLACE INTO running VALUES (?, ?)", (event.import_id, since))
            case c.ImportCompleted() | c.ImportFailed():
                db.execute("DELETE FROM running WHERE import_id = ?", (event.import_id,))
        db.execute("INSERT OR REPLACE INTO position VALUES (0, ?)", (seq,))
        db.execute("COMMIT")

    def _prefixes(self) -> list[str]:
        """The first fan-out folders (``aa``) under the originals and the thumbnails."""
        names = set()
        for kind in ("blobs", "thumbs"):
            folder = self.store.root / kind
            if folder.is_dir():
                names |= {p.name for p in folder.iterdir() if p.is_dir()}
        return sorted(names)

    def _unnamed(self, prefix: str, grace: float, tally: Tally) -> list[Path]:
        """The files under ``prefix`` that no folded event names and older than ``grace``."""
        found: dict[str, list[Path]] = {}
        for kind, suffix in (("blobs", ""), ("thumbs", ".jpg")):
            for path in (self.store.root / kind / prefix).glob("*/*"):
                sha = path.name.removesuffix(suffix) if path.name.endswith(suffix) else ""
                if len(sha) == 64 and not path.name.startswith("."):  # temp files: never
                    found.setdefault(sha, []).append(path)
        unnamed, cutoff = [], time.time() - grace
        for sha in self._not_named(list(found)):
            for path in found[sha]:
                stat = path.stat()
                if stat.st_mtime > cutoff:
                    tally.recent += 1
                    continue
                tally.bytes += stat.st_size
                if path.parent.parent.parent.name == "thumbs":
                    tally.thumbnails += 1
                else:
                    tally.files += 1
                    if len(tally.sample) < SAMPLE:
                        tally.sample.append(sha)
                unnamed.append(path)
        return unnamed

    def _not_named(self, shas: list[str]) -> list[str]:
        named: set[str] = set()
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            sql = f"SELECT image_id FROM named WHERE image_id IN ({','.join('?' * len(part))})"
            named |= {row[0] for row in self.db.execute(sql, part)}
        return [sha for sha in shas if sha not in named]

    def _still_unnamed(self, files: list[Path]) -> list[Path]:
        keep = set(self._not_named(sorted({p.name[:64] for p in files})))
        return [p for p in files if p.name[:64] in keep]

    @staticmethod
    def _delete(files: list[Path]) -> None:
        for path in files:
            path.unlink(missing_ok=True)

    def start(self, interval: float = INTERVAL_S) -> None:
        """The periodic pass: deletes what it may every ``interval`` seconds (0: never)."""
        if interval > 0:
            self._task = asyncio.create_task(self._periodically(interval), name="datasets-gc")

    async def _periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.collect(c.CollectGarbage(delete=True))
            except Exception:  # a pass that failed is tried again at the next one
                log.exception("garbage collection failed")
                continue
            if report.deleted or report.deferred:
                log.info("garbage collection: %s", msgspec.json.encode(report).decode())
