"""The async client's resources of the data side: sign-in, projects, datasets, imports and
splits. Each method is one route of the gateway (``/api/v1``), its answer decoded into the
models' Structs; ``save`` streams a file of the gateway to disk (an export's model, a
dataset's ZIP). Imports the package's transport, errors, streams, files and models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from studio_client.errors import Unavailable
from studio_client.files import Progress, download, multipart_upload, zip_problem
from studio_client.models import (
    DatasetSummary,
    Image,
    ImagePage,
    Import,
    Page,
    Project,
    Session,
    Split,
    StreamEvent,
)
from studio_client.streams import follow
from studio_client.transport import Retry, Transport, error_of

__all__ = ["Auth", "Datasets", "Imports", "Projects", "Splits", "poll", "query_params", "save"]

T = TypeVar("T")


def query_params(**params: Any) -> dict[str, Any]:
    """Query parameters, leaving out those not given."""
    return {k: v for k, v in params.items() if v is not None}


async def poll(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float | None,
    every: float = 0.5,
) -> T:
    """``read()`` until ``done`` says so; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"still not done after {timeout} s: {value!r}")
        await asyncio.sleep(every)


async def save(
    transport: Transport,
    route: str,
    path: Path,
    progress: Progress | None = None,
    *,
    params: dict[str, Any] | None = None,
    check: Callable[[Path], str | None] | None = None,
) -> Path:
    """``GET route`` streamed to ``path`` (a folder keeps the gateway's file name) and verified
    (``files.download``); a connection that breaks off starts it again (a read is safe to
    repeat), up to the retry policy's attempts. Returns where the file is."""
    for attempt in range(transport.policy.attempts):
        try:
            async with transport.stream("GET", route, params=params) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_of(response)
                target = path
                if target.is_dir():
                    disposition = response.headers.get("content-disposition", "")
                    target = target / _file_name(disposition)
                await download(response, target, progress, check=check)
            return target
        except httpx.TransportError as exc:
            if attempt + 1 >= transport.policy.attempts:
                raise Unavailable("UNREACHABLE", f"the download broke off: {exc!r}") from exc
            await asyncio.sleep(transport.policy.delay(attempt))
    raise AssertionError("unreachable")


def _file_name(disposition: str) -> str:
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value.strip('"'):
            return Path(value.strip('"')).name
    return "download"


class Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class Auth(Resource):
    async def login(self, user: str, password: str) -> Session:
        """Sign in (OAuth2 password flow); the client uses the session from then on, and
        refreshes it by itself when its access token expires."""
        return await self._t.login(user, password)

    async def logout(self) -> None:
        """End this session: its tokens stop working at once."""
        await self._t.call("POST", "/auth/logout", dict, retry=Retry.IDEMPOTENT)
        self._t.session, self._t.token = None, None

    async def me(self) -> dict[str, Any]:
        """Who the client's credential says it is, and how it proved it."""
        return await self._t.call("GET", "/auth/me", dict)


class Projects(Resource):
    async def list(
        self,
        *,
        status: str = "active",
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Project]:
        """The projects one is a member of, newest first (``status``: active, archived, all)."""
        params = query_params(status=status, q=q, limit=limit, offset=offset)
        return await self._t.call("GET", "/projects", Page[Project], params=params)

    async def get(self, project_id: str) -> Project:
        return await self._t.call("GET", f"/projects/{project_id}", Project)

    async def create(
        self, name: str, *, description: str = "", task_type: str = "classification"
    ) -> Project:
        """A new project; a retried create never makes a second one (Idempotency-Key)."""
        body = {"name": name, "description": description, "task_type": task_type}
        return await self._t.call("POST", "/projects", Project, json=body)

    async def archive(self, project_id: str) -> Project:
        """Hidden from the default list, read-only until restored."""
        return await self._t.call("POST", f"/projects/{project_id}/archive", Project)

    async def restore(self, project_id: str) -> Project:
        return await self._t.call("POST", f"/projects/{project_id}/restore", Project)


