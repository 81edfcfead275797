"""Evaluation through the runtime: the OGBench protocol of `evaluation.evaluate`, with the policy run
by ONNX Runtime from a bundle and re-planned every N steps, plus a success-vs-interval table."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nfhiql_core.control.goals import GoalBook
from nfhiql_core.deploy.bundle import BundleError, check_dims
from nfhiql_core.deploy.runtime import BundlePolicy, PolicyRuntime
from nfhiql_core.evaluation.episodes import make_env, quiet_gymnasium
from nfhiql_core.evaluation.partial_goals import PartialGoalPolicy
from nfhiql_core.evaluation.protocol import EvalResult, evaluate


@quiet_gymnasium()
def bundle_env(runtime: PolicyRuntime, env: str | None = None) -> str:
    """The env to evaluate a bundle on (default: the bundle's), checked to have the bundle's dimensions."""
    env_name = env or runtime.metadata.env
    if not env_name:
        raise BundleError(f"{runtime.bundle.path}: no env recorded in the bundle; pass --env")
    probe = make_env(env_name)
    try:
        check_dims(runtime.metadata, f"{runtime.bundle.path} on {env_name}",
                   obs_dim=int(np.prod(probe.observation_space.shape)),
                   action_dim=int(np.prod(probe.action_space.shape)))
    finally:
        probe.close()
    return env_name


def evaluate_bundle(runtime: PolicyRuntime, env: str | None = None, replan_every: int = 1,
                    goal_fields: tuple[GoalBook, Sequence[str]] | None = None, **evaluate_kwargs: Any) -> EvalResult:
    """`evaluate()` a bundle's policy (default env: the bundle's), re-planning every `replan_every` steps;
    with `goal_fields` (a goal book and field names) towards partial goals (`PartialGoalPolicy`)."""
    policy = BundlePolicy(runtime, replan_every)
    if goal_fields:
        policy = PartialGoalPolicy(policy, *goal_fields)
    return evaluate(policy, bundle_env(runtime, env), **evaluate_kwargs)


@quiet_gymnasium()
def replan_table(runtime: PolicyRuntime, env: str | None = None, intervals: Sequence[int] = (1, 5, 10, 25),
                 **evaluate_kwargs: Any) -> list[dict[str, Any]]:
    """Print and return success vs re-plan interval (same seeds and episodes for every interval)."""
    env_name = env or runtime.metadata.env
    print(f"bundle {runtime.bundle.path} (step {runtime.metadata.step}, {runtime.metadata.policy} policy), "
          f"env {env_name}, subgoal_steps {runtime.metadata.subgoal_steps}")
    print(f"{'replan every':>12} {'success':>8} {'ci95':>6} {'episodes':>8} {'wall s':>7}")
    rows = []
    for n in intervals:
        result = evaluate_bundle(runtime, env_name, n, **evaluate_kwargs)
        rows.append({"replan_every": n, "success": result.success, "ci95": result.ci95,
                     "per_task": result.per_task_success, "episodes": len(result.episodes),
                     "wall_time_s": result.wall_time_s})
        print(f"{n:>12} {result.success:>8.3f} {result.ci95:>6.3f} {len(result.episodes):>8} "
              f"{result.wall_time_s:>7.1f}")
    return rows
