"""Rebuild: every read model (the gateway's, the datasets', the trainer's, the exporter's)
dropped and rebuilt by replay equals the live one, row for row; a read-model file damaged
while its service was down (garbage bytes, a truncated copy) is found at start, moved aside
with a log line saying so, and rebuilt by replay to the same rows.

The read models are filled by one journey of ``tests/reliability/workload.py`` on the module's
studio; each comparison dumps every table of the SQLite file, sorted, position table included
(a replay that applied an event twice counts one more event there).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from contracts import common
from services.kernel.sqlite import damage, set_aside_if_corrupt
from tests.reliability import figures
from tests.reliability.workload import Workload
from tests.stack import Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.integration

#: Each service with a read model, and its file under the workspace.
READ_MODELS = {
    name: Path(name) / "readmodel.db" for name in ("gateway", "datasets", "trainer", "exporter")
}
Dump = dict[str, list[tuple[Any, ...]]]


def dump(path: Path) -> Dump:
    """Every row of every table of the database at ``path``, sorted."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(db.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


def rows(d: Dump) -> int:
    return sum(len(r) for r in d.values())


@pytest.fixture(scope="module")
def filled(stack: Stack) -> Stack:
    Workload(stack.base_url, stack.imports, "rebuild", epochs=1).run()
    return stack


@pytest.mark.parametrize("service", list(READ_MODELS))
async def test_a_read_model_dropped_and_replayed_equals_the_live_one(filled: Stack, service):
    path = filled.workspace / READ_MODELS[service]
    live = dump(path)
    assert rows(live) > 0
    nc = await nats.connect(filled.nats_url)
    try:
        # when the service is asked to drop its read model and replay every stream
        reply = await nc.request(common.rebuild_subject(service), b"", timeout=120)
    finally:
        await nc.close()
    rebuilt = msgspec.json.decode(reply.data)
    assert "events" in rebuilt, rebuilt
    # then it holds exactly what it held, row for row
    again = dump(path)
    assert again == live
    figures.record(
        f"rebuild: {service} read model replayed",
        events_appended=rebuilt["events"],
        events_lost=0,
        duplicates_applied=0,
    )


def garbage(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(os.urandom(4096))


def truncate(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("service", "damage"), [("gateway", garbage), ("trainer", truncate), ("datasets", garbage)]
)
def test_a_corrupt_read_model_is_found_at_start_and_rebuilt(filled: Stack, service, damage):
    path = filled.workspace / READ_MODELS[service]
    live = dump(path)
    # given the service stopped, its WAL folded into the file (what a clean stop leaves)
    filled.stop(service)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # when its file is damaged while it is down
    damage(path)
    filled.start(service)
    filled.wait_healthy(150)
    # then it says so, keeps the damaged file aside, and rebuilds the same rows by replay
    wait(lambda: "is corrupt" in filled.log(service), 60)
    assert "rebuilding it by replay" in filled.log(service)
    assert list(path.parent.glob(f"{path.name}.corrupt-*"))
    wait(lambda: equal_now(path, live), 120, every=0.5)


def equal_now(path: Path, expected: Dump) -> bool:
    try:
        return dump(path) == expected
    except sqlite3.Error:
        return False


def test_damage_is_found_in_a_file_and_the_file_set_aside_with_its_wal(tmp_path: Path, caplog):
    healthy = tmp_path / "ok.db"
    with closing(sqlite3.connect(healthy)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [(f"row {i}" * 20,) for i in range(5000)])
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert damage(healthy) is None and damage(tmp_path / "absent.db") is None
    for name, spoil in (("garbage", garbage), ("truncated", truncate)):
        path = tmp_path / f"{name}.db"
        path.write_bytes(healthy.read_bytes())
        path.with_name(f"{name}.db-wal").write_bytes(b"")
        spoil(path)
        assert damage(path)
        aside = set_aside_if_corrupt(path)
        assert aside is not None and aside.exists() and not path.exists()
        # no WAL of the damaged file stays to be replayed into the new one
        assert not path.with_name(f"{name}.db-wal").exists()
        assert f"read model {path} is corrupt" in caplog.text
    assert set_aside_if_corrupt(healthy) is None and healthy.exists()
