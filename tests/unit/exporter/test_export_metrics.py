"""The exporter's metrics, from real export jobs with a fake engine and Object Store: each export
counted once by format and outcome with its duration, and each parity check by its result."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from contracts import exports as x
from services.exporter import metrics
from tests.unit.exporter.test_export_handlers import (
    WEIGHTS,
    FakeEngine,
    FakeObjects,
    local_checkpoint,
    run_job,
    runner,
)


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    return {
        "completed": count("studio_exports_total", format="onnx", outcome="completed"),
        "failed": count("studio_exports_total", format="onnx", outcome="failed"),
        "passed": count("studio_export_parity_total", format="onnx", outcome="passed"),
        "parity_failed": count("studio_export_parity_total", format="onnx", outcome="failed"),
        "seconds": count("studio_export_seconds_count", format="onnx"),
    }


def delta(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in snapshot().items()}


def test_every_format_and_outcome_exists_at_zero_before_any_export():
    for fmt in x.FORMATS:
        assert REGISTRY.get_sample_value("studio_export_seconds_count", {"format": fmt}) is not None
        for outcome in metrics.EXPORT_OUTCOMES:
            labels = {"format": fmt, "outcome": outcome}
            assert REGISTRY.get_sample_value("studio_exports_total", labels) is not None
        for outcome in metrics.PARITY_OUTCOMES:
            labels = {"format": fmt, "outcome": outcome}
            assert REGISTRY.get_sample_value("studio_export_parity_total", labels) is not None


async def test_a_completed_export_counts_its_parity_and_its_outcome_once(tmp_path: Path):
    local_checkpoint(tmp_path, WEIGHTS)
    before = snapshot()
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine()))
    assert isinstance(events[-1], x.ExportCompleted)
    assert delta(before) == {
        "completed": 1, "failed": 0, "passed": 1, "parity_failed": 0, "seconds": 1
    }  # fmt: skip


async def test_a_parity_failure_fails_the_export_and_counts_the_failed_check(tmp_path: Path):
    local_checkpoint(tmp_path, WEIGHTS)
    before = snapshot()
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine(passed=False)))
    assert isinstance(events[-1], x.ExportFailed)
    assert delta(before) == {
        "completed": 0, "failed": 1, "passed": 0, "parity_failed": 1, "seconds": 1
    }  # fmt: skip


async def test_an_export_that_raises_is_counted_failed_without_a_parity_check(tmp_path: Path):
    before = snapshot()  # no checkpoint anywhere: the job raises CHECKPOINT_MISSING
    events = await run_job(runner(tmp_path, FakeObjects(), FakeEngine()))
    assert isinstance(events[-1], x.ExportFailed) and events[-1].code == "CHECKPOINT_MISSING"
    assert delta(before) == {
        "completed": 0, "failed": 1, "passed": 0, "parity_failed": 0, "seconds": 1
    }  # fmt: skip
