"""Peak memory of a measured region: CUDA's allocator statistics, or the process RSS on CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: no RSS reading, report 0
        return 0


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc), so RSS on entry holds no memory of earlier calls."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc: RSS growth then understates the peak, as documented
        pass


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak_mib``: the peak over the region.

    GPU: ``max_memory_allocated`` (reset on entry). CPU: the highest RSS sampled every 5 ms minus
    the RSS on entry, after returning freed heap pages to the OS (``malloc_trim``): what the region
    allocates (its activations), as far as the C allocator gives memory back between calls.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._base = 0
        self._high = 0

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._high = max(self._high, _rss_bytes())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _trim_heap()
            self._base = self._high = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._high = max(self._high, _rss_bytes())
            self.peak_mib = (self._high - self._base) / 2**20
