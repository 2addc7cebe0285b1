"""The bounded retry of transient NATS failures: retried until they pass or time runs out;
anything else raised at once."""

from __future__ import annotations

import pytest
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError

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
