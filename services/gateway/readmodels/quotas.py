"""What the per-user caps count: a user's running imports and queued runs, by the actor their
events carry. Keyword-only, one session passed in. Imports sqlmodel and the tables."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway.readmodels.datasets.tables import ImportRow
from services.gateway.readmodels.training.tables import RunRow


async def running_imports_of(db: AsyncSession, *, actor: str) -> int:
    """How many of ``actor``'s imports have not ended yet."""
    query = select(func.count()).where(
        col(ImportRow.actor) == actor, col(ImportRow.finished_at).is_(None)
    )
    return int((await db.exec(query)).one())


async def queued_runs_of(db: AsyncSession, *, actor: str) -> int:
    """How many of ``actor``'s runs wait in the queue (not started yet)."""
    query = select(func.count()).where(col(RunRow.actor) == actor, col(RunRow.status) == "queued")
    return int((await db.exec(query)).one())
