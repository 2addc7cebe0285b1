"""The dataset page's browsing half: the API's own JSON drawn as fragments for htmx.

The page (``dataset.py`` serves it; ``templates/dataset_browse.html`` is this half) asks the
dataset routes with ``HX-Request`` and gets back, from the very answer a script would get:

- a page of images as thumbnails, ending in a sentinel that asks for the next page (its cursor
  and the same filters) when it scrolls into view: infinite scrolling without an offset;
- the summary's class histogram as bars, a table with a number per class;
- the health report, its duplicate and near-duplicate groups as thumbnails side by side.

Relabelling and deleting are done by ``static/js/dataset_browse.js`` through the JSON API. This
module holds no route of its own. Imports fastapi only.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

#: (method, API route) → the fragment template htmx gets from it.
FRAGMENTS: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/datasets/{project_id}/images"): "fragments/dataset/browse_images.html",
    ("GET", "/api/datasets/{project_id}"): "fragments/dataset/browse_histogram.html",
    ("GET", "/api/datasets/{project_id}/health"): "fragments/dataset/browse_health.html",
}
