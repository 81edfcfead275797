"""mujoco_sim over real DDS: the sim runs in a subprocess, a scripted controller in this process.

Each test uses its own ROS_DOMAIN_ID with discovery limited to localhost, puts a hard timeout on
every wait and kills its subprocesses in a fixture finalizer.
"""
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from nfhiql_core.errors import ConfigError  # noqa: E402
from nfhiql_core.evaluation.episodes import make_env  # noqa: E402
from nfhiql_core.evaluation.protocol import evaluate  # noqa: E402
from nfhiql_core.evaluation.robot_model import RobotModel  # noqa: E402
from nfhiql_ros import ros_io  # noqa: E402
from nfhiql_ros.contract import SUMMARY_STATUS, SimParams  # noqa: E402
from nfhiql_ros.mujoco_sim import STATUS_QOS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAZE = "pointmaze-medium-navigate-v0"
TASKS = [1, 3]
MAX_STEPS = 150  # go-to-goal: task 1 succeeds after ~125 steps, task 3 (behind a wall) hits the cap
SEED = 3
_index = itertools.count()


def go_to_goal(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Row-wise scripted policy on float32 inputs (what `evaluate` passes a policy)."""
    return np.clip(goal[..., :2] - obs[..., :2], -1.0, 1.0)


@pytest.fixture
def domain(monkeypatch) -> int:
    """A ROS domain of this test alone; discovery stays on this machine."""
    domain_id = 1 + (os.getpid() * 7 + next(_index)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain_id


@pytest.fixture
def sims(tmp_path):
    """Start mujoco_sim subprocesses: sims(**params) -> (Popen, stderr path). Killed at teardown."""
    procs = []

    def start(**params):
        args = [sys.executable, "-m", "nfhiql_ros.mujoco_sim", "--ros-args"]
        for k, v in params.items():
            value = str(v).lower() if isinstance(v, bool) else str(list(v) if isinstance(v, tuple) else v)
            args += ["-p", f"{k}:={value}"]
        err = tmp_path / f"sim{len(procs)}.stderr"
        with open(err, "wb") as f:
            proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=f,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(proc)
        return proc, err

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class Controller:
    """A test-side node playing the controller: answers each observation with a stamped command."""

    def __init__(self, domain_id: int, policy=go_to_goal, junk: bool = False, answer_first: int | None = None,
                 forward: bool = False):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("test_controller", context=self.ctx)
        self.policy, self.junk, self.answer_first, self.forward = policy, junk, answer_first, forward
        self.goals: list[tuple[int, np.ndarray]] = []
        self.statuses: list[DiagnosticStatus] = []
        self.joint_names: list[str] = []
        self.answered = 0
        self.answer_times_ns: list[int] = []  # ROS (system) clock, the clock the sim stamps its steps with
        self.prev_stamp = 0
        # The goal subscription first: when goal and observation are both ready, rclpy takes them in
        # creation order, and the sim publishes an episode's goal before its first observation.
        self.node.create_subscription(JointState, "goal", self._on_goal, ros_io.LATCHED_QOS)
        self.node.create_subscription(JointState, "observation", self._on_obs, ros_io.SENSOR_QOS)
        self.node.create_subscription(JointState, "joint_states", self._on_joints, ros_io.SENSOR_QOS)
        self.node.create_subscription(DiagnosticStatus, "sim/episode", self.statuses.append, STATUS_QOS)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.cmd = self.node.create_publisher(JointState, "command", qos)
        self.fwd = self.node.create_publisher(Float64MultiArray, "forward_command", qos)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _on_goal(self, msg: JointState) -> None:
        self.goals.append((ros_io.stamp_to_ns(msg.header.stamp), np.asarray(msg.position)))

    def _on_joints(self, msg: JointState) -> None:
        self.joint_names = list(msg.name)

    def _command(self, values, stamp: int) -> None:
        self.cmd.publish(ros_io.vector_msg(np.asarray(values, dtype=np.float64), ["a0", "a1"][: len(values)], stamp))

    def _on_obs(self, msg: JointState) -> None:
        obs = np.asarray(msg.position)
        stamp = ros_io.stamp_to_ns(msg.header.stamp)
        goals = [g for s, g in self.goals if s < stamp]  # the latest goal published before it
        if not goals or (self.answer_first is not None and self.answered >= self.answer_first):
            return
        goal = goals[-1]
        action = self.policy(obs.astype(np.float32), goal.astype(np.float32))
        if self.junk:  # all of these must be rejected or ignored
            self.fwd.publish(Float64MultiArray(data=[0.5, 0.5, 0.5]))  # wrong length
            self.fwd.publish(Float64MultiArray(data=[math.nan, 0.0]))  # non-finite
            self._command([0.9, 0.9, 0.9], stamp)  # wrong length
            self._command([math.inf, 0.0], stamp)  # non-finite
            self._command([0.9, -0.9], 0)  # unstamped
            self._command([0.9, -0.9], self.prev_stamp or stamp - 1)  # answers an older observation
        if self.forward:  # ros2_control format: unstamped, counts as the answer to the latest observation
            self.fwd.publish(Float64MultiArray(data=[float(a) for a in action]))
        else:
            self._command(action, stamp)
        if self.junk:
            self._command([-0.9, 0.9], stamp)  # a second answer: by now a newer observation exists
        self.prev_stamp = stamp
        self.answered += 1
        self.answer_times_ns.append(self.node.get_clock().now().nanoseconds)

    def summary(self) -> DiagnosticStatus | None:
        return next((s for s in self.statuses if s.name == SUMMARY_STATUS), None)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.ctx.try_shutdown()


def reference_run():
    """evaluate() in-process with the same policy, seed, tasks and step cap, logging the trajectory."""
    log_obs, log_act = [], []

    def policy(obs, goals):
        actions = go_to_goal(obs, goals)
        log_obs.append(obs[0].copy())
        log_act.append(np.clip(actions[0], -1.0, 1.0).astype(np.float32))
        return actions

    result = evaluate(policy, MAZE, episodes_per_task=1, seed=SEED, task_ids=TASKS, max_steps=MAX_STEPS,
                      progress=False)
    return result, np.stack(log_obs), np.stack(log_act)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def run_lockstep(domain_id, sims, tmp_path, junk: bool = False, forward: bool = False):
    record, report = tmp_path / "run.npz", tmp_path / "sim.json"
    proc, err = sims(env=MAZE, mode="lockstep", seed=SEED, tasks=tuple(TASKS), max_episode_steps=MAX_STEPS,
                     start_delay_s=0.2, record_path=str(record), report_file=str(report))
    ctl = Controller(domain_id, junk=junk, forward=forward)
    try:
        assert ctl.spin_until(lambda: ctl.summary() is not None, timeout=40), err.read_text()
        rc = proc.wait(timeout=10)
    finally:
        ctl.close()
    assert rc == 0, err.read_text()
    rec = np.load(record)
    assert_report_matches_record(json.loads(report.read_text()), rec)
    return ctl, rec, err.read_text()


def assert_report_matches_record(report: dict, rec) -> None:
    """The sim's report_file: the run summary as data, agreeing with its trajectory record."""
    assert report["node"] == "mujoco_sim" and report["mode"] == "lockstep" and report["done"] is True
    assert [(e["task_id"], e["episode"], e["env_seed"], e["success"], e["length"]) for e in report["episodes"]] == [
        (int(t), int(e), int(s), bool(ok), int(n)) for t, e, s, ok, n in zip(
            rec["task_ids"], rec["episodes"], rec["env_seeds"], rec["successes"], rec["lengths"])]
    assert report["steps"] == len(rec["actions"]) and report["mean_success"] == pytest.approx(rec["successes"].mean())
    latency = rec["command_latency_s"][np.isfinite(rec["command_latency_s"])] * 1e3
    assert report["latency_ms_p50"] == (pytest.approx(np.percentile(latency, 50)) if latency.size else None)


def assert_matches_evaluate(rec) -> None:
    result, ref_obs, ref_act = reference_run()
    assert [(e.task_id, e.episode, e.env_seed, e.success, e.length) for e in result.episodes] == list(zip(
        rec["task_ids"], rec["episodes"], rec["env_seeds"], rec["successes"], rec["lengths"]))
    assert {e.success for e in result.episodes} == {True, False}  # both outcomes exercised
    np.testing.assert_array_equal(rec["observations"].astype(np.float32), ref_obs)
    np.testing.assert_array_equal(rec["actions"], ref_act)
    assert rec["episode_offsets"].tolist() == [0, *np.cumsum([e.length for e in result.episodes])]


@pytest.mark.parametrize("forward", [False, True], ids=["command", "forward_command"])
def test_lockstep_equals_evaluate(domain, sims, tmp_path, forward) -> None:
    t0 = time.monotonic()
    ctl, rec, err = run_lockstep(domain, sims, tmp_path, forward=forward)
    assert_matches_evaluate(rec)
    episodes = [s for s in ctl.statuses if s.name == "mujoco_sim/episode"]
    assert [(values(s)["task_id"], s.message, values(s)["length"]) for s in episodes] == [
        (str(t), "success" if ok else "failure", str(n))
        for t, ok, n in zip(rec["task_ids"], rec["successes"], rec["lengths"])]
    summary = values(ctl.summary())
    assert float(summary["success"]) == pytest.approx(np.mean(rec["successes"]))
    assert summary["ignored_commands"] == summary["rejected_commands"] == "0"
    assert len(ctl.goals) == len(TASKS) and ctl.joint_names == ["ballx", "bally"]
    latency = rec["command_latency_s"]  # NaN for unstamped (forward_command) steps
    assert (np.isnan(latency) if forward else np.isfinite(latency)).all() and "Traceback" not in err
    print(f"lockstep via {'forward_command' if forward else 'command'}: {int(summary['steps'])} steps, "
          f"{time.monotonic() - t0:.1f} s incl. start-up; latency p50 {np.median(latency) * 1e3:.2f} ms")


def test_lockstep_never_applies_bad_or_stale_commands(domain, sims, tmp_path) -> None:
    ctl, rec, err = run_lockstep(domain, sims, tmp_path, junk=True)
    assert_matches_evaluate(rec)  # the same trajectory as without the junk
    summary = values(ctl.summary())
    steps = int(summary["steps"])
    # Per observation: 3 invalid `command`s (same topic as the valid one, so all arrive first) and
    # 2 invalid `forward_command`s; 1 stale command before the valid one and 1 after it.
    assert int(summary["rejected_commands"]) >= 3 * steps
    assert int(summary["ignored_commands"]) >= steps
    assert "command rejected" in err and "Traceback" not in err
    print(f"junk: {steps} steps, rejected {summary['rejected_commands']}, ignored {summary['ignored_commands']}")


def test_realtime_runs_on_the_wall_clock(domain, sims, tmp_path) -> None:
    period, steps, timeout = 0.02, 150, 0.2
    record = tmp_path / "rt.npz"
    proc, err = sims(env=MAZE, mode="realtime", control_period_s=period, tasks=(1,), max_episode_steps=steps,
                     start_delay_s=1.0, command_timeout_s=timeout, record_path=str(record))
    # Answer the first 20 observations with a constant command, then fall silent.
    ctl = Controller(domain, policy=lambda obs, goal: np.array([0.25, -0.25]), answer_first=20)
    try:
        ctl.spin_until(lambda: proc.poll() is not None, timeout=30)
        rc = proc.wait(timeout=5)
    finally:
        ctl.close()
    log = err.read_text()
    assert rc == 0, log
    rec = np.load(record)
    assert rec["lengths"].tolist() == [steps]
    t = rec["step_times_ns"] * 1e-9
    achieved = (len(t) - 1) * period / (t[-1] - t[0])  # steps done / steps due in that time
    missed = int(re.search(r"missed deadlines (\d+)", log).group(1))
    print(f"realtime {1 / period:.0f} Hz: {len(t)} steps in {t[-1] - t[0]:.3f} s = {achieved:.1%} of nominal, "
          f"{missed} missed deadlines, max gap {np.diff(t).max() * 1e3:.1f} ms")
    assert 0.8 <= achieved <= 1.05
    commanded = np.all(rec["actions"] == np.float32([0.25, -0.25]), axis=1)
    zero = np.all(rec["actions"] == 0, axis=1)
    assert (commanded | zero).all() and commanded.any()
    # Once the last command has timed out the sim steps with zero actions. Under load discovery can
    # delay the controller's 20 answers, so "after" is measured from the last answer's send time.
    timed_out = rec["step_times_ns"] > ctl.answer_times_ns[-1] + (timeout + 2 * period) * 1e9
    assert timed_out.sum() >= 10 and zero[timed_out].all()
    assert np.isfinite(rec["command_latency_s"][commanded]).all()


@pytest.mark.parametrize("signum, mode", [(signal.SIGINT, "realtime"), (signal.SIGTERM, "lockstep")])
def test_signal_exits_cleanly(domain, sims, tmp_path, signum, mode) -> None:
    record = tmp_path / "partial.npz"
    proc, err = sims(env=MAZE, mode=mode, control_period_s=0.01, start_delay_s=0.0, record_path=str(record))
    ready = "waiting for a controller" if mode == "lockstep" else "env step"
    deadline = time.monotonic() + 20
    while ready not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready in err.read_text(), err.read_text()
    time.sleep(0.3)  # realtime: stepping by now
    t0 = time.monotonic()
    proc.send_signal(signum)
    rc = proc.wait(timeout=5)
    log = err.read_text()
    print(f"{signal.Signals(signum).name} in {mode}: exit {rc} after {time.monotonic() - t0:.2f} s")
    assert rc in (0, -signum), log
    assert "Traceback" not in log and "stopped:" in log
    assert np.load(record)["actions"].shape[1] == 2  # the record is still written


def test_scenario_files_are_parameter_files_for_the_sim() -> None:
    fields = {f for f in SimParams.__dataclass_fields__}
    for name in ("cube-single", "pointmaze-medium"):
        blocks = yaml.safe_load((REPO / "sim" / f"{name}.yaml").read_text())
        params = blocks["/**/mujoco_sim"]["ros__parameters"]
        assert set(params) <= fields
        SimParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    cube = make_env("cube-single-play-v0")
    names = RobotModel(cube).joints.names
    assert names[:2] == ["shoulder_pan_joint", "shoulder_lift_joint"] and len(names) == 14  # no free joint
    with pytest.raises(ConfigError, match="mode"):
        SimParams(mode="fast")
    with pytest.raises(ConfigError, match="tasks"):
        SimParams(tasks=())
