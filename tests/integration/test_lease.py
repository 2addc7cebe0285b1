"""GPU leases against a real nats-server: atomic acquire, renewal, release, and expiry by TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from services.kernel import nats_server
from services.kernel.lease import Lease, Leases
from services.kernel.nats_server import EmbeddedNats

pytestmark = pytest.mark.integration

TTL = 1.0
GPU = "host1-cuda-0"


@pytest.fixture
async def leases(nc: NATS) -> Leases:
    bucket = Leases(nc.jetstream(), ttl=TTL)
    await bucket.open()
    return bucket


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Poll ``check`` until it holds; return how long that took, fail after ``within`` s."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, f"not true within {within}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def holds_for(lease: Lease, leases: Leases, duration: float) -> None:
    """Assert that ``lease`` stays held, checking all through ``duration`` seconds."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        assert not lease.lost.is_set()
        assert await leases.holder(lease.key) == lease.info
        await asyncio.sleep(0.05)


async def expired(leases: Leases, key: str = GPU) -> float:
    """Wait until ``key`` expires; return the wait (the server checks ages every 250 ms)."""

    async def gone() -> bool:
        return await leases.holder(key) is None

    return await eventually(gone, within=TTL + 2)


class FlakyNats:
    """A server of the test's own, taken down and brought back on the same port and store."""

    nc: NATS

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server: EmbeddedNats | None = nats_server.start(data_dir)
        self.port = self.server.port

    async def down(self) -> None:
        assert self.server is not None
        await asyncio.to_thread(self.server.stop)
        self.server = None

    async def up(self) -> None:
        self.server = await asyncio.to_thread(nats_server.start, self.data_dir, self.port)


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[FlakyNats]:
    f = FlakyNats(tmp_path / "flaky")
    f.nc = await nats.connect(
        f"nats://127.0.0.1:{f.port}", max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        yield f
    finally:
        # nats-py's close() fails while the server is away, so bring it back first.
        if f.server is None:
            await f.up()

        async def connected() -> bool:
            return f.nc.is_connected

        await eventually(connected, within=5)
        await f.nc.close()
        assert f.server is not None
        await asyncio.to_thread(f.server.stop)


async def test_a_held_device_cannot_be_acquired_again(leases):
    # given a device taken by trainer a
    lease = await leases.acquire(GPU, "trainer-a", run_id="r1")
    assert lease is not None and lease.info.run_id == "r1"
    # when anyone asks for it again, then they are refused
    assert await leases.acquire(GPU, "trainer-b") is None
    assert await leases.acquire(GPU, "trainer-a") is None
    assert await leases.holder(GPU) == lease.info


async def test_of_ten_concurrent_acquires_exactly_one_wins_even_over_a_released_key(leases):
    async def race() -> list[Lease]:
        won = await asyncio.gather(*(leases.acquire(GPU, f"trainer-{i}") for i in range(10)))
        return [lease for lease in won if lease is not None]

    # given a fresh key, when ten trainers race for it, then one wins
    (first,) = await race()
    # and after it is released (a delete marker now), again exactly one wins
    await first.release()
    (second,) = await race()
    assert await leases.holder(GPU) == second.info


async def test_release_frees_the_device(leases):
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    await lease.release()
    assert await leases.holder(GPU) is None
    assert await leases.acquire(GPU, "trainer-b") is not None
    await lease.release()  # a second release of a gone lease is quiet


async def test_an_unrenewed_lease_expires_after_the_ttl_and_can_be_retaken(leases):
    # given a lease whose holder stopped renewing (crashed)
    taken = time.monotonic()
    assert await leases.acquire(GPU, "trainer-a") is not None
    # then the key is gone by TTL, never before it
    await expired(leases)
    assert time.monotonic() - taken >= TTL
    # and another trainer can take the device
    assert await leases.acquire(GPU, "trainer-b") is not None


async def test_keep_alive_holds_the_device_past_several_ttls_then_releases_it(leases):
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    async with lease.keep_alive() as kept:
        await holds_for(kept, leases, 3 * TTL)
        assert kept.info.renewed > kept.info.since
    assert await leases.holder(GPU) is None
    assert not lease.lost.is_set()


async def test_renew_sets_the_run_id_or_keeps_it(leases):
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    assert await lease.renew(run_id="r2")
    assert await lease.renew()
    assert (await leases.holder(GPU)) == lease.info and lease.info.run_id == "r2"
    assert await lease.renew(run_id=None)
    assert (await leases.holder(GPU)) == lease.info and lease.info.run_id is None


async def test_a_renew_after_expiry_and_retake_returns_false_and_sets_lost(leases):
    # given trainer a's lease expired and trainer b took the device
    stale = await leases.acquire(GPU, "trainer-a")
    assert stale is not None
    await expired(leases)
    fresh = await leases.acquire(GPU, "trainer-b")
    assert fresh is not None
    # when trainer a wakes up and renews, then it learns it lost the device
    assert await stale.renew() is False
    assert stale.lost.is_set()
    # and its stale release leaves trainer b's lease alone
    await stale.release()
    assert await leases.holder(GPU) == fresh.info


async def test_a_renew_after_expiry_alone_also_loses(leases):
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    await expired(leases)
    assert await lease.renew() is False and lease.lost.is_set()
    assert await leases.holder(GPU) is None


async def test_holders_lists_live_leases_sorted_by_key(leases):
    assert await leases.holders() == []
    b = await leases.acquire("host2-cuda-0", "trainer-b", run_id="r2")
    a1 = await leases.acquire("host1-cuda-1", "trainer-a")
    a0 = await leases.acquire("host1-cuda-0", "trainer-a", run_id="r1")
    gone = await leases.acquire("host3-cuda-0", "trainer-c")
    assert b and a1 and a0 and gone
    await gone.release()
    assert await leases.holders() == [a0.info, a1.info, b.info]


@pytest.mark.parametrize("key", ["", "a b", "a/b", "a*", "a>", ".a", "a.", "a..b", "gpü"])
async def test_invalid_keys_raise_value_error(leases, key):
    with pytest.raises(ValueError, match="invalid lease key"):
        await leases.acquire(key, "trainer-a")
    with pytest.raises(ValueError, match="invalid lease key"):
        await leases.holder(key)


async def test_keys_may_use_letters_digits_dash_underscore_equals_and_dots(leases):
    assert await leases.acquire("Host_1=a.cuda-0", "trainer-a") is not None


async def test_an_existing_bucket_keeps_its_ttl(leases, nc, caplog):
    other = Leases(nc.jetstream(), ttl=5.0)
    await other.open()
    assert other.ttl == TTL
    assert "using it" in caplog.text


async def test_keep_alive_rides_out_a_short_nats_outage(flaky: FlakyNats) -> None:
    leases = Leases(flaky.nc.jetstream(timeout=0.5), ttl=3.0)
    await leases.open()
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    async with lease.keep_alive(interval=0.2):
        # given the server goes away for a fraction of the TTL and comes back
        await flaky.down()
        await asyncio.sleep(0.5)  # the outage itself, not an assertion
        await flaky.up()
        renewed = lease.info.renewed

        async def renewed_again() -> bool:
            return lease.info.renewed > renewed

        # then renewals resume and the lease was never lost
        await eventually(renewed_again, within=2.5)
        assert not lease.lost.is_set()
        assert await leases.holder(GPU) == lease.info


async def test_keep_alive_sets_lost_when_nats_stays_down_past_the_ttl(flaky: FlakyNats) -> None:
    leases = Leases(flaky.nc.jetstream(timeout=0.3), ttl=TTL)
    await leases.open()
    lease = await leases.acquire(GPU, "trainer-a")
    assert lease is not None
    async with lease.keep_alive() as kept:
        await flaky.down()
        down = time.monotonic()

        async def lost() -> bool:
            return kept.lost.is_set()

        await eventually(lost, within=TTL + 1)
        # no later than the TTL: the key may be free for another trainer from then on
        assert time.monotonic() - down <= TTL + 0.1
