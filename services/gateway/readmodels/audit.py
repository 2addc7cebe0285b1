"""The gateway's audit trail: one row per event of every stream (who, what, on which aggregate,
in which project, when), for an admin to ask who did what.

Each stream gets its own projector over one shared table; a row is keyed by (stream, sequence),
so a replay lands on the rows it wrote. An event's project is the project it names
(``project_id``, or ``dataset_id`` which is the project's id); events that name only a run
(run, evaluation and export events) take it from the runs read model when read, because an
export's stream is projected independently of the training stream that says the run's project.
Only the envelope and the ids are decoded: secrets an event may hold (sealed password hashes,
token hashes) never reach this table.

Imports sqlmodel, ``contracts`` and the kernel's projection plumbing; nothing of the routes.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Table, and_, func, or_
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import datasets, exports, identity, projects, training
from services.gateway.readmodels.base import Page, iso, upsert
from services.gateway.readmodels.training.tables import RunRow
from services.kernel.eventstore import StoredEvent

__all__ = ["AuditProjector", "AuditRow", "BadCursor", "Filters", "audit_projectors", "search"]


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit"
    stream: str = Field(primary_key=True)
    sequence: int = Field(primary_key=True)
    occurred_at: datetime = Field(index=True)
    actor: str = Field(index=True)
    type: str
    context: str
    aggregate_id: str
    project_id: str | None = Field(default=None, index=True)
    run_id: str | None = Field(default=None, index=True)
    correlation_id: str = ""

    def public(self, project_id: str | None) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "sequence": self.sequence,
            "occurred_at": iso(self.occurred_at),
            "actor": self.actor,
            "type": self.type,
            "aggregate": {"context": self.context, "id": self.aggregate_id},
            "project_id": project_id,
            "correlation_id": self.correlation_id,
        }


class _Envelope(msgspec.Struct):
    """What the audit reads of any event: its envelope and the ids that place it."""

    type: str = ""
    actor: str = "anonymous"
    occurred_at: datetime | None = None
    correlation_id: str = ""
    project_id: str | None = None
    dataset_id: str | None = None
    run_id: str | None = None


_decode = msgspec.json.Decoder(_Envelope).decode


class AuditProjector:
    """Every event of one stream, as an audit row."""

    tables: Sequence[Table] = (AuditRow.__table__,)  # type: ignore[attr-defined]

    def __init__(self, stream: str, filter_subject: str) -> None:
        self.stream, self.filter_subject = stream, filter_subject
        self.name = f"audit-{stream.lower()}"

    def decode(self, data: bytes) -> _Envelope:
        try:
            return _decode(data)
        except msgspec.ValidationError:  # an id of an unexpected type: keep the who and when
            envelope = msgspec.json.decode(data)
            return _Envelope(type=str(envelope.get("type", "")), actor=str(envelope.get("actor")))

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event = stored.event
        _, context, aggregate_id = [*stored.subject.split(".", 2), "", ""][:3]
        row = {
            "stream": self.stream,
            "sequence": stored.sequence,
            "occurred_at": event.occurred_at or datetime.fromtimestamp(0, UTC),
            "actor": event.actor,
            "type": event.type,
            "context": context,
            "aggregate_id": aggregate_id,
            "project_id": event.project_id or event.dataset_id,
            "run_id": event.run_id,
            "correlation_id": event.correlation_id,
        }
        # One plain upsert (a replayed event lands on its own key), no unit of work.
        await db.exec(upsert(_TABLE, row, ("stream", "sequence")))


_TABLE: Table = AuditRow.__table__  # type: ignore[attr-defined]


def audit_projectors() -> list[AuditProjector]:
    """One per stream the studio records events in."""
    return [
        AuditProjector(module.STREAM, module.EVENTS)
        for module in (projects, datasets, training, exports, identity)
    ]


# --- queries ----------------------------------------------------------------------------------


class BadCursor(ValueError):
    """A cursor this query did not hand out."""


@dataclass(frozen=True)
class Filters:
    project_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def search(
    db: AsyncSession, *, filters: Filters, limit: int, cursor: str | None
) -> tuple[Page[dict[str, Any]], str | None]:
    """A page of the trail, newest first, and the cursor of the next page (``None``: last)."""
    after = _decode_cursor(cursor) if cursor else None
    project = func.coalesce(col(AuditRow.project_id), col(RunRow.project_id))
    query = select(AuditRow, project).outerjoin(RunRow, col(RunRow.run_id) == AuditRow.run_id)
    if filters.project_id:
        query = query.where(project == filters.project_id)
    if filters.actor:
        query = query.where(col(AuditRow.actor) == filters.actor)
    if filters.since:
        query = query.where(col(AuditRow.occurred_at) >= _utc(filters.since))
    if filters.until:
        query = query.where(col(AuditRow.occurred_at) < _utc(filters.until))
    total = (await db.exec(select(func.count()).select_from(query.subquery()))).one()
    if after:
        query = query.where(_after(*after))
    order = (
        col(AuditRow.occurred_at).desc(),
        col(AuditRow.stream).desc(),
        col(AuditRow.sequence).desc(),
    )
    rows = list((await db.exec(query.order_by(*order).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [row.public(project_id) for row, project_id in rows]
    last = rows[-1][0] if more else None
    following = _encode_cursor(last) if last else None
    return Page(items, total, more), following


def _utc(moment: datetime) -> datetime:
    """In UTC, as the table holds times (a time without a zone is taken as UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _after(when: datetime, stream: str, sequence: int) -> Any:
    """Rows after (older than) the cursor's row in the page order."""
    at, on = col(AuditRow.occurred_at), col(AuditRow.stream)
    return or_(
        at < when,
        and_(at == when, on < stream),
        and_(at == when, on == stream, col(AuditRow.sequence) < sequence),
    )


def _encode_cursor(row: AuditRow) -> str:
    raw = msgspec.json.encode([row.occurred_at.isoformat(), row.stream, row.sequence])
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        when, stream, sequence = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
        return _utc(datetime.fromisoformat(when)), str(stream), int(sequence)
    except Exception:
        raise BadCursor("invalid cursor") from None
