"""Runs left active by a trainer that is gone end interrupted (and, with auto-resume, are
queued again): this instance's own after a restart, another's once its device lease expired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container

from services.kernel.lease import Leases
from services.trainer.projection import RunQueue
from services.trainer.runstore import RunStore

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 3.0


class Reaper:
    def __init__(
        self, queue: RunQueue, leases: Leases, runs: RunStore, training: Container[str]
    ) -> None:
        """``training``: the runs this instance trains now, which no reaping touches."""
        self.queue, self.leases, self.runs, self.training = queue, leases, runs, training

    async def interrupt_mine(self, reason: str) -> None:
        mine = [r.run_id for r in await self.queue.active() if r.instance == self.runs.instance]
        for run_id in mine:
            if run_id not in self.training:
                await self.runs.interrupt(run_id, reason)

    async def forever(self) -> None:
        """Runs whose trainer's lease is gone were left by a crash: mark them interrupted."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self.reap()
            except Exception:  # the reaper's loop guard: a failed pass is tried again next time
                log.exception("checking for interrupted runs failed")

    async def reap(self) -> None:
        for row in await self.queue.active():
            holder = await self.leases.holder(row.lease) if row.lease else None
            alive = (
                holder is not None
                and holder.holder == row.instance
                and (holder.run_id in (None, row.run_id))
            )
            if not alive and row.run_id not in self.training:
                reason = f"its trainer {row.instance} stopped answering (its device lease expired)"
                await self.runs.interrupt(row.run_id, reason)
