"""``AsyncStudioClient``: the studio's REST API for asyncio code, resource by resource.

    async with AsyncStudioClient("http://127.0.0.1:8000") as studio:
        await studio.auth.login("admin", "…")
        project = await studio.projects.create("cats")
        job = await studio.imports.local(project.id, "/data/cats", format="folder")
        async for event in studio.imports.follow(job.id):
            print(event.event, event.data)

Imports httpx and the package's own modules only (never the studio's services).
"""

from __future__ import annotations

from types import TracebackType

import httpx

from studio_client.experiments import Experiments
from studio_client.jobs import Evaluations, Exports, Runs, Tasks
from studio_client.resources import Auth, Datasets, Imports, Projects, Splits
from studio_client.transport import RetryPolicy, Transport

__all__ = ["AsyncStudioClient"]


class AsyncStudioClient:
    """A client of one studio. Give ``token`` (an access token) or ``api_key`` (``sk_…``),
    or sign in with ``auth.login``; ``timeout`` in seconds per request; ``retry`` the retry
    policy; ``transport`` an httpx transport (tests: ``httpx.MockTransport``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.transport = Transport(
            base_url,
            token=token,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            transport=transport,
        )
        self.auth = Auth(self.transport)
        self.projects = Projects(self.transport)
        self.datasets = Datasets(self.transport)
        self.imports = Imports(self.transport)
        self.splits = Splits(self.transport)
        self.runs = Runs(self.transport)
        self.evaluations = Evaluations(self.transport)
        self.exports = Exports(self.transport)
        self.tasks = Tasks(self.transport)
        self.experiments = Experiments(self.transport)

    @property
    def base_url(self) -> str:
        """The API root every path is relative to (``…/api/v1``)."""
        return self.transport.root

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncStudioClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
