"""What an upload can leave behind: files in the gateway's uploads folder, objects in the
Object Store bucket through which the gateway hands archives to the datasets service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from contracts import datasets as d
from tests.stack import Stack


async def handed_over_now(url: str) -> list[str]:
    """The objects in the uploads bucket (none when the bucket is empty or not made yet)."""
    nc = await nats.connect(url)
    try:
        objects = await nc.jetstream().object_store(d.UPLOADS_BUCKET)
        infos = await objects.list(ignore_deletes=True)
        return sorted(i.name for i in infos if i.name and not i.deleted)
    except NotFoundError:
        return []
    finally:
        await nc.close()


def left_behind(stack: Stack, gateway_workspace: Path | None = None) -> list[str]:
    """Every file of the gateway's uploads folder and every object of the uploads bucket."""
    folder = (gateway_workspace or stack.workspace) / "uploads"
    files = [str(p) for p in folder.iterdir()] if folder.exists() else []
    return files + asyncio.run(handed_over_now(stack.nats_url))
