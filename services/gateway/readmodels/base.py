"""What every read model of the gateway shares: how a stored time is shown, how a text filter
matches, a page of rows (a job's row is the kernel's ``jobs.table.fold_job``), and the plain
upsert projectors write with. Imports sqlalchemy and sqlmodel only (no context, no route)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Table
from sqlalchemy.dialects.sqlite import Insert, insert
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


def upsert(table: Table, row: dict[str, Any], key: tuple[str, ...]) -> Insert:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every other column: what the ORM's
    ``merge`` stores, in one statement instead of a SELECT, an INSERT and a unit of work."""
    return _upsert(table, tuple(row), key).values(row)


@functools.lru_cache(maxsize=256)
def _upsert(table: Table, columns: tuple[str, ...], key: tuple[str, ...]) -> Insert:
    """The statement without its values, built once per table and columns: ``excluded``
    copies every column of the table, which cost more than SQLite's work for each event."""
    stmt = insert(table)
    update = {name: stmt.excluded[name] for name in columns if name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=update)
