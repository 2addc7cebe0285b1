"""Hand an uploaded archive to the datasets service through the Object Store, not a folder.

The gateway receives an upload into its own workspace (its size checked as it comes), then
streams the file into ``UPLOADS_BUCKET`` chunk by chunk and deletes its local copy: the
datasets service, which may run on another machine, fetches the object named in
``StartImport.upload_object`` and deletes it once it has claimed the archive (or refused the
import). An object a gateway left by crashing between its put and its command is swept by the
datasets service after an hour.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import datasets as c
from services.kernel import artifacts

log = logging.getLogger(__name__)


async def uploads_bucket(js: JetStreamContext) -> ObjectStore:
    """The uploads bucket, created by whoever needs it first."""
    try:
        return await js.object_store(c.UPLOADS_BUCKET)
    except NotFoundError:
        return await js.create_object_store(c.UPLOADS_BUCKET)


async def hand_over(js: JetStreamContext, staged: Path, upload_id: str) -> str:
    """Stream ``staged`` into the uploads bucket, then delete it; returns the object's name."""
    name = c.upload_object(upload_id)
    await artifacts.upload(await uploads_bucket(js), name, staged, retry_for=10.0)
    await asyncio.to_thread(staged.unlink, True)
    return name


async def withdraw(js: JetStreamContext, name: str) -> None:
    """Delete a handed-over object the import did not take (refused, 503, client gone).

    Harmless when the datasets service already deleted it; a failure is logged, not raised:
    the datasets service's sweep removes the object later."""
    try:
        await (await uploads_bucket(js)).delete(name)
    except NotFoundError:
        pass
    except Exception:
        log.warning("could not delete the uploaded object %s; the sweep will", name, exc_info=True)
