"""Progress towards a goal from HIQL's value function: steps to go, progress per second, and when to give up.

V(s, g) is trained on a reward of −1 per step until the goal and 0 at it, discounted by γ, so a goal
n steps away has V = −(1 − γⁿ)/(1 − γ), and n = log(1 + (1 − γ)·V) / log γ (`steps_to_go`).
`ProgressMonitor` turns the values of one goal into reports and ends the goal with a verdict:

- ``value_reached``: V ≥ `success_value` (a calibrated threshold; off by default);
- ``budget``: `step_budget` steps taken (off by default);
- ``stalled``: the estimated steps to go have not fallen `min_progress_steps` below their best so far
  for `stall_time_s` (the clock starts at `start` and restarts at each such fall; the first finite
  estimate is one).

Time is an argument (sim or wall clock, seconds), so the monitor is deterministic. See
docs/design/progress.md for the calibration of these numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


def value_of_steps(steps: float, discount: float) -> float:
    """V = −(1 − γⁿ)/(1 − γ): the value `steps` steps from the goal (`steps_to_go` inverts it)."""
    return -(1.0 - discount ** steps) / (1.0 - discount)


def steps_to_go(value: float, discount: float) -> float:
    """The n with V = −(1 − γⁿ)/(1 − γ): 0 for V ≥ 0, inf for V ≤ −1/(1 − γ) (beyond the horizon)."""
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    if math.isnan(value):
        raise ValueError("value is NaN")
    if value >= 0.0:
        return 0.0
    remaining = 1.0 + (1.0 - discount) * value  # γⁿ
    if remaining <= 0.0:
        return math.inf
    return math.log(remaining) / math.log(discount)


@dataclass(frozen=True)
class ProgressConfig:
    """When a goal counts as reached, out of budget or stalled (times in seconds of the caller's clock)."""

    stall_time_s: float = 5.0  # stalled: no progress (see min_progress_steps) for this long
    min_progress_steps: float = 5.0  # progress: the estimated steps fall at least this far below their best (> 0)
    step_budget: int | None = None  # budget: the goal ends after this many steps (None: no budget)
    success_value: float | None = None  # value_reached: V(s, g) at or above this (<= 0; None: only the task's own test)
    smoothing: float = 0.2  # EMA factor of progress_per_s in (0, 1]: 1 = the latest rate, smaller = smoother

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stall_time_s) and self.stall_time_s > 0):
            raise ValueError(f"stall_time_s must be a finite number > 0, got {self.stall_time_s}")
        if not (math.isfinite(self.min_progress_steps) and self.min_progress_steps > 0):
            raise ValueError(f"min_progress_steps must be a finite number > 0, got {self.min_progress_steps}")
        if self.step_budget is not None and (isinstance(self.step_budget, bool) or self.step_budget < 1):
            raise ValueError(f"step_budget must be an integer >= 1 or null, got {self.step_budget!r}")
        if self.success_value is not None and not (math.isfinite(self.success_value) and self.success_value <= 0):
            raise ValueError(f"success_value must be a finite number <= 0 (V is never positive) or null, "
                             f"got {self.success_value}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")


class ProgressReport(NamedTuple):
    value: float  # V(s, g)
    estimated_steps: float  # steps_to_go(V, γ); inf beyond the value's horizon
    progress_per_s: float  # smoothed fall of estimated_steps per second (> 0: closing in); 0 until measured
    verdict: str | None  # None: carry on; else value_reached | budget | stalled
    reason: str  # the verdict in words ("" without one)


class ProgressMonitor:
    """Reports on one goal at a time: `start` it, then `update` with each new value (see the module docstring)."""

    def __init__(self, config: ProgressConfig, discount: float):
        steps_to_go(-1.0, discount)  # validates the discount
        self.config, self.discount = config, discount
        self.best_steps = math.inf  # the lowest estimate that counted as progress
        self.best_time: float | None = None  # when it did (the stall clock's start); None: not started
        self.last: tuple[float, float] | None = None  # (t, estimated steps) of the previous update
        self.rate: float | None = None  # smoothed progress per second, None until two finite estimates

    def start(self, t: float) -> None:
        """A new goal at time `t`: forget the previous one."""
        self.best_steps, self.best_time, self.last, self.rate = math.inf, t, None, None

    def update(self, t: float, value: float, steps_taken: int) -> ProgressReport:
        """The report at time `t` for V(s, g) = `value` after `steps_taken` steps towards the goal."""
        if self.best_time is None:
            raise RuntimeError("ProgressMonitor.update before start()")
        if not math.isfinite(value):
            raise ValueError(f"value must be finite, got {value}")
        if self.last is not None and t < self.last[0]:
            raise ValueError(f"time went backwards: {t} after {self.last[0]} (start() a new goal on a clock reset)")
        c = self.config
        steps = steps_to_go(value, self.discount)
        if math.isfinite(steps) and steps <= self.best_steps - c.min_progress_steps:
            self.best_steps, self.best_time = steps, t
        if self.last is not None and t > self.last[0] and math.isfinite(steps) and math.isfinite(self.last[1]):
            rate = (self.last[1] - steps) / (t - self.last[0])
            self.rate = rate if self.rate is None else self.rate + c.smoothing * (rate - self.rate)
        self.last = (t, steps)
        verdict, reason = self._verdict(t, value, steps, steps_taken)
        return ProgressReport(value, steps, 0.0 if self.rate is None else self.rate, verdict, reason)

    def _verdict(self, t: float, value: float, steps: float, steps_taken: int) -> tuple[str | None, str]:
        c = self.config
        if c.success_value is not None and value >= c.success_value:
            return "value_reached", f"V(s, g) = {value:.3f} >= success_value {c.success_value:g}"
        if c.step_budget is not None and steps_taken >= c.step_budget:
            return "budget", f"step budget of {c.step_budget} spent"
        waited = t - self.best_time
        if waited >= c.stall_time_s:
            best = "no finite estimate yet" if math.isinf(self.best_steps) else f"best {self.best_steps:.1f}"
            return "stalled", (f"estimated steps to go ({steps:.1f}, {best}) have not fallen by "
                               f"{c.min_progress_steps:g} in {waited:.3g} s (stall_time_s {c.stall_time_s:g})")
        return None, ""
