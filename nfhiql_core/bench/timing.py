"""Latency timing shared by the benchmarks."""
from __future__ import annotations

import time
from typing import Any, Callable, Hashable, Mapping, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def latencies_us(call: Callable[[], Any], calls: int, warmup: int) -> np.ndarray:
    """Wall-clock latency of each of `calls` calls (after `warmup` untimed ones), in microseconds."""
    return interleaved_latencies_us({"call": call}, calls, warmup)["call"]


def interleaved_latencies_us(cases: Mapping[K, Callable[[], Any]], calls: int, warmup: int,
                             block: int = 1000) -> dict[K, np.ndarray]:
    """`latencies_us` of several calls timed in alternating blocks of `block` calls each, so that a loaded
    machine's slow spells fall on all of them alike while each block runs with its own model in cache."""
    for _ in range(warmup):
        for call in cases.values():
            call()
    out: dict[K, list[int]] = {name: [] for name in cases}
    for first in range(0, calls, block):
        for name, call in cases.items():
            timings = out[name]
            for _ in range(min(block, calls - first)):
                start = time.perf_counter_ns()
                call()
                timings.append(time.perf_counter_ns() - start)
    return {name: np.array(values) / 1e3 for name, values in out.items()}
