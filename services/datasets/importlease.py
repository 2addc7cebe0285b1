"""Import leases: an import that outlives its datasets instance is ended by another one.

The instance running an import holds a lease on it (``services.kernel.lease``, in a KV bucket of
its own, one key per import): taken before ``ImportStarted`` is stored, renewed while the job
runs, released once its outcome is stored. A lease lost while the import runs (NATS out for
longer than the TTL) is taken again as soon as it is free; the import goes on meanwhile. A lease
of the instance's own name on an import it is asked to start is its own from before a restart
(killed between taking the lease and storing the start): taken over, so that the command sent
again starts at once rather than after the TTL.

Every instance's ``Reaper`` looks, every ``REAP_INTERVAL_S``, at the imports its read model has
running that this process does not run: one whose lease has expired (its instance was killed,
or lost NATS for longer than the TTL) or is held by this very instance before a restart is
taken over by a compare-and-set on the lease, then ended as failed (``INTERRUPTED``, with why
and that it can be started again) through the dataset's own decider, at the version it was
read at. So of several reapers one acts, and between a slow owner and a reaper the dataset
keeps one outcome whole: the owner's commit (one atomic batch) or the reaper's failure,
whichever is stored first; the other is refused. The images an ended import stored are named
by no event, and the datasets garbage collector takes them (``gc``).

Imports the dataset's domain, importer and fault points, and the kernel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from contracts import Message
from contracts.common import CommandAccepted
from services.datasets import domain, faults, importer
from services.kernel import tracing
from services.kernel.commands import execute
from services.kernel.domain import DomainError
from services.kernel.jobs.decider import RUNNING
from services.kernel.jobs.runner import INTERRUPTED, Failure
from services.kernel.jobs.table import JobRow
from services.kernel.lease import Lease, LeaseInfo, Leases
from services.kernel.repository import Repository
from services.kernel.sqlite import session
from services.kernel.transient import is_transient

log = logging.getLogger(__name__)

#: The KV bucket of import leases (``services.bus_access`` grants it to the datasets service).
BUCKET = "studio_import_leases"
#: Seconds between two looks at the imports that run elsewhere.
REAP_INTERVAL_S = 1.0
#: How long taking or releasing a lease waits out NATS (an election, a node restart).
CALL_RETRY_S = 10.0
#: Seconds between two tries at taking a lost lease again.
RETAKE_S = 0.5


def key(import_id: str) -> str:
    """An import's lease key (import ids are ``[A-Za-z0-9_-]``: one valid key token)."""
    return f"import.{import_id}"


def why_ended(instance: str, mine: str, ttl: float) -> str:
    """What an import ended by a reaper says: which instance died, and that it can be retried."""
    if instance == mine:
        return importer.INTERRUPTED
    return (
        f"the datasets instance {instance!r} running this import stopped (it died, or lost NATS "
        f"for longer than its {ttl:g} s lease); nothing of the import was kept: start it again"
    )


async def open_leases(js: JetStreamContext, ttl: float, replicas: int) -> Leases:
    """The import leases' bucket, made if it is not there (with ``ttl``, ``replicas``)."""
    leases = Leases(js, ttl=ttl, replicas=replicas, retry_for=CALL_RETRY_S, bucket=BUCKET)
    await leases.open()
    return leases


class ImportLeases:
    """The leases of the imports this instance runs."""

    def __init__(self, leases: Leases, instance: str) -> None:
        self.leases, self.instance = leases, instance

    async def take(self, import_id: str) -> Lease | None:
        """The lease of an import about to start; None when another instance holds it. One of
        this instance's name is taken over: the caller does not run the import, so the name's
        holder was this instance before a restart (killed while it started the same command,
        which is now sent again)."""
        lease = await self.leases.take_over(key(import_id), self.instance, self._before_restart)
        if lease is not None:
            faults.fault_point("after_lease_acquire")
            lease = _renewals_faulted(lease)
        return lease

    def _before_restart(self, holder: LeaseInfo) -> bool:
        return holder.holder == self.instance

    async def release(self, lease: Lease) -> None:
        """Drop a lease whose import did not start; an outage leaves it to its TTL."""
        try:
            await lease.release()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("import lease %s not released (%s); it expires", lease.key, exc)
        else:
            faults.fault_point("after_lease_release")

    async def hold(self, lease: Lease, work: asyncio.Future[None]) -> None:
        """Keep ``lease`` alive until ``work`` (the import's job, outcome stored) is done, then
        release it. Lost meanwhile, it is taken again once free; if a reaper has it, the import
        runs on and the dataset keeps its outcome or the reaper's, whichever is stored first."""
        held: Lease | None = lease
        while held is not None:
            async with held.keep_alive():
                lost = asyncio.ensure_future(held.lost.wait())
                either: set[asyncio.Future[Any]] = {work, lost}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
            if work.done():
                faults.fault_point("after_lease_release")
                return
            log.warning("import lease %s lost while the import runs; taking it again", held.key)
            held = await self._retake(held.key, work)

    async def _retake(self, lease_key: str, work: asyncio.Future[None]) -> Lease | None:
        while not work.done():
            try:
                lease = await self.leases.acquire(lease_key, self.instance)
            except Exception as exc:
                if not is_transient(exc):
                    raise
            else:
                if lease is None:
                    log.warning("import lease %s was taken over: a reaper ends it", lease_key)
                return lease if lease is None else _renewals_faulted(lease)
            await asyncio.wait({work}, timeout=RETAKE_S)
        return None


