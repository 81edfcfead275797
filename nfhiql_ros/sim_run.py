"""mujoco_sim's decisions and bookkeeping, rclpy-free: which command steps the env, missed deadlines,
the episode queue, the per-step record and the run report (`report_file`)."""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # the module stays free of OGBench/MuJoCo imports: bringup reads reports with it
    from nfhiql_core.evaluation.episodes import EpisodeRecord

NODE = "mujoco_sim"


class Command(NamedTuple):
    action: np.ndarray
    received_ns: int
    latency_s: float  # reception − stamp of the observation it answers; NaN when unstamped


def finite_or_none(x: Any) -> float | None:
    """`x` as a float, None when missing or non-finite (JSON has no NaN)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def per_task_success(successes: list[tuple[int, bool]]) -> dict[int, float]:
    """(task_id, success) pairs → task → success rate, tasks in first-seen order."""
    tasks = dict.fromkeys(t for t, _ in successes)
    return {t: float(np.mean([s for tt, s in successes if tt == t])) for t in tasks}


def mean_success(per_task: dict[Any, float]) -> float | None:
    """The mean over tasks (each task weighs the same), None without episodes."""
    return float(np.mean(list(per_task.values()))) if per_task else None


class Recorder:
    """Per-step and per-episode logs for `record_path` (flat per-step arrays + episode offsets)."""

    def __init__(self) -> None:
        self.observations: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.step_times_ns: list[int] = []
        self.latencies_s: list[float] = []
        self.goals: list[np.ndarray] = []
        self.records: list[EpisodeRecord] = []
        self.offsets = [0]

    def step(self, observation: np.ndarray, action: np.ndarray, t_ns: int, latency_s: float) -> None:
        self.observations.append(np.array(observation))
        self.actions.append(np.array(action))
        self.step_times_ns.append(t_ns)
        self.latencies_s.append(latency_s)

    def episode(self, goal: np.ndarray, record: EpisodeRecord) -> None:
        self.goals.append(np.array(goal))
        self.records.append(dataclasses.replace(record))
        self.offsets.append(len(self.actions))

    def latency_ms(self) -> np.ndarray:
        """The finite command latencies of every step, in ms."""
        return np.array([x for x in self.latencies_s if math.isfinite(x)]) * 1e3

    def arrays(self, obs_shape: tuple, act_shape: tuple, meta: dict) -> dict[str, np.ndarray]:
        """Completed episodes only (a partial episode at interruption is left out)."""
        n = self.offsets[-1]
        stack = lambda xs, shape: np.stack(xs) if xs else np.zeros((0, *shape))  # noqa: E731
        recs = self.records
        return dict(
            observations=stack(self.observations[:n], obs_shape),  # the observation each action was applied at
            actions=stack(self.actions[:n], act_shape),  # as applied (clipped, env dtype)
            step_times_ns=np.array(self.step_times_ns[:n], dtype=np.int64),
            command_latency_s=np.array(self.latencies_s[:n], dtype=np.float64),
            episode_offsets=np.array(self.offsets, dtype=np.int64),  # episode i = rows offsets[i]:offsets[i+1]
            goals=stack(self.goals, obs_shape),
            task_ids=np.array([r.task_id for r in recs], dtype=np.int64),
            episodes=np.array([r.episode for r in recs], dtype=np.int64),
            env_seeds=np.array([r.env_seed for r in recs], dtype=np.int64),
            successes=np.array([r.success for r in recs], dtype=bool),
            lengths=np.array([r.length for r in recs], dtype=np.int64),
            **{k: np.array(v) for k, v in meta.items()},
        )


class DeadlineCounter:
    """Realtime: due times of a periodic timer that were missed (skipped, or served a period late)."""

    def __init__(self, period_s: float) -> None:
        self.period_ns = period_s * 1e9
        self.prev_expected_ns: int | None = None
        self.missed = 0

    def tick(self, expected_ns: int, actual_ns: int) -> None:
        if self.prev_expected_ns is not None:  # rcl skips the due times it fell behind on
            self.missed += max(0, round((expected_ns - self.prev_expected_ns) / self.period_ns) - 1)
        self.prev_expected_ns = expected_ns
        if actual_ns - expected_ns > self.period_ns:
            self.missed += 1


class SimClock:
    """The sim's stamps: unique and increasing; in lockstep, simulation time on the wall clock.

    Realtime: the clock now. Lockstep: the k-th observation of an episode is stamped with the
    episode's start plus k control periods (the instant it stands for), but never later than now
    (a run faster than real time stamps the clock: no stamp is ever in the future) and never more
    than one period earlier (a run slower than real time moves its schedule on: stamps stay fresh
    for the policy nodes). A paced lockstep run (the teleop) so gets stamps exactly on its schedule
    while each step is less than a period late, which a loaded machine does not change.
    """

    def __init__(self, lockstep: bool, period_s: float) -> None:
        self.lockstep, self.period_ns = lockstep, round(period_s * 1e9)
        self.last = 0
        self.origin: int | None = None

    def start_episode(self) -> None:
        """The next `step` stamp is the new episode's origin."""
        self.origin = None

    def now(self, now_ns: int) -> int:
        """A stamp of now (the goal, realtime states)."""
        self.last = max(now_ns, self.last + 1)
        return self.last

    def step(self, now_ns: int, step: int) -> int:
        """The stamp of the episode's `step`-th state."""
        if not self.lockstep:
            return self.now(now_ns)
        if self.origin is None:
            self.origin = max(now_ns, self.last + 1)
        behind = now_ns - (self.origin + step * self.period_ns)
        if behind > self.period_ns:
            self.origin += behind
        return self.now(min(now_ns, self.origin + step * self.period_ns))


