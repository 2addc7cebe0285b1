"""What every read model of the gateway shares: how a stored time is shown, how a text filter
matches, and a page of rows. Imports sqlalchemy and sqlmodel only (no context, no route)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement
from sqlmodel import SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

T = TypeVar("T")
Row = TypeVar("Row", bound=SQLModel)


def iso(moment: datetime) -> str:
    # SQLite may hand back a naive time; every stored time is UTC.
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """``column`` holds ``text``, case-insensitively; ``%``, ``_`` and ``\\`` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return col(column).ilike(f"%{escaped}%", escape="\\")


async def ended(db: AsyncSession, model: type[Row], key: str, when: datetime) -> Row | None:
    """A job's row (an export, an evaluation) at its end, ``finished_at`` set; ``None`` for a
    job this model never saw start (nothing to fold)."""
    row = await db.get(model, key)
    if row is not None:
        row.finished_at = when
    return row


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list: its rows, how many match in all, and whether more follow it."""

    items: list[T]
    total: int
    more: bool = False
