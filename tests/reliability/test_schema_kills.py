"""A read model's schema rebuild killed (SIGKILL) at each of its writes ends, after a restart,
as the fault-free rebuild would: the same rows, each event applied once, the old file kept
whole beside it, and never more than ``KEEP_ASIDE`` old copies.

A read model written by an older version (two projectors, each on a stream of its own, both
writing one table, its last batches left in the WAL) is upgraded two ways: its table gains a
column (the file differs: set aside and rebuilt by replay) or a projector gains a table
(``sqlschema.stale``: both projectors, sharing the table, start over; each is its own
consumer, so one can have replayed while the other has not). A child process runs the
upgraded projection with ``STUDIO_READMODEL_FAULT`` armed (``services.kernel.projection_faults``)
and kills itself at one point; the restart is the projection started again on what it left.
The comparison dumps every table, sorted, position table included (its event counts show an
event applied twice).

Run as ``python -m tests.reliability.test_schema_kills NATS_URL FILE VERSION PREFIX``, the
module is that child. Under ``soak``, the real datasets service is killed the same way while it
rebuilds its outdated read model, at each point, on one studio of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import Column, Index, Integer, MetaData, String, Table
from sqlalchemy.dialects.sqlite import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import projects as c
from services.kernel import projection_faults
from services.kernel.eventstore import EventStore, StoredEvent
from services.kernel.nats_server import EmbeddedNats
from services.kernel.projection import Decodes, ProjectionRunner
from services.kernel.sqlite import KEEP_ASIDE, asides, create_engine
from services.kernel.streams import StreamSpec, ensure_stream
from tests import imagesets
from tests.reliability import figures
from tests.reliability.test_rebuild import Dump, dump, equal_now
from tests.stack import Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.integration
#: The soak scenario's studio (``own_stack``); the others start no service.
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"

ROOT = Path(__file__).resolve().parents[2]
#: Events of the two streams (each project created, then renamed) and the batch size.
PROJECTS, OTHER_PROJECTS, RENAMES, BATCH = 6, 1, 19, 10
EVENTS, OTHER_EVENTS = PROJECTS * (1 + RENAMES), OTHER_PROJECTS * (1 + RENAMES)
#: The second stream: the same events on subjects of their own.
OTHER, OTHER_SUBJECT = "KILLS_OTHER", "evt.kills"
#: How long a projection may take to catch up on a loaded machine.
CATCH_UP_S = 120.0
#: The consumers' prefix: the service's, the same for every version of it.
OLD = "schema"


def declared(version: str) -> MetaData:
    """The tables of a version: ``old``; ``wider`` (a column more: the file differs);
    ``grown`` (the recorder's new table: the file lacks it)."""
    md = MetaData()
    wider = [Column("name", String)] if version == "wider" else []
    Table(
        "k_applied",
        md,
        Column("sequence", Integer, nullable=False),
        Column("by", String, nullable=False),
        Column("kind", String, nullable=False),
        *wider,
        Index("ix_k_applied_sequence", "sequence"),
    )  # no key: an event applied twice is a row twice
    if version == "grown":
        Table(
            "k_named",
            md,
            Column("project_id", String, primary_key=True),
            Column("name", String, nullable=False),
        )
    return md


class Recorder(Decodes):
    """Writes one row per event it applies (and, once it has the table, each latest name)."""

    event_type = c.Event

    def __init__(self, md: MetaData, name: str = "recorder", stream: str = c.STREAM):
        self.name, self.stream = name, stream
        self.filter_subject = c.EVENTS if stream == c.STREAM else f"{OTHER_SUBJECT}.>"
        self.applied = md.tables["k_applied"]
        self.named = md.tables.get("k_named")
        self.tables: Sequence[Table] = [t for t in (self.applied, self.named) if t is not None]

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        conn = await db.connection()
        row = {"sequence": stored.sequence, "by": self.name, "kind": type(stored.event).__name__}
        if "name" in self.applied.c:
            row["name"] = stored.event.name
        await conn.execute(self.applied.insert().values(**row))
        if self.named is not None:
            latest = {"project_id": stored.event.project_id, "name": stored.event.name}
            upsert = insert(self.named).values(**latest)
            await conn.execute(upsert.on_conflict_do_update(["project_id"], set_=latest))


def projectors(version: str) -> list[Recorder]:
    md = declared(version)
    other = Recorder(md, "other", OTHER)
    other.tables = [md.tables["k_applied"]]  # it shares the table, never gains one
    return [Recorder(md), other]


async def project(nats_url: str, path: Path, version: str, prefix: str) -> None:
    """The projection of ``version`` on ``path``, run until it has applied the whole stream."""
    nc = await nats.connect(nats_url)
    engine = create_engine(path, declared(version))
    runner = ProjectionRunner(nc, engine, projectors(version), consumer_prefix=prefix, batch=BATCH)
    try:
        await runner.start()
        assert await runner.caught_up(CATCH_UP_S), "the projection did not catch up"
    finally:
        await runner.stop()
        await engine.dispose()
        await nc.close()


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from services.kernel import nats_server

    server: EmbeddedNats = nats_server.start(tmp_path_factory.mktemp("nats"))
    asyncio.run(fill(server.url))
    yield server.url
    server.stop()


async def fill(url: str) -> None:
    nc: NATS = await nats.connect(url)
    try:
        for stream, wildcard, subject, projects in (
            (c.STREAM, c.EVENTS, c.event_subject, PROJECTS),
            (OTHER, f"{OTHER_SUBJECT}.>", lambda pid: f"{OTHER_SUBJECT}.{pid}", OTHER_PROJECTS),
        ):
            await ensure_stream(nc.jetstream(), StreamSpec(stream, (wildcard,)))
            store = EventStore(nc, stream=stream, subject=subject, event_type=c.Event)
            for i in range(projects):
                await write_project(store, f"p{i}")
    finally:
        await nc.close()


async def write_project(store: EventStore[c.Event], pid: str) -> None:
    v = await store.append(pid, [c.ProjectCreated(project_id=pid, name="n")], 0)
    for j in range(RENAMES):
        v = await store.append(pid, [c.ProjectRenamed(project_id=pid, name=f"n{j}")], v)


@pytest.fixture(scope="module")
def old(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The old version's file as a killed process leaves it: its last batches in the WAL."""
    built, kept = tmp_path_factory.mktemp("old") / "readmodel.db", tmp_path_factory.mktemp("kept")

    async def build_and_keep() -> None:
        nc = await nats.connect(nats_url)
        engine = create_engine(built, declared("old"))
        runner = ProjectionRunner(nc, engine, projectors("old"), consumer_prefix=OLD, batch=BATCH)
        try:
            await runner.start()
            assert await runner.caught_up(CATCH_UP_S)
            await runner.stop()
            for suffix in ("", "-wal", "-shm"):  # copied while open: what SIGKILL leaves
                shutil.copy(f"{built}{suffix}", kept / f"readmodel.db{suffix}")
        finally:
            await engine.dispose()
            await nc.close()

    asyncio.run(build_and_keep())
    assert (kept / "readmodel.db-wal").stat().st_size > 0
    return kept / "readmodel.db"


@pytest.fixture(scope="module")
def fault_free(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dump]:
    """Each upgraded version built from nothing, with no fault: what every restart must equal."""
    built = {}
    for version in ("wider", "grown"):
        path = tmp_path_factory.mktemp(f"clean-{version}") / "readmodel.db"
        asyncio.run(project(nats_url, path, version, f"clean-{version}"))
        built[version] = dump(path)
    assert sum(len(r) for r in built["wider"].values()) > EVENTS
    return built


def positions(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT projector, position FROM projection_position"))


def kill_at(nats_url: str, path: Path, version: str, prefix: str, fault: str) -> str:
    """Runs the projection of ``version`` in a child armed to die at ``fault``; its stderr."""
    env = {**os.environ, projection_faults.ENV: fault, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-m", __name__, nats_url, str(path), version, prefix],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CATCH_UP_S + 60,
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr[-3000:])
    return child.stderr


#: Each kill: the point (``POINT[:WHO]:N``), the upgrade, and what the file shows at the kill.
KILLS = {
    "noted, nothing moved": ("aside_noted:1", "wider"),
    "file moved, its WAL not": ("aside_file_moved:1", "wider"),
    "moved aside, rebuild not started": ("aside_done:1", "wider"),
    "mid-replay (batch 6 committed)": ("batch_committed:recorder:6", "wider"),
    "replayed, positions not stored": ("batch_applied:recorder:4", "wider"),
    "gained table: dropped, no replay": ("tables_ready:1", "grown"),
    "gained table: one replayed, one not": ("caught_up:other:1", "grown"),
}


@pytest.mark.parametrize("scenario", list(KILLS))
async def test_a_schema_rebuild_killed_at_each_write_ends_as_a_fault_free_one(
    scenario: str, nats_url: str, old: Path, fault_free: dict[str, Dump], tmp_path: Path, caplog
):
    fault, version = KILLS[scenario]
    # given the old version's file, left by a killed process (its WAL beside it)
    path = tmp_path / old.name
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(f"{old}{suffix}", f"{path}{suffix}")
    before = dump(path)
    # when the upgraded projection (on the old one's consumers: acknowledged past what the
    # new file holds) is killed at the point
    kill_at(nats_url, path, version, OLD, fault)
    at_kill(scenario, path)
    # and started again on what it left
    await project(nats_url, path, version, OLD)
    # then the read model is the fault-free one: every event applied, none twice
    after, expected = dump(path), fault_free[version]
    got, want = Counter(after["k_applied"]), Counter(expected["k_applied"])
    figures.record(
        f"schema rebuild killed: {scenario}",
        events_appended=EVENTS + OTHER_EVENTS,
        events_lost=sum((want - got).values()),
        duplicates_applied=sum((got - want).values()),
        kills=1,
    )
    assert after == expected
    # and the old file is kept whole beside it (a version that set it aside), once
    kept = asides(path)
    assert len(kept) == (1 if version == "wider" else 0), kept
    if kept:
        assert dump(kept[0]) == before
    assert not list(tmp_path.glob("*.moving-aside*"))


def at_kill(scenario: str, path: Path) -> None:
    """The file shows the kill came where the scenario says."""
    note = path.with_name(f"{path.name}.moving-aside")
    if scenario in ("noted, nothing moved", "file moved, its WAL not"):
        assert note.exists() and path.exists() == (scenario == "noted, nothing moved")
    elif scenario == "moved aside, rebuild not started":
        assert not path.exists() and not note.exists()
    elif scenario.startswith(("mid-replay", "replayed, positions")):
        assert 0 < positions(path)["recorder"] < EVENTS, positions(path)
    elif scenario == "gained table: dropped, no replay":
        assert positions(path) == {}
    elif scenario == "gained table: one replayed, one not":
        at = positions(path)
        assert at["other"] == OTHER_EVENTS and 0 < at["recorder"] < EVENTS, at


@pytest.mark.soak
def test_the_datasets_service_killed_at_each_point_of_its_rebuild_restarts_to_the_same_rows(
    own_stack: Stack,
):
    # given a datasets read model holding an import, as the live service wrote it
    studio = own_stack.up(150)
    with studio.sync_client(timeout=30) as api:
        body = {"name": f"kills-{os.getpid()}"}
        project_id = api.post(f"{API}/projects", json=body).json()["data"]["id"]
        root = imagesets.folder(studio.imports / "kills", {"a": 3, "b": 3})
        job = api.post(
            f"{API}/datasets/import/local", json={"project_id": project_id, "path": str(root)}
        ).json()["data"]
        wait(lambda: api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"]
             == "completed", 120)  # fmt: skip
    path = studio.workspace / "datasets" / "readmodel.db"
    studio.stop("datasets")
    live = dump(path)
    for point in projection_faults.POINTS:
        # when the file is outdated again (a column its table lacks) and the service dies at
        # the point of its rebuild, then is started again
        with closing(sqlite3.connect(path)) as db:
            db.execute("ALTER TABLE jobs DROP COLUMN parent_id")
            db.commit()
        studio.start("datasets", **{projection_faults.ENV: f"{point}:1"})
        assert studio.procs.pop("datasets").wait(timeout=150) == -signal.SIGKILL, point
        studio.start("datasets")
        studio.wait_healthy(150)
        # then it holds exactly the rows it held, and at most KEEP_ASIDE old copies
        wait(lambda: equal_now(path, live), 120, every=0.5)
        studio.stop("datasets")
        assert len(asides(path)) <= KEEP_ASIDE
    assert f"the newest {KEEP_ASIDE} set-aside copies are kept" in studio.log("datasets")
    figures.record(
        "schema rebuild: datasets service killed at each point",
        events_lost=0,
        duplicates_applied=0,
        kills=len(projection_faults.POINTS),
    )


if __name__ == "__main__":
    url, file, version_, prefix_ = sys.argv[1:5]
    asyncio.run(project(url, Path(file), version_, prefix_))
