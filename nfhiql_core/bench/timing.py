"""Latency timing shared by the benchmarks."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def latencies_us(call: Callable[[], Any], calls: int, warmup: int) -> np.ndarray:
    """Wall-clock latency of each of `calls` calls (after `warmup` untimed ones), in microseconds."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        call()
        out[i] = time.perf_counter_ns() - start
    return out / 1e3
