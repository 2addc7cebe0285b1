"""A run's spans: ``run <run_id>`` for each attempt a trainer makes at it, and ``epoch <n>`` for
each epoch under it, so that a training can be followed from the request that queued it.

The run span is a child of the run's first event's span (the request that queued the run: its
trace), and links to the span that queued this very attempt (a resume's request, when it was
resumed), since the queue stands between a request and its training for any length of time.
What the trainer stores meanwhile (epochs, checkpoints, the outcome) is in the run span.

Imports ``contracts``, ``services.kernel`` (the event store's reading, tracing).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

from opentelemetry.trace import StatusCode, get_current_span

from contracts import training as c
from services.kernel import tracing
from services.kernel.eventstore import StoredEvent


class Loads(Protocol):
    async def load(self, aggregate_id: str, after: int = 0) -> Sequence[StoredEvent[Any]]: ...


@asynccontextmanager
async def traced(store: Loads, run_id: str) -> AsyncIterator[None]:
    """The span of one attempt at ``run_id`` (see the module's doc), current inside. Tracing
    off, nothing (what the run stores follows its queuing trace all the same: ``RunStore``)."""
    if not tracing.enabled():
        yield
        return
    stored = await store.load(run_id)
    first = stored[0].headers if stored else {}
    queued = [s.headers for s in stored if isinstance(s.event, c.RunQueued | c.RunResumed)]
    links = tracing.link_to(queued[-1], reason="queued") if queued else []
    parent = tracing.extract(first) if tracing.TRACEPARENT in first else None
    kind = tracing.SpanKind.CONSUMER
    with tracing.span(f"run {run_id}", kind=kind, context=parent, links=links) as span:
        if span.is_recording():
            span.set_attribute("studio.run_id", run_id)
            span.set_attribute("studio.queued_events", len(queued))
        yield


@contextmanager
def epoch_span(metrics: c.EpochCompleted) -> Iterator[None]:
    """The span of an epoch the engine has just finished (it began ``metrics.seconds`` ago),
    current while the epoch is stored."""
    began = time.time_ns() - int(metrics.seconds * 1e9)
    with tracing.span(f"epoch {metrics.epoch}", start_time=began) as span:
        if span.is_recording():
            span.set_attribute("studio.epoch", metrics.epoch)
            span.set_attribute("studio.val_accuracy", metrics.val_accuracy)
            span.set_attribute("studio.images_per_second", metrics.images_per_second)
        yield


def mark_failed(message: str) -> None:
    """Marks the current span (a run's) failed with ``message``."""
    get_current_span().set_status(StatusCode.ERROR, message)
