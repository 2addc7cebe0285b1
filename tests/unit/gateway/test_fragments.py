"""One route, two audiences: the fragment layer draws an API route's own JSON as HTML for htmx,
turns errors into the page's messages by field, and leaves every other answer alone."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import iter_route_contexts

from services.gateway import envelope
from services.gateway.app import create_app
from services.gateway.pages import fragment_templates
from services.gateway.pages.fragments import FragmentMiddleware, route_key
from services.gateway.pages.session import local_path
from services.gateway.pages.templating import ENV, heat, number, size, width
from services.kernel.settings import Settings

HX = {"HX-Request": "true"}


def app_with(templates: dict[tuple[str, str], str]) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/things/{thing_id}")
    async def get_thing(thing_id: str, fail: int = Query(0)) -> Any:
        if fail:
            raise envelope.ApiError("VALIDATION_ERROR", "name: too long", field="name")
        return envelope.ok({"id": thing_id, "name": "<b>cats</b>"})

    @app.get("/api/v1/plain")
    async def plain() -> Any:
        return JSONResponse({"status": "ok", "data": [1, 2]})

    @app.get("/api/v1/text")
    async def text() -> Any:
        return PlainTextResponse("hello")

    @app.get("/api/v1/stream")
    async def stream() -> Any:
        async def body() -> Any:
            yield b"event: x\ndata: 1\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    app.add_middleware(FragmentMiddleware, templates=templates)
    envelope.install(app)
    return app


def test_route_keys_drop_the_version():
    assert route_key("get", "/api/v1/projects/{project_id}") == (
        "GET",
        "/api/projects/{project_id}",
    )
    assert route_key("POST", "/api/projects") == ("POST", "/api/projects")


async def test_without_htmx_the_route_answers_json():
    app = app_with({("GET", "/api/things/{thing_id}"): "fragments/test_thing.html"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/api/v1/things/a1")
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["data"]["name"] == "<b>cats</b>"


async def test_htmx_gets_the_same_data_drawn_by_the_template_escaped(tmp_path, monkeypatch):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "thing.html").write_text(
        "<p id='t'>{{ data.id }} {{ data.name }}</p>"
    )
    monkeypatch.setattr(ENV, "loader", _loader(tmp_path))
    app = app_with({("GET", "/api/things/{thing_id}"): "fragments/thing.html"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/api/v1/things/a1", headers=HX)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text == "<p id='t'>a1 &lt;b&gt;cats&lt;/b&gt;</p>"
    assert "HX-Request" in answer.headers["vary"]


async def test_a_route_of_an_included_router_is_found_by_its_whole_path(tmp_path, monkeypatch):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "part.html").write_text("<p>{{ data.id }}</p>")
    monkeypatch.setattr(ENV, "loader", _loader(tmp_path))
    router = APIRouter(prefix="/parts")

    @router.get("/{part_id}")
    async def get_part(part_id: str) -> Any:
        return envelope.ok({"id": part_id})

    app = app_with({("GET", "/api/parts/{part_id}"): "fragments/part.html"})
    app.include_router(router, prefix="/api/v1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/api/v1/parts/p7", headers=HX)
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text == "<p>p7</p>"


async def test_an_error_to_htmx_becomes_messages_by_field_and_swaps_nothing_else():
    app = app_with({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/api/v1/things/a1?fail=1", headers=HX)
    assert answer.status_code == 422
    assert answer.headers["hx-reswap"] == "none"
    assert 'id="flash"' in answer.text and "name: too long" in answer.text
    assert 'id="error-name"' in answer.text and 'hx-swap-oob="true"' in answer.text


async def test_a_validation_error_names_every_field():
    app = app_with({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/api/v1/things/a1?fail=notanumber", headers=HX)
    assert answer.status_code == 422
    assert 'id="error-fail"' in answer.text


@pytest.mark.parametrize("path", ["/api/v1/plain", "/api/v1/text", "/api/v1/stream"])
async def test_answers_without_a_template_pass_through_untouched(path):
    app = app_with({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        plain = await c.get(path)
        hx = await c.get(path, headers=HX)
    assert hx.status_code == plain.status_code == 200
    assert hx.content == plain.content
    assert hx.headers["content-type"] == plain.headers["content-type"]


def test_every_registered_fragment_names_a_served_route_and_an_existing_template():
    app = create_app(Settings(jwt_secret="only-to-list-the-routes-" + "x" * 32))
    served = {
        route_key(method, str(context.path))
        for context in iter_route_contexts(app.routes)
        for method in (context.methods or ())
    }
    for (method, path), template in fragment_templates().items():
        assert (method, path) in served, f"{method} {path} is no API route"
        ENV.get_template(template)  # raises if missing or broken


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/projects?q=x", "/projects?q=x"),
        ("//evil.example/x", "/projects"),
        ("https://evil.example/", "/projects"),
        ("/\\evil.example", "/projects"),
        ("", "/projects"),
        (None, "/projects"),
    ],
)
def test_after_sign_in_only_a_path_of_this_site(given, kept):
    assert local_path(given) == kept


def test_filters_read_as_people_read():
    assert number(1234) == "1,234"
    assert number(0.91234) == "0.912"
    assert number(None) == "—"
    assert size(3 * 1024 * 1024) == "3.0 MiB"
    assert heat(0, 10) == "heat-0"
    assert heat(10, 10) == "heat-10"
    assert heat(1, 10) == "heat-1"
    assert width(1, 3) == "w-35"
    assert width(5, 0) == "w-0"


def _loader(root: Any) -> Any:
    from jinja2 import ChoiceLoader, FileSystemLoader

    from services.gateway.pages.templating import TEMPLATES

    return ChoiceLoader([FileSystemLoader(root), FileSystemLoader(TEMPLATES)])
