"""The image list page read through the lean path (the kernel's ``Reader``: plain SQL on one
``sqlite3`` connection, no ORM session): the same rows, order, filters and count as
``queries.list_images`` and ``queries.subsets_of``, handed back as clients see them
(``ImageRow.public``). Imports the kernel's ``Reader`` and the standard library only."""

from __future__ import annotations

import json
from typing import Any

from services.gateway.readmodels.base import Page
from services.kernel.sqlite import Reader

__all__ = ["image_page", "subsets_seen"]

_COLUMNS = "image_id, filename, label, width, height, size, format, split_hint, boxes, import_id"


def image_page(
    reader: Reader,
    *,
    dataset_id: str,
    limit: int,
    after: tuple[str, str] | None = None,
    label: str | None = None,
    q: str | None = None,
    split_id: str | None = None,
    subset: str | None = None,
) -> Page[dict[str, Any]]:
    """A page of images by file name then id, after ``after`` (a file name and an image id);
    filtered by label, file name text (case-insensitive; ``%``, ``_``, ``\\`` match
    themselves) and split (with ``subset``, one subset of it)."""
    where, params = ["dataset_id = ?"], list[Any]([dataset_id])
    if label is not None:
        where.append("label = ?")
        params.append(label)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("lower(filename) LIKE lower(?) ESCAPE '\\'")
        params.append(f"%{escaped}%")
    if split_id:
        member = "SELECT image_id FROM split_members WHERE split_id = ?"
        params.append(split_id)
        if subset:
            member += " AND subset = ?"
            params.append(subset)
        where.append(f"image_id IN ({member})")
    total = reader.one(f"SELECT count(*) FROM images WHERE {' AND '.join(where)}", tuple(params))
    if after:
        where.append("(filename > ? OR (filename = ? AND image_id > ?))")
        params += [after[0], after[0], after[1]]
    sql = (
        f"SELECT {_COLUMNS} FROM images WHERE {' AND '.join(where)}"
        " ORDER BY filename, image_id LIMIT ?"
    )
    rows = reader.rows(sql, (*params, limit + 1))
    items = [_public(row) for row in rows[:limit]]
    return Page(items, int(total[0]), more=len(rows) > limit)


def subsets_seen(reader: Reader, *, split_id: str, image_ids: list[str]) -> dict[str, str]:
    """The subset of ``split_id`` each of ``image_ids`` is in (images outside it are absent)."""
    if not image_ids:
        return {}
    marks = ",".join("?" * len(image_ids))
    sql = f"SELECT image_id, subset FROM split_members WHERE split_id = ? AND image_id IN ({marks})"
    return {image_id: subset for image_id, subset in reader.rows(sql, (split_id, *image_ids))}


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    """``ImageRow.public`` of a selected row."""
    image_id, filename, label, width, height, size, fmt, split_hint, boxes, import_id = row
    return {
        "id": image_id,
        "filename": filename,
        "label": label,
        "width": width,
        "height": height,
        "size": size,
        "format": fmt,
        "split_hint": split_hint,
        "boxes": json.loads(boxes) if boxes is not None else None,
        "import_id": import_id,
    }
