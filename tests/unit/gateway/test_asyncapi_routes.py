"""``/asyncapi.json`` and ``/asyncapi``: the generated document, drawn as a page the CSP allows,
served only where the API docs are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from contracts import asyncapi
from services.gateway.app import create_app
from services.gateway.headers import CSP
from services.kernel.settings import Settings


async def get(tmp_path: Path, path: str, docs: bool = True) -> httpx.Response:
    """``path`` from the app in this process (no lifespan: these routes need no NATS)."""
    settings = Settings.model_validate({"workspace": tmp_path, "docs_enabled": docs})
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get(path)


async def test_the_document_is_the_generated_one(tmp_path: Path) -> None:
    resp = await get(tmp_path, "/asyncapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == json.loads(json.dumps(asyncapi.document()))


async def test_the_page_lists_channels_operations_and_messages_without_inline_script(
    tmp_path: Path,
) -> None:
    resp = await get(tmp_path, "/asyncapi")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    # the strict policy of every page, not the docs' relaxed one
    assert resp.headers["content-security-policy"] == CSP
    page = resp.text
    doc = asyncapi.document()
    for channel in doc["channels"].values():
        if channel["address"] is not None:
            assert f"<code>{channel['address']}</code>" in page
    for op_id in doc["operations"]:
        assert f"<code>{op_id}</code>" in page
    for name in doc["components"]["messages"]:
        assert f'<details id="message-{name}">' in page
    # every script is a file of the studio's own; no inline script, handler or style
    assert all(tag.strip() for tag in re.findall(r"<script([^>]*)>", page))
    assert all("src=" in attrs for attrs in re.findall(r"<script([^>]*)>", page))
    assert not re.search(r"\son[a-z]+=|\sstyle=|<style", page)
    assert "https://" not in page


async def test_turned_off_with_the_docs(tmp_path: Path) -> None:
    for path in ("/asyncapi.json", "/asyncapi"):
        assert (await get(tmp_path, path, docs=False)).status_code == 404
