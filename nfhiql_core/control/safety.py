"""The last checks on every command, and the out-of-distribution alarm.

`CommandFilter` turns a policy action into a command: an optional per-step rate limit
(|command − previous| ≤ max_delta per element), then the bundle's bounds; a non-finite result is
never returned. The safe command is `zero` (zeros, for velocity/delta actions and twists) or
`hold` (the last policy command, for absolute positions), clipped to the bounds; it is finite and
inside the bounds by construction, whatever came before. See docs/design/safety.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CommandFilter:
    """Rate limit + bounds for policy commands; the safe command."""

    def __init__(self, low: np.ndarray, high: np.ndarray, safe_command: str = "zero", max_delta: float = 0.0):
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
            raise ValueError("command bounds must be finite with low <= high")
        if safe_command not in ("zero", "hold"):
            raise ValueError(f"safe_command must be zero or hold, got {safe_command!r}")
        self.low, self.high, self.kind, self.max_delta = low, high, safe_command, max_delta
        self.last_policy = np.clip(np.zeros_like(low), low, high)
        self.last_sent: np.ndarray | None = None

    def policy_command(self, action: np.ndarray) -> np.ndarray | None:
        """The command for a policy action; None when it is not finite (the caller sends the safe one)."""
        command = np.asarray(action, dtype=np.float64)
        if command.shape != self.low.shape or not np.isfinite(command).all():
            return None
        if self.max_delta > 0 and self.last_sent is not None:
            command = self.last_sent + np.clip(command - self.last_sent, -self.max_delta, self.max_delta)
        command = np.clip(command, self.low, self.high)
        self.last_policy = self.last_sent = command
        return command

    def safe_command(self) -> np.ndarray:
        """Zeros or the last policy command, inside the bounds (safe commands are not rate-limited)."""
        command = self.last_policy if self.kind == "hold" else np.zeros_like(self.low)
        self.last_sent = np.clip(command, self.low, self.high)
        return self.last_sent


@dataclass
class OodAlarm:
    """Which log-likelihoods fell below the training data's thresholds on one command."""

    action: bool
    subgoal: bool

    def __bool__(self) -> bool:
        return self.action or self.subgoal


class OodMonitor:
    """Compares each action's and the latest subgoal's log-likelihood with the bundle's thresholds.

    Each check below a threshold is an alarm (counted). The alarm becomes *sustained* after
    `raise_after` alarms in a row and stops being so after `clear_after` clean checks in a row
    (hysteresis): a sustained alarm is what the operator hears about and what `ood_action:
    safe_stop` stops on; a single low-likelihood command in a good run is neither.
    """

    def __init__(self, low_threshold: float, high_threshold: float, raise_after: int = 1, clear_after: int = 1):
        if raise_after < 1 or clear_after < 1:
            raise ValueError("raise_after and clear_after must be >= 1")
        self.thresholds = {"low": low_threshold, "high": high_threshold}
        self.raise_after, self.clear_after = raise_after, clear_after
        self.alarms = 0
        self.sustained = False
        self.episodes = 0  # times the alarm became sustained
        self._run = 0  # alarms in a row (while clear) or clean checks in a row (while sustained)
        self.subgoal_log_likelihood: float | None = None
        self.action_log_likelihood: float | None = None

    def check(self, action_log_likelihood: float) -> OodAlarm:
        """Record the action's log-likelihood; an alarm (counted) when either level is below threshold."""
        self.action_log_likelihood = action_log_likelihood
        alarm = OodAlarm(action_log_likelihood < self.thresholds["low"],
                         self.subgoal_log_likelihood is not None
                         and self.subgoal_log_likelihood < self.thresholds["high"])
        self.alarms += bool(alarm)
        self._run = self._run + 1 if bool(alarm) != self.sustained else 0
        if self._run >= (self.clear_after if self.sustained else self.raise_after):
            self.sustained, self._run = not self.sustained, 0
            self.episodes += self.sustained
        return alarm
