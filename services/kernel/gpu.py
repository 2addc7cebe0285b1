"""This machine's GPUs as NVML reports them (``nvidia-ml-py``, ``import pynvml``), for the
gateway's ``GET /api/v1/system`` and for Prometheus (``GpuCollector``): one reader, so both
show the same figures.

NVML is initialised once per process, on first use. A machine without an NVIDIA driver, or
without pynvml, has no GPUs and a reason, never an error: the studio runs on CPU. A figure one
device does not report (power on some boards, temperature on a MIG slice) is ``None`` and the
others stay; a device that cannot be read at all is listed with its error. NVML calls block
for a few milliseconds: async callers run ``Nvml.read`` in a thread.

These are the figures of the machine the process runs on. Imports the standard library,
``prometheus_client`` (and pynvml, lazily) only.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: NVML's power figure is in milliwatts.
MILLIWATTS_PER_WATT: Final = 1000.0
NO_GPU: Final = "NVML reports no GPU"


@dataclass(frozen=True)
class Gpu:
    """One device's figures; ``None`` where the device does not report one."""

    index: int
    name: str | None
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None
    error: str | None = None


@dataclass(frozen=True)
class Reading:
    """The GPUs now, or none and why."""

    gpus: tuple[Gpu, ...]
    reason: str | None

    def public(self) -> dict[str, Any]:
        return {"gpus": [asdict(g) for g in self.gpus], "gpus_reason": self.reason}


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ImportError):
        return f"nvidia-ml-py is not installed ({text})"
    return f"NVML is not available: {text}"


class Nvml:
    """NVML, initialised once (thread-safe); ``read`` never raises."""

    def __init__(self, load: Callable[[], Any] = _import_pynvml) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._tried = False
        self._nvml: Any = None
        self._reason: str | None = None

    def _ready(self) -> Any:
        """The initialised pynvml module, or ``None`` (and ``_reason``) for ever after."""
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    nvml = self._load()
                    nvml.nvmlInit()
                except Exception as exc:  # any failure means no GPU figures, never an error
                    self._reason = _why(exc)
                else:
                    self._nvml = nvml
        return self._nvml

    def read(self) -> Reading:
        nvml = self._ready()
        if nvml is None:
            return Reading((), self._reason)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            return Reading((), f"NVML could not count the GPUs: {exc}")
        gpus = tuple(_device(nvml, index) for index in range(count))
        return Reading(gpus, None if gpus else NO_GPU)


def _device(nvml: Any, index: int) -> Gpu:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        return Gpu(index, None, None, None, None, None, None, error=str(exc) or "unreadable")
    memory = _figure(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    power = _figure(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    utilization = _figure(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    temperature = _figure(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    return Gpu(
        index=index,
        name=_text(_figure(lambda: nvml.nvmlDeviceGetName(handle))),
        utilization_percent=_number(getattr(utilization, "gpu", None)),
        memory_used_bytes=_whole(getattr(memory, "used", None)),
        memory_total_bytes=_whole(getattr(memory, "total", None)),
        temperature_c=_number(temperature),
        power_w=None if power is None else round(float(power) / MILLIWATTS_PER_WATT, 1),
    )


def _figure(get: Callable[[], Any]) -> Any:
    """One NVML figure, or ``None`` when the device does not give it."""
    try:
        return get()
    except Exception:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _whole(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


#: This process's NVML (one per process).
NVML: Final = Nvml()

#: Each Prometheus family: its name, help, and how to read its figure from a ``Gpu``.
FAMILIES: Final[tuple[tuple[str, str, Callable[[Gpu], float | None]], ...]] = (
    (
        "studio_gpu_utilization_ratio",
        "Share of the last sample period the GPU was busy (0-1).",
        lambda g: None if g.utilization_percent is None else g.utilization_percent / 100.0,
    ),
    ("studio_gpu_memory_used_bytes", "GPU memory in use.", lambda g: g.memory_used_bytes),
    ("studio_gpu_memory_total_bytes", "GPU memory in all.", lambda g: g.memory_total_bytes),
    ("studio_gpu_temperature_celsius", "GPU core temperature.", lambda g: g.temperature_c),
    ("studio_gpu_power_watts", "GPU power draw.", lambda g: g.power_w),
)
LABELS: Final = ["gpu", "name"]


class GpuCollector(Collector):
    """The GPUs' figures at each scrape, labelled ``gpu`` (the device index) and ``name``.

    Without a GPU (or NVML) it yields nothing at all; a figure a device does not report is left
    out, and a device that cannot be read gives no series. It never raises: a scrape always
    answers."""

    def __init__(self, nvml: Nvml = NVML) -> None:
        self._nvml = nvml

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering asks for the names: answer without touching NVML.
        for name, doc, _ in FAMILIES:
            yield GaugeMetricFamily(name, doc, labels=LABELS)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            gpus = [g for g in self._nvml.read().gpus if g.error is None]
        except Exception:  # never a failed scrape for the GPU's sake
            return
        for name, doc, figure in FAMILIES:
            family = GaugeMetricFamily(name, doc, labels=LABELS)
            for gpu in gpus:
                value = figure(gpu)
                if value is not None:
                    family.add_metric([str(gpu.index), gpu.name or ""], float(value))
            if family.samples:
                yield family


_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
_register_lock = threading.Lock()


def register_gpu_collector(registry: CollectorRegistry = REGISTRY, nvml: Nvml = NVML) -> None:
    """Serve the GPUs' figures on ``registry``'s ``/metrics``; once per registry."""
    with _register_lock:
        if registry not in _registered:
            registry.register(GpuCollector(nvml))
            _registered.add(registry)
