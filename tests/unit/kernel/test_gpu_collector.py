"""The GPUs' Prometheus figures (``GpuCollector``) through a fake pynvml: every family with the
``gpu`` and ``name`` labels, nothing at all without a GPU, and a failing NVML call that never
fails a scrape."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.kernel.gpu import GpuCollector, Nvml, register_gpu_collector
from tests.unit.kernel.test_gpu import H200, FakeNvml, NVMLError, loader

FAMILIES = (
    "studio_gpu_utilization_ratio",
    "studio_gpu_memory_used_bytes",
    "studio_gpu_memory_total_bytes",
    "studio_gpu_temperature_celsius",
    "studio_gpu_power_watts",
)


def registry_of(nvml: Nvml) -> CollectorRegistry:
    registry = CollectorRegistry()
    register_gpu_collector(registry, nvml)
    return registry


def value(registry: CollectorRegistry, name: str, gpu: str) -> float | None:
    return registry.get_sample_value(name, {"gpu": gpu, "name": "NVIDIA H200"})


def test_every_figure_of_every_device_with_its_index_and_name():
    # given two H200s, the second idle
    registry = registry_of(Nvml(loader(FakeNvml([H200, H200 | {"gpu": 0}]))))
    # when scraped, then each family has one series per device
    assert value(registry, "studio_gpu_utilization_ratio", "0") == pytest.approx(0.87)
    assert value(registry, "studio_gpu_utilization_ratio", "1") == 0.0
    assert value(registry, "studio_gpu_memory_used_bytes", "0") == 40 * 2**30
    assert value(registry, "studio_gpu_memory_total_bytes", "1") == 141 * 2**30
    assert value(registry, "studio_gpu_temperature_celsius", "0") == 61.0
    assert value(registry, "studio_gpu_power_watts", "0") == pytest.approx(412.3)
    text = generate_latest(registry).decode()
    for family in FAMILIES:
        assert f"# TYPE {family} gauge" in text


def test_the_figures_are_read_at_each_scrape():
    fake = FakeNvml([dict(H200)])
    registry = registry_of(Nvml(loader(fake)))
    assert value(registry, "studio_gpu_utilization_ratio", "0") == pytest.approx(0.87)
    fake.devices[0]["gpu"] = 12
    assert value(registry, "studio_gpu_utilization_ratio", "0") == pytest.approx(0.12)


def test_without_a_gpu_there_is_no_series_at_all():
    for nvml in (
        Nvml(loader(FakeNvml([]))),  # a driver, no device
        Nvml(loader(FakeNvml([H200], init_error=NVMLError("NVML Shared Library Not Found")))),
    ):
        assert generate_latest(registry_of(nvml)) == b""


def test_a_figure_a_device_does_not_report_is_left_out_and_the_others_stay():
    fake = FakeNvml([H200 | {"milliwatts": NVMLError("Not Supported"), "temperature": None}])
    registry = registry_of(Nvml(loader(fake)))
    text = generate_latest(registry).decode()
    assert "studio_gpu_power_watts" not in text
    assert "studio_gpu_temperature_celsius" not in text
    assert value(registry, "studio_gpu_memory_used_bytes", "0") == 40 * 2**30


def test_a_device_that_cannot_be_read_gives_no_series_and_the_next_one_does():
    fake = FakeNvml([H200 | {"handle": NVMLError("GPU is lost")}, H200])
    registry = registry_of(Nvml(loader(fake)))
    assert value(registry, "studio_gpu_memory_used_bytes", "0") is None
    assert value(registry, "studio_gpu_memory_used_bytes", "1") == 40 * 2**30


def test_a_failing_nvml_call_never_fails_the_scrape():
    # given NVML that cannot even count its devices, then a reader that raises outright
    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise NVMLError("Unknown Error")

    class Raising(Nvml):
        def read(self) -> Any:
            raise RuntimeError("the driver went away")

    for nvml in (Nvml(loader(Broken([H200]))), Raising()):
        registry = CollectorRegistry()
        registry.register(GpuCollector(nvml))
        # when scraped, then an answer, with no GPU series
        assert generate_latest(registry) == b""


def test_registering_asks_nvml_nothing_and_twice_is_once():
    fake = FakeNvml([H200])
    registry = CollectorRegistry()
    register_gpu_collector(registry, Nvml(loader(fake)))
    register_gpu_collector(registry, Nvml(loader(fake)))
    assert fake.inits == 0
    assert value(registry, "studio_gpu_power_watts", "0") == pytest.approx(412.3)
    assert fake.inits == 1


def test_the_real_loader_reads_the_pynvml_module(monkeypatch: pytest.MonkeyPatch):
    # given a pynvml module that is the fake (the import the default loader does)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([H200]))
    registry = registry_of(Nvml())
    assert value(registry, "studio_gpu_temperature_celsius", "0") == 61.0
