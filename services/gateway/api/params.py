"""Parameters every router shares: ids, checked against the event store's one rule, and pages.

An id that breaks the rule can name nothing: in a path it is answered 404 (``envelope``), in a
body or a query 422 naming the field, so the services never see one. Imports fastapi, pydantic
and ``contracts`` only.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query
from pydantic import Field

from contracts import common

#: The furthest a list may be paged by offset (SQLite's integers stop at 2**63).
OFFSET_MAX: Final = 10**9
LIMIT_MAX: Final = 500

PathId = Annotated[str, Path(pattern=common.ID_PATTERN, max_length=common.ID_MAX)]
QueryId = Annotated[str, Query(pattern=common.ID_PATTERN, max_length=common.ID_MAX)]
#: An optional id filter of a list (``?project_id=``).
MaybeQueryId = Annotated[str | None, Query(pattern=common.ID_PATTERN, max_length=common.ID_MAX)]
BodyId = Annotated[str, Field(pattern=common.ID_PATTERN, max_length=common.ID_MAX)]
Limit = Annotated[int, Query(ge=1, le=LIMIT_MAX)]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX)]
#: An optional free-text filter (a file name fragment, a label, a status).
MaybeFilter = Annotated[str | None, Query(max_length=200)]
