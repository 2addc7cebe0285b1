"""Folds the DATASETS stream into the gateway's tables: one match arm per event type. Imports
``contracts.datasets``, the kernel's projection plumbing and this package's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Table, delete, insert
from sqlmodel import SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import datasets as c
from services.gateway.readmodels.datasets.tables import (
    ImageRow,
    ImportRow,
    SplitDeviationRow,
    SplitMember,
    SplitRow,
)
from services.kernel.eventstore import StoredEvent
from services.kernel.jobs import Lifecycle
from services.kernel.jobs.table import fold_job
from services.kernel.projection import Decodes

IMPORT = Lifecycle(*c.IMPORT_JOB)


class DatasetsProjector(Decodes):
    name = "datasets"
    stream = c.STREAM
    filter_subject = c.EVENTS
    tables: Sequence[Table] = (
        ImageRow.__table__,  # type: ignore[attr-defined]
        ImportRow.__table__,  # type: ignore[attr-defined]
        SplitRow.__table__,  # type: ignore[attr-defined]
        SplitMember.__table__,  # type: ignore[attr-defined]
        SplitDeviationRow.__table__,  # type: ignore[attr-defined]
    )
    event_type = c.Event

    async def apply(self, db: AsyncSession, stored: StoredEvent[Any]) -> None:
        event, when = stored.event, stored.event.occurred_at
        if IMPORT.owns(event):
            await _import(db, event)
            return
        match event:
            case c.ImportValidated():
                await _update_import(
                    db,
                    event.import_id,
                    state="importing",
                    files=event.files,
                    classes=event.classes,
                    format=event.format,
                )
            case c.ImagesAdded():
                # Core bulk inserts: an import's images arrive thousands at a time.
                rows = [_image(event.dataset_id, event.import_id, r) for r in event.images]
                await _insert_many(db, ImageRow, rows)
            case c.ImageRelabeled():
                row = await db.get(ImageRow, (event.dataset_id, event.image_id))
                if row is not None:
                    row.label = event.label
                    db.add(row)
            case c.ImageDeleted():
                await _delete_image(db, event)
            case c.SplitCreated():
                db.add(_split(event, when))
                deviations = [
                    msgspec.structs.asdict(d) | {"split_id": event.split_id}
                    for d in event.deviations
                ]
                await _insert_many(db, SplitDeviationRow, deviations)
            case c.SplitAssigned():
                members = [
                    {"split_id": event.split_id, "image_id": i, "subset": s}
                    for i, s in event.assignment.items()
                ]
                await _insert_many(db, SplitMember, members)
            case c.SplitDeleted():
                await _delete_split(db, event.split_id)


async def _insert_many(db: AsyncSession, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """One executemany: no ORM objects, and no limit on SQL variables per statement."""
    if rows:
        conn = await db.connection()
        await conn.execute(insert(model), rows)


async def _import(db: AsyncSession, event: Any) -> None:
    """An import's row, the kernel's job row; a failure says its field and status too, and a
    cancelled import is cancelled, not failed."""
    row = await fold_job(db, ImportRow, IMPORT, event, status="state")
    if row is None:
        return
    if isinstance(event, c.ImportCompleted):
        row.report = msgspec.to_builtins(event.report)
    elif isinstance(event, c.ImportFailed):
        row.error = {**(row.error or {}), "field": event.field, "status": event.status}
        row.state = "cancelled" if event.code == "CANCELLED" else row.state


async def _delete_image(db: AsyncSession, event: c.ImageDeleted) -> None:
    await db.exec(
        delete(ImageRow).where(
            ImageRow.dataset_id == event.dataset_id,  # type: ignore[arg-type]
            ImageRow.image_id == event.image_id,  # type: ignore[arg-type]
        )
    )


async def _delete_split(db: AsyncSession, split_id: str) -> None:
    """The split with its members and deviations: nothing of it is left to list or browse."""
    await db.exec(delete(SplitRow).where(col(SplitRow.split_id) == split_id))
    await db.exec(delete(SplitMember).where(col(SplitMember.split_id) == split_id))
    await db.exec(delete(SplitDeviationRow).where(col(SplitDeviationRow.split_id) == split_id))


async def _update_import(db: AsyncSession, import_id: str, **changes: Any) -> None:
    row = await db.get(ImportRow, import_id)
    if row is None:
        return
    for key, value in changes.items():
        setattr(row, key, value)
    db.add(row)


def _image(dataset_id: str, import_id: str, r: c.ImageRecord) -> dict[str, Any]:
    return dict(
        dataset_id=dataset_id,
        image_id=r.image_id,
        filename=r.filename,
        label=r.label,
        width=r.width,
        height=r.height,
        size=r.size,
        format=r.format,
        split_hint=r.split_hint,
        boxes=[msgspec.to_builtins(b) for b in r.boxes],
        import_id=import_id,
    )


def _split(event: c.SplitCreated, when: datetime) -> SplitRow:
    return SplitRow(
        split_id=event.split_id,
        dataset_id=event.dataset_id,
        name=event.name,
        strategy=event.strategy,
        ratios=event.ratios,
        seed=event.seed,
        images=event.images,
        groups=event.groups,
        counts=event.counts,
        recipe_hash=event.recipe_hash,
        created_at=when,
    )
