"""The async client's resources of the model side: runs, evaluations, exports and the one
task view of every background job. Imports the package's transport, streams, files, models,
predictions and ``resources.poll``/``save``.
"""

from __future__ import annotations

import builtins
import mimetypes
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from studio_client.files import Progress
from studio_client.models import Evaluation, Export, Page, Predictions, Run, StreamEvent, Task
from studio_client.predictions import Answer
from studio_client.resources import Resource, poll, query_params, save
from studio_client.streams import follow
from studio_client.transport import Retry

__all__ = ["Evaluations", "Exports", "Runs", "Tasks"]


class Runs(Resource):
    async def create(
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
        """Queue a run; it starts when a trainer has a free device (``devices``: that many
        devices of one trainer at once, 1 to 64, ``batch_size`` split between them).
        Hyperparameters as a mapping and/or keywords (``model="smallcnn", epochs=2``)."""
        body: dict[str, Any] = {
            "project_id": project_id,
            "split_id": split_id,
            "hyperparameters": {**(hyperparameters or {}), **hyper},
            "if_busy": if_busy,
        }
        if devices != 1:  # left out at its default: a gateway of before the field accepts it
            body["devices"] = devices
        if experiment_id:
            body["experiment_id"] = experiment_id
        # A retry with the same Idempotency-Key gets the first run (the gateway keeps its 202).
        return await self._t.call("POST", "/training/run", Run, json=body, retry=Retry.IDEMPOTENT)

    async def get(self, run_id: str) -> Run:
        """A run with its full metric history and its checkpoints."""
        return await self._t.call("GET", f"/training/runs/{run_id}", Run)

    async def list(
        self,
        *,
        project_id: str | None = None,
        experiment_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Run]:
        """Runs, newest first: of a project, or of every project one is a member of."""
        params = query_params(
            project_id=project_id, experiment_id=experiment_id, status=status, limit=limit
        )
        page = await self._t.call("GET", "/training/runs", Page[Run], params=params)
        return page.items

    async def stop(self, run_id: str) -> Run:
        """Stop at the next batch: the last checkpoint is kept and the device freed."""
        return await self._t.call("POST", f"/training/runs/{run_id}/stop", Run, retry=Retry.UNSAFE)

    async def resume(self, run_id: str, *, epochs: int | None = None) -> Run:
        """Queue the run again after its last checkpoint; ``epochs`` may be raised."""
        body = {"epochs": epochs} if epochs is not None else None
        return await self._t.call(
            "POST", f"/training/runs/{run_id}/resume", Run, json=body, retry=Retry.UNSAFE
        )

    async def compare(self, run_ids: Sequence[str]) -> builtins.list[Run]:
        """Two or more runs with their curves, side by side."""
        params = {"run_ids": ",".join(run_ids)}
        answer = await self._t.call("GET", "/training/compare", dict[str, list[Run]], params=params)
        return answer["runs"]

    async def queue(self) -> dict[str, Any]:
        """What runs now and what waits, in order, and who holds which device."""
        return await self._t.call("GET", "/training/queue", dict)

    async def follow(self, run_id: str, *, after: int | None = None) -> AsyncIterator[StreamEvent]:
        """``status``, ``progress`` (batches), ``epoch_end``, ``checkpoint``, then ``complete``
        or ``error``: every stored event once, in order, through reconnects. It also ends at a
        ``status`` of ``stopped`` when the run is still stopped (not resumed since)."""
        events = follow(self._t, f"/training/runs/{run_id}/stream", after=after)
        async with aclosing(events):
            async for event in events:
                yield event
                if _stopped(event) and (await self.get(run_id)).status == "stopped":
                    return

    async def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it has completed, failed or stopped."""
        return await poll(lambda: self.get(run_id), lambda r: r.done, timeout=timeout)


class Evaluations(Resource):
    async def create(
        self, run_id: str, *, checkpoint: str = "best", subset: str = "test"
    ) -> Evaluation:
        """Evaluate a run's checkpoint on a subset of its split, in the background."""
        body = {"run_id": run_id, "checkpoint": checkpoint, "subset": subset}
        return await self._t.call(
            "POST", "/evaluation/run", Evaluation, json=body, retry=Retry.IDEMPOTENT
        )

    async def get(self, evaluation_id: str) -> Evaluation:
        return await self._t.call("GET", f"/evaluation/{evaluation_id}", Evaluation)

    async def list(self, run_id: str) -> builtins.list[Evaluation]:
        params = {"run_id": run_id}
        return (await self._t.call("GET", "/evaluation", Page[Evaluation], params=params)).items

    async def wait(self, evaluation_id: str, timeout: float | None = None) -> Evaluation:
        return await poll(
            lambda: self.get(evaluation_id),
            lambda e: e.status in ("completed", "failed"),
            timeout=timeout,
        )


class Exports(Resource):
    async def create(
        self, run_id: str, *, format: str = "onnx", checkpoint: str = "best"
    ) -> Export:
        """Export a run's checkpoint; offered only once its parity check passes."""
        body = {"run_id": run_id, "format": format, "checkpoint": checkpoint}
        return await self._t.call("POST", "/export/run", Export, json=body, retry=Retry.IDEMPOTENT)

    async def get(self, export_id: str) -> Export:
        return await self._t.call("GET", f"/export/{export_id}", Export)

    async def list(
        self, *, run_id: str | None = None, project_id: str | None = None
    ) -> builtins.list[Export]:
        params = query_params(run_id=run_id, project_id=project_id)
        return (await self._t.call("GET", "/export", Page[Export], params=params)).items

    async def wait(self, export_id: str, timeout: float | None = None) -> Export:
        return await poll(
            lambda: self.get(export_id),
            lambda e: e.status in ("completed", "failed"),
            timeout=timeout,
        )

    async def download(
        self,
        export_id: str,
        path: str | Path,
        progress: Progress | None = None,
        *,
        bundle: bool = False,
    ) -> Path:
        """The model file (or, with ``bundle``, the ZIP with labels and model card) saved at
        ``path``, its sha256 verified; a mismatch raises ``ChecksumMismatch`` and writes
        nothing. A folder as ``path`` keeps the gateway's file name."""
        route = f"/export/{export_id}/{'bundle' if bundle else 'download'}"
        return await save(self._t, route, Path(path), progress)

    async def predict(
        self, export_id: str, images: Sequence[str | Path], *, top_k: int = 5
    ) -> Predictions:
        """What the exported model predicts for each image: a classifier's top-k labels and
        scores (``predictions``), or a detector's boxes (``boxes``; ``top_k`` does not
        apply); ``task`` says which."""
        files = [("file", (Path(p).name, Path(p).read_bytes(), _media(Path(p)))) for p in images]
        answer = await self._t.call(
            "POST",
            f"/export/{export_id}/predict",
            Answer,
            params={"top_k": top_k},
            files=files,
            retry=Retry.IDEMPOTENT,  # a prediction changes nothing: safe to repeat
        )
        return answer.typed()


class Tasks(Resource):
    async def list(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        project_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Task]:
        """Every background job one may read (imports, runs, evaluations, exports)."""
        params = query_params(
            kind=kind, status=status, project_id=project_id, limit=limit, offset=offset
        )
        return await self._t.call("GET", "/tasks", Page[Task], params=params)

    async def get(self, task_id: str) -> Task:
        return await self._t.call("GET", f"/tasks/{task_id}", Task)

    async def wait(self, task_id: str, timeout: float | None = None, every: float = 0.5) -> Task:
        """The task once it is completed, failed or cancelled."""
        return await poll(lambda: self.get(task_id), lambda t: t.done, timeout=timeout, every=every)


def _stopped(event: StreamEvent) -> bool:
    return (
        event.event == "status"
        and isinstance(event.data, dict)
        and event.data.get("status") == "stopped"
    )


def _media(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
