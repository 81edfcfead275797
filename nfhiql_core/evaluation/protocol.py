"""OGBench evaluation protocol, vectorised: many env instances stepped in lockstep in one process.

Protocol (as in OGBench's `impls/utils/evaluation.py`): 5 fixed tasks (`task_id` 1..5), the goal
observation is `info['goal']` after reset, the episode ends on success (`terminate_at_goal`) or at
the time limit, and an episode succeeds if `info['success']` of its last step is true. Per-task
success is the mean over episodes; overall success is the mean over tasks.

Rendering uses the MuJoCo OpenGL backend chosen before MuJoCo is first imported (EGL unless
MUJOCO_GL is already set; see nfhiql_core/headless_gl.py).
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import gymnasium
import numpy as np
from tqdm.auto import tqdm

from nfhiql_core.atomic_io import save_json
from nfhiql_core.errors import ConfigError, NfhiqlError
from nfhiql_core.evaluation.episodes import (
    VIDEO_SEEDS,
    Episode,
    EpisodeRecord,
    canonical_env_name,
    episode_seed,
    make_env,
    quiet_gymnasium,
)
from nfhiql_core.evaluation.through_interface import InterfaceEnv
from nfhiql_core.evaluation.video import VIDEO_FRAME_SKIP, check_video_path, write_video
from nfhiql_core.interface.spec import InterfaceSpec


class PolicyError(NfhiqlError, ValueError):
    """The policy returned actions of the wrong shape or non-finite actions."""


class GoalConditionedPolicy(Protocol):
    """Maps a batch of observations (B, obs...) and goals (B, goal...) to actions (B, act)."""

    def __call__(self, observations: np.ndarray, goals: np.ndarray) -> np.ndarray: ...


class StatefulPolicy(Protocol):
    """A policy with per-environment state (e.g. re-planning every N steps).

    Any policy with a callable `reset` attribute is treated as stateful:
    `reset(env_indices)` is called with the slot indices of environments that start a new episode,
    episodes in the order of `EvalResult.episodes` (task, then episode; a video's uncounted episode
    last); `__call__` then also receives `env_indices`, the slot index of each row of the batch
    (ascending).
    """

    def reset(self, env_indices: np.ndarray) -> None: ...

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray: ...


@dataclass
class EvalResult:
    """Outcome of `evaluate`.

    `ci95` is the normal-approximation 95% half-width 1.96*sqrt(p(1-p)/n) of the per-episode success
    rate p over all n counted episodes (with equal episodes per task, p equals `success`).
    """

    env_name: str
    episodes_per_task: int
    seed: int
    per_task_success: dict[int, float]
    success: float
    ci95: float
    episodes: list[EpisodeRecord]
    wall_time_s: float
    num_envs: int
    max_steps: int | None = None
    video_path: str | None = None
    # Through a robot interface (`evaluate(interface=...)`): max |executed env action - policy action|; else None.
    interface_max_action_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (task ids become string keys)."""
        d = asdict(self)
        d["per_task_success"] = {str(k): v for k, v in self.per_task_success.items()}
        return d


def _is_stateful(policy: GoalConditionedPolicy) -> bool:
    return callable(getattr(policy, "reset", None))


def _as_batch(xs: list[np.ndarray]) -> np.ndarray:
    """Stack observations; floats become float32 (the dtype OGBench datasets load with)."""
    batch = np.stack(xs)
    return batch.astype(np.float32) if np.issubdtype(batch.dtype, np.floating) else batch


def _query(policy: GoalConditionedPolicy, running: list[Episode], space: gymnasium.spaces.Box) -> np.ndarray:
    """Call the policy on the running envs; validate and clip its actions."""
    obs = _as_batch([r.observation for r in running])
    goals = _as_batch([r.goal for r in running])
    if _is_stateful(policy):
        out = policy(obs, goals, env_indices=np.array([r.slot for r in running]))
    else:
        out = policy(obs, goals)
    actions = np.asarray(out, dtype=np.float64)
    if actions.shape != (len(running), *space.shape):
        raise PolicyError(f"policy returned actions of shape {actions.shape}, expected {(len(running), *space.shape)}")
    bad = ~np.isfinite(actions).reshape(len(running), -1).all(axis=1)
    if bad.any():
        rec = running[int(np.argmax(bad))].record
        raise PolicyError(f"policy returned a non-finite action (task {rec.task_id}, episode {rec.episode})")
    return np.clip(actions, space.low, space.high).astype(space.dtype)


def _reset_policy(policy: GoalConditionedPolicy, slots: list[int]) -> None:
    if slots and _is_stateful(policy):
        policy.reset(np.array(slots))


def _run_episodes(
    policy: GoalConditionedPolicy,
    envs: list[gymnasium.Env],
    jobs: deque[tuple[int, int]],
    seed: int,
    max_steps: int | None,
    bar: tqdm,
) -> list[EpisodeRecord]:
    """Run the (task_id, episode) jobs on the env slots in lockstep; a freed slot takes the next job."""
    space = envs[0].action_space
    running: list[Episode] = []
    done: list[EpisodeRecord] = []

    def refill(slots: list[int]) -> None:
        started = []
        for slot in slots:
            if jobs:
                task_id, ep = jobs.popleft()
                running.append(Episode(envs[slot], task_id, ep, episode_seed(seed, task_id, ep), slot))
                started.append(slot)
        running.sort(key=lambda r: r.slot)
        _reset_policy(policy, started)

    refill(list(range(len(envs))))
    while running:
        actions = _query(policy, running, space)
        finished = [r for r, a in zip(running, actions) if r.step(a, max_steps)]
        for r in finished:
            running.remove(r)
            done.append(r.record)
            bar.update(1)
        if finished:
            bar.set_postfix(success=f"{np.mean([d.success for d in done]):.3f}")
            refill([r.slot for r in finished])
    return done


