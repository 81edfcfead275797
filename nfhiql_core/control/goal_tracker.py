"""One goal being pursued: its success test, its progress from the value function, and how it ends.

The planner node feeds every observation it plans on (`on_observation`): the steps since the goal
started are counted, the spec's success test is checked each step, and on the first step and every
`progress_every` steps V(s, g) goes to the `ProgressMonitor` (stall, step budget, value threshold),
whose report becomes the goal's feedback. Time is the robot's: steps × the control period, so a
lockstep run and a realtime one judge progress alike. A stop of the controller (e-stop, workspace,
sustained OOD) ends the goal as aborted with its reason; a held controller (enable off, deadman)
pauses the stall clock.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import numpy as np

from nfhiql_core.control.progress import ProgressConfig, ProgressMonitor, ProgressReport
from nfhiql_core.interface.spec import InterfaceSpec

SUCCEEDED, ABORTED, CANCELED = "succeeded", "aborted", "canceled"


class Outcome(NamedTuple):
    outcome: str  # succeeded | aborted | canceled
    reason: str


class Feedback(NamedTuple):
    value: float
    estimated_steps: float
    progress_per_s: float
    steps: int
    elapsed_s: float
    state: str


class SuccessTest:
    """The spec's `goal_success`: every listed field within `tolerance` (raw units) of the goal."""

    def __init__(self, spec: InterfaceSpec | None):
        self.tolerance = spec.goal_success.tolerance if spec is not None else 0.0
        self.parts: list[tuple[str, slice, np.ndarray]] = []
        if spec is None:
            return
        at = 0
        for f in spec.observation:
            if f.label in spec.goal_success.fields:
                self.parts.append((f.label, slice(at, at + f.dim), f.affine()[0]))
            at += f.dim

    def distances(self, observation: np.ndarray, goal: np.ndarray) -> dict[str, float]:
        """Each field's raw Euclidean distance to the goal (the observation's scale undone)."""
        return {label: float(np.linalg.norm((observation[at] - goal[at]) / scale)) for label, at, scale in self.parts}

    def met(self, observation: np.ndarray, goal: np.ndarray) -> str | None:
        """None, or the success reason (which fields, how close)."""
        if not self.parts:
            return None
        d = self.distances(observation, goal)
        if all(v <= self.tolerance for v in d.values()):
            return "success test met: " + ", ".join(f"{k} within {v:.3g} (tolerance {self.tolerance:g})"
                                                    for k, v in d.items())
        return None


class GoalTracker:
    """The active goal's bookkeeping (see the module docstring); `goal` is None when there is none."""

    def __init__(self, success: SuccessTest, progress: ProgressConfig, discount: float, period_s: float,
                 progress_every: int, value: Callable[[np.ndarray, np.ndarray], float] | None):
        self.success, self.progress_config, self.discount = success, progress, discount
        self.period_s, self.progress_every, self.value = period_s, max(1, progress_every), value
        self.goal: np.ndarray | None = None
        self.steps = 0
        self.held = ""
        self.monitor: ProgressMonitor | None = None
        self.last: ProgressReport | None = None

    def start(self, goal: np.ndarray, step_budget: int | None = None) -> None:
        """Pursue `goal` from now (a step budget of the request replaces the configured one)."""
        config = self.progress_config
        if step_budget:
            config = dataclasses.replace(config, step_budget=step_budget)
        self.budget = config.step_budget
        self.goal, self.steps, self.held, self.last = np.asarray(goal, dtype=np.float64), 0, "", None
        self.monitor = ProgressMonitor(config, self.discount)
        self.monitor.start(0.0)

    def clear(self) -> None:
        self.goal, self.monitor = None, None

    @property
    def elapsed_s(self) -> float:
        return self.steps * self.period_s

    def evaluate(self, observation: np.ndarray) -> ProgressReport | None:
        """V(s, g) of the active goal into the progress monitor (None without a value model)."""
        if self.value is None or self.goal is None:
            return None
        self.last = self.monitor.update(self.elapsed_s, self.value(observation, self.goal), self.steps)
        return self.last

    def on_observation(self, observation: np.ndarray) -> tuple[Feedback | None, Outcome | None]:
        """One control step towards the goal: (feedback when due, the outcome when the goal ends)."""
        if self.goal is None:
            return None, None
        self.steps += 1
        reason = self.success.met(observation, self.goal)
        due = (self.steps % self.progress_every == 0 or self.steps == 1 or reason is not None
               or (self.budget is not None and self.steps >= self.budget))
        report = self.evaluate(observation) if due and not self.held else None
        if reason is not None:
            return self.feedback(), Outcome(SUCCEEDED, reason)
        if report is not None and report.verdict is not None:
            verdict = report.verdict
            return self.feedback(), Outcome(SUCCEEDED if verdict == "value_reached" else ABORTED,
                                            f"{verdict.replace('_', ' ')}: {report.reason}")
        return (self.feedback() if due else None), None

    def hold(self, why: str) -> None:
        """The controller holds (enable off, deadman): no progress is expected meanwhile."""
        self.held = why

    def resume(self) -> None:
        """Commands again: the stall window restarts from now."""
        if self.held and self.monitor is not None:
            self.monitor.start(self.elapsed_s)
        self.held = ""

    def feedback(self) -> Feedback:
        r = self.last
        nan = float("nan")
        return Feedback(r.value if r else nan, r.estimated_steps if r else nan, r.progress_per_s if r else nan,
                        self.steps, self.elapsed_s, f"holding ({self.held})" if self.held else "pursuing")


def stop_outcome(state: str, detail: str, stops: Sequence[str]) -> Outcome | None:
    """The controller's safety state as the end of a goal: aborted when `state` is one of `stops`."""
    if state not in stops:
        return None
    return Outcome(ABORTED, f"safe stop: {state.replace('_', ' ')}" + (f" ({detail})" if detail else ""))
