"""GPU telemetry through NVML (nvidia-ml-py, the ``gpu`` extra): power, SM clock, memory, utilisation.

A background thread samples while a timed region runs; absent NVML or a GPU, it records nothing.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field


@dataclass
class Telemetry:
    power_w: list[float] = field(default_factory=list)
    sm_clock_mhz: list[float] = field(default_factory=list)
    memory_used_gib: list[float] = field(default_factory=list)
    utilisation_pct: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = {}
        for name in ("power_w", "sm_clock_mhz", "memory_used_gib", "utilisation_pct"):
            values = getattr(self, name)
            if values:
                out[f"{name}_mean"] = round(statistics.fmean(values), 2)
                out[f"{name}_max"] = round(max(values), 2)
        return out


class NvmlSampler:
    """``with NvmlSampler(index) as s: ...`` then ``s.telemetry.summary()``."""

    def __init__(self, device_index: int = 0, period_s: float = 0.02) -> None:
        self.telemetry = Telemetry()
        self._period = period_s
        self._stop = threading.Event()
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception:  # no NVML library or no GPU: telemetry stays empty
            self._handle = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _run(self) -> None:
        nv, h = self._nvml, self._handle
        while not self._stop.is_set():
            try:
                self.telemetry.power_w.append(nv.nvmlDeviceGetPowerUsage(h) / 1e3)
                self.telemetry.sm_clock_mhz.append(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
                self.telemetry.memory_used_gib.append(nv.nvmlDeviceGetMemoryInfo(h).used / 2**30)
                self.telemetry.utilisation_pct.append(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:  # a counter this GPU does not expose: stop sampling, keep what we have
                return
            self._stop.wait(self._period)

    def __enter__(self) -> NvmlSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()
