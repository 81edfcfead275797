"""mujoco_sim's decisions and bookkeeping (`nfhiql_ros.sim_run`), in-process and rclpy-free."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np

from nfhiql_core.evaluation.episodes import EpisodeRecord
from nfhiql_ros.sim_run import DeadlineCounter, SimClock, SimRun, per_task_success, summary_line

A = np.array([0.5, -0.5])


def _run(mode: str = "lockstep", tasks=(1, 2), episodes=2) -> SimRun:
    return SimRun(mode, tasks, episodes, command_timeout_s=0.5, period_s=0.1)


def _play(run: SimRun, outcomes: list[bool]) -> None:
    for i, ok in enumerate(outcomes):
        task, ep = run.next_job()
        run.observed(100 + i, first_of_episode=True)
        run.stepped(np.zeros(2), A, 200 + i, 0.002 * (i + 1))
        run.finished(np.zeros(2), EpisodeRecord(task, ep, 7, ok, 1))
    assert run.next_job() is None


def test_episode_queue_runs_tasks_times_episodes_then_is_done() -> None:
    run = _run()
    assert [run.next_job() for _ in range(4)] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert run.in_episode and not run.done
    assert run.next_job() is None and run.done and not run.in_episode


def test_lockstep_steps_only_on_the_answer_to_the_latest_observation() -> None:
    run = _run()
    assert run.accept(A, 5, 10) is None and run.ignored == 1  # no episode yet
    run.next_job()
    run.observed(1_000, first_of_episode=True)
    assert run.accept(A, 999, 2_000) is None and run.ignored == 2  # an older observation
    cmd = run.accept(A, 1_000, 3_000)
    assert cmd is not None and cmd.latency_s == (3_000 - 1_000) * 1e-9
    unstamped = run.accept(A, None, 3_500)  # forward_command: answers the latest observation
    assert unstamped is not None and math.isnan(unstamped.latency_s)


def test_realtime_keeps_the_latest_fresh_command_and_falls_back_to_zero() -> None:
    run = _run("realtime")
    assert run.tick(0, 0, 0, 2) is None  # between episodes: no step
    run.next_job()
    run.observed(1_000, first_of_episode=True)
    assert run.accept(A, 500, 1_100) is None and run.latest is None and run.ignored == 1  # earlier episode
    run.accept(A, 1_000, 2_000)
    step = run.tick(100_000_000, 100_000_000, 2_000 + 400_000_000, 2)
    assert np.array_equal(step.action, A)
    stale = run.tick(200_000_000, 200_000_000, 2_000 + 600_000_000, 2)  # older than command_timeout_s
    assert np.array_equal(stale.action, np.zeros(2)) and math.isnan(stale.latency_s)
    run.next_job()
    assert run.latest is None  # a new episode forgets the old command


def test_deadline_counter_counts_skipped_and_late_ticks() -> None:
    d = DeadlineCounter(0.1)
    d.tick(0, 0)
    d.tick(100_000_000, 150_000_000)  # late, within a period
    d.tick(400_000_000, 400_000_000)  # two due times skipped
    d.tick(500_000_000, 650_000_000)  # served more than a period late
    assert d.missed == 3


def test_report_is_json_data_with_per_task_success_and_latency() -> None:
    run = _run(tasks=(3, 1), episodes=2)
    run.reject()
    _play(run, [True, False, True, True])
    r = json.loads(json.dumps(run.report("cube-single-play-v0", 2.5), allow_nan=False))  # no NaN in it
    assert r["node"] == "mujoco_sim" and r["mode"] == "lockstep" and r["done"] is True
    assert r["per_task_success"] == {"3": 0.5, "1": 1.0} and r["mean_success"] == 0.75
    assert [e["task_id"] for e in r["episodes"]] == [3, 3, 1, 1] and r["episodes"][1]["success"] is False
    assert r["steps"] == 4 and r["rejected_commands"] == 1 and r["missed_deadlines"] is None
    assert r["latency_ms_p50"] == np.percentile([2, 4, 6, 8], 50)
    line = summary_line(r)
    assert "4/4 episodes, success 0.750 (task 3: 0.50, task 1: 1.00)" in line and "latency p50 5.00 ms" in line


def test_report_without_steps_has_no_latency_and_no_mean() -> None:
    r = SimRun("realtime", (1,), 1, 0.5, 0.05).report("x", 0.0)
    assert r["latency_ms_p50"] is None and r["mean_success"] is None and r["missed_deadlines"] == 0
    assert "success - ()" in summary_line(r) and "missed deadlines 0 (period 0.05 s)" in summary_line(r)


def test_lockstep_stamps_are_the_schedule_however_late_each_step_is() -> None:
    """A paced lockstep run (the teleop) stamps every state on its schedule: a step served 0.9 periods
    late (a loaded machine) still gets the stamp of its tick, which is what bag2data's grid expects."""
    clock = SimClock(lockstep=True, period_s=0.05)
    goal = clock.now(1_000)
    clock.start_episode()
    origin = clock.step(2_000, 0)
    lateness = [0, 3, 45, 1, 30, 49]  # ms after each tick, all less than a period
    stamps = [clock.step(origin + k * 50_000_000 + ms * 1_000_000, k) for k, ms in enumerate(lateness)]
    assert goal < origin and stamps[0] == origin + 1  # unique: the origin was already stamped
    assert np.diff(stamps[1:]).tolist() == [50_000_000] * 4


