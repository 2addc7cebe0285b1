"""The gateway's GPU figures through a fake pynvml: every figure of every device, a figure a
device does not report, a device that cannot be read, and no NVML at all — never an error."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from services.kernel.gpu import NO_GPU, Gpu, Nvml


class NVMLError(Exception):
    """pynvml's own error type, as the fake raises it."""


class FakeNvml:
    """Enough of pynvml for ``Nvml``: devices as dicts of their figures; a figure that is an
    exception is raised, as NVML raises ``NVMLError_NotSupported``."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: list[dict[str, Any]], init_error: Exception | None = None):
        self.devices = devices
        self.init_error = init_error
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self._get(self.devices[index], "handle", self.devices[index])

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> Any:
        return self._get(handle, "name")

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> Any:
        return SimpleNamespace(gpu=self._get(handle, "gpu"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:
        return SimpleNamespace(used=handle["used"], total=handle["total"], free=0)

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> Any:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._get(handle, "temperature")

    def nvmlDeviceGetPowerUsage(self, handle: dict[str, Any]) -> Any:
        return self._get(handle, "milliwatts")

    @staticmethod
    def _get(device: dict[str, Any], key: str, default: Any = None) -> Any:
        value = device.get(key, default)
        if isinstance(value, Exception):
            raise value
        return value


H200 = {
    "name": "NVIDIA H200",
    "gpu": 87,
    "used": 40 * 2**30,
    "total": 141 * 2**30,
    "temperature": 61,
    "milliwatts": 412_345,
}


def loader(fake: Any) -> Any:
    return lambda: fake


def test_every_figure_of_every_device():
    # given two devices, the second with its name as bytes (older pynvml)
    fake = FakeNvml([H200, H200 | {"name": b"NVIDIA A100", "gpu": 3}])
    # when read
    reading = Nvml(loader(fake)).read()
    # then each device has its figures, power in watts
    assert reading.reason is None
    assert reading.gpus[0] == Gpu(0, "NVIDIA H200", 87.0, 40 * 2**30, 141 * 2**30, 61.0, 412.3)
    assert reading.gpus[1].index == 1 and reading.gpus[1].name == "NVIDIA A100"
    assert reading.gpus[1].utilization_percent == 3.0
    assert reading.public()["gpus"][0]["memory_total_bytes"] == 141 * 2**30


def test_a_figure_the_device_does_not_report_is_none_and_the_others_stay():
    fake = FakeNvml([H200 | {"milliwatts": NVMLError("Not Supported"), "temperature": NVMLError()}])
    gpu = Nvml(loader(fake)).read().gpus[0]
    assert gpu.power_w is None and gpu.temperature_c is None
    assert gpu.name == "NVIDIA H200" and gpu.utilization_percent == 87.0


def test_a_device_that_cannot_be_read_is_listed_with_its_error():
    fake = FakeNvml([H200 | {"handle": NVMLError("GPU is lost")}, H200])
    reading = Nvml(loader(fake)).read()
    assert reading.gpus[0].error == "GPU is lost" and reading.gpus[0].name is None
    assert reading.gpus[1].name == "NVIDIA H200" and reading.gpus[1].error is None


def test_no_driver_means_no_gpus_and_the_reason_and_nvml_is_not_tried_again():
    fake = FakeNvml([H200], init_error=NVMLError("NVML Shared Library Not Found"))
    nvml = Nvml(loader(fake))
    first, second = nvml.read(), nvml.read()
    assert first.gpus == () and second.gpus == ()
    assert first.reason == "NVML is not available: NVML Shared Library Not Found"
    assert fake.inits == 1


def test_without_pynvml_the_reason_says_so():
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    reading = Nvml(missing).read()
    assert reading.public() == {
        "gpus": [],
        "gpus_reason": "nvidia-ml-py is not installed (No module named 'pynvml')",
    }


def test_a_driver_with_no_device_says_so():
    assert Nvml(loader(FakeNvml([]))).read() == Nvml(loader(FakeNvml([]))).read()
    assert Nvml(loader(FakeNvml([]))).read().reason == NO_GPU


def test_nvml_is_initialised_once_when_many_threads_read_at_once():
    fake = FakeNvml([H200])
    nvml = Nvml(loader(fake))
    threads = [threading.Thread(target=nvml.read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.inits == 1


def test_the_real_pynvml_on_this_machine_never_raises():
    reading = Nvml().read()
    if reading.gpus:  # a machine with an NVIDIA driver
        assert all(g.name for g in reading.gpus)
    else:
        assert reading.reason
