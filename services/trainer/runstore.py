"""How the trainer stores what happens to a run: each step (a claim, an epoch, the outcome) an
append to the run's stream in the trace the run was queued in, so that a claim, an epoch or an
outcome can be followed back to the client's request across the queue.

A step's message id is fresh each time, except an epoch's (``a<attempt>.e<epoch>``), which is
fixed, so that a retried epoch is stored once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from functools import partial

from contracts import Message
from contracts import training as c
from contracts.common import CommandAccepted, Reply
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.jobs.runner import failure_of
from services.kernel.repository import Repository
from services.kernel.transient import TRANSIENT
from services.trainer import domain, metrics
from services.trainer.runtrace import epoch_span, mark_failed, traced

log = logging.getLogger(__name__)

Decide = Callable[..., list[c.Event]]
#: The outcome each ending is counted as (``metrics.RUNS``).
OUTCOMES: dict[type, str] = {
    c.RunCompleted: "completed",
    c.RunFailed: "failed",
    c.RunStopped: "stopped",
    c.RunInterrupted: "interrupted",
}


class RunStore:
    """The runs this trainer (``instance``) stores steps of, and each run's trace."""

    def __init__(
        self, repo: Repository[domain.State], *, instance: str, auto_resume: bool = True
    ) -> None:
        self.repo, self.instance, self.auto_resume = repo, instance, auto_resume
        #: Each run's trace (its queueing request's), carried on to what the trainer stores.
        self.traces: dict[str, dict[str, str]] = {}

    async def get(self, run_id: str) -> domain.State:
        run, _ = await self.repo.get(run_id)
        return run

    async def store(self, run_id: str, step: str, decide: Decide) -> Reply:
        cause = Message(message_id=f"{run_id}.{step}.{time.time_ns()}", actor=self.instance)
        if step.startswith("a"):  # an epoch: its id is fixed, so a retry is stored once
            cause = Message(message_id=f"{run_id}.{step}", actor=self.instance)
        trace = await self.trace(run_id)
        reply = await execute(
            self.repo, run_id, cause, decide, headers=trace, refusals=(DomainError,), noun="run"
        )
        if not isinstance(reply, CommandAccepted):
            log.error("run %s: %s not stored: %s", run_id, step, reply.message)
        if step == "end":
            self.traces.pop(run_id, None)
        return reply

    async def trace(self, run_id: str) -> dict[str, str]:
        """The trace the run was queued in (its first event's)."""
        if run_id not in self.traces:
            stored = await self.repo.store.load(run_id)
            parent = stored[0].headers.get("traceparent") if stored else None
            self.traces[run_id] = {"traceparent": parent} if parent else {}
        return self.traces[run_id]

    def traced(self, run_id: str) -> AbstractAsyncContextManager[None]:
        """The span of this trainer's attempt at the run, current inside (``runtrace``)."""
        return traced(self.repo.store, run_id)

    async def claim(self, run_id: str, *, device: str, lease: str) -> bool:
        """Starts the run here, on ``device`` under ``lease``; False when another got it first."""
        decide = partial(domain.claim, instance=self.instance, device=device, lease=lease)
        return isinstance(await self.store(run_id, "claim", decide), CommandAccepted)

    async def epoch(
        self,
        run: domain.Run,
        metrics: c.EpochCompleted,
        saved: list[c.CheckpointSaved],
    ) -> Reply:
        decide = partial(domain.epoch, instance=self.instance, metrics=metrics, checkpoints=saved)
        with epoch_span(metrics):
            return await self.store(run.run_id, f"a{run.attempt}.e{metrics.epoch}", decide)

    async def finish(self, run_id: str, outcome: c.Event) -> None:
        decide = partial(domain.finish, instance=self.instance, outcome=outcome)
        await self._end(run_id, "end", decide)

    async def interrupt(self, run_id: str, reason: str) -> None:
        """The run ends interrupted (and, with auto-resume, is queued again)."""
        decide = partial(domain.interrupt, reason=reason, auto_resume=self.auto_resume)
        await self._end(run_id, "interrupt", decide)

    async def _end(self, run_id: str, step: str, decide: Decide) -> None:
        """Stores the run's end; once stored, its series go and the outcome stored (which the
        decider may have made other than asked: a completion short of epochs fails) counts."""
        decided: list[c.Event] = []

        def keep(state: domain.State) -> list[c.Event]:
            decided[:] = decide(state)  # the last decision is the one stored
            return list(decided)

        reply = await self.store(run_id, step, keep)
        if isinstance(reply, CommandAccepted) and reply.events:
            ends = [OUTCOMES[type(e)] for e in decided if type(e) in OUTCOMES]
            metrics.run_ended(run_id, ends[0] if ends else None)

    async def queued_at(self, run_id: str) -> datetime | None:
        """When the run last joined the queue (queued, or resumed); None when it never did."""
        at = None
        for stored in await self.repo.store.load(run_id):
            if isinstance(stored.event, c.RunQueued | c.RunResumed):
                at = stored.event.occurred_at
        return at

    async def waited(self, run_id: str) -> float | None:
        """Seconds from the run's last joining the queue until now (its wait for a device);
        None when that cannot be read: a metric never keeps a claimed run from training."""
        try:
            at = await self.queued_at(run_id)
        except Exception:
            log.warning("run %s: when it was queued could not be read", run_id, exc_info=True)
            return None
        return None if at is None else (datetime.now(UTC) - at).total_seconds()

    async def fail(self, run_id: str, exc: Exception) -> None:
        """Stores how a training that raised ``exc`` ends."""
        if isinstance(exc, TRANSIENT):
            # A NATS outage longer than the retries is no fault of the run: it ends interrupted,
            # so that (with auto-resume) it continues from its last stored epoch once NATS is back.
            log.warning("run %s: NATS unreachable (%r); interrupting it", run_id, exc)
            await self.interrupt(run_id, f"NATS was unreachable ({type(exc).__name__})")
            return
        # a checkpoint gone or an epoch not stored says its own code (a ``Refused``), any
        # other failure of the engine TRAINING_FAILED with its reason: as every job says it
        failure = failure_of(exc, "TRAINING_FAILED")
        log.error("run %s failed: %s: %s", run_id, failure.code, failure.message, exc_info=exc)
        mark_failed(f"{failure.code}: {failure.message}")
        failed = c.RunFailed(run_id=run_id, code=failure.code, message=failure.message)
        await self.finish(run_id, failed)
