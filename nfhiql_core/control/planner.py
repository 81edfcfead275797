"""The planner's decisions: which observations get a subgoal, for which goal.

Observations are checked like the controller's (`intake`) and counted from the latest goal by
the shared `ReplanSchedule`: observation k is planned on when k % every == 0. No plan without a
goal; in lockstep, observations stamped before the latest goal are the previous episode's backlog
and are dropped as expected (not a warning).
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

import numpy as np

from nfhiql_core.control.intake import Rejected, Stream, check_vector
from nfhiql_core.control.replan import ReplanSchedule

EXPECTED_DROPS = ("observation_before_goal", "observation_previous_goal")  # not a warning


class PlanRequest(NamedTuple):
    """Plan a subgoal from `observation` (stamped `stamp`) towards `goal`."""

    observation: np.ndarray
    goal: np.ndarray
    stamp: int


class PlannerCore:
    """Intake and re-plan decisions of `subgoal_planner`."""

    def __init__(self, obs_dim: int, goal_dim: int, observation_names: tuple[str, ...], goal_names: tuple[str, ...],
                 every: int, lockstep: bool, max_skew_ns: int):
        self.obs_dim, self.goal_dim = obs_dim, goal_dim
        self.observation_names, self.goal_names = observation_names, goal_names
        self.schedule = ReplanSchedule(every)
        self.lockstep = lockstep
        self.observation = Stream("observation", max_skew_ns)
        self.goal_stream = Stream("goal", max_skew_ns)
        self.goal: np.ndarray | None = None
        self.latest: np.ndarray | None = None  # the latest valid observation (goal fill rules, teach)
        self.towards_goal = False  # whether the latest observation counts as a step towards the goal
        self.dropped: Counter[str] = Counter()

    def _reject(self, exc: Rejected) -> Rejected:
        self.dropped[exc.topic] += 1
        self.dropped[f"{exc.topic}_{exc.reason}"] += 1
        return exc

    def on_goal(self, values: Sequence[float], stamp: int, names: Sequence[str], now: int) -> None:
        try:
            goal = check_vector("goal", values, stamp, names, self.goal_dim, self.goal_names)
            self.goal_stream.admit(stamp, now, ordered=False)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.goal = goal
        self.schedule.reset(stamp)

    def on_goal_cleared(self, stamp: int, now: int) -> None:
        """The goal was withdrawn: no plans until the next one."""
        try:
            self.goal_stream.admit(stamp, now, ordered=False)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.goal = None
        self.schedule.reset(stamp)

    def on_observation(self, values: Sequence[float], stamp: int, names: Sequence[str], now: int
                       ) -> PlanRequest | None:
        """The plan this observation asks for, or None (not its turn, or no goal yet)."""
        try:
            obs = check_vector("observation", values, stamp, names, self.obs_dim, self.observation_names)
            self.observation.admit(stamp, now)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.latest, self.towards_goal = obs, False
        if self.goal is None:
            self.dropped["observation_before_goal"] += 1
            return None
        if self.lockstep and self.schedule.before_goal(stamp):
            self.dropped["observation_previous_goal"] += 1
            return None
        self.towards_goal = True
        replan, _ = self.schedule.observe(stamp)
        return PlanRequest(obs, self.goal, stamp) if replan else None

    def unexpected_drops(self) -> int:
        """Messages dropped for a reason worth a warning (by topic, not double-counting reasons)."""
        return sum(n for key, n in self.dropped.items() if key in ("observation", "goal"))