def test_lockstep_faster_than_real_time_stamps_the_clock_never_the_future() -> None:
    clock = SimClock(lockstep=True, period_s=0.05)
    clock.start_episode()
    nows = [10_000_000 + k * 4_000_000 for k in range(6)]  # 250 Hz: far ahead of the 20 Hz schedule
    stamps = [clock.step(now, k) for k, now in enumerate(nows)]
    assert stamps == nows
    clock.start_episode()  # the next episode starts from its own first state, after every stamp
    assert clock.step(nows[-1], 0) == nows[-1] + 1


def test_lockstep_slower_than_real_time_moves_its_schedule_on() -> None:
    """A step served more than a period late (rendering, a stalled sim) re-anchors the schedule there,
    so no stamp lags the clock by more than a period (the policy nodes would call it stale)."""
    clock = SimClock(lockstep=True, period_s=0.05)
    clock.start_episode()
    origin = clock.step(0, 0)
    ms = 1_000_000
    assert clock.step(130 * ms, 1) == 130 * ms  # 80 ms behind its tick (50 ms): now, the new anchor
    assert clock.step(185 * ms, 2) == 180 * ms  # on the new schedule again, 5 ms late
    assert origin == 1  # the first stamp of a fresh clock


def test_realtime_stamps_are_the_clock_and_unique() -> None:
    clock = SimClock(lockstep=False, period_s=0.05)
    assert [clock.step(t, k) for k, t in enumerate([5, 9, 9, 7])] == [5, 9, 10, 11]


def test_per_task_success_keeps_first_seen_order() -> None:
    assert per_task_success([(2, True), (1, False), (2, False)]) == {2: 0.5, 1: 0.0}


def test_module_imports_neither_rclpy_nor_ogbench() -> None:
    code = "import sys, nfhiql_ros.sim_run; print(sorted({'rclpy', 'ogbench', 'mujoco'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_robot_commands_pair_twist_and_gripper_of_one_state_in_either_order() -> None:
    from nfhiql_ros.sim_run import RobotCommands

    commands = RobotCommands(lockstep=True, needs_gripper=True)
    twist = np.arange(6.0)
    assert commands.on_twist(twist, 10) is None  # waiting for the gripper command of state 10
    assert commands.on_gripper(0.5, 9) is None  # an old state's: not this one
    step = commands.on_gripper(0.7, 10)
    assert step is not None and step[1:] == (0.7, 10) and np.array_equal(step[0], twist)
    assert commands.on_gripper(-1.0, 11) is None  # gripper first this time
    step = commands.on_twist(-twist, 11)
    assert step is not None and step[1:] == (-1.0, 11)
    realtime = RobotCommands(lockstep=False, needs_gripper=True)
    assert realtime.on_gripper(0.3, 1) is None
    assert realtime.on_twist(twist, 5)[1] == 0.3  # the latest gripper speed, whatever its stamp


def test_tracker_rate_latency_noise_and_dropouts_are_seeded() -> None:
    from nfhiql_ros.sim_run import Tracker

    pose = np.array([0.4, 0.1, 0.02, 0.0, 0.0, 0.0, 1.0])
    exact = Tracker(lockstep=True, period_s=0.05, rate_hz=10, latency_s=0.05, noise_m=0.01, dropout=0.5, seed=0)
    assert all(np.array_equal(exact.measure(k, pose)[0], pose) for k in range(5))  # lockstep: every state, exact

    def run(seed: int) -> list:
        tracker = Tracker(lockstep=False, period_s=0.05, rate_hz=10, latency_s=0.05, noise_m=0.01, dropout=0.3,
                          seed=seed)
        return [tracker.measure(k, pose) for k in range(400)]

    first, again = run(1), run(1)
    sent = [m for m in first if m is not None]
    assert [m is None for m in first] == [m is None for m in again]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(sent, [m for m in again if m is not None]))
    assert all(first[k] is None for k in range(1, 400, 2))  # 10 Hz of a 20 Hz sim: every other state
    assert 0.6 * 200 < len(sent) < 0.8 * 200  # about 30 % of the 200 measurements dropped
    errors = np.array([m[0][:3] - pose[:3] for m in sent])
    assert 0.007 < errors.std() < 0.013 and all(m[1] == 0.05 for m in sent)
    assert all(np.array_equal(m[0][3:], pose[3:]) for m in sent)  # orientation untouched
