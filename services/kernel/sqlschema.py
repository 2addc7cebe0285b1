"""Whether a read-model file still has the shape its code declares.

A read model is a cache of the event streams, and a change to its tables or columns is a
rebuild by replay, never a silent migration: a file written by an older version (a table that
since gained a column, an index renamed, a type changed) would otherwise be served as it is,
failing on the new column or answering without it. ``differences`` compares the file with
the declared SQLModel tables and says what differs; ``services.kernel.sqlite.create_engine``
moves a file that differs aside and the projection runner rebuilds it, as for a corrupt one.

What is compared, for every declared table the file holds: its columns (name, declared type,
NOT NULL, default, primary-key position) and its indexes (name, unique, origin, columns), as
SQLite itself reports them (``PRAGMA table_info``/``index_list``/``index_info``) for the file
and for the same tables created from the declarations in an in-memory database, so both sides
are read by one rule. A declared table the file lacks is not a difference (the runner creates
it, and replays the projectors that write it when they are past their start: ``stale``; one
process declares other files' tables too), nor is a table the file holds that nothing declares
(a leftover of a removed projector: harmless, and a rebuild would not need it).

Imports SQLAlchemy and the standard library only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence, Set
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.pool import StaticPool

#: One table's shape: its columns and its indexes, each by name.
Shape = dict[str, dict[str, tuple[Any, ...]]]


def differences(path: Path, declared: MetaData) -> list[str]:
    """What differs between the file at ``path`` and ``declared``'s tables, one line each;
    empty when nothing does, the file is absent, or another process's lock keeps it from
    being read (it is then in use by a process of the same code). A file SQLite cannot read
    is one line saying so."""
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            present = _tables(db)
            tables = [t for name, t in declared.tables.items() if name in present]
            found = {t.name: _shape(db, t.name) for t in tables}
    except sqlite3.Error as exc:
        if "locked" in str(exc):
            return []
        return [f"the file cannot be read ({exc})"]
    expected = declared_shapes(tables)
    return [line for t in tables for line in _compare(t.name, found[t.name], expected[t.name])]


def declared_shapes(tables: Iterable[Table]) -> dict[str, Shape]:
    """The shape SQLite gives each of ``tables`` when they are created from their declaration."""
    tables = list(tables)
    engine = create_sync_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.begin() as conn:
            for table in tables:
                table.create(conn)
        raw = engine.raw_connection()
        try:
            return {t.name: _shape(raw.driver_connection, t.name) for t in tables}  # type: ignore[arg-type]
        finally:
            raw.close()
    finally:
        engine.dispose()


def _tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}


def _shape(db: sqlite3.Connection, table: str) -> Shape:
    quoted = table.replace('"', '""')
    # (cid, name, type, notnull, default, pk): the position (cid) is not part of the shape
    # (SQLAlchemy names every column it reads or writes).
    columns = {
        str(name): (str(kind).upper(), notnull, default, pk)
        for _cid, name, kind, notnull, default, pk in db.execute(f'PRAGMA table_info("{quoted}")')
    }
    indexes: dict[str, tuple[Any, ...]] = {}
    for _seq, name, unique, origin, partial in db.execute(f'PRAGMA index_list("{quoted}")'):
        iquoted = str(name).replace('"', '""')
        cols = tuple(str(r[2]) for r in db.execute(f'PRAGMA index_info("{iquoted}")'))
        indexes[str(name)] = (unique, origin, partial, cols)
    return {"columns": columns, "indexes": indexes}


def _compare(table: str, found: Shape, expected: Shape) -> list[str]:
    lines: list[str] = []
    for part in ("columns", "indexes"):
        have, want = found[part], expected[part]
        noun = part[:-1] if part == "columns" else "index"
        for name in sorted(want.keys() - have.keys()):
            lines.append(f"{table}: {noun} {name} is missing")
        for name in sorted(have.keys() - want.keys()):
            lines.append(f"{table}: {noun} {name} is not declared")
        for name in sorted(want.keys() & have.keys()):
            if have[name] != want[name]:
                lines.append(f"{table}: {noun} {name} is {have[name]}, declared {want[name]}")
    return lines


def stale(
    tables_of: Mapping[str, Sequence[str]], present: Set[str], positions: Mapping[str, int]
) -> list[str]:
    """The projectors (by name, each with the names of its tables) to replay from the start:
    one that has applied events (a position past 0) into a file lacking one of its tables
    (a table added since the file was written: created empty, it would miss every event
    before that position), and every projector sharing a table with one of those (the table
    is dropped and rebuilt for all who write it)."""
    replay = [
        name
        for name, tables in tables_of.items()
        if positions.get(name, 0) > 0 and not set(tables) <= present
    ]
    dropped = {table for name in replay for table in tables_of[name]}
    while more := [n for n, t in tables_of.items() if n not in replay and dropped & set(t)]:
        replay += more
        dropped |= {table for name in more for table in tables_of[name]}
    return replay
