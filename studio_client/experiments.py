"""Experiments: searches over models and hyperparameters, each trial a queued run.

``client.experiments`` creates a search (``create``), reads it (``get``, ``list``, ``wait``),
stops, resumes and promotes a trial (evaluate its run on the test subset and export it), and
watches it live: ``follow`` over Server-Sent Events (resumable, as a run's feed), or
``connect_websocket`` over the experiment's WebSocket. The search space is a mapping of
hyperparameter names to ``choice``/``int_range``/``float_range``/``fixed``:

    exp = await studio.experiments.create(
        project_id, split_id, "lr-vs-model", architecture_type="smallcnn", max_trials=8,
        search_config={"learning_rate": float_range(1e-4, 1e-1, log=True)},
        objectives=["val_accuracy", "latency_ms"], epochs_per_trial=2)

``SyncExperiments`` is the blocking counterpart that ``StudioClient`` serves. Imports msgspec,
httpx (through the transport) and the package's own modules; the ``websockets`` package is
imported by ``connect_websocket`` only (``studio_client.sockets``), when it is called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

from studio_client.models import Experiment, Page, Promotion, SocketMessage, StreamEvent
from studio_client.resources import Resource, poll, query_params
from studio_client.sockets import listen
from studio_client.streams import follow
from studio_client.transport import Retry

__all__ = [
    "Experiments",
    "SyncExperiments",
    "choice",
    "fixed",
    "float_range",
    "int_range",
    "objective",
]

T = TypeVar("T")
#: A metric's usual direction, for an objective given by its metric alone.
DIRECTIONS = {
    "val_accuracy": "maximize",
    "macro_f1": "maximize",
    "val_map": "maximize",
    "val_loss": "minimize",
    "latency_ms": "minimize",
    "params": "minimize",
}
COMPLETED = "training.experiment_completed.v1"
STOPPED = "training.experiment_stopped.v1"


# --- the search space and objectives ------------------------------------------------------------


def choice(*values: str | int | float | bool) -> dict[str, Any]:
    """One of ``values`` (a categorical parameter): ``choice("smallcnn", "resnet18")``."""
    return {"type": "categorical", "choices": list(values)}


def int_range(low: int, high: int, *, step: int = 1, log: bool = False) -> dict[str, Any]:
    """An integer from ``low`` to ``high`` inclusive."""
    return {"type": "int", "low": low, "high": high, "step": step, "log": log}


def float_range(
    low: float, high: float, *, step: float | None = None, log: bool = False
) -> dict[str, Any]:
    """A float from ``low`` to ``high``; ``log`` samples on a log scale (``low`` > 0)."""
    return {"type": "float", "low": low, "high": high, "step": step, "log": log}


def fixed(value: str | int | float | bool) -> dict[str, Any]:
    """A value every trial takes."""
    return {"type": "fixed", "value": value}


def objective(spec: str | Sequence[str] | Mapping[str, Any]) -> dict[str, str]:
    """``"latency_ms"`` (its usual direction), ``"latency_ms:minimize"``, a pair or a mapping
    → ``{"metric", "direction"}``; the studio judges the names."""
    if isinstance(spec, Mapping):
        metric, direction = str(spec.get("metric", "")), spec.get("direction")
    elif isinstance(spec, str):
        metric, _, given = spec.partition(":")
        direction = given or None
    else:
        metric, direction = spec[0], spec[1] if len(spec) > 1 else None
    return {"metric": metric, "direction": str(direction or DIRECTIONS.get(metric, "maximize"))}


# --- the async resource ---------------------------------------------------------------------


class Experiments(Resource):
    async def create(
        self,
        project_id: str,
        split_id: str,
        name: str,
        *,
        architecture_type: str = "any",
        search_config: Mapping[str, Any] | None = None,
        max_trials: int = 10,
        objectives: Sequence[str | Sequence[str] | Mapping[str, Any]] | None = None,
        epochs_per_trial: int | None = None,
        max_concurrent_trials: int | None = None,
        wall_time_s: float | None = None,
        pruning: str | Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> Experiment:
        """Start a search; the studio's defaults for what is left out (every model of the
        family, a log learning-rate range; val_accuracy maximized, or val_map on a detection
        project, whose "any" is every detector; 3 epochs per trial; median pruning). A bad
        space, metric or budget raises ``ValidationFailed`` naming the field."""
        body: dict[str, Any] = {
            "project_id": project_id,
            "split_id": split_id,
            "name": name,
            "architecture_type": architecture_type,
            "search_config": dict(search_config or {}),
            "max_trials": max_trials,
        }
        if objectives is not None:
            body["objectives"] = [objective(o) for o in objectives]
        budget = query_params(
            epochs_per_trial=epochs_per_trial,
            max_concurrent_trials=max_concurrent_trials,
            wall_time_s=wall_time_s,
        )
        if budget:
            body["budget"] = budget
        if pruning is not None:
            body["pruning"] = {"kind": pruning} if isinstance(pruning, str) else dict(pruning)
        if seed is not None:
            body["seed"] = seed
        # The gateway keeps a job's 202 under its Idempotency-Key: a retry gets the first one.
        return await self._t.call(
            "POST", "/experiments", Experiment, json=body, retry=Retry.IDEMPOTENT
        )

    async def get(self, experiment_id: str) -> Experiment:
        """An experiment with its trials, the best trial per objective, the front and the
        parameters' importances."""
        return await self._t.call("GET", f"/experiments/{experiment_id}", Experiment)

    async def list(
        self,
        *,
        project_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Experiment]:
        """Experiments, newest first: of a project, or of every project one is a member of."""
        params = query_params(project_id=project_id, status=status, limit=limit, offset=offset)
        return await self._t.call("GET", "/experiments", Page[Experiment], params=params)

    async def stop(self, experiment_id: str) -> Experiment:
        """Stop the search: running trials stop (their checkpoints kept), queued ones are
        dropped; ``resume`` continues it."""
        return await self._t.call(
            "POST", f"/experiments/{experiment_id}/stop", Experiment, retry=Retry.UNSAFE
        )

    async def resume(self, experiment_id: str) -> Experiment:
        """Continue a stopped search where it was, up to its ``max_trials``."""
        return await self._t.call(
            "POST", f"/experiments/{experiment_id}/resume", Experiment, retry=Retry.UNSAFE
        )

    async def promote(self, experiment_id: str, trial: int, *, format: str = "onnx") -> Promotion:
        """Evaluate a trial's run on the test subset and export it; the answer names the
        evaluation and the export (``evaluations.wait``, ``exports.wait``)."""
        return await self._t.call(
            "POST",
            f"/experiments/{experiment_id}/trials/{trial}/promote",
            Promotion,
            json={"format": format},
            retry=Retry.IDEMPOTENT,
        )

    async def wait(self, experiment_id: str, timeout: float | None = None) -> Experiment:
        """The experiment once it has completed, failed or stopped."""
        return await poll(lambda: self.get(experiment_id), lambda e: e.done, timeout=timeout)

    async def follow(
        self, experiment_id: str, *, after: int | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Its SSE feed: ``snapshot`` for a late client, then ``trial_started``, ``epoch_end``
        (with ``trial``), ``trial_pruned``, ``trial_completed``, ``front_updated``, the trials'
        run events, and the experiment's ``complete``; every stored event once, in order,
        through reconnects. It also ends when the experiment is stopped (and still is), or
        when the gateway says the feed is over."""
        experiment = await self.get(experiment_id)
        path = f"/training/{experiment.project_id}/experiments/{experiment_id}/stream"
        # A trial's run ends with a ``complete`` too: only the experiment's own ends the feed.
        events = follow(self._t, path, ends=(), after=after)
        async with aclosing(events):
            async for event in events:
                yield event
                if _tagged(event, COMPLETED):
                    return
                if _tagged(event, STOPPED) and (await self.get(experiment_id)).done:
                    return

    async def connect_websocket(
        self,
        experiment_id: str,
        callback: Callable[[SocketMessage], Any],
        *,
        last_event_id: int | None = None,
    ) -> int:
        """Listen on ``/ws/experiments/{id}``: ``callback`` gets each message (a
        ``SocketMessage``: ``snapshot`` first, then what the SSE feed gives) until the studio
        closes the socket at the experiment's end, or the callback returns True; it may be a
        coroutine function. Returns how many messages it got. A broken connection is opened
        again after the last stored event delivered (a fresh ``snapshot`` comes first, no
        stored event twice); a refusal (unknown experiment, no access) raises the typed
        error. Needs the ``websockets`` package, for this call only (``pip install
        websockets``): it is imported when called, not with the client."""
        path = f"/ws/experiments/{experiment_id}"
        return await listen(self._t, path, callback, last_event_id=last_event_id)


def _tagged(event: StreamEvent, tag: str) -> bool:
    return isinstance(event.data, dict) and event.data.get("type") == tag


# --- the blocking counterpart -----------------------------------------------------------------


class _Loop(Protocol):
    def run(self, coro: Awaitable[T]) -> T: ...

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]: ...


class SyncExperiments:
    """``Experiments`` for ``StudioClient``: each call blocks; ``follow`` is an iterator;
    ``connect_websocket``'s callback runs on the client's own thread (it must not call the
    client: stop by returning True, then call it)."""

    def __init__(self, loop: Any, resource: Experiments) -> None:
        self._loop: _Loop = loop
        self._a = resource

    def create(
        self,
        project_id: str,
        split_id: str,
        name: str,
        *,
        architecture_type: str = "any",
        search_config: Mapping[str, Any] | None = None,
        max_trials: int = 10,
        objectives: Sequence[str | Sequence[str] | Mapping[str, Any]] | None = None,
        epochs_per_trial: int | None = None,
        max_concurrent_trials: int | None = None,
        wall_time_s: float | None = None,
        pruning: str | Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> Experiment:
        options = dict(locals())
        del options["self"], options["project_id"], options["split_id"], options["name"]
        return self._loop.run(self._a.create(project_id, split_id, name, **options))

    def get(self, experiment_id: str) -> Experiment:
        return self._loop.run(self._a.get(experiment_id))

    def list(
        self,
        *,
        project_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Experiment]:
        return self._loop.run(
            self._a.list(project_id=project_id, status=status, limit=limit, offset=offset)
        )

    def stop(self, experiment_id: str) -> Experiment:
        return self._loop.run(self._a.stop(experiment_id))

    def resume(self, experiment_id: str) -> Experiment:
        return self._loop.run(self._a.resume(experiment_id))

    def promote(self, experiment_id: str, trial: int, *, format: str = "onnx") -> Promotion:
        return self._loop.run(self._a.promote(experiment_id, trial, format=format))

    def wait(self, experiment_id: str, timeout: float | None = None) -> Experiment:
        return self._loop.run(self._a.wait(experiment_id, timeout))

    def follow(self, experiment_id: str, *, after: int | None = None) -> Iterator[StreamEvent]:
        return self._loop.iterate(self._a.follow(experiment_id, after=after))

    def connect_websocket(
        self,
        experiment_id: str,
        callback: Callable[[SocketMessage], Any],
        *,
        last_event_id: int | None = None,
    ) -> int:
        return self._loop.run(
            self._a.connect_websocket(experiment_id, callback, last_event_id=last_event_id)
        )
