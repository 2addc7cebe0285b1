"""The bus, documented: ``GET /asyncapi.json`` (the AsyncAPI 3.0 document ``contracts.asyncapi``
generates) and ``GET /asyncapi``, the same drawn as a page (server-rendered, no script, no CDN).

Served beside ``/docs`` and only where it is (``Settings.docs_enabled``: development). Imports
``contracts``, the pages' templating and starlette/fastapi.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from contracts import asyncapi
from services.gateway.pages.templating import render

router = APIRouter(include_in_schema=False)


@cache
def _document() -> dict[str, Any]:
    return asyncapi.document()


@router.get("/asyncapi.json")
async def asyncapi_json() -> JSONResponse:
    """The AsyncAPI document of every subject on the bus."""
    return JSONResponse(_document())


@router.get("/asyncapi", response_class=HTMLResponse)
async def asyncapi_page(request: Request) -> HTMLResponse:
    """The AsyncAPI document as a page: channels, operations, messages and their schemas."""
    return render(request, "asyncapi.html", **view(_document()))


def _name(ref: dict[str, str]) -> str:
    return ref["$ref"].rsplit("/", 1)[-1]


def _channel_id(ref: dict[str, str]) -> str:
    return ref["$ref"].removeprefix("#/channels/")


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """What the page shows, in the order a reader looks for it."""
    channels = doc["channels"]
    operations = []
    for op_id, op in doc["operations"].items():
        channel = channels[_channel_id(op["channel"])]
        reply = op.get("reply")
        operations.append(
            {
                "id": op_id,
                "action": op["action"],
                "address": channel["address"],
                "summary": op.get("summary", ""),
                "messages": [_name(m) for m in op["messages"]],
                "replies": [_name(m) for m in reply["messages"]] if reply else [],
            }
        )
    shown = [
        {
            "id": channel_id,
            "address": channel["address"],
            "description": channel.get("description", ""),
            "messages": list(channel["messages"]),
            "parameters": channel.get("parameters", {}),
        }
        for channel_id, channel in channels.items()
        if channel["address"] is not None  # replies go to the requester's inbox
    ]
    schemas = doc["components"]["schemas"]
    messages = [
        {
            "name": name,
            "summary": message.get("summary", ""),
            "tags": [t["name"] for t in message.get("tags", [])],
            "schema": json.dumps(schemas[name], indent=2),
        }
        for name, message in doc["components"]["messages"].items()
    ]
    others = [
        {"name": name, "schema": json.dumps(schema, indent=2)}
        for name, schema in schemas.items()
        if name not in doc["components"]["messages"]
    ]
    return {
        "info": doc["info"],
        "version": doc["asyncapi"],
        "servers": doc["servers"],
        "operations": operations,
        "channels": shown,
        "messages": messages,
        "schemas": others,
    }
