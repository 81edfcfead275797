"""Cadence bookkeeping and `/diagnostics` messages for the policy nodes.

`CadenceMonitor` records each command a loop sends: when it was sent, how long the policy took
(compute) and how old the observation it answers was (latency = send time − observation stamp, on
the node clock). A cycle is an overrun when its tick came more than one period late or its compute
took longer than one period. `window()` gives the figures since the previous call (for the periodic
status), `summary()` one paragraph over the whole run (logged on shutdown), in the spirit of
LeRobot's cadence report ("29.8 Hz vs 30 Hz target, N cycles over budget").
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from nfhiql_ros.ros_io import ns_to_stamp

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
HISTORY = 100_000  # samples kept for the run summary's percentiles


def percentiles_ms(samples_s: Iterable[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds; NaN when there are no samples."""
    values = np.fromiter(samples_s, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(values, [50, 99]) * 1e3
    return float(p50), float(p99)


class CadenceMonitor:
    """Achieved rate, overruns, compute time and observation→command latency of a control loop."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.start_ns: int | None = None
        self.commands = self.overruns = 0
        self.compute_s: deque[float] = deque(maxlen=HISTORY)
        self.latency_s: deque[float] = deque(maxlen=HISTORY)
        self._window_start_ns: int | None = None
        self._window_commands = self._window_overruns = 0
        self._window_compute: list[float] = []
        self._window_latency: list[float] = []
        self._last_tick_ns: int | None = None

    def tick(self, now_ns: int) -> bool:
        """A timer tick at `now_ns`: True if it came more than one period after the one it follows."""
        late = self._last_tick_ns is not None and now_ns - self._last_tick_ns > 2 * self.period_s * 1e9
        self._last_tick_ns = now_ns
        return late

    def command(self, now_ns: int, compute_s: float | None = None, latency_s: float | None = None,
                late: bool = False) -> None:
        """A command sent at `now_ns` (compute/latency None when it answers no fresh observation)."""
        if self.start_ns is None:
            self.start_ns = self._window_start_ns = now_ns
        self.commands += 1
        self._window_commands += 1
        if late or (compute_s is not None and compute_s > self.period_s):
            self.overruns += 1
            self._window_overruns += 1
        if compute_s is not None:
            self.compute_s.append(compute_s)
            self._window_compute.append(compute_s)
        if latency_s is not None:
            self.latency_s.append(latency_s)
            self._window_latency.append(latency_s)

    def window(self, now_ns: int) -> dict[str, float]:
        """Figures since the previous call: achieved rate, overruns, compute and latency p50/p99 (ms)."""
        start = self._window_start_ns if self._window_start_ns is not None else now_ns
        elapsed = (now_ns - start) / 1e9
        compute, latency = percentiles_ms(self._window_compute), percentiles_ms(self._window_latency)
        figures = {"achieved_rate_hz": self._window_commands / elapsed if elapsed > 0 else 0.0,
                   "window_commands": self._window_commands, "window_overruns": self._window_overruns,
                   "compute_ms_p50": compute[0], "compute_ms_p99": compute[1],
                   "latency_ms_p50": latency[0], "latency_ms_p99": latency[1]}
        self._window_start_ns = now_ns
        self._window_commands = self._window_overruns = 0
        self._window_compute, self._window_latency = [], []
        return figures

    def achieved_rate_hz(self, now_ns: int) -> float:
        """Commands per second since the first one."""
        if self.start_ns is None or now_ns <= self.start_ns:
            return 0.0
        return (self.commands - 1) / ((now_ns - self.start_ns) / 1e9) if self.commands > 1 else 0.0

    def summary(self, now_ns: int, target_hz: float, extra: str = "") -> str:
        """One paragraph over the whole run."""
        compute, latency = percentiles_ms(self.compute_s), percentiles_ms(self.latency_s)
        seconds = 0.0 if self.start_ns is None else (now_ns - self.start_ns) / 1e9
        return (f"cadence: achieved {self.achieved_rate_hz(now_ns):.2f} Hz vs target {target_hz:.2f} Hz over "
                f"{seconds:.1f} s ({self.commands} commands), {self.overruns} overruns, compute p50/p99 "
                f"{compute[0]:.2f}/{compute[1]:.2f} ms, observation→command latency p50/p99 "
                f"{latency[0]:.2f}/{latency[1]:.2f} ms" + (f", {extra}" if extra else ""))


def run_summary(monitor: CadenceMonitor, now_ns: int, target_hz: float) -> dict[str, float | int | None]:
    """The cadence figures of a whole run as data (NaN percentiles as None), for run reports."""
    compute, latency = percentiles_ms(monitor.compute_s), percentiles_ms(monitor.latency_s)
    seconds = 0.0 if monitor.start_ns is None else (now_ns - monitor.start_ns) / 1e9

    def number(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 4)

    return {"target_rate_hz": target_hz, "achieved_rate_hz": number(monitor.achieved_rate_hz(now_ns)),
            "duration_s": round(seconds, 3), "commands": monitor.commands, "overruns": monitor.overruns,
            "compute_ms_p50": number(compute[0]), "compute_ms_p99": number(compute[1]),
            "latency_ms_p50": number(latency[0]), "latency_ms_p99": number(latency[1])}


def status_array(now_ns: int, name: str, level: int, message: str, values: Mapping[str, object],
                 hardware_id: str = "") -> DiagnosticArray:
    """A DiagnosticArray holding one status; floats are written with 4 significant digits."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=key, value=f"{value:.4g}" if isinstance(value, float) else str(value))
                     for key, value in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = ns_to_stamp(now_ns)
    return array
