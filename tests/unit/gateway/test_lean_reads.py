"""The gateway's lean read path (``services.kernel.sqlite.Reader``) answers exactly what the ORM
path answers, folded from events without NATS: a project through every event of its life (the
projector now writes plain SQL), the caller's role, and a write committed after the reader's
first read (read-your-writes: no read transaction outlives a call)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import projects as p
from services.gateway.readmodels import members, projects
from services.kernel.eventstore import StoredEvent
from services.kernel.sqlite import Reader, session
from tests.unit.gateway.fold import folded

PROJECT, OTHER = "p" * 32, "q" * 32
T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def apply(engine: AsyncEngine, projector: object, sequence: int, event: object) -> None:
    async with session(engine) as db:
        stored = StoredEvent(sequence, p.EVENTS, event, {})
        await projector.apply(db, stored)  # type: ignore[attr-defined]
        await db.commit()


async def orm_public(engine: AsyncEngine, project_id: str) -> dict | None:
    async with session(engine) as db:
        row = await projects.get_project(db, project_id=project_id)
        return row.public() if row else None


async def test_a_project_read_lean_equals_the_orm_read_through_its_life(tmp_path: Path):
    created = p.ProjectCreated(
        project_id=PROJECT, name="cats", description="d", actor="olga", occurred_at=T0
    )
    engine = await folded(tmp_path, projects.ProjectsProjector(), created)
    reader = Reader(tmp_path / "readmodel.db")
    try:
        first = projects.project_public(reader, project_id=PROJECT)
        assert first == await orm_public(engine, PROJECT)
        assert first is not None and first["created_at"] == "2026-01-01T12:00:00.123Z"
        assert (first["version"], first["status"], first["created_by"]) == (1, "active", "olga")
        later = [
            p.ProjectRenamed(project_id=PROJECT, name="dogs"),
            p.ProjectDescriptionUpdated(project_id=PROJECT, description="new"),
            p.ProjectArchived(project_id=PROJECT),
            p.ProjectRestored(project_id=PROJECT),
            p.ProjectArchived(project_id=PROJECT),
            p.ProjectRenamed(project_id=OTHER, name="never created: nothing to fold"),
        ]
        for n, event in enumerate(later, start=2):
            event = event.__class__(**{**_fields(event), "occurred_at": T0 + timedelta(n)})
            await apply(engine, projects.ProjectsProjector(), n, event)
            # Each commit is seen by the next lean read: no snapshot held between calls.
            assert projects.project_public(reader, project_id=PROJECT) == await orm_public(
                engine, PROJECT
            )
        final = projects.project_public(reader, project_id=PROJECT)
        assert final is not None
        assert (final["name"], final["description"], final["status"]) == ("dogs", "new", "archived")
        assert final["version"] == 6 and final["updated_at"] == "2026-01-07T12:00:00.123Z"
        assert projects.project_public(reader, project_id=OTHER) is None
        assert await orm_public(engine, OTHER) is None
    finally:
        reader.close()
        await engine.dispose()


async def test_a_role_read_lean_follows_the_members(tmp_path: Path):
    engine = await folded(
        tmp_path,
        members.MembersProjector(),
        p.MemberAdded(project_id=PROJECT, user_id="vic", role="viewer", actor="olga"),
    )
    reader = Reader(tmp_path / "readmodel.db")
    try:
        assert members.role_of(reader, project_id=PROJECT, user_id="vic") == "viewer"
        assert members.role_of(reader, project_id=OTHER, user_id="vic") is None
        change = p.MemberRoleChanged(project_id=PROJECT, user_id="vic", role="editor", actor="o")
        await apply(engine, members.MembersProjector(), 2, change)
        assert members.role_of(reader, project_id=PROJECT, user_id="vic") == "editor"
        await apply(engine, members.MembersProjector(), 3, p.MemberRemoved(
            project_id=PROJECT, user_id="vic", actor="o"))  # fmt: skip
        assert members.role_of(reader, project_id=PROJECT, user_id="vic") is None
    finally:
        reader.close()
        await engine.dispose()


def _fields(event: object) -> dict:
    return {f: getattr(event, f) for f in event.__struct_fields__}  # type: ignore[attr-defined]


async def test_a_replayed_member_add_lands_on_its_key_as_the_orm_merge_did(tmp_path: Path):
    added = p.MemberAdded(project_id=PROJECT, user_id="vic", role="viewer", actor="olga")
    engine = await folded(tmp_path, members.MembersProjector(), added)
    again = p.MemberAdded(project_id=PROJECT, user_id="vic", role="owner", actor="otto")
    await apply(engine, members.MembersProjector(), 2, again)
    async with session(engine) as db:
        rows = await members.list_members(db, project_id=PROJECT)
    assert [(r.user_id, r.role, r.added_by) for r in rows] == [("vic", "owner", "otto")]
    await engine.dispose()
