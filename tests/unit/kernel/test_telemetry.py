"""The kernel's metrics without NATS: the build of a process, series that exist before their
first event, and a projector's lag looked up at most every few seconds while idle, a failed
look leaving the figure as it was."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.kernel import projection
from services.kernel.projection import ProjectionRunner
from services.kernel.service import answer_commands
from services.kernel.telemetry import build_info, prime_stream, studio_version


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_build_info_names_the_service_and_the_installed_version():
    build_info("unit-test")
    assert studio_version() not in ("", "unknown")  # the project is installed in the venv
    assert value("studio_build_info", service="unit-test", version=studio_version()) == 1


def test_a_stream_exists_at_zero_before_its_first_append():
    prime_stream("UNIT_PRIMED")
    assert value("studio_events_appended_total", stream="UNIT_PRIMED") == 0


class Broker:
    """Enough of a faststream broker to subscribe handlers."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    def subscriber(self, subject: str, **_: Any) -> Callable[[Any], Any]:
        self.subjects.append(subject)
        return lambda endpoint: endpoint


class UnitCommand:
    pass


async def handle(command: Any, headers: Any) -> Any:
    raise AssertionError("not called")


def test_a_services_commands_exist_at_zero_before_the_first_one():
    broker = Broker()
    answer_commands(broker, "unit", [("cmd.unit.do", UnitCommand, handle)])  # type: ignore[arg-type]
    assert broker.subjects == ["cmd.unit.do"]
    labels = {"service": "unit", "command": "UnitCommand"}
    assert value("studio_commands_total", **labels, outcome="accepted") == 0
    assert value("studio_command_seconds_count", **labels) == 0


class Nc:
    def jetstream(self) -> None:
        return None


class Projector:
    name, stream, filter_subject, tables = "unit-projector", "UNIT", "evt.unit.>", ()


class Sub:
    """A pull subscription whose consumer reports ``pending``, or fails to."""

    def __init__(self, pending: int, fail: bool = False) -> None:
        self.pending, self.fail, self.looks = pending, fail, 0

    async def consumer_info(self) -> Any:
        self.looks += 1
        if self.fail:
            raise TimeoutError("nats: timeout")
        return SimpleNamespace(num_pending=self.pending, num_ack_pending=1)


LAG = {"service": "unit", "projector": "unit-projector", "stream": "UNIT"}


async def test_an_idle_projector_looks_at_its_lag_at_most_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
):
    # given a runner of the "unit" service (from its consumer prefix) and an idle projector
    runner = ProjectionRunner(Nc(), None, [Projector()], consumer_prefix="unit-i1")  # type: ignore[arg-type, list-item]
    p, sub = Projector(), Sub(pending=3)
    # when it comes round twice at once, then its consumer is asked once: pending + in flight
    await runner._look_at_lag(p, sub)  # type: ignore[arg-type]
    await runner._look_at_lag(p, sub)  # type: ignore[arg-type]
    assert sub.looks == 1 and value("studio_consumer_lag_events", **LAG) == 4
    # when the interval has passed and the look fails, then the figure stays and nothing raises
    monkeypatch.setattr(projection, "LAG_EVERY_S", 0.0)
    failing = Sub(pending=9, fail=True)
    await runner._look_at_lag(p, failing)  # type: ignore[arg-type]
    assert failing.looks == 1 and value("studio_consumer_lag_events", **LAG) == 4
    # and the next look that works refreshes it
    await runner._look_at_lag(p, Sub(pending=0))  # type: ignore[arg-type]
    assert value("studio_consumer_lag_events", **LAG) == 1
