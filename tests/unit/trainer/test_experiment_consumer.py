"""The searches' intake stops with its service: once the connection is closed it ends instead of
subscribing again every second until the process is killed; while the connection is only down
(NATS restarting) it keeps trying. Imports the consumer and nats-py's errors only."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.errors import ConnectionClosedError

from services.trainer.experiment_consumer import Consumer


class JetStream:
    """Every call fails as nats-py fails on a closed (or not yet reopened) connection."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    async def consumer_info(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        self.called.set()
        raise ConnectionClosedError


class Connection:
    def __init__(self, closed: bool) -> None:
        self.is_closed = closed
        self.js = JetStream()

    def jetstream(self) -> JetStream:
        return self.js


async def test_the_intake_ends_once_its_connection_is_closed() -> None:
    # given a service stopping: its connection closed under the intake (nats-py then turns
    # the intake's cancel into ConnectionClosedError, so the cancel itself never arrives)
    nc = Connection(closed=True)
    intake = Consumer(cast(Any, nc), cast(Any, None))
    await intake.start()
    assert intake._task is not None
    # then the intake ends by itself, after one try, instead of looping until killed
    await asyncio.wait_for(intake._task, timeout=10)
    assert nc.js.calls == 1


async def test_the_intake_keeps_trying_while_the_connection_is_only_down() -> None:
    nc = Connection(closed=False)
    intake = Consumer(cast(Any, nc), cast(Any, None))
    await intake.start()
    assert intake._task is not None
    await asyncio.wait_for(nc.js.called.wait(), timeout=10)
    await asyncio.sleep(0)  # the failure handled: the intake waits to subscribe again
    assert not intake._task.done()
    await intake.stop()
    assert intake._task.cancelled()
