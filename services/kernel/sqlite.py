"""SQLite read-model plumbing: one async engine per file, WAL, short sessions.

A read model is a cache of the event streams, so a damaged file (garbage bytes, a truncated
copy, a disk that lost pages) is never served and never fatal: ``create_engine`` checks the file
before opening it and, when SQLite cannot read it whole, moves it (and its WAL) aside under a
``.corrupt-<time>`` name and logs so; the projection runner then finds no stored position and
rebuilds the model by replay. A file whose tables differ from the declared ones (a column
added since it was written, a changed type or index: ``services.kernel.sqlschema``) goes aside
the same way under an ``.outdated-<time>`` name and is rebuilt: a schema change is a rebuild,
never a silent migration, and never a command an operator must remember to run.

Setting a file aside survives being killed half way: the new name is written first to a
``<file>.moving-aside`` note, then the file moves, then its WAL, then the note goes; a process
that finds the note at start finishes the move before opening the file (a WAL left behind
would be lost to the copy: SQLite deletes it when it opens the new, empty file). Each copy has
a name of its own, even within one second, never reused. Only the newest ``KEEP_ASIDE``
copies are kept: older ones are deleted when another is set aside, and the log says which, so
a file damaged at every start, or versions switched back and forth, cannot fill the disk.
``services.kernel.projection_faults`` lets the tests kill the process at each of those steps.

Writers of one file in one process take turns (``_Turns``): a write transaction begins
``BEGIN IMMEDIATE`` at its first write, once the transactions of the same file before it have
ended, waited for in asyncio, first come first served. A transaction holds SQLite's lock across
event-loop turns (aiosqlite), so on a loaded machine a projector's batch can hold it for
seconds; waiting in SQLite's busy handler instead gave up after ``busy_timeout`` with
``database is locked``, restarting projections and failing requests. Reads take no turn (WAL).
Another process writing the file is waited for by SQLite (``BUSY_TIMEOUT_MS``).

``Reader`` is the lean route for a gateway's hot reads (a project, a page of images): one plain
``sqlite3`` connection per process, read-only, its statements prepared once and cached, called
on the event loop (a primary-key SELECT takes microseconds; the async ORM's thread hop and
session cost hundreds). Imports SQLAlchemy, sqlmodel, the kernel's ``sqlschema`` and
``projection_faults`` and the standard library only.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from services.kernel.projection_faults import fault_point
from services.kernel.sqlschema import differences

log = logging.getLogger(__name__)

#: The files SQLite keeps beside a database in WAL mode: they go aside with it.
_SIDE_FILES = ("-wal", "-shm")
#: How many set-aside copies of a read model are kept, the newest: a copy is for a look at
#: what went wrong, never read again by the studio (the file is rebuilt by replay).
KEEP_ASIDE = 2
#: How long SQLite waits for another process's write transaction on the file (milliseconds).
BUSY_TIMEOUT_MS = 5000
#: How long a writer waits for its turn behind this process's writers of the file (seconds):
#: generous (a turn is a transaction), but a writer waiting on itself fails rather than hangs.
WRITE_TURN_S = 120.0
#: Statements that do not write: they take no turn (anything else begins a write transaction).
_READS = ("SELECT", "PRAGMA", "EXPLAIN")
#: ``info`` key of a connection whose write transaction holds its file's turn.
_TURN = "studio_write_turn"


def create_engine(path: Path, declared: MetaData | None = None) -> AsyncEngine:
    """An engine on ``path`` with WAL, so readers never wait for the projection's writer; a
    damaged file at ``path``, or one whose tables differ from ``declared``'s (by default every
    SQLModel table this process declares), is moved aside first (see the module's docstring)."""
    finish_setting_aside(path)
    set_aside_if_corrupt(path) or set_aside_if_outdated(path, declared or SQLModel.metadata)
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # The driver begins no transaction by itself: _Turns begins each write transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL is safe with WAL: a power cut loses at most the last transactions, which
        # the projection replays from the stream because its position is in the same file.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    _Turns(str(path.resolve())).install(engine)
    return engine


class _Turns:
    """One file's write turns in this process (one FIFO lock per event loop): a connection
    takes the turn before its transaction's first write and gives it back once the transaction
    has ended (commit, rollback, or the connection going back to the pool or away)."""

    _locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, key: str) -> None:
        self.key = key

    def install(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before_execute)
        for name in ("checkin", "close", "invalidate", "soft_invalidate", "detach"):
            event.listen(sync.pool, name, self._on_pool_event)
        dialect = sync.dialect
        for name in ("do_commit", "do_rollback"):
            setattr(dialect, name, self._then_give_back(getattr(dialect, name)))

    def _lock(self) -> asyncio.Lock:
        per_file = self._locks.setdefault(asyncio.get_running_loop(), {})
        return per_file.setdefault(self.key, asyncio.Lock())

    def _before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any, **__: Any) -> None:
        if _TURN in conn.info or statement.lstrip()[:7].upper().startswith(_READS):
            return
        lock = self._lock()
        try:
            await_(asyncio.wait_for(lock.acquire(), WRITE_TURN_S))
        except TimeoutError:
            raise sqlite3.OperationalError(
                f"database is locked: no turn to write {self.key} in {WRITE_TURN_S:.0f}s"
            ) from None
        conn.info[_TURN] = lock
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            _give_back(conn.info)
            raise

    def _then_give_back(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(dbapi_conn: Any) -> None:
            try:
                end(dbapi_conn)
            finally:
                _give_back(_info_of(dbapi_conn))

        return ended

    @staticmethod
    def _on_pool_event(_dbapi_conn: Any, record: Any, *_: Any) -> None:
        _give_back(_info_of(record))


def _info_of(conn: Any) -> dict[Any, Any] | None:
    """A pooled connection's ``info`` (the same dict as its ``Connection.info``); None for
    the dialect's first, unpooled connection, which has none."""
    try:
        return conn.info
    except (AttributeError, NotImplementedError):
        return None


def _give_back(info: dict[Any, Any] | None) -> None:
    lock = info.pop(_TURN, None) if info is not None else None
    if lock is not None and lock.locked():
        lock.release()


def damage(path: Path) -> str | None:
    """Why SQLite cannot read the database at ``path`` whole; None when it can (or it is absent).

    ``PRAGMA quick_check`` reads every page of every table and index (without comparing
    indexes to their tables, which ``integrity_check`` does at several times the cost)."""
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # another process writes it: it is readable
            return None
        return str(exc)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        return str(exc)
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    return "; ".join(problems[:3]) or None


def set_aside_if_corrupt(path: Path) -> Path | None:
    """Moves a damaged database at ``path`` (and its WAL) aside; returns where it went."""
    reason = damage(path)
    if reason is None:
        return None
    return _set_aside(path, "corrupt", f"is corrupt ({reason})")


def set_aside_if_outdated(path: Path, declared: MetaData) -> Path | None:
    """Moves the database at ``path`` (and its WAL) aside when its tables differ from
    ``declared``'s; returns where it went."""
    found = differences(path, declared)
    if not found:
        return None
    shown = "; ".join(found[:10]) + (f"; and {len(found) - 10} more" if len(found) > 10 else "")
    return _set_aside(path, "outdated", f"differs from the declared tables ({shown})")


def finish_setting_aside(path: Path) -> Path | None:
    """Finishes moving ``path`` aside when a process was killed doing it (its note says where
    to); returns where it went, None when no move was under way."""
    note = _note(path)
    note.with_name(note.name + ".tmp").unlink(missing_ok=True)
    try:
        name = note.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name.startswith(f"{path.name}.") or "/" in name:  # not a note this module wrote
        note.unlink()
        return None
    aside = path.with_name(name)
    _move(path, aside)
    removed = _prune(path)
    log.warning(
        "read model %s was being moved aside to %s when its process ended: moved; "
        "rebuilding it by replay; %s",
        path,
        aside,
        _kept(removed),
    )
    return aside


def _set_aside(path: Path, why: str, reason: str) -> Path:
    aside = _aside_name(path, why)
    note = _note(path)
    draft = note.with_name(note.name + ".tmp")
    draft.write_text(aside.name, encoding="utf-8")
    draft.replace(note)  # whole or absent: a killed write leaves no half a name
    fault_point("aside_noted")
    _move(path, aside)
    removed = _prune(path)
    log.warning(
        "read model %s %s: moved aside to %s; rebuilding it by replay; %s",
        path,
        reason,
        aside,
        _kept(removed),
    )
    fault_point("aside_done")
    return aside


def _move(path: Path, aside: Path) -> None:
    """The file first, then its WAL and shared memory, then the note: each step is a rename,
    and a step done is not done again when a killed move is finished."""
    for suffix in ("", *_SIDE_FILES):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
        if not suffix:
            fault_point("aside_file_moved")  # its WAL not yet
    _note(path).unlink(missing_ok=True)


def _aside_name(path: Path, why: str) -> Path:
    """``<file>.<why>-<time>``, counted past the copies of that second (even pruned ones'
    names are not reused: a copy's name sorts after every older copy's)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    taken = [n for at, n, _why in _aside_files(path) if at == stamp]
    n = max(taken) + 1 if taken else 0
    return path.with_name(f"{path.name}.{why}-{stamp}" + (f"-{n}" if n else ""))


def asides(path: Path) -> list[Path]:
    """The copies of ``path`` set aside (without their WAL files), oldest first."""
    return [files[0] for _key, files in sorted(_aside_files(path).items())]


def _aside_files(path: Path) -> dict[tuple[str, int, str], list[Path]]:
    """Each set-aside copy of ``path`` by (time, count, why): its file first, then its WAL's."""
    found: dict[tuple[str, int, str], list[Path]] = {}
    for file in sorted(path.parent.glob(f"{glob.escape(path.name)}.*")):
        match = _ASIDE.fullmatch(file.name[len(path.name) :])
        if match:
            why, stamp, n, side = match.groups()
            files = found.setdefault((stamp, int(n or 0), why), [])
            files.insert(0 if not side else len(files), file)
    return found


def _prune(path: Path) -> list[Path]:
    """Deletes all but the newest ``KEEP_ASIDE`` copies of ``path``; returns those deleted."""
    found = _aside_files(path)
    removed = []
    for key in sorted(found)[: max(0, len(found) - KEEP_ASIDE)]:
        for file in found[key]:
            file.unlink(missing_ok=True)
        removed.append(found[key][0])
    return removed


def _kept(removed: list[Path]) -> str:
    """The log's words on the copies kept and deleted."""
    kept = f"the newest {KEEP_ASIDE} set-aside copies are kept"
    if not removed:
        return kept
    return f"{kept}, older ones deleted: {', '.join(p.name for p in removed)}"


def _note(path: Path) -> Path:
    return path.with_name(f"{path.name}.moving-aside")


#: A set-aside copy's name after its file's: ``.<why>-<time>[-<count>][-wal|-shm]``.
_ASIDE = re.compile(r"\.(corrupt|outdated)-(\d{8}T\d{6})(?:-(\d+))?(-wal|-shm)?")


class Reader:
    """A read-only ``sqlite3`` connection to the read model at ``path``, opened on first use.

    Each call runs in autocommit and reads its rows whole (``fetchall``), so no read
    transaction outlives it: every call sees what the projection committed before it began
    (read-your-writes holds as with a session). WAL lets it read while the projection writes.
    """

    def __init__(self, path: Path, cached_statements: int = 256) -> None:
        self.path = path
        self._cached = cached_statements
        self._db: sqlite3.Connection | None = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row ``sql`` selects, as tuples."""
        return self._connection().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The first row ``sql`` selects, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=1.0,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=self._cached,
            )
            db.execute("PRAGMA query_only=ON")
            self._db = db
        return self._db


@asynccontextmanager
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine, expire_on_commit=False) as db:
        yield db
