"""Where bfloat16 autocast pays: `compute_dtype: auto` picks it only on hardware that runs bf16 natively.

CUDA: `torch.cuda.is_bf16_supported()`. CPU: the avx512_bf16 or amx_bf16 flag in /proc/cpuinfo
(oneDNN's bf16 kernels; without them bf16 matmuls are emulated, ~30× slower than float32).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}  # compute_dtype → autocast dtype


@functools.lru_cache(maxsize=None)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports (none where /proc/cpuinfo is not there to read)."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)


def bf16_native(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matmuls natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and bool(cpu_bf16_flags())


def bf16_capability(device: torch.device) -> str:
    """One line on `device`'s bf16 support, for benchmarks."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"bf16 {'native' if bf16_native(device) else 'not native'} ({name})"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        return f"bf16 native ({', '.join(flags)})" if flags else \
            f"bf16 not native (no {' or '.join(CPU_BF16_FLAGS)} in {CPUINFO})"
    return f"bf16 not native ({device.type})"


def autocast_dtype(compute_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `AgentConfig.compute_dtype` on `device` (None: float32, no autocast)."""
    if compute_dtype == "auto":
        return torch.bfloat16 if bf16_native(device) else None
    return AUTOCAST_DTYPES[compute_dtype]
