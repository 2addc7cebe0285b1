"""The dataset page's browsing half: image, histogram and health fragments (being built)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {}
