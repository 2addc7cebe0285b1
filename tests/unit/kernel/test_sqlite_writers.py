"""Writers of one read-model file in one process wait their turn instead of failing.

Found by the benchmarks: on a loaded machine the gateway's projection runners and its API
writes failed with ``database is locked`` (44 projection restarts in one run), because a write
transaction holds SQLite's lock across event-loop turns (aiosqlite) and the others waited in
SQLite's busy handler, which gives up after ``busy_timeout``. These tests hold a writer's
transaction open for longer than the busy timeout (shortened here) while others write, read
then write, and run projector-like batches: every writer must wait its turn and succeed, and
the held transaction must commit whole. Imports the kernel's sqlite module and sqlmodel.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, select

from services.kernel import sqlite as kernel_sqlite
from services.kernel.sqlite import Reader, create_engine, session


class Counter(SQLModel, table=True):
    __tablename__ = "x2_counter"
    name: str = Field(primary_key=True)
    value: int = 0


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's busy handler gives up after 50 ms: what 5 s is on a loaded machine."""
    monkeypatch.setattr(kernel_sqlite, "BUSY_TIMEOUT_MS", 50)


async def _engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(tmp_path / "rm.db")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[Counter.__table__])  # type: ignore[attr-defined]
    return engine


async def _bump(engine: AsyncEngine, name: str, times: int = 1) -> None:
    """Read-then-write in one session, as a projector's ``_apply`` does."""
    async with session(engine) as db:
        for _ in range(times):
            row = await db.get(Counter, name) or Counter(name=name)
            row.value += 1
            db.add(row)
            await db.flush()
            await asyncio.sleep(0)  # other tasks run while the transaction is open
        await db.commit()


async def test_a_writer_waits_for_a_transaction_held_past_the_busy_timeout(
    tmp_path: Path, short_busy: None
) -> None:
    engine = await _engine(tmp_path)
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with session(engine) as db:
            db.add(Counter(name="slow", value=1))
            await db.flush()  # the write lock is held from here ...
            holding.set()
            await release.wait()  # ... across event-loop turns, longer than busy_timeout
            await db.commit()

    slow = asyncio.create_task(slow_writer())
    await holding.wait()
    others = [asyncio.create_task(_bump(engine, f"w{i}", times=3)) for i in range(4)]
    # The others reach their first write and wait there; give SQLite's (short) busy handler
    # many times its timeout to fail them if they waited in SQLite rather than their turn.
    for _ in range(20):
        await asyncio.sleep(0.02)
    assert not any(t.done() for t in others), [t.exception() for t in others if t.done()]
    release.set()
    await asyncio.gather(slow, *others)
    async with session(engine) as db:
        rows = {r.name: r.value for r in (await db.exec(select(Counter))).all()}
    assert rows == {"slow": 1, "w0": 3, "w1": 3, "w2": 3, "w3": 3}
    await engine.dispose()


async def test_hammering_writers_and_readers_never_see_locked(
    tmp_path: Path, short_busy: None
) -> None:
    """Projector-like batches from several tasks, plus API-like writes and lean reads."""
    engine = await _engine(tmp_path)
    reader = Reader(tmp_path / "rm.db")
    rounds, writers = 15, 6
    reads = 0

    async def read_loop(done: asyncio.Event) -> None:
        nonlocal reads
        while not done.is_set():
            reader.rows("SELECT name, value FROM x2_counter")
            async with session(engine) as db:
                (await db.exec(select(Counter))).all()
            reads += 1
            await asyncio.sleep(0)

    done = asyncio.Event()
    readers = [asyncio.create_task(read_loop(done)) for _ in range(2)]

    async def writer(i: int) -> None:
        for _ in range(rounds):
            await _bump(engine, f"p{i}", times=4)

    await asyncio.gather(*(writer(i) for i in range(writers)))
    done.set()
    await asyncio.gather(*readers)
    values = dict(reader.rows("SELECT name, value FROM x2_counter"))
    assert values == {f"p{i}": rounds * 4 for i in range(writers)}
    assert reads > 0
    reader.close()
    await engine.dispose()


async def test_a_failed_write_gives_the_turn_back(tmp_path: Path, short_busy: None) -> None:
    engine = await _engine(tmp_path)
    with pytest.raises(IntegrityError):
        async with session(engine) as db:
            db.add(Counter(name="a"))
            await db.commit()
            db.add(Counter(name="a"))  # a duplicate key: the transaction rolls back
            await db.commit()
    await asyncio.wait_for(_bump(engine, "b"), 10)  # the next writer is not stuck behind it
    async with session(engine) as db:
        assert (await db.get(Counter, "b")) is not None
    await engine.dispose()


async def test_a_cancelled_writer_gives_the_turn_back(tmp_path: Path, short_busy: None) -> None:
    engine = await _engine(tmp_path)
    holding = asyncio.Event()

    async def cancelled() -> None:
        async with session(engine) as db:
            db.add(Counter(name="gone"))
            await db.flush()
            holding.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled())
    await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(_bump(engine, "next"), 10)
    async with session(engine) as db:
        assert (await db.get(Counter, "gone")) is None  # rolled back, not half-committed
        assert (await db.get(Counter, "next")) is not None
    await engine.dispose()