def _record_video(
    policy: GoalConditionedPolicy, env_name: str, seed: int, max_steps: int | None, path: Path
) -> None:
    """Render one uncounted task-1 episode (every VIDEO_FRAME_SKIP-th step) and write it to `path`."""
    env = make_env(env_name)
    r = Episode(env, 1, 0, episode_seed(seed, 1, 0, VIDEO_SEEDS))
    _reset_policy(policy, [0])
    try:
        frames = [env.render().copy()]
        over = False
        while not over:
            over = r.step(_query(policy, [r], env.action_space)[0], max_steps)
            if over or r.record.length % VIDEO_FRAME_SKIP == 0:
                frames.append(env.render().copy())
    finally:
        env.close()
    write_video(frames, path)


def _check_args(env: gymnasium.Env, episodes_per_task: int, task_ids: Sequence[int], num_envs: int) -> None:
    n_tasks = len(env.unwrapped.task_infos)
    if episodes_per_task < 1 or num_envs < 1:
        raise ConfigError(f"episodes_per_task and num_envs must be >= 1 (got {episodes_per_task}, {num_envs})")
    if not task_ids or any(not 1 <= t <= n_tasks for t in task_ids):
        raise ConfigError(f"task_ids must be a non-empty subset of 1..{n_tasks} (got {list(task_ids)})")


@quiet_gymnasium()
def evaluate(
    policy: GoalConditionedPolicy,
    env_name: str,
    episodes_per_task: int = 50,
    seed: int = 0,
    task_ids: Sequence[int] | None = None,
    num_envs: int | None = None,
    video_path: str | os.PathLike | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    interface: InterfaceSpec | None = None,
) -> EvalResult:
    """Evaluate `policy` on `episodes_per_task` episodes of each task (default: all tasks).

    `num_envs` env instances (default: `episodes_per_task`) run in lockstep; the policy is called
    once per step on the batch of still-running envs. Episode seeds depend only on (seed, task_id,
    episode), so a deterministic row-wise policy gives identical results for any `num_envs`.
    Actions are clipped to the action space. `video_path` (.gif, or .mp4 with imageio-ffmpeg)
    additionally renders one uncounted task-1 episode. `max_steps` caps episode length below the
    env's time limit (a test/debug knob; results with it are not the OGBench protocol). `interface`
    runs every observation and action through a robot interface spec (`InterfaceEnv`), as the ROS
    stack does with mujoco_sim's robot mode.
    """
    start = time.perf_counter()
    if video_path is not None:
        check_video_path(Path(video_path))
    env_name = canonical_env_name(env_name)
    num_envs = num_envs or episodes_per_task

    def new_env() -> gymnasium.Env:
        return make_env(env_name) if interface is None else InterfaceEnv(make_env(env_name), interface)

    envs = [new_env()]
    tasks = list(task_ids) if task_ids is not None else list(range(1, len(envs[0].unwrapped.task_infos) + 1))
    _check_args(envs[0], episodes_per_task, tasks, num_envs)
    jobs = deque((t, ep) for t in tasks for ep in range(episodes_per_task))
    envs += [new_env() for _ in range(min(num_envs, len(jobs)) - 1)]
    try:
        with tqdm(total=len(jobs), desc=f"eval {env_name}", unit="ep", disable=not progress) as bar:
            records = _run_episodes(policy, envs, jobs, seed, max_steps, bar)
        action_error = max(env.max_action_error for env in envs) if interface is not None else None
    finally:
        for env in envs:
            env.close()
    records.sort(key=lambda r: (r.task_id, r.episode))
    if video_path is not None:
        _record_video(policy, env_name, seed, max_steps, Path(video_path))
    result = _summarise(records, env_name, episodes_per_task, seed, tasks, time.perf_counter() - start,
                        num_envs, max_steps, None if video_path is None else str(video_path))
    if interface is not None:
        result.interface_max_action_error = action_error
    return result


def _summarise(
    records: list[EpisodeRecord],
    env_name: str,
    episodes_per_task: int,
    seed: int,
    tasks: list[int],
    wall_time_s: float,
    num_envs: int,
    max_steps: int | None,
    video_path: str | None,
) -> EvalResult:
    per_task = {t: float(np.mean([r.success for r in records if r.task_id == t])) for t in tasks}
    p = float(np.mean([r.success for r in records]))
    return EvalResult(
        env_name=env_name,
        episodes_per_task=episodes_per_task,
        seed=seed,
        per_task_success=per_task,
        success=float(np.mean(list(per_task.values()))),
        ci95=1.96 * math.sqrt(p * (1 - p) / len(records)),
        episodes=records,
        wall_time_s=wall_time_s,
        num_envs=num_envs,
        max_steps=max_steps,
        video_path=video_path,
    )


def write_result(result: EvalResult, path: str | os.PathLike) -> None:
    """Atomically write `result.to_dict()` as JSON."""
    save_json(path, result.to_dict())
