"""The bus rides out a service's restart: "no responders" is resent for a bounded time, a
timeout never is. A fake connection stands in for NATS (the real one: test_faults.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from contracts import common
from contracts import projects as p
from services.kernel import bus


class Reply:
    def __init__(self, data: bytes) -> None:
        self.data = data


class Connection:
    """Answers "no responders" ``down`` times (a restart), then the given reply; or fails
    every time with ``error``."""

    def __init__(self, down: int, error: Exception | None = None) -> None:
        self.down = down
        self.error = error
        self.sent: list[bytes] = []

    async def request(self, subject: str, data: bytes, **_: Any) -> Reply:
        self.sent.append(data)
        if self.error is not None:
            raise self.error
        if len(self.sent) <= self.down:
            raise NoRespondersError
        accepted = common.CommandAccepted(aggregate_id="a1", version=1, sequence=1, events=1)
        return Reply(msgspec.json.encode(accepted))


class Broker:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection


def send(connection: Connection, responder_wait: float) -> common.Reply:
    command = p.CreateProject(project_id="a1", name="n")
    broker = cast(Any, Broker(connection))
    return asyncio.run(
        bus.request(broker, "cmd.x", command, timeout=1, responder_wait=responder_wait)
    )


def test_a_command_sent_while_its_service_restarts_is_answered_once_it_is_back():
    # given a service with no responder for its first three tries
    connection = Connection(down=3)
    # when a command is sent with a wait long enough for the restart
    reply = send(connection, responder_wait=30)
    # then it is answered, the same bytes sent each time (the same message id)
    assert isinstance(reply, common.CommandAccepted)
    assert len(connection.sent) == 4
    assert len(set(connection.sent)) == 1


def test_a_service_that_does_not_come_back_is_unavailable_after_the_wait():
    connection = Connection(down=10**9)
    reply = send(connection, responder_wait=0.3)
    assert isinstance(reply, common.CommandRejected)
    assert reply.code == common.UNAVAILABLE
    assert "waited 0.3s" in reply.message
    assert len(connection.sent) > 1


def test_without_a_wait_no_responders_is_unavailable_at_once():
    connection = Connection(down=10**9)
    reply = send(connection, responder_wait=0)
    assert isinstance(reply, common.CommandRejected) and reply.code == common.UNAVAILABLE
    assert len(connection.sent) == 1


@pytest.mark.parametrize("error", [NatsTimeoutError(), TimeoutError()])
def test_a_timeout_is_never_resent(error: Exception):
    # given a service that took the command but did not answer in time
    connection = Connection(down=0, error=error)
    reply = send(connection, responder_wait=30)
    # then it is not sent again (it may be acting on it): 503 at once
    assert isinstance(reply, common.CommandRejected) and reply.code == common.UNAVAILABLE
    assert len(connection.sent) == 1
