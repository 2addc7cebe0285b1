"""The bounded retry of transient NATS failures: retried until they pass or time runs out;
anything else raised at once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError

from services.kernel import transient
from services.kernel.transient import TRANSIENT, retry_transient


class Flaky:
    """Fails with each of ``failures`` in turn, then answers ``"done"``."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_transient_failures_are_retried_until_the_call_succeeds():
    call = Flaky(NatsTimeoutError(), NoRespondersError(), ConnectionClosedError())
    assert await retry_transient(call, what="a read", retry_for=30) == "done"
    assert call.calls == 4


async def test_a_failure_that_is_not_transient_is_raised_at_once():
    call = Flaky(BadRequestError(), NatsTimeoutError())
    with pytest.raises(BadRequestError):
        await retry_transient(call, what="a write", retry_for=30)
    assert call.calls == 1


async def test_an_outage_longer_than_retry_for_raises_the_last_failure():
    call = Flaky(*[NatsTimeoutError() for _ in range(100)])
    with pytest.raises(NatsTimeoutError):
        await retry_transient(call, what="a read", retry_for=0.5)
    assert 2 <= call.calls < 100


async def test_no_retry_time_means_one_attempt():
    call = Flaky(NatsTimeoutError())
    with pytest.raises(NatsTimeoutError):
        await retry_transient(call, what="a renewal", retry_for=0)
    assert call.calls == 1


def test_a_builtin_timeout_is_transient_and_a_refusal_is_not():
    assert issubclass(TimeoutError, TRANSIENT)
    assert not issubclass(BadRequestError, TRANSIENT)


async def test_a_call_waiting_on_an_election_tries_again_at_least_every_half_second(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # given a call that meets an election for twenty tries (a leader elected unannounced)
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(transient, "asyncio", SimpleNamespace(sleep=sleep))
    call = Flaky(*[NoRespondersError() for _ in range(20)])
    # when it is retried
    with caplog.at_level(logging.INFO, logger=transient.__name__):
        assert await retry_transient(call, what="an append", retry_for=60) == "done"
    # then the tries come quickly at first, and never more than half a second apart: it goes
    # through at most 0.5 s after the new leader is there (a 2 s cap overshot by up to 2 s)
    assert waits[:3] == [0.1, 0.2, 0.4] and max(waits) == 0.5
    # and it says that it waits once (not at every try), then that it went through
    said = [r for r in caplog.records if r.name == transient.__name__]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO]
    assert "an append went through" in said[-1].getMessage()
