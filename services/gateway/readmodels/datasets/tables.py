"""The tables of the gateway's read model of datasets: images, import jobs and splits, each
row with what clients see of it (``public``). Imports sqlmodel only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from services.gateway.readmodels.base import iso


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
    #: Who started it: per-user caps count running imports by it.
    actor: str = Field(default="anonymous", index=True)

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