def _renewals_faulted(lease: Lease) -> Lease:
    """``lease``, whose renewals pass the ``after_lease_renew`` fault point (where armed)."""
    if not faults.armed("after_lease_renew"):
        return lease
    renew = lease.renew

    async def renewed(*args: Any, **kwargs: Any) -> bool:
        held = await renew(*args, **kwargs)
        if held:
            faults.fault_point("after_lease_renew")
        return held

    lease.renew = renewed  # type: ignore[method-assign]
    return lease


class Reaper:
    """Ends the imports whose instance is gone (see the module)."""

    def __init__(
        self,
        leases: Leases,
        datasets: Repository[domain.Dataset],
        engine: AsyncEngine,
        *,
        instance: str,
        active: Container[str],
    ) -> None:
        """``active``: the imports this process runs or is starting, which it never reaps."""
        self.leases, self.datasets, self.engine = leases, datasets, engine
        self.instance, self.active = instance, active

    async def forever(self, ended: Callable[[str, str], Awaitable[None]]) -> None:
        """``reap`` every ``REAP_INTERVAL_S``; ``ended(import id, its instance)`` after each."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                for import_id, instance in await self.reap():
                    await ended(import_id, instance)
            except Exception:  # the loop's guard: a failed pass is tried again next time
                log.exception("looking for imports whose instance is gone failed")

    async def reap(self) -> list[tuple[str, str]]:
        """One look: ends each import whose instance is gone; returns (import id, instance)."""
        ended = []
        for import_id, dataset_id, instance in await self._running():
            if import_id in self.active:
                continue
            if await self._end(import_id, dataset_id, instance):
                ended.append((import_id, instance))
        return ended

    async def _running(self) -> list[tuple[str, str, str]]:
        async with session(self.engine) as s:
            query = select(JobRow).where(
                col(JobRow.kind) == domain.IMPORT.noun, col(JobRow.status) == RUNNING
            )
            rows = (await s.exec(query)).all()
        return [(row.job_id, row.parent_id, row.instance) for row in rows]

    async def _end(self, import_id: str, dataset_id: str, instance: str) -> bool:
        holder = await self.leases.holder(key(import_id))
        if holder is not None and not self._gone(holder):
            return False  # its instance renews it: alive
        lease = await self.leases.take_over(key(import_id), self.instance, self._gone)
        if lease is None:  # renewed, or another reaper won, since
            return False
        try:
            return await self._fail(import_id, dataset_id, instance)
        finally:
            await ImportLeases(self.leases, self.instance).release(lease)

    def _gone(self, holder: LeaseInfo) -> bool:
        """A lease of this instance's name on an import this process does not run was taken
        before a restart (this process releases its own before it forgets the import)."""
        import_id = holder.key.removeprefix(key(""))
        return holder.holder == self.instance and import_id not in self.active

    async def _fail(self, import_id: str, dataset_id: str, instance: str) -> bool:
        message = why_ended(instance, self.instance, self.leases.ttl)
        decide = importer.failed(import_id, dataset_id, Failure(INTERRUPTED, message))
        # No request started this: the reaper's own span is the trace its ImportFailed joins.
        with tracing.span("end import of a gone instance") as span:
            span.set_attribute("studio.import_id", import_id)
            reply = await execute(
                self.datasets,
                dataset_id,
                Message(actor=self.instance),
                decide,
                headers=tracing.inject({}),
                refusals=(DomainError,),
                noun="dataset",
            )
        if isinstance(reply, CommandAccepted):
            faults.fault_point("after_reap_append")
            log.warning("import %s of instance %s ended as interrupted", import_id, instance)
            return True
        # It ended meanwhile (its owner's outcome, or another reaper's): the read model lagged.
        log.info("import %s had ended already: %s", import_id, reply.message)
        return False
