"""Jinja2 for the pages and their fragments: one environment, its filters, and ``render``.

A page is a whole document (``templates/*.html``, extending ``base.html``); a fragment
(``templates/fragments/...``) is what an API route answers when htmx asks (``HX-Request``), drawn
from the very JSON the route answers a script (``fragments.py``). Templates autoescape: data from
users (names, labels, file names) never becomes markup. No template carries a script or a style
attribute: the Content Security Policy forbids both, so behaviour lives in ``static/js`` and
looks in ``static/css``.

Imports jinja2 and starlette only.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

HERE: Final = Path(__file__).parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"
#: The heat-map and bar classes in studio.css: ``heat-0`` … ``heat-10``, ``w-0`` … ``w-100``.
HEAT_STEPS: Final = 10


def number(value: Any, digits: int = 3) -> str:
    """A figure as people read it: ``0.913``, ``1,234``, ``—`` for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return str(value)


def percent(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.{digits}f} %"


def size(value: Any) -> str:
    """Bytes as ``12.3 MiB``."""
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def when(value: Any) -> str:
    """An ISO time as ``2026-11-30 22:31 UTC``."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def heat(value: Any, most: Any) -> str:
    """The class of a heat-map cell: ``heat-0`` (nothing) to ``heat-10`` (the most)."""
    try:
        share = float(value) / float(most) if most else 0.0
    except (TypeError, ValueError):
        return "heat-0"
    return f"heat-{max(0, min(HEAT_STEPS, math.ceil(share * HEAT_STEPS)))}"


def width(value: Any, most: Any) -> str:
    """The class of a bar as a share of the longest: ``w-0`` … ``w-100`` in steps of 5."""
    try:
        share = float(value) / float(most) if most else 0.0
    except (TypeError, ValueError):
        return "w-0"
    return f"w-{max(0, min(100, round(share * 20) * 5))}"


#: How many colours boxes take (``box-0`` … ``box-11`` in ``dataset_browse.css``).
BOX_COLOURS: Final = 12


def box_colour(label: Any) -> str:
    """A class's box colour: ``box-0`` … ``box-11``, the same for the same label on every page
    (FNV-1a of its code points; two classes may share a colour: the label always says which)."""
    digest = 0x811C9DC5
    for char in str(label):
        digest = ((digest ^ ord(char)) * 0x01000193) & 0xFFFFFFFF
    return f"box-{digest % BOX_COLOURS}"


def dom_id(value: Any) -> str:
    """A field's name as an element id: ``hyperparameters.lr`` → ``hyperparameters-lr``."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(value))


ENV: Final = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(
    number=number,
    percent=percent,
    size=size,
    when=when,
    heat=heat,
    width=width,
    dom_id=dom_id,
    box_colour=box_colour,
)


def context(request: Request, **values: Any) -> dict[str, Any]:
    """What every template may use: the request, who is signed in, and the values."""
    return {
        "request": request,
        "user": getattr(request.state, "principal", None),
        "path": request.url.path,
        **values,
    }


def render_text(request: Request, name: str, **values: Any) -> str:
    return ENV.get_template(name).render(context(request, **values))


def render(
    request: Request,
    name: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page or fragment as an HTML answer; cookies a refreshed session left are set on it."""
    # A page shows one user's data: no cache keeps it.
    kept = {"Cache-Control": "no-store"} | (headers or {})
    response = HTMLResponse(render_text(request, name, **values), status, kept)
    for cookie in getattr(request.state, "set_cookies", ()):
        cookie(response)
    return response
