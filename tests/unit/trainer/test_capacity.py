"""The trainers' device counts: the largest of every live trainer's announcement decides what
a run may ask; NATS being away at a trainer's start does not keep it from starting."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from services.trainer import capacity
from services.trainer.capacity import Capacity


@dataclass
class FakeKV:
    values: dict[str, bytes] = field(default_factory=dict)

    async def put(self, key: str, value: bytes) -> int:
        self.values[key] = value
        return 1

    async def keys(self) -> list[str]:
        return list(self.values)

    async def get(self, key: str) -> Any:
        return SimpleNamespace(value=self.values[key])


class FakeJS:
    def __init__(self, kv: FakeKV | None) -> None:
        self.kv = kv

    async def key_value(self, bucket: str) -> FakeKV:
        if self.kv is None:
            raise NatsTimeoutError
        return self.kv


async def test_the_largest_trainer_decides_and_ones_own_always_counts() -> None:
    kv = FakeKV()
    small = Capacity(FakeJS(kv), "a-cpu", 1, ttl=10)  # type: ignore[arg-type]
    big = Capacity(FakeJS(kv), "b.gpu", 4, ttl=10)  # type: ignore[arg-type]
    await small.open()
    await big.open()
    assert await small.largest() == 4
    assert set(kv.values) == {"a-cpu", "b_gpu"}  # a KV key never holds a dot


async def test_a_trainer_starts_while_nats_is_away_and_counts_its_own(monkeypatch) -> None:
    monkeypatch.setattr(capacity, "RETRY_FOR_S", 0.05)
    alone = Capacity(FakeJS(None), "a", 2, ttl=10)  # type: ignore[arg-type]
    await alone.open()  # logs, does not raise
    assert await alone.largest() == 2


@pytest.mark.parametrize("name", ["host-cuda-0", "slot.d1", "a b"])
def test_every_trainer_name_makes_a_valid_key(name: str) -> None:
    assert all(ch.isalnum() or ch in "_=-" for ch in capacity.trainer_key(name))
