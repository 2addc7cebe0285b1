"""The searches' driver's intake: the one durable consumer of the TRAINING stream that every
trainer instance pulls from (its name is not per instance), so each event is handled by one of
them, one at a time in stream order; an event that fails is retried, and given up (logged) after
``MAX_DELIVERIES`` so that a bug cannot stall every search. Imports ``contracts``, nats-py and
the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NotFoundError

from contracts import training as c
from services.trainer.experiment_driver import Driver

log = logging.getLogger(__name__)

#: Not per instance: every trainer pulls from the one consumer, so one of them handles each event.
DURABLE = "trainer-experiments"
#: Deliveries of one event before it is given up (logged): a bug must not stall every search.
MAX_DELIVERIES = 20
RETRY_DELAY_S = 1.0
#: One event at a time, in stream order, across every instance.
MAX_ACK_PENDING = 1
#: An event whose trainer died while handling it goes to another after this long.
ACK_WAIT_S = 30.0


class Consumer:
    """Pulls the shared durable consumer and hands each event to the driver, one at a time."""

    def __init__(self, nc: NATS, driver: Driver) -> None:
        self.nc, self.js, self.driver = nc, nc.jetstream(), driver
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="experiment-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _subscribe(self) -> Any:
        try:
            await self.js.consumer_info(c.STREAM, DURABLE)
        except NotFoundError:
            config = api.ConsumerConfig(
                durable_name=DURABLE,
                filter_subject=c.EVENTS,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=MAX_ACK_PENDING,
                inactive_threshold=7 * 24 * 3600.0,
            )
            await self.js.add_consumer(c.STREAM, config)
        return await self.js.pull_subscribe_bind(durable=DURABLE, stream=c.STREAM)

    async def _run(self) -> None:
        while True:
            sub = None
            try:
                sub = await self._subscribe()
                while True:
                    try:
                        msgs = await sub.fetch(1, timeout=2.0)
                    except (NatsTimeoutError, TimeoutError):
                        continue
                    for msg in msgs:
                        await self._one(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop guard: subscribe again and go on
                if self._stopping():
                    return
                log.exception("experiment driver: consumer failed; subscribing again")
                await asyncio.sleep(RETRY_DELAY_S)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    def _stopping(self) -> bool:
        """The service is stopping: its connection is closed (nats-py turns a cancel that
        meets a closing connection into ``ConnectionClosedError``, so the cancel itself may
        never arrive), or this task was asked to stop."""
        task = asyncio.current_task()
        return self.nc.is_closed or (task is not None and task.cancelling() > 0)

    async def _one(self, msg: Msg) -> None:
        try:
            event = self.driver.log.store.decode(msg.data)
            await self.driver.handle(event, msg.headers or {})
        except msgspec.DecodeError:
            log.warning("experiment driver: undecodable event at %s", msg.metadata.sequence)
        except Exception:
            deliveries = msg.metadata.num_delivered or 1
            if deliveries < MAX_DELIVERIES:
                log.warning("experiment driver: retrying an event", exc_info=True)
                await msg.nak(delay=RETRY_DELAY_S)
                return
            log.exception("experiment driver: event given up after %d deliveries", deliveries)
        await msg.ack()
