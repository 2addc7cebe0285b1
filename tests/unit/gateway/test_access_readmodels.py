"""The read models authorization reads, folded from events without NATS: project members, and
the audit trail (its filters, its cursor, the project of events that name only a run, and no
secret of any event)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from contracts import Message
from contracts import exports as x
from contracts import identity as i
from contracts import projects as p
from contracts import training as t
from services.gateway.readmodels import audit, members
from services.gateway.readmodels.training import TrainingProjector
from services.kernel.eventstore import StoredEvent
from services.kernel.sqlite import create_engine, session
from tests.unit.gateway.fold import folded

PROJECT, OTHER, RUN, EXPORT = "p" * 32, "q" * 32, "r" * 32, "x" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_members_follow_adds_role_changes_and_removals(tmp_path: Path):
    engine = await folded(
        tmp_path,
        members.MembersProjector(),
        p.MemberAdded(project_id=PROJECT, user_id="olga", role="owner", actor="olga"),
        p.MemberAdded(project_id=PROJECT, user_id="vic", role="viewer", actor="olga"),
        p.MemberAdded(project_id=OTHER, user_id="vic", role="editor", actor="otto"),
        p.MemberRoleChanged(project_id=PROJECT, user_id="vic", role="editor", actor="olga"),
        p.MemberRemoved(project_id=OTHER, user_id="vic", actor="otto"),
        p.ProjectRenamed(project_id=PROJECT, name="not a member event"),
    )
    async with session(engine) as db:
        rows = await members.list_members(db, project_id=PROJECT)
        assert [(r.user_id, r.role, r.added_by) for r in rows] == [
            ("olga", "owner", "olga"),
            ("vic", "editor", "olga"),
        ]
        assert await members.owners(db, project_id=PROJECT) == 1
        assert list((await db.exec(members.member_projects("vic"))).all()) == [PROJECT]
        assert await members.get_member(db, project_id=OTHER, user_id="vic") is None
    await engine.dispose()


def stored(seq: int, subject: str, event: Message) -> StoredEvent[object]:
    projector = audit.AuditProjector("ANY", "evt.>")
    return StoredEvent(seq, subject, projector.decode(msgspec.json.encode(event)), {})


async def trail(tmp_path: Path) -> AsyncEngine:
    """Events of four streams, a minute apart, and the run they name in the runs table."""
    queued = t.RunQueued(
        run_id=RUN, experiment_id="e" * 32, project_id=PROJECT, split_id="s" * 32,
        hyperparameters=t.Hyperparameters(), classes=["a", "b"], train_images=8,
        val_images=2, actor="ed", occurred_at=T0 + timedelta(minutes=2),
    )  # fmt: skip
    events = [
        ("PROJECTS", p.event_subject(PROJECT), p.ProjectCreated(project_id=PROJECT, name="a")),
        ("PROJECTS", p.event_subject(OTHER), p.ProjectCreated(project_id=OTHER, name="b")),
        ("TRAINING", t.event_subject(RUN), queued),
        ("EXPORTS", x.event_subject(EXPORT), x.ExportFailed(
            export_id=EXPORT, run_id=RUN, code="C", message="m", actor="ed"
        )),
        ("IDENTITY", i.event_subject("vic"), i.UserCreated(
            user_id="vic", site_role="user", tier="free", password_seal=b"sealed-hash"
        )),
    ]  # fmt: skip
    engine = await folded(tmp_path, TrainingProjector(), queued)
    async with engine.begin() as conn:
        await conn.run_sync(lambda s: SQLModel.metadata.create_all(s, tables=[_audit_table()]))
    for n, (stream, subject, event) in enumerate(events):
        when = T0 + timedelta(minutes=n)
        event = msgspec.structs.replace(event, occurred_at=when, actor=event.actor or "x")
        async with session(engine) as db:
            await audit.AuditProjector(stream, "evt.>").apply(db, stored(n + 1, subject, event))
            await db.commit()
    return engine


def _audit_table() -> Table:
    return audit.AuditRow.__table__  # type: ignore[attr-defined,no-any-return]


async def test_the_audit_filters_by_project_actor_and_time_newest_first(tmp_path: Path):
    engine = await trail(tmp_path)
    async with session(engine) as db:
        page, _ = await audit.search(db, filters=audit.Filters(), limit=50, cursor=None)
        assert [e["type"] for e in page.items] == [
            "identity.user_created.v1",
            "exports.export_failed.v1",
            "training.run_queued.v1",
            "projects.project_created.v1",
            "projects.project_created.v1",
        ]
        # an export names only its run: its project comes from the run
        mine = audit.Filters(project_id=PROJECT)
        page, _ = await audit.search(db, filters=mine, limit=50, cursor=None)
        assert [e["aggregate"]["context"] for e in page.items] == [
            "exports",
            "training",
            "projects",
        ]
        assert {e["project_id"] for e in page.items} == {PROJECT}
        by_ed = audit.Filters(actor="ed")
        page, _ = await audit.search(db, filters=by_ed, limit=50, cursor=None)
        assert {e["actor"] for e in page.items} == {"ed"} and page.total == 2
        window = audit.Filters(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
        page, _ = await audit.search(db, filters=window, limit=50, cursor=None)
        assert [e["sequence"] for e in page.items] == [3, 2]
        # the identity event is there, its sealed password is not
        assert "sealed" not in msgspec.json.encode(page.items).decode()
    await engine.dispose()


async def test_the_audit_pages_by_cursor_each_event_once(tmp_path: Path):
    engine = await trail(tmp_path)
    async with session(engine) as db:
        whole, _ = await audit.search(db, filters=audit.Filters(), limit=50, cursor=None)
        seen, cursor = [], None
        while True:
            page, cursor = await audit.search(db, filters=audit.Filters(), limit=2, cursor=cursor)
            seen += page.items
            assert page.total == 5
            if cursor is None:
                break
        assert seen == whole.items
    await engine.dispose()


async def test_a_cursor_it_did_not_hand_out_is_refused(tmp_path: Path):
    engine = create_engine(tmp_path / "readmodel.db")
    async with engine.begin() as conn:
        await conn.run_sync(lambda s: SQLModel.metadata.create_all(s, tables=[_audit_table()]))
    async with session(engine) as db:
        for bad in ("not base64!", "bm90IGpzb24=", "WzEsMiwzXQ=="):
            try:
                await audit.search(db, filters=audit.Filters(), limit=5, cursor=bad)
            except audit.BadCursor:
                continue
            raise AssertionError(f"{bad!r} was taken")
    await engine.dispose()
