"""Which queued run a trainer starts, on how many of its devices: a run of N devices starts only
once N leases of this one trainer are taken, the queue is served in order, and a run asking more
devices than the trainer has is left to another (without holding up the runs behind it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from services.trainer.worker import DeviceSlot, Worker

ME = "me"


@dataclass
class FakeLease:
    key: str
    released: list[str]

    async def release(self) -> None:
        self.released.append(self.key)

    async def renew(self, run_id: Any = ...) -> bool:
        return True


@dataclass
class FakeLeases:
    """Leases where the keys in ``held`` belong to someone else."""

    held: set[str] = field(default_factory=set)
    released: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)

    async def acquire(self, key: str, holder: str) -> FakeLease | None:
        if key in self.held:
            return None
        self.taken.append(key)
        return FakeLease(key, self.released)


@dataclass
class FakeRuns:
    devices: dict[str, int]
    claimed: dict[str, tuple[str, str]] = field(default_factory=dict)
    instance: str = ME

    async def get(self, run_id: str) -> Any:
        return SimpleNamespace(queued=SimpleNamespace(devices=self.devices[run_id]))

    async def claim(self, run_id: str, *, device: str, lease: str) -> bool:
        self.claimed[run_id] = (device, lease)
        return True


@dataclass
class FakeQueue:
    runs: list[str]

    async def waiting(self) -> list[str]:
        return list(self.runs)


def worker(devices: dict[str, int], slots: int, leases: FakeLeases) -> tuple[Worker, list]:
    others = tuple(("cpu", f"s.d{i}") for i in range(1, slots))
    slot = DeviceSlot("cpu", "s", leases, others)  # type: ignore[arg-type]
    w = Worker(runs=FakeRuns(devices), slot=slot, queue=FakeQueue(list(devices)),  # type: ignore[arg-type]
               images=None, epochs=None, publish=None)  # type: ignore[arg-type]  # fmt: skip
    started: list[tuple[str, list[str]]] = []

    def start(run_id: str, taken: list[Any]) -> None:  # training itself is not under test
        started.append((run_id, [lease.key for lease in taken]))
        w.stops[run_id] = SimpleNamespace()  # type: ignore[assignment]
        w.busy.update(lease.key for lease in taken)

    w._start = start  # type: ignore[method-assign,assignment]
    return w, started


async def test_a_two_device_run_starts_on_two_leases_of_this_trainer() -> None:
    w, started = worker({"big": 2}, slots=2, leases=FakeLeases())
    assert await w._next()
    assert started == [("big", ["s", "s.d1"])]
    assert w.runs.claimed["big"] == ("cpu,cpu", "s")  # type: ignore[attr-defined]


async def test_a_run_waits_for_all_its_devices_and_no_later_run_takes_them() -> None:
    # given a trainer of two devices, one of them training a run of one device
    w, started = worker({"one": 1, "big": 2, "later": 1}, slots=2, leases=FakeLeases())
    assert await w._next() and started == [("one", ["s"])]
    # when it looks again, the two-device run is first in line and one device is free
    assert not await w._next()
    # then nothing starts: the later one-device run does not take the free device
    assert started == [("one", ["s"])]


async def test_leases_taken_by_another_trainer_are_given_back_all_together() -> None:
    # given a two-device trainer whose second device's lease someone else holds
    leases = FakeLeases(held={"s.d1"})
    w, started = worker({"big": 2}, slots=2, leases=leases)
    # then the run does not start, and the lease it took is released again
    assert not await w._next()
    assert started == [] and leases.released == ["s"]


async def test_a_run_asking_more_devices_than_this_trainer_has_is_left_to_another() -> None:
    w, started = worker({"huge": 4, "small": 1}, slots=2, leases=FakeLeases())
    assert await w._next()
    assert started == [("small", ["s"])]
