"""The re-plan rule: which observation each subgoal is planned from (the lockstep contract).

Observations are counted from the latest goal (k = 0, 1, …); observation k uses the subgoal
planned from observation k − k % every. `subgoal_planner`, `flow_controller` and `BundlePolicy`
(`nfhiql eval`) each run one of these, so the ROS stack in lockstep and the in-process evaluation
re-plan on the same steps by construction. See docs/design/lockstep.md.
"""
from __future__ import annotations


class ReplanSchedule:
    """Counts observations since the latest goal; says which observation a subgoal is planned from."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"replan_every must be >= 1, got {every}")
        self.every = every
        self.goal_stamp: int | None = None
        self.count = 0
        self.plan_stamp: int | None = None

    def reset(self, goal_stamp: int = 0) -> None:
        """A new goal (episode) stamped `goal_stamp`: the next observation is k = 0."""
        self.goal_stamp, self.count, self.plan_stamp = goal_stamp, 0, None

    def before_goal(self, stamp: int) -> bool:
        """Stamped before the latest goal: in lockstep, an observation of the previous episode."""
        return self.goal_stamp is not None and stamp < self.goal_stamp

    def observe(self, stamp: int) -> tuple[bool, int]:
        """Count the observation stamped `stamp`: (is k % every == 0, stamp of its planning observation)."""
        replan = self.count % self.every == 0
        if replan:
            self.plan_stamp = stamp
        self.count += 1
        return replan, self.plan_stamp
