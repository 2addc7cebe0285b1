"""The gateway's read model of datasets: images, import jobs and splits (DATASETS stream)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, Index, Table, delete, insert
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import datasets as c
from services.gateway.readmodel import iso
from services.kernel.eventstore import StoredEvent
from services.kernel.projection import Decodes


class ImageRow(SQLModel, table=True):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_browse", "dataset_id", "filename", "image_id"),)
    dataset_id: str = Field(primary_key=True)
    image_id: str = Field(primary_key=True)
    filename: str
    label: str = Field(index=True)
    width: int
    height: int
    size: int
    format: str
    split_hint: str | None = None
    boxes: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    import_id: str

    def public(self) -> dict[str, Any]:
        return {
            "id": self.image_id,
            "filename": self.filename,
            "label": self.label,
            "width": self.width,
            "height": self.height,
            "size": self.size,
            "format": self.format,
            "split_hint": self.split_hint,
            "boxes": self.boxes,
            "import_id": self.import_id,
        }


class ImportRow(SQLModel, table=True):
    __tablename__ = "imports"
    import_id: str = Field(primary_key=True)
    dataset_id: str = Field(index=True)
    state: str  # running → importing → completed | failed | cancelled
    source_kind: str
    source: str
    format: str
    files: int | None = None
    classes: list[str] = Field(default_factory=list, sa_type=JSON)
    report: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    started_at: datetime
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")

    def public(self) -> dict[str, Any]:
        return {
            "id": self.import_id,
            "project_id": self.dataset_id,
            "state": self.state,
            "source_kind": self.source_kind,
            "source": self.source,
            "format": self.format,
            "files": self.files,
            "classes": self.classes,
            "report": self.report,
            "error": self.error,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
        }


class SplitRow(SQLModel, table=True):
    __tablename__ = "splits"
    split_id: str = Field(primary_key=True)
    dataset_id: str = Field(index=True)
    name: str
    strategy: str
    ratios: dict[str, float] = Field(sa_type=JSON)
    seed: int
    images: int
    groups: int
    counts: dict[str, dict[str, int]] = Field(sa_type=JSON)
    recipe_hash: str
    created_at: datetime

    def public(self) -> dict[str, Any]:
        totals = {subset: sum(n.values()) for subset, n in self.counts.items()}
        return {
            "id": self.split_id,
            "project_id": self.dataset_id,
            "name": self.name,
            "strategy": self.strategy,
            "ratios": self.ratios,
            "seed": self.seed,
            "images": self.images,
            "groups": self.groups,
            "totals": totals,
            "counts": self.counts,
            "recipe_hash": self.recipe_hash,
            "created_at": iso(self.created_at),
        }


class SplitDeviationRow(SQLModel, table=True):
    """A class more than two images off its share of a subset, and why (a table of its own, so
    that a read model written before deviations existed gains it without a migration)."""

    __tablename__ = "split_deviations"
    split_id: str = Field(primary_key=True)
    label: str = Field(primary_key=True)
    subset: str = Field(primary_key=True)
    expected: float
    actual: int
    reason: str

    def public(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "subset": self.subset,
            "expected": self.expected,
            "actual": self.actual,
            "reason": self.reason,
        }


class SplitMember(SQLModel, table=True):
    __tablename__ = "split_members"
    split_id: str = Field(primary_key=True)
    image_id: str = Field(primary_key=True)
    subset: str = Field(index=True)


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
        match event:
            case c.ImportStarted():
                db.add(_started(event))
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
            case c.ImportCompleted():
                await _update_import(
                    db,
                    event.import_id,
                    state="completed",
                    finished_at=when,
                    report=msgspec.to_builtins(event.report),
                )
            case c.ImportFailed():
                state = "cancelled" if event.code == "CANCELLED" else "failed"
                error = {
                    "code": event.code,
                    "message": event.message,
                    "field": event.field,
                    "status": event.status,
                }
                await _update_import(
                    db, event.import_id, state=state, finished_at=when, error=error
                )
            case c.ImageRelabeled():
                row = await db.get(ImageRow, (event.dataset_id, event.image_id))
                if row is not None:
                    row.label = event.label
                    db.add(row)
            case c.ImageDeleted():
                await db.exec(
                    delete(ImageRow).where(
                        ImageRow.dataset_id == event.dataset_id,  # type: ignore[arg-type]
                        ImageRow.image_id == event.image_id,  # type: ignore[arg-type]
                    )
                )
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


async def _insert_many(db: AsyncSession, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """One executemany: no ORM objects, and no limit on SQL variables per statement."""
    if rows:
        conn = await db.connection()
        await conn.execute(insert(model), rows)


def _started(event: c.ImportStarted) -> ImportRow:
    return ImportRow(
        import_id=event.import_id,
        dataset_id=event.dataset_id,
        state="running",
        source_kind=event.source_kind,
        source=event.source,
        format=event.format,
        started_at=event.occurred_at,
    )


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
