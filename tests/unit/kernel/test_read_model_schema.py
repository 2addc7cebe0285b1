"""A read-model file compared with its declared tables (``services.kernel.sqlschema``): the same
tables say nothing; a column dropped, added, retyped or made nullable, an index missing or
renamed each say which; a declared table the file lacks and a table nothing declares say
nothing. ``create_engine`` moves a file that differs aside with its WAL, logs what differs, and
opens a new file; the gateway's real run tables written without their detection columns (what
an older studio left) are found outdated."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, text
from sqlalchemy import create_engine as create_sync_engine
from sqlmodel import SQLModel

import services.gateway.readmodels  # noqa: F401  (declares the gateway's tables)
from services.kernel import sqlschema
from services.kernel.sqlite import create_engine, set_aside_if_outdated
from services.kernel.sqlschema import differences


def declared(
    *, score: type = Float, nullable: bool = True, index: str = "ix_runs_status"
) -> MetaData:
    meta = MetaData()
    Table(
        "runs",
        meta,
        Column("run_id", String, primary_key=True),
        Column("status", String, nullable=False),
        Column("score", score, nullable=nullable),
        Index(index, "status"),
    )
    Table("epochs", meta, Column("run_id", String, primary_key=True), Column("n", Integer))
    return meta


def written(path: Path, meta: MetaData) -> Path:
    engine = create_sync_engine(f"sqlite:///{path}")
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (run_id, status) VALUES ('r1', 'completed')"))
    engine.dispose()
    return path


def test_the_same_tables_say_nothing(tmp_path: Path):
    path = written(tmp_path / "rm.db", declared())
    assert differences(path, declared()) == []
    assert differences(tmp_path / "absent.db", declared()) == []


def test_each_difference_is_named(tmp_path: Path):
    path = written(tmp_path / "rm.db", declared())
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE epochs ADD COLUMN extra TEXT")
    # a column the file has that is not declared, and one declared that it lacks
    wider = MetaData()
    Table("epochs", wider, Column("run_id", String, primary_key=True), Column("m", Integer))
    assert differences(path, wider) == [
        "epochs: column m is missing",
        "epochs: column extra is not declared",
        "epochs: column n is not declared",
    ]
    path = written(tmp_path / "rm2.db", declared())
    (typed,) = differences(path, declared(score=Integer))
    assert typed.startswith("runs: column score is ('FLOAT', 0, None, 0), declared ('INTEGER'")
    (required,) = differences(path, declared(nullable=False))
    assert required.startswith("runs: column score is ('FLOAT', 0,") and "1, None, 0)" in required
    assert differences(path, declared(index="ix_runs_state")) == [
        "runs: index ix_runs_state is missing",
        "runs: index ix_runs_status is not declared",
    ]


def test_tables_only_one_side_has_are_no_difference(tmp_path: Path):
    path = written(tmp_path / "rm.db", declared())
    fewer = MetaData()
    Table("epochs", fewer, Column("run_id", String, primary_key=True), Column("n", Integer))
    Table("new_table", fewer, Column("id", String, primary_key=True))
    assert differences(path, fewer) == []


def test_an_outdated_file_goes_aside_with_its_wal_and_a_new_one_opens(tmp_path: Path, caplog):
    path = written(tmp_path / "rm.db", declared())
    path.with_name("rm.db-wal").write_bytes(b"")
    assert set_aside_if_outdated(path, declared()) is None and path.exists()

    engine = create_engine(path, declared(score=Integer))
    engine.sync_engine.dispose()

    (aside,) = tmp_path.glob("rm.db.outdated-*[0-9]")
    assert not path.with_name("rm.db-wal").exists()
    assert f"read model {path} differs from the declared tables" in caplog.text
    assert "runs: column score is" in caplog.text and "rebuilding it by replay" in caplog.text
    with closing(sqlite3.connect(aside)) as db:
        assert db.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]


def test_the_gateways_run_tables_without_their_detection_columns_are_outdated(tmp_path: Path):
    # given a gateway read model written before runs and epochs had detection columns
    path = tmp_path / "readmodel.db"
    runs, epochs = (SQLModel.metadata.tables[n] for n in ("runs", "run_epochs"))
    engine = create_sync_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine, tables=[runs, epochs])
    engine.dispose()
    assert differences(path, SQLModel.metadata) == []
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE runs DROP COLUMN best_val_map")
        db.execute("ALTER TABLE run_epochs DROP COLUMN losses")
    # then the comparison with what the code declares names both
    assert differences(path, SQLModel.metadata) == [
        "runs: column best_val_map is missing",
        "run_epochs: column losses is missing",
    ]


@pytest.mark.parametrize("garbage", [b"not a database at all" * 200])
def test_a_file_sqlite_cannot_read_is_a_difference(tmp_path: Path, garbage: bytes):
    path = tmp_path / "rm.db"
    path.write_bytes(garbage)
    (line,) = differences(path, declared())
    assert line.startswith("the file cannot be read")


def test_projectors_past_their_start_with_a_missing_table_replay_with_whoever_shares_it() -> None:
    tables_of = {"a": ["t1", "new"], "b": ["t1", "t2"], "c": ["t2"], "d": ["t3"], "e": ["t4"]}
    positions = {"a": 5, "b": 5, "c": 5, "d": 5}
    # "a" lacks "new"; "b" shares t1 with it, "c" shares t2 with "b"; "d" and "e" are whole
    assert sqlschema.stale(tables_of, {"t1", "t2", "t3"}, positions) == ["a", "b", "c"]
    # a projector that has applied nothing yet just fills its new table
    assert sqlschema.stale(tables_of, {"t1", "t2", "t3"}, {"a": 0}) == []
    assert sqlschema.stale(tables_of, {"t1", "t2", "t3", "t4", "new"}, positions) == []