class SimRun:
    """The episode queue, the command decisions and the counters of one sim run.

    `mode` lockstep: a valid command steps the env when it answers the latest observation (or is
    unstamped). realtime: the latest command answering this episode is kept, and each tick steps
    with it while it is fresher than `command_timeout_s`, else with the zero action.
    """

    def __init__(self, mode: str, tasks: tuple[int, ...], episodes_per_task: int, command_timeout_s: float,
                 period_s: float) -> None:
        self.mode, self.lockstep = mode, mode == "lockstep"
        self.jobs = deque((t, ep) for t in tasks for ep in range(episodes_per_task))
        self.n_episodes = len(self.jobs)
        self.command_timeout_ns = command_timeout_s * 1e9
        self.deadlines = DeadlineCounter(period_s)
        self.period_s = period_s
        self.recorder = Recorder()
        self.steps = self.ignored = self.rejected = self.after_episode = 0
        self.goals: list[dict[str, Any]] = []  # goal_output action: each episode's goal outcome and estimate
        self.obs_stamp = 0  # the latest observation (lockstep: the one awaiting its command)
        self.episode_stamp = 0  # the current episode's first observation
        self.terminal_stamp: int | None = None  # the last finished episode's last published state
        self.latest: Command | None = None  # realtime: the latest accepted command
        self.in_episode = False
        self.done = False

    # --- episodes
    def next_job(self) -> tuple[int, int] | None:
        """(task_id, episode) of the next episode; None (and `done`) after the last one."""
        self.latest = None
        if not self.jobs:
            self.in_episode, self.done = False, True
            return None
        self.in_episode = True
        return self.jobs.popleft()

    def observed(self, stamp: int, first_of_episode: bool = False) -> None:
        self.obs_stamp = stamp
        if first_of_episode:
            self.episode_stamp = stamp

    def finished(self, goal: np.ndarray, record: EpisodeRecord) -> None:
        self.in_episode = False
        self.terminal_stamp = self.obs_stamp  # the last state published
        self.recorder.episode(goal, record)

    # --- commands
    def reject(self) -> None:
        self.rejected += 1

    def accept(self, action: np.ndarray, stamp: int | None, now_ns: int) -> Command | None:
        """A valid command (`stamp`: the observation it answers, None when unstamped). Lockstep: the
        command to step with now, or None (ignored). Realtime: None; `latest` is updated."""
        if stamp is not None and stamp == self.terminal_stamp:
            self.after_episode += 1  # answers a finished episode's last state (goal_output action)
            return None
        if not self.in_episode:
            self.ignored += 1
            return None
        latency = math.nan if stamp is None else (now_ns - stamp) * 1e-9
        if self.lockstep:
            if stamp is not None and stamp != self.obs_stamp:
                self.ignored += 1
                return None
            return Command(action, now_ns, latency)
        if stamp is not None and stamp < self.episode_stamp:
            self.ignored += 1  # answers an observation of an earlier episode
        else:
            self.latest = Command(action, now_ns, latency)
        return None

    def tick(self, expected_ns: int, actual_ns: int, now_ns: int, act_dim: int) -> Command | None:
        """Realtime timer: the command to step with (zero action when none is fresh), None between episodes."""
        self.deadlines.tick(expected_ns, actual_ns)
        if not self.in_episode:
            return None
        cmd = self.latest
        if cmd is None or now_ns - cmd.received_ns > self.command_timeout_ns:
            return Command(np.zeros(act_dim), now_ns, math.nan)
        return cmd

    def stepped(self, observation: np.ndarray, action: np.ndarray, now_ns: int, latency_s: float) -> None:
        self.recorder.step(observation, action, now_ns, latency_s)
        self.steps += 1

    # --- results
    def per_task_success(self) -> dict[int, float]:
        return per_task_success([(r.task_id, r.success) for r in self.recorder.records])

    def report(self, env_name: str, wall_s: float) -> dict[str, Any]:
        """The run summary as data: written to `report_file`, read by nfhiql-bringup."""
        per_task = self.per_task_success()
        lat = self.recorder.latency_ms()
        pct = lambda q: finite_or_none(float(np.percentile(lat, q))) if lat.size else None  # noqa: E731
        return {
            "node": NODE, "mode": self.mode, "env": env_name, "done": self.done,
            "episodes_expected": self.n_episodes,
            "episodes": [dataclasses.asdict(r) for r in self.recorder.records],
            "per_task_success": {str(t): s for t, s in per_task.items()},
            "mean_success": mean_success(per_task),
            "steps": self.steps, "wall_s": round(wall_s, 3),
            "ignored_commands": self.ignored, "rejected_commands": self.rejected,
            "after_episode_commands": self.after_episode, "goals": self.goals,
            "missed_deadlines": None if self.lockstep else self.deadlines.missed,
            "period_s": None if self.lockstep else self.period_s,
            "latency_ms_p50": pct(50), "latency_ms_p99": pct(99),
        }


