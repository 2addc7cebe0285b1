"""What every read model of the gateway shares: how a stored time is shown, how a text filter
matches, and a page of rows (a job's row is the kernel's ``jobs.table.fold_job``). Imports
sqlalchemy and sqlmodel only (no context, no route)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement
from sqlmodel import col

T = TypeVar("T")


def iso(moment: datetime) -> str:
    # SQLite may hand back a naive time; every stored time is UTC.
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """``column`` holds ``text``, case-insensitively; ``%``, ``_`` and ``\\`` match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return col(column).ilike(f"%{escaped}%", escape="\\")


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list: its rows, how many match in all, and whether more follow it."""

    items: list[T]
    total: int
    more: bool = False
