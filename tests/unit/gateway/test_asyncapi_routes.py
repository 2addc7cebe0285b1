"""``/asyncapi.json`` and ``/asyncapi``: the generated document, drawn as a page the CSP allows,
served only where the API docs are."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient

from contracts import asyncapi
from services.gateway.app import create_app
from services.gateway.headers import CSP
from services.kernel.settings import Settings


def client(tmp_path: Path, **settings: object) -> TestClient:
    """The app in this process (no lifespan: these routes need no NATS)."""
    return TestClient(create_app(Settings.model_validate({"workspace": tmp_path, **settings})))


def test_the_document_is_the_generated_one(tmp_path: Path) -> None:
    resp = client(tmp_path, docs_enabled=True).get("/asyncapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == json.loads(json.dumps(asyncapi.document()))


def test_the_page_lists_channels_operations_and_messages_without_inline_script(
    tmp_path: Path,
) -> None:
    resp = client(tmp_path, docs_enabled=True).get("/asyncapi")
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


def test_turned_off_with_the_docs(tmp_path: Path) -> None:
    app = client(tmp_path, docs_enabled=False)
    for path in ("/asyncapi.json", "/asyncapi"):
        assert app.get(path).status_code == 404
