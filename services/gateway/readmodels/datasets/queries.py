"""What the routes read of datasets: an import, an image, a page of images, a dataset's summary,
splits with their deviations. Keyword-only, one session passed in; a missing row is ``None``
(the route says how to answer it). Imports sqlmodel and this package's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway.readmodels.base import Page, contains
from services.gateway.readmodels.datasets.tables import (
    ImageRow,
    ImportRow,
    SplitDeviationRow,
    SplitMember,
    SplitRow,
)

#: Imports a dataset's summary lists, newest first.
SUMMARY_IMPORTS = 20


async def get_import(db: AsyncSession, *, import_id: str) -> ImportRow | None:
    # Read again even when the session holds it: a route rereads a job after waiting on it.
    return await db.get(ImportRow, import_id, populate_existing=True)


async def recent_imports(db: AsyncSession, *, dataset_id: str, limit: int) -> list[ImportRow]:
    """A dataset's latest imports, newest first."""
    query = (
        select(ImportRow)
        .where(col(ImportRow.dataset_id) == dataset_id)
        .order_by(col(ImportRow.started_at).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


async def get_image(db: AsyncSession, *, dataset_id: str, image_id: str) -> ImageRow | None:
    return await db.get(ImageRow, (dataset_id, image_id))


async def images_named(
    db: AsyncSession, *, dataset_id: str, filename: str, limit: int = 50
) -> list[ImageRow]:
    """The images of a dataset with this file name (its path inside its import), by id: the
    same name may hold different images from different imports."""
    query = select(ImageRow).where(
        col(ImageRow.dataset_id) == dataset_id, col(ImageRow.filename) == filename
    )
    return list((await db.exec(query.order_by(col(ImageRow.image_id)).limit(limit))).all())


async def list_images(
    db: AsyncSession,
    *,
    dataset_id: str,
    limit: int,
    after: tuple[str, str] | None = None,
    label: str | None = None,
    q: str | None = None,
    split_id: str | None = None,
    subset: str | None = None,
) -> Page[ImageRow]:
    """A page of images by file name then id, after ``after`` (a file name and an image id);
    filtered by label, file name text, and split (with ``subset``, one subset of it)."""
    query = select(ImageRow).where(col(ImageRow.dataset_id) == dataset_id)
    if label is not None:
        query = query.where(col(ImageRow.label) == label)
    if q:
        query = query.where(contains(ImageRow.filename, q))
    if split_id:
        member = select(SplitMember.image_id).where(col(SplitMember.split_id) == split_id)
        if subset:
            member = member.where(col(SplitMember.subset) == subset)
        query = query.where(col(ImageRow.image_id).in_(member))
    total = (await db.exec(select(func.count()).select_from(query.subquery()))).one()
    if after:
        name, image_id = after
        query = query.where(
            (col(ImageRow.filename) > name)
            | ((col(ImageRow.filename) == name) & (col(ImageRow.image_id) > image_id))
        )
    order = (col(ImageRow.filename), col(ImageRow.image_id))
    rows = list((await db.exec(query.order_by(*order).limit(limit + 1))).all())
    return Page(rows[:limit], total, more=len(rows) > limit)


async def subsets_of(db: AsyncSession, *, split_id: str, image_ids: list[str]) -> dict[str, str]:
    """The subset of ``split_id`` each of ``image_ids`` is in (images outside it are absent)."""
    if not image_ids:
        return {}
    query = select(SplitMember.image_id, SplitMember.subset).where(
        col(SplitMember.split_id) == split_id, col(SplitMember.image_id).in_(image_ids)
    )
    return {image_id: subset for image_id, subset in (await db.exec(query)).all()}


async def dataset_summary(db: AsyncSession, *, dataset_id: str) -> dict[str, Any]:
    """Counts, the class histogram, image sizes, the latest imports and the splits."""
    where = col(ImageRow.dataset_id) == dataset_id
    stats = (
        await db.exec(
            select(  # type: ignore[call-overload]
                func.count(),
                func.coalesce(func.sum(ImageRow.size), 0),
                func.min(ImageRow.width),
                func.max(ImageRow.width),
                func.avg(ImageRow.width),
                func.min(ImageRow.height),
                func.max(ImageRow.height),
                func.avg(ImageRow.height),
            ).where(where)
        )
    ).one()
    by_label = select(ImageRow.label, func.count()).where(where).group_by(ImageRow.label)
    classes = (await db.exec(by_label.order_by(ImageRow.label))).all()
    imports = await db.exec(
        select(ImportRow)
        .where(col(ImportRow.dataset_id) == dataset_id)
        .order_by(col(ImportRow.started_at).desc())
        .limit(SUMMARY_IMPORTS)
    )
    splits = (await db.exec(select(SplitRow).where(col(SplitRow.dataset_id) == dataset_id))).all()
    n, size, wmin, wmax, wavg, hmin, hmax, havg = stats
    return {
        "project_id": dataset_id,
        "images": n,
        "bytes": size,
        "classes": {label: count for label, count in classes},
        "width": {"min": wmin, "max": wmax, "mean": round(wavg, 1) if wavg else None},
        "height": {"min": hmin, "max": hmax, "mean": round(havg, 1) if havg else None},
        "imports": [r.public() for r in imports.all()],
        "splits": [s.public() for s in sorted(splits, key=lambda s: s.created_at)],
    }


async def split_detail(db: AsyncSession, *, split_id: str) -> dict[str, Any] | None:
    """One split as clients see it, with its deviations."""
    row = await db.get(SplitRow, split_id)
    return None if row is None else await _with_deviations(db, row)


async def list_splits(db: AsyncSession, *, dataset_id: str) -> list[dict[str, Any]]:
    """A dataset's splits, oldest first, each with its deviations."""
    query = select(SplitRow).where(col(SplitRow.dataset_id) == dataset_id)
    rows = (await db.exec(query.order_by(col(SplitRow.created_at)))).all()
    return [await _with_deviations(db, row) for row in rows]


async def _with_deviations(db: AsyncSession, row: SplitRow) -> dict[str, Any]:
    """The split with its deviations: each class more than two images off its share of a
    subset, and why (an exact-duplicate group that may not straddle, too few images)."""
    query = select(SplitDeviationRow).where(col(SplitDeviationRow.split_id) == row.split_id)
    deviations = (await db.exec(query.order_by(col(SplitDeviationRow.label)))).all()
    return row.public() | {"deviations": [d.public() for d in deviations]}
