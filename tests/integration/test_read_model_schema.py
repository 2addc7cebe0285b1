"""A read model written by an older version is rebuilt at start, with no command to run.

On a studio of its own: the gateway's and the datasets service's read models, as the live
services wrote them, match what the code declares; both services stopped, a column is dropped
from a table of each (what a file written before that column existed holds); at start each
says its file differs from the declared tables, keeps it aside as ``.outdated-<time>``, and
rebuilds it by replay to exactly the rows it held, the gateway serving the dropped column
with its values again.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from sqlmodel import SQLModel

import services.gateway.readmodels  # declares the gateway's tables
import services.kernel.jobs.table  # noqa: F401  (declares the services' jobs table)
from services.kernel.sqlschema import differences
from tests import imagesets
from tests.reliability.test_rebuild import dump, equal_now
from tests.stack import Stack
from tests.training_helpers import wait

pytestmark = pytest.mark.integration
STACK_SERVICES = ("projects", "datasets")
API = "/api/v1"
#: Each service's file, and the column an older version's table lacked.
DROPPED = {"gateway": ("projects", "description"), "datasets": ("jobs", "parent_id")}


def test_a_read_model_missing_a_column_is_rebuilt_at_start(own_stack: Stack):
    studio = own_stack.up(60)
    with studio.sync_client(timeout=30) as api:
        body = {"name": f"schema-{uuid.uuid4().hex[:6]}", "description": "kept by replay"}
        project_id = api.post(f"{API}/projects", json=body).json()["data"]["id"]
        root = imagesets.folder(studio.imports / uuid.uuid4().hex, {"a": 2, "b": 2})
        job = api.post(
            f"{API}/datasets/import/local", json={"project_id": project_id, "path": str(root)}
        ).json()["data"]
        wait(lambda: api.get(f"{API}/datasets/import/{job['id']}").json()["data"]["state"]
             == "completed", 60)  # fmt: skip
    paths = {name: studio.workspace / name / "readmodel.db" for name in DROPPED}

    # given both services stopped, their files as the live services wrote them
    for name in DROPPED:
        studio.stop(name)
    live = {}
    for name, path in paths.items():
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert differences(path, SQLModel.metadata) == [], name
        live[name] = dump(path)
    # when each file loses a column, as a file written before that column existed
    for name, (table, column) in DROPPED.items():
        with closing(sqlite3.connect(paths[name])) as db:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            db.commit()
        assert differences(paths[name], SQLModel.metadata) == [
            f"{table}: column {column} is missing"
        ]
    for name in DROPPED:
        studio.start(name)
    studio.wait_healthy(120)

    # then each says so, keeps the old file aside, and replays to the rows it held
    for name, path in paths.items():
        wait(lambda n=name: "differs from the declared tables" in studio.log(n), 60)
        assert f"{DROPPED[name][0]}: column {DROPPED[name][1]} is missing" in studio.log(name)
        assert len(outdated(path)) == 1, outdated(path)
        wait(lambda p=path, n=name: equal_now(p, live[n]), 120, every=0.5)
    with studio.sync_client(timeout=30) as api:
        project = api.get(f"{API}/projects/{project_id}").json()["data"]
    assert project["description"] == "kept by replay"


def outdated(path: Path) -> list[Path]:
    return [p for p in path.parent.glob(f"{path.name}.outdated-*") if p.name[-1].isdigit()]
