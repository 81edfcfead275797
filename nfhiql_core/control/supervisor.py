"""The safety supervisor: what must hold before any policy command goes out, beyond fresh inputs.

- **Enable / deadman.** With `require_enable`, no policy command without an enable: a `True` on
  the enable input (a std_msgs/Bool topic, or a SetBool service) that is renewed at least every
  `enable_timeout_ns` (a deadman; 0 = an enable holds until revoked). Revoking, or the deadman
  expiring, is a safe stop.
- **E-stop.** Latched: once pressed, every command is the safe one until an explicit reset, and a
  reset while the e-stop input still says pressed is refused.
- **Workspace.** Limits on observation values (e.g. the tcp's or the object's position, from the
  robot interface spec's `workspace` keys): a value outside is a safe stop naming it.

`verdict(observation, now)` is the reason to stop (None: go), in the words the controller reports
(`disabled`, `deadman`, `estop`, `workspace`) with a detail. Every method takes the node clock.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Stop(NamedTuple):
    reason: str  # disabled | deadman | estop | workspace
    detail: str


class Workspace(NamedTuple):
    """Observation indices and their allowed ranges."""

    index: np.ndarray
    low: np.ndarray
    high: np.ndarray
    names: tuple[str, ...]


class SafetySupervisor:
    """Enable/deadman, e-stop latch and workspace limits (see the module docstring)."""

    def __init__(self, require_enable: bool, enable_timeout_ns: int, workspace: Workspace | None = None):
        self.require_enable, self.enable_timeout_ns, self.workspace = require_enable, enable_timeout_ns, workspace
        self.enabled_at: int | None = None  # the last enable (renewal), None: not enabled
        self.estop_latched = False
        self.estop_pressed = False  # what the e-stop input says now
        self.estops = 0

    def on_enable(self, value: bool, now: int) -> None:
        """The enable input: True enables (and renews the deadman), False revokes."""
        self.enabled_at = now if value else None

    def on_estop(self, pressed: bool) -> None:
        """The e-stop input: pressing latches; releasing alone does not clear the latch."""
        if pressed and not self.estop_latched:
            self.estops += 1
        self.estop_pressed = pressed
        self.estop_latched = self.estop_latched or pressed

    def reset(self) -> tuple[bool, str]:
        """Clear the e-stop latch (refused while the e-stop is still pressed)."""
        if self.estop_pressed:
            return False, "e-stop still pressed: release it first"
        was, self.estop_latched = self.estop_latched, False
        return True, "e-stop reset" if was else "no e-stop latched"

    def verdict(self, observation: np.ndarray | None, now: int) -> Stop | None:
        if self.estop_latched:
            return Stop("estop", "e-stop latched: reset it to resume")
        if self.require_enable:
            if self.enabled_at is None:
                return Stop("disabled", "no enable")
            if self.enable_timeout_ns and now - self.enabled_at > self.enable_timeout_ns:
                return Stop("deadman", f"enable not renewed for {(now - self.enabled_at) / 1e9:.3f} s "
                                       f"(deadman {self.enable_timeout_ns / 1e9:g} s)")
        w = self.workspace
        if w is not None and observation is not None:
            values = observation[w.index]
            out = np.flatnonzero((values < w.low) | (values > w.high))
            if out.size:
                i = int(out[0])
                return Stop("workspace", f"{w.names[i]} = {values[i]:.4g} outside [{w.low[i]:g}, {w.high[i]:g}]")
        return None

    def next_deadline(self) -> int | None:
        """When the deadman expires without a renewal (None: no deadman running)."""
        if not (self.require_enable and self.enable_timeout_ns and self.enabled_at is not None):
            return None
        return self.enabled_at + self.enable_timeout_ns + 1


def workspace_from_spec(names: Sequence[str], limits: dict[str, tuple[float, float]]) -> Workspace | None:
    """Workspace limits on observation elements by name ({name: (low, high)}); None without any."""
    if not limits:
        return None
    missing = [n for n in limits if n not in names]
    if missing:
        raise ValueError(f"workspace: {missing[0]!r} is not an observation element (e.g. {names[0]!r})")
    keys = list(limits)
    return Workspace(np.array([list(names).index(k) for k in keys]), np.array([limits[k][0] for k in keys]),
                     np.array([limits[k][1] for k in keys]), tuple(keys))
