"""This machine's GPUs as NVML reports them (``nvidia-ml-py``, ``import pynvml``), for
``GET /api/v1/system``.

NVML is initialised once per process, on first use. A machine without an NVIDIA driver, or
without pynvml, has no GPUs and a reason, never an error: the studio runs on CPU. A figure one
device does not report (power on some boards, temperature on a MIG slice) is ``None`` and the
others stay; a device that cannot be read at all is listed with its error. NVML calls block
for a few milliseconds: async callers run ``Nvml.read`` in a thread.

These are the figures of the machine the gateway runs on, which is the trainer's on one
machine. Imports the standard library (and pynvml, lazily) only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

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


#: The gateway's NVML (one per process).
NVML: Final = Nvml()
