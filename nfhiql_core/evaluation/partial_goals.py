"""Evaluation with partial operator goals: what an operator who names only some goal fields gets.

`PartialGoalPolicy` wraps an `evaluate()` policy. At each episode's first step it turns the env's
full goal into the request an operator would send for `fields` (e.g. the cube's position in metres
and its yaw) and resolves it with the bundle's `GoalBook` from the observation of that moment: the
fields not named follow the robot interface's `goal_fill` rule, exactly as the planner's
`reach_goal` does. The episode then runs towards that goal; success is still the env's own test.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from nfhiql_core.control.goals import GoalBook, GoalRequest


class EvalPolicy(Protocol):
    def reset(self, env_indices: np.ndarray) -> None: ...

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray: ...


class PartialGoalPolicy:
    """`policy` run towards partial goals naming `fields` (see the module docstring)."""

    def __init__(self, policy: EvalPolicy, book: GoalBook, fields: Sequence[str]):
        self.policy, self.book, self.fields = policy, book, tuple(fields)
        self.goals: dict[int, np.ndarray] = {}  # env index -> its episode's resolved goal

    def reset(self, env_indices: np.ndarray) -> None:
        for i in env_indices.tolist():
            self.goals.pop(i, None)
        self.policy.reset(env_indices)

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        for row, i in enumerate(env_indices.tolist()):
            if i not in self.goals:
                request = GoalRequest(field_names=self.fields,
                                      field_values=tuple(self.book.field_values(goals[row], self.fields)))
                self.goals[i] = self.book.resolve(request, observations[row], check_plausibility=False)
        partial = np.stack([self.goals[i] for i in env_indices.tolist()]).astype(goals.dtype)
        return self.policy(observations, partial, env_indices)
