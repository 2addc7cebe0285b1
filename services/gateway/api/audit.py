"""REST for the audit trail, site admins only: every event of every stream (who did what to
which aggregate, in which project, when), newest first, filtered and paged by cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from contracts import common
from services.gateway.api.params import Limit, MaybeQueryId
from services.gateway.auth.deps import AdminUser
from services.gateway.envelope import ERROR_RESPONSES, ApiError, ok
from services.gateway.gateway import DbDep
from services.gateway.readmodels import audit as read

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)
#: A cursor: a time, a stream name and a sequence, JSON in base64.
CURSOR_MAX = 400


@router.get("")
async def audit(
    _: AdminUser,
    db: DbDep,
    project_id: MaybeQueryId = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX)] = None,
) -> Response:
    """Who did what, newest first: ``since`` inclusive, ``until`` exclusive (ISO 8601; a time
    without a zone is UTC); ``next_cursor`` pages on, ``null`` on the last page."""
    filters = read.Filters(project_id=project_id, actor=actor, since=since, until=until)
    try:
        page, following = await read.search(db, filters=filters, limit=limit, cursor=cursor)
    except read.BadCursor:
        raise ApiError(common.VALIDATION_ERROR, "invalid cursor", field="cursor") from None
    return ok({"items": page.items, "total": page.total, "next_cursor": following})
