"""The split page (being built)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {}
