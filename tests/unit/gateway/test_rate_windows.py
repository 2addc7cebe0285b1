"""The gateway's moving windows (``limits.Windows``): the limit exactly, Retry-After to the oldest
hit's expiry, memory bounded by the limit, forgotten once expired, and no thread per request
(the ``limits`` library's in-memory storage started one every 10 ms, the largest cost of a GET)."""

from __future__ import annotations

import threading
import time

from limits import parse_many

from services.gateway.limits import Windows

THREE_A_MINUTE = parse_many("3/minute")[0]


def test_a_key_gets_the_limit_then_waits_for_its_oldest_hit_to_expire() -> None:
    windows = Windows()
    for t in (0.0, 1.0, 2.0):
        assert windows.wait(THREE_A_MINUTE, "user:a", t) == 0
        windows.hit(THREE_A_MINUTE, "user:a", t)
    assert windows.wait(THREE_A_MINUTE, "user:a", 3.0) == 57.0
    assert windows.wait(THREE_A_MINUTE, "user:b", 3.0) == 0  # another key has its own
    assert windows.wait(THREE_A_MINUTE, "user:a", 60.5) == 0  # the first hit has left


def test_windows_hold_at_most_their_limit_start_no_thread_and_forget_expired_keys() -> None:
    windows, threads, now = Windows(), threading.active_count(), time.monotonic()
    item = parse_many("100000/minute")[0]
    for n in range(2_000):
        windows.hit(item, "user:busy", now + n / 1000)
        windows.hit(THREE_A_MINUTE, f"ip:{n}", now + n / 1000)
    assert threading.active_count() == threads
    assert len(windows._hits[("user:busy", 100_000, 60)]) == 2_000
    assert len(windows._hits) == 2_001  # every key's window, none expired yet
    # once every hit of the many one-off keys has expired, a sweep drops their windows
    windows.hit(item, "user:busy", now + 2.0 + Windows.SWEEP_S + 60)
    assert list(windows._hits) == [("user:busy", 100_000, 60)]