def summary_line(report: dict[str, Any]) -> str:
    """One log line from `SimRun.report`: successes, steps, command counts, latency, missed deadlines."""
    per_task = report["per_task_success"]
    mean = report["mean_success"]
    parts = [
        f"{len(report['episodes'])}/{report['episodes_expected']} episodes, success "
        + (f"{mean:.3f} (" if mean is not None else "- (")
        + ", ".join(f"task {t}: {s:.2f}" for t, s in per_task.items()) + ")",
        f"{report['steps']} steps in {report['wall_s']:.2f} s ({report['mode']})",
        f"commands ignored {report['ignored_commands']}, rejected {report['rejected_commands']}",
    ]
    if report["latency_ms_p50"] is not None:
        parts.append(f"latency p50 {report['latency_ms_p50']:.2f} ms, p99 {report['latency_ms_p99']:.2f} ms")
    if report["missed_deadlines"] is not None:
        parts.append(f"missed deadlines {report['missed_deadlines']} (period {report['period_s']:g} s)")
    return "; ".join(parts)


class RobotCommands:
    """Robot mode: the twist and the gripper speed that make one env action.

    Lockstep: a step needs the twist and, for an arm, the gripper command answering the latest
    observation (both stamped with it; they arrive in either order). Realtime: each twist goes out
    with the latest gripper speed.
    """

    def __init__(self, lockstep: bool, needs_gripper: bool) -> None:
        self.lockstep, self.needs_gripper = lockstep, needs_gripper
        self.gripper, self.gripper_stamp = 0.0, -1
        self.twist: tuple[np.ndarray, int] | None = None  # lockstep: waiting for its gripper command

    def on_twist(self, twist: np.ndarray, stamp: int) -> tuple[np.ndarray, float, int] | None:
        """(twist, gripper speed, stamp) to step with, or None (waiting for the gripper command)."""
        self.twist = (twist, stamp)
        return self._ready()

    def on_gripper(self, speed: float, stamp: int) -> tuple[np.ndarray, float, int] | None:
        self.gripper, self.gripper_stamp = speed, stamp
        return self._ready() if self.lockstep else None

    def _ready(self) -> tuple[np.ndarray, float, int] | None:
        if self.twist is None:
            return None
        twist, stamp = self.twist
        if self.lockstep and self.needs_gripper and self.gripper_stamp != stamp:
            return None
        self.twist = None
        return twist, self.gripper, stamp


class Tracker:
    """Realtime robot mode: the object tracker's rate, latency, noise and dropouts.

    `measure(step, pose)` says whether the state of env step `step` yields a tracker message, and
    with which pose (position noise, Gaussian, `noise_m` per axis) and delay (`latency_s`).
    Lockstep always publishes every state exactly (the observation must be the env's).
    """

    def __init__(self, lockstep: bool, period_s: float, rate_hz: float, latency_s: float, noise_m: float,
                 dropout: float, seed: int) -> None:
        self.exact = lockstep
        self.every = max(1, round(1.0 / (rate_hz * period_s))) if rate_hz > 0 else 1
        self.latency_s, self.noise_m, self.dropout = latency_s, noise_m, dropout
        self.rng = np.random.default_rng(seed)
        self.sent = self.dropped = 0

    def measure(self, step: int, pose: np.ndarray) -> tuple[np.ndarray, float] | None:
        if self.exact:
            return pose, 0.0
        if step % self.every:
            return None
        if self.dropout and self.rng.random() < self.dropout:
            self.dropped += 1
            return None
        pose = pose.copy()
        if self.noise_m:
            pose[:3] += self.rng.normal(0.0, self.noise_m, 3)
        self.sent += 1
        return pose, self.latency_s
