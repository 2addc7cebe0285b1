"""The copies of a read model set aside (``services.kernel.sqlite``): never more than
``KEEP_ASIDE`` (the newest, with their WAL files; the log names those deleted), one per move
even within one second, and a move a killed process left half done (its note written, the file
moved, its WAL not) finished at the next open, the WAL joining its file, never the new one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from services.kernel import projection_faults
from services.kernel.sqlite import (
    KEEP_ASIDE,
    asides,
    create_engine,
    finish_setting_aside,
    set_aside_if_corrupt,
    set_aside_if_outdated,
)


def declared(extra: bool = False) -> MetaData:
    meta = MetaData()
    more = [Column("extra", String)] if extra else []
    Table("runs", meta, Column("run_id", String, primary_key=True), Column("n", Integer), *more)
    return meta


#: Writes ``declared()``'s table with ``rows`` rows in WAL mode; killed, when told, before
#: it closes (its rows then only in the WAL, as a process killed by SIGKILL leaves them).
WRITER = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE runs (run_id VARCHAR NOT NULL PRIMARY KEY, n INTEGER)")
db.executemany("INSERT INTO runs VALUES (?, ?)", [(f"r{i}", i) for i in range(int(sys.argv[2]))])
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def written(path: Path, rows: int = 1, killed: bool = False) -> None:
    how = "kill" if killed else "close"
    subprocess.run([sys.executable, "-c", WRITER, str(path), str(rows), how], check=not killed)


def count(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_only_the_newest_copies_are_kept_and_the_log_says_which_went(tmp_path: Path, caplog):
    path = tmp_path / "rm.db"
    # given a file set aside again and again within one second (a version switched back and
    # forth, a file damaged at every start), each with its WAL
    made = []
    for n in range(KEEP_ASIDE + 3):
        written(path, rows=n + 1)
        path.with_name("rm.db-wal").write_bytes(b"")
        made.append(set_aside_if_outdated(path, declared(extra=True)))
    # then each move had a name of its own, and only the newest KEEP_ASIDE are left, WAL too
    assert len(set(made)) == len(made)
    kept = asides(path)
    assert kept == made[-KEEP_ASIDE:]
    sides = [f"{p.name}{suffix}" for p in kept for suffix in ("-wal", "-shm")]
    left = {p.name for p in tmp_path.iterdir()}
    assert {p.name for p in kept} | {f"{p.name}-wal" for p in kept} <= left
    assert left <= {p.name for p in kept} | set(sides)
    assert [count(p) for p in kept] == [KEEP_ASIDE + 2, KEEP_ASIDE + 3]
    assert f"the newest {KEEP_ASIDE} set-aside copies are kept" in caplog.text
    assert f"older ones deleted: {made[0].name}" in caplog.text


def test_corrupt_and_outdated_copies_count_together(tmp_path: Path):
    path = tmp_path / "rm.db"
    written(path)
    first = set_aside_if_outdated(path, declared(extra=True))
    for _ in range(KEEP_ASIDE):
        path.write_bytes(b"not a database at all" * 300)
        set_aside_if_corrupt(path)
    assert first is not None and not first.exists()
    assert len(asides(path)) == KEEP_ASIDE
    assert all(".corrupt-" in p.name for p in asides(path))


def test_a_move_killed_after_the_file_went_is_finished_with_its_wal(tmp_path: Path, caplog):
    # given a file whose rows are in its WAL, and a move aside killed once the file has gone
    path = tmp_path / "rm.db"
    written(path, rows=5, killed=True)
    assert path.with_name("rm.db-wal").stat().st_size > 0
    aside = path.with_name("rm.db.corrupt-20260101T000000")
    path.with_name("rm.db.moving-aside").write_text(aside.name)
    path.replace(aside)
    # when the next process opens the read model
    engine = create_engine(path, declared())
    engine.sync_engine.dispose()
    # then the move was finished: no WAL of the old file beside the new one, the copy whole
    assert not path.with_name("rm.db.moving-aside").exists()
    assert asides(path) == [aside]
    assert count(aside) == 5
    assert "was being moved aside to" in caplog.text


def test_a_move_killed_before_the_file_went_moves_it_at_the_next_open(tmp_path: Path):
    path = tmp_path / "rm.db"
    written(path, rows=3)
    path.with_name("rm.db.moving-aside").write_text("rm.db.outdated-20260101T000000")
    path.with_name("rm.db.moving-aside.tmp").write_text("rm.db.outdated-2026")
    assert finish_setting_aside(path) == tmp_path / "rm.db.outdated-20260101T000000"
    assert not path.exists() and count(tmp_path / "rm.db.outdated-20260101T000000") == 3
    assert not list(tmp_path.glob("*moving-aside*"))


def test_a_note_naming_another_place_is_ignored(tmp_path: Path):
    path = tmp_path / "rm.db"
    written(path)
    path.with_name("rm.db.moving-aside").write_text("../elsewhere.db")
    assert finish_setting_aside(path) is None
    assert path.exists() and not path.with_name("rm.db.moving-aside").exists()


def test_a_mistyped_fault_point_fails_loudly():
    assert projection_faults.parse("aside_done:1, batch_committed:recorder:3") == [
        ("aside_done", "", 1),
        ("batch_committed", "recorder", 3),
    ]
    for bad in ("aside_dne:1", "aside_done", "batch_committed:a:b:3", "aside_done:x"):
        with pytest.raises(ValueError, match="STUDIO_READMODEL_FAULT"):
            projection_faults.parse(bad)