class Datasets(Resource):
    async def list(self, *, status: str = "active") -> list[DatasetSummary]:
        """The dataset of every project one is a member of (a project holds one dataset)."""
        summaries: list[DatasetSummary] = []
        offset = 0
        while True:
            page = await Projects(self._t).list(status=status, limit=100, offset=offset)
            summaries += [await self.get(p.id) for p in page.items]
            offset += len(page.items)
            if not page.items or offset >= (page.total or 0):
                return summaries

    async def get(self, project_id: str) -> DatasetSummary:
        """Counts, the class histogram, image sizes, imports and splits of a project's data."""
        return await self._t.call("GET", f"/datasets/{project_id}", DatasetSummary)

    async def images(
        self,
        project_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        label: str | None = None,
        q: str | None = None,
        split_id: str | None = None,
        subset: str | None = None,
    ) -> ImagePage:
        """A page of images by file name; ``next_cursor`` of the answer gives the next."""
        params = query_params(
            limit=limit, cursor=cursor, label=label, q=q, split_id=split_id, subset=subset
        )
        return await self._t.call("GET", f"/datasets/{project_id}/images", ImagePage, params=params)

    async def iter_images(self, project_id: str, **filters: Any) -> AsyncIterator[Image]:
        """Every image (filtered as ``images`` is), page after page."""
        cursor: str | None = None
        while True:
            page = await self.images(project_id, cursor=cursor, **filters)
            for image in page.items:
                yield image
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def export(
        self,
        project_id: str,
        path: str | Path,
        *,
        format: str = "coco",
        split_id: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """The dataset (or, with ``split_id``, that split's images, a folder and annotation
        file per subset) as a ZIP of its images and ``coco`` or ``yolo`` annotations, streamed
        to ``path`` (a folder keeps the gateway's file name), never whole in memory. The
        gateway makes it as it sends it (no size, no checksum up front): the file is kept
        only once it reads as a whole ZIP. ``progress(received, None)`` as it goes."""
        return await save(
            self._t,
            f"/datasets/{project_id}/export",
            Path(path),
            progress,
            params=query_params(format=format, split_id=split_id),
            check=zip_problem,
        )


class Imports(Resource):
    async def local(self, project_id: str, path: str | Path, format: str = "auto") -> Import:
        """Import a folder on the server (below the operator's allowed roots)."""
        body = {"project_id": project_id, "path": str(path), "format": format}
        # The gateway keeps a job's 202 under its Idempotency-Key and derives the import's id
        # from it: a retry gets the first import, never a second one.
        return await self._t.call(
            "POST", "/datasets/import/local", Import, json=body, retry=Retry.IDEMPOTENT
        )

    async def upload(
        self,
        project_id: str,
        zip_path: str | Path,
        format: str = "auto",
        progress: Progress | None = None,
    ) -> Import:
        """Upload a ZIP, streamed from disk; ``progress(sent, total)`` as it goes."""
        upload = multipart_upload(Path(zip_path), progress=progress)
        headers = {"Content-Type": upload.content_type, "Content-Length": str(upload.length)}
        response = await self._t.send(
            "POST",
            "/datasets/import/upload",
            params={"project_id": project_id, "format": format},
            content=upload.stream,
            headers=headers,
            retry=Retry.IDEMPOTENT,  # the gateway answers a retried upload with the first import
            timeout=None,  # a large archive takes as long as it takes
        )
        return self._t.data(response, Import)

    async def get(self, import_id: str) -> Import:
        return await self._t.call("GET", f"/datasets/import/{import_id}", Import)

    async def cancel(self, import_id: str) -> Import:
        """Stop a running import; nothing of it is kept."""
        return await self._t.call(
            "POST", f"/datasets/import/{import_id}/cancel", Import, retry=Retry.UNSAFE
        )

    def follow(self, import_id: str) -> AsyncIterator[StreamEvent]:
        """``status``, ``progress`` (``files``, ``done`` …) a few times a second, then
        ``complete`` (the report) or ``error``; reconnects by itself."""
        return follow(self._t, f"/datasets/import/{import_id}/stream")

    async def wait(self, import_id: str, timeout: float | None = None) -> Import:
        """The import once it is over (completed, failed or cancelled)."""
        return await poll(lambda: self.get(import_id), lambda i: i.done, timeout=timeout)


class Splits(Resource):
    async def create(
        self,
        project_id: str,
        name: str = "split",
        *,
        ratios: Sequence[float] | Mapping[str, float] = (0.7, 0.15, 0.15),
        strategy: str = "stratified",
        seed: int = 0,
    ) -> Split:
        """A seeded, leak-free train/val/test split; ``ratios`` as (train, val, test)."""
        if not isinstance(ratios, Mapping):
            ratios = dict(zip(("train", "val", "test"), ratios, strict=False))
        body = {
            "project_id": project_id,
            "name": name,
            "ratios": dict(ratios),
            "strategy": strategy,
            "seed": seed,
        }
        return await self._t.call("POST", "/splits", Split, json=body)

    async def get(self, split_id: str) -> Split:
        return await self._t.call("GET", f"/splits/{split_id}", Split)

    async def list(self, project_id: str) -> list[Split]:
        page = await self._t.call("GET", "/splits", Page[Split], params={"project_id": project_id})
        return page.items
