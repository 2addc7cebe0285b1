"""Folds events into a fresh read-model file with a gateway projector, without NATS: what the
read-model tests build on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Projector
from services.kernel.sqlite import create_engine, session


async def folded(tmp_path: Path, projector: Projector, *events: Any) -> AsyncEngine:
    """An engine on a new file holding ``projector``'s tables with ``events`` applied, one
    transaction each as the projection runner applies them; the caller disposes of it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = create_engine(tmp_path / "readmodel.db")
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: SQLModel.metadata.create_all(sync, tables=list(projector.tables))
        )
    for sequence, event in enumerate(events, start=1):
        async with session(engine) as db:
            await projector.apply(db, StoredEvent(sequence, projector.filter_subject, event, {}))
            await db.commit()
    return engine
