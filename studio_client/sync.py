"""``StudioClient``: the same surface as ``AsyncStudioClient``, blocking.

It runs the async client on an event loop of its own in a background thread, so it works the
same in a script, a thread pool and a notebook that already runs a loop. Each method blocks
until the async call is done; ``follow`` returns a plain iterator; Ctrl-C cancels the call in
progress. Progress callbacks are called from the loop's thread. Imports the package only.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from studio_client.aio import AsyncStudioClient
from studio_client.experiments import SyncExperiments
from studio_client.files import Progress
from studio_client.loop import Loop
from studio_client.models import (
    DatasetSummary,
    Evaluation,
    Export,
    Image,
    ImagePage,
    Import,
    Page,
    Predictions,
    Project,
    Run,
    Session,
    Split,
    StreamEvent,
    Task,
)
from studio_client.transport import RetryPolicy

__all__ = ["StudioClient"]

T = TypeVar("T")


class _Sync:
    def __init__(self, loop: Loop, resource: Any) -> None:
        self._loop, self._a = loop, resource


class Auth(_Sync):
    def login(self, user: str, password: str) -> Session:
        return self._loop.run(self._a.login(user, password))

    def logout(self) -> None:
        self._loop.run(self._a.logout())

    def me(self) -> dict[str, Any]:
        return self._loop.run(self._a.me())


class Projects(_Sync):
    def list(
        self, *, status: str = "active", q: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[Project]:
        return self._loop.run(self._a.list(status=status, q=q, limit=limit, offset=offset))

    def get(self, project_id: str) -> Project:
        return self._loop.run(self._a.get(project_id))

    def create(
        self, name: str, *, description: str = "", task_type: str = "classification"
    ) -> Project:
        return self._loop.run(self._a.create(name, description=description, task_type=task_type))

    def archive(self, project_id: str) -> Project:
        return self._loop.run(self._a.archive(project_id))

    def restore(self, project_id: str) -> Project:
        return self._loop.run(self._a.restore(project_id))


class Datasets(_Sync):
    def list(self, *, status: str = "active") -> builtins.list[DatasetSummary]:
        return self._loop.run(self._a.list(status=status))

    def get(self, project_id: str) -> DatasetSummary:
        return self._loop.run(self._a.get(project_id))

    def images(
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
        return self._loop.run(
            self._a.images(
                project_id,
                limit=limit,
                cursor=cursor,
                label=label,
                q=q,
                split_id=split_id,
                subset=subset,
            )
        )

    def iter_images(self, project_id: str, **filters: Any) -> Iterator[Image]:
        return self._loop.iterate(self._a.iter_images(project_id, **filters))

    def export(
        self,
        project_id: str,
        path: str | Path,
        *,
        format: str = "coco",
        split_id: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        return self._loop.run(
            self._a.export(project_id, path, format=format, split_id=split_id, progress=progress)
        )


class Imports(_Sync):
    def local(self, project_id: str, path: str | Path, format: str = "auto") -> Import:
        return self._loop.run(self._a.local(project_id, path, format))

    def upload(
        self,
        project_id: str,
        zip_path: str | Path,
        format: str = "auto",
        progress: Progress | None = None,
    ) -> Import:
        return self._loop.run(self._a.upload(project_id, zip_path, format, progress))

    def get(self, import_id: str) -> Import:
        return self._loop.run(self._a.get(import_id))

    def cancel(self, import_id: str) -> Import:
        return self._loop.run(self._a.cancel(import_id))

    def follow(self, import_id: str) -> Iterator[StreamEvent]:
        return self._loop.iterate(self._a.follow(import_id))

    def wait(self, import_id: str, timeout: float | None = None) -> Import:
        return self._loop.run(self._a.wait(import_id, timeout))


class Splits(_Sync):
    def create(
        self,
        project_id: str,
        name: str = "split",
        *,
        ratios: Sequence[float] | Mapping[str, float] = (0.7, 0.15, 0.15),
        strategy: str = "stratified",
        seed: int = 0,
    ) -> Split:
        return self._loop.run(
            self._a.create(project_id, name, ratios=ratios, strategy=strategy, seed=seed)
        )

    def get(self, split_id: str) -> Split:
        return self._loop.run(self._a.get(split_id))

    def list(self, project_id: str) -> builtins.list[Split]:
        return self._loop.run(self._a.list(project_id))


class Runs(_Sync):
    def create(
        self,
        project_id: str,
        split_id: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        experiment_id: str | None = None,
        if_busy: str = "queue",
        devices: int = 1,
        **hyper: Any,
    ) -> Run:
        return self._loop.run(
            self._a.create(
                project_id,
                split_id,
                hyperparameters,
                experiment_id=experiment_id,
                if_busy=if_busy,
                devices=devices,
                **hyper,
            )
        )

    def get(self, run_id: str) -> Run:
        return self._loop.run(self._a.get(run_id))

    def list(
        self,
        *,
        project_id: str | None = None,
        experiment_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Run]:
        return self._loop.run(
            self._a.list(
                project_id=project_id, experiment_id=experiment_id, status=status, limit=limit
            )
        )

    def stop(self, run_id: str) -> Run:
        return self._loop.run(self._a.stop(run_id))

    def resume(self, run_id: str, *, epochs: int | None = None) -> Run:
        return self._loop.run(self._a.resume(run_id, epochs=epochs))

    def compare(self, run_ids: Sequence[str]) -> builtins.list[Run]:
        return self._loop.run(self._a.compare(run_ids))

    def queue(self) -> dict[str, Any]:
        return self._loop.run(self._a.queue())

    def follow(self, run_id: str, *, after: int | None = None) -> Iterator[StreamEvent]:
        return self._loop.iterate(self._a.follow(run_id, after=after))

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        return self._loop.run(self._a.wait(run_id, timeout))


class Evaluations(_Sync):
    def create(self, run_id: str, *, checkpoint: str = "best", subset: str = "test") -> Evaluation:
        return self._loop.run(self._a.create(run_id, checkpoint=checkpoint, subset=subset))

    def get(self, evaluation_id: str) -> Evaluation:
        return self._loop.run(self._a.get(evaluation_id))

    def list(self, run_id: str) -> builtins.list[Evaluation]:
        return self._loop.run(self._a.list(run_id))

    def wait(self, evaluation_id: str, timeout: float | None = None) -> Evaluation:
        return self._loop.run(self._a.wait(evaluation_id, timeout))


class Exports(_Sync):
    def create(self, run_id: str, *, format: str = "onnx", checkpoint: str = "best") -> Export:
        return self._loop.run(self._a.create(run_id, format=format, checkpoint=checkpoint))

    def get(self, export_id: str) -> Export:
        return self._loop.run(self._a.get(export_id))

    def list(
        self, *, run_id: str | None = None, project_id: str | None = None
    ) -> builtins.list[Export]:
        return self._loop.run(self._a.list(run_id=run_id, project_id=project_id))

    def wait(self, export_id: str, timeout: float | None = None) -> Export:
        return self._loop.run(self._a.wait(export_id, timeout))

    def download(
        self,
        export_id: str,
        path: str | Path,
        progress: Progress | None = None,
        *,
        bundle: bool = False,
    ) -> Path:
        return self._loop.run(self._a.download(export_id, path, progress, bundle=bundle))

    def predict(
        self, export_id: str, images: Sequence[str | Path], *, top_k: int = 5
    ) -> Predictions:
        return self._loop.run(self._a.predict(export_id, images, top_k=top_k))


class Tasks(_Sync):
    def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        project_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Task]:
        return self._loop.run(
            self._a.list(
                kind=kind, status=status, project_id=project_id, limit=limit, offset=offset
            )
        )

    def get(self, task_id: str) -> Task:
        return self._loop.run(self._a.get(task_id))

    def wait(self, task_id: str, timeout: float | None = None, every: float = 0.5) -> Task:
        return self._loop.run(self._a.wait(task_id, timeout, every))


class StudioClient:
    """A blocking client of one studio; the arguments are ``AsyncStudioClient``'s."""

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
        self._loop = Loop()
        self.aio = AsyncStudioClient(
            base_url, token, api_key, timeout, retry=retry, transport=transport
        )
        self.transport = self.aio.transport
        self.auth = Auth(self._loop, self.aio.auth)
        self.projects = Projects(self._loop, self.aio.projects)
        self.datasets = Datasets(self._loop, self.aio.datasets)
        self.imports = Imports(self._loop, self.aio.imports)
        self.splits = Splits(self._loop, self.aio.splits)
        self.runs = Runs(self._loop, self.aio.runs)
        self.evaluations = Evaluations(self._loop, self.aio.evaluations)
        self.exports = Exports(self._loop, self.aio.exports)
        self.tasks = Tasks(self._loop, self.aio.tasks)
        self.experiments = SyncExperiments(self._loop, self.aio.experiments)

    @property
    def base_url(self) -> str:
        return self.aio.base_url

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._loop.run(self.aio.aclose())
        self._loop.close()

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # a client never closed must not leave its thread behind
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.loop.is_closed():
            loop.loop.call_soon_threadsafe(loop.loop.stop)
