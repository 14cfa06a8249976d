"""Devices and dtypes by name, checked against what this machine has."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from stdd_fast.errors import ConfigError, choice_error

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A model dtype from a torch dtype or its name ("float32", "bf16", ...)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise choice_error("dtype", str(dtype), sorted({str(d) for d in DTYPES.values()}))
        return dtype
    if dtype not in DTYPES:
        raise choice_error("dtype", dtype, list(DTYPES))
    return DTYPES[dtype]


# Precisions that are more than one torch dtype, by name -> (the model's dtype, the format of the STCA
# blocks' linear layers, :attr:`stdd_fast.model.STDDModel.linear_format`). "fp8" only, not "float8":
# torch has several float8 dtypes, and this is a recipe (bf16 weights, e4m3 GEMMs), not one of them.
PRECISIONS: dict[str, tuple[torch.dtype, str]] = {"fp8": (torch.bfloat16, "fp8")}


def resolve_precision(dtype: torch.dtype | str, device: torch.device | None = None) -> tuple[torch.dtype, str | None]:
    """(model dtype, linear format) of a dtype or precision name: ``"fp8"`` -> (bfloat16, "fp8") (:mod:`stdd_fast.fp8`),
    ``"bf16"`` or ``torch.bfloat16`` -> (bfloat16, None): the linear layers run in the model's dtype; ``"auto"``:
    :func:`default_dtype` of ``device`` (the CPU when None)."""
    if isinstance(dtype, str) and dtype == "auto":
        return default_dtype(device or torch.device("cpu")), None
    if isinstance(dtype, str) and dtype not in DTYPES:
        if dtype not in PRECISIONS:
            raise choice_error("dtype", dtype, ["auto", *DTYPES, *PRECISIONS])
        return PRECISIONS[dtype]
    return resolve_dtype(dtype), None


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device that exists here (ConfigError otherwise, naming what is available).

    ``"auto"``: the first CUDA device when there is one, else the CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a device name; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but CUDA is not available here; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ConfigError(f"device={device!r}: only 'cpu' and 'cuda' devices are supported")
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    """The fast exact-enough dtype of a device: bf16 on a GPU, fp32 on the CPU (the CLI's ``--dtype auto``)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings and results that must be complete)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpuinfo_field(name: str) -> str:
    """The first ``name : value`` of ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)), "")


def cpu_isa() -> str:
    """The newest matrix instructions the CPU has (``amx_tile``, ``avx512_bf16``, ``avx512f``, ``avx2`` or
    ``baseline``), with its architecture: BLAS libraries (MKL, OpenBLAS, ONNX Runtime's MLAS) pick their kernels
    and layouts by it, so two CPUs of one torch capability can round differently or lay a graph out differently."""
    flags = _cpuinfo_field("flags").split()
    tier = next((t for t in ("amx_tile", "avx512_bf16", "avx512f", "avx2") if t in flags), "baseline")
    return f"{platform.machine()}-{tier}"


def cpu_vendor() -> str:
    """``GenuineIntel`` / ``AuthenticAMD``: MKL runs other kernels on other vendors' CPUs of the same capability."""
    return _cpuinfo_field("vendor_id") or "unknown vendor"
