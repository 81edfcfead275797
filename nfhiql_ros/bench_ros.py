"""`nfhiql bench ros`: the real `flow_controller` (timer trigger) against a synthetic fast sim.

For each rate the controller runs as its own process (`python -m nfhiql_ros.flow_controller
--ros-args --params-file ...`: trigger timer, control_period_s = 1/rate, command_output sim, the
chosen executor, default staleness timeouts) on an isolated ROS_DOMAIN_ID with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST. This process runs the synthetic sim node:
  * `goal` (latched, once), stamped `observation`s from a timer at obs_factor × the control rate
    (each stamped with the node clock at publication; the values never change);
  * a planner stand-in: the bundle's own subgoal for that fixed observation and goal, computed once
    here with the policy runtime and republished every replan_every control periods, stamped with
    the latest observation (as the real planner does);
  * it records every `command`: latency = receive time − the stamp of the observation it answers
    (both on this process's clock).
After a warm-up (policy commands flowing), commands are counted over `--seconds`: achieved rate =
commands / seconds, % of ticks = commands / (seconds × rate). Safe commands are the commands equal
to the zero command (the controller's default `safe_command: zero`; a flow's action is never
exactly zero). The controller is always stopped (SIGINT, SIGKILL after the supervisor's grace period).
With `--interface` (a bundle with a robot interface, e.g. bundles/cube-single-play) the synthetic sim
publishes the robot model's messages of one env state on the robot's own topics instead, and the
commands counted are the spec's first command topic (a Servo twist): each tick is then assemble +
act + publish. First, `--interface-bundle`'s per-tick cost in-process (`nfhiql bench assembly`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from nfhiql_ros.contract import (
    DIAGNOSTICS_TOPIC,
    EXECUTORS,
    GOAL_TOPIC,
    OBSERVATION_TOPIC,
    SIM_COMMAND_TOPIC,
    SUBGOAL_TOPIC,
)

DEFAULT_BUNDLE = "bundles/pointmaze-medium-navigate"
STARTUP_TIMEOUT_S = 60.0
WARMUP_S = 0.5  # of policy commands before the measurement window


def register(bench_subparsers) -> None:
    """Entry point of group `nfhiql.bench`: adds `nfhiql bench ros`."""
    b = bench_subparsers.add_parser("ros", help="flow_controller rate, obs→command latency and missed ticks "
                                                "against a synthetic fast sim (ROS 2)")
    add_arguments(b)
    b.set_defaults(func=run)


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--bundle", default=DEFAULT_BUNDLE)
    b.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0, 500.0], help="controller rates (Hz)")
    b.add_argument("--seconds", type=float, default=5.0, help="measurement window per rate")
    b.add_argument("--executor", choices=EXECUTORS, default=EXECUTORS[0],
                   help="executor of the controller and of the synthetic sim")
    b.add_argument("--obs-factor", type=float, default=2.0, help="observation rate / control rate")
    b.add_argument("--interface", action="store_true",
                   help="run the controller on the robot's own topics (the bundle's robot interface): the synthetic "
                        "sim publishes the robot model's messages, the controller assembles and sends the spec's "
                        "commands (the whole tick: assemble + act + publish)")
    b.add_argument("--interface-bundle", default="bundles/cube-single-play",
                   help="a bundle with a robot interface: per-tick cost of assembling its observation from the "
                        "robot's topics (in-process, printed first); '' = skip")
    b.add_argument("--domain-id", type=int, default=None, help="default: derived from the process id")
    b.add_argument("--verbose", action="store_true", help="echo the controller's log")


class SyntheticSim:
    """Goal, observations, subgoals out; commands in (one rclpy node in this process)."""

    def __init__(self, context, executor_name: str, rate: float, obs_factor: float, meta, obs, goal, subgoal,
                 replan_every: int, robot: dict | None = None):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState

        from nfhiql_ros.executors import make_executor
        from nfhiql_ros.ros_io import COMMAND_QOS, LATCHED_QOS, STATE_QOS, stamp_to_ns, vector_msg, vector_names

        self._vector_msg, self._stamp_to_ns = vector_msg, stamp_to_ns
        self.node = Node(f"bench_sim_{int(rate)}", context=context)  # one name per rate (rosout)
        self.executor = make_executor(executor_name, context)
        self.executor.add_node(self.node)
        self.obs, self.obs_names = obs, list(meta.observation_names)
        self.subgoal, self.subgoal_names = subgoal, vector_names("subgoal", len(subgoal))
        self.robot = robot  # topic → message (robot interface), else the `observation` vector
        if robot is None:
            self.obs_pub = self.node.create_publisher(JointState, OBSERVATION_TOPIC, STATE_QOS)
        else:
            from nfhiql_ros.robot_io import MESSAGE_CLASSES, command_topics

            self.robot_pubs = {t: self.node.create_publisher(type(m), t, STATE_QOS) for t, m in robot.items()}
            spec = meta.interface_spec()
            for i, (topic, kind) in enumerate(command_topics(spec).items()):  # the first carries the commands
                callback = self.on_robot_command if i == 0 else (lambda msg: None)
                self.node.create_subscription(MESSAGE_CLASSES[kind], topic, callback, COMMAND_QOS)
        self.subgoal_pub = self.node.create_publisher(JointState, SUBGOAL_TOPIC, STATE_QOS)
        self.goal_pub = self.node.create_publisher(JointState, GOAL_TOPIC, LATCHED_QOS)
        self.commands: list[tuple[int, int, bool]] = []  # (receive ns, stamp ns, safe)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(JointState, SIM_COMMAND_TOPIC, self.on_command, COMMAND_QOS)
        self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self.on_diagnostics, QoSProfile(depth=10))
        self.goal_pub.publish(vector_msg(goal, list(meta.goal_names), self.now()))
        self.subgoal_every = max(1, round(replan_every * obs_factor))
        self.count = 0
        self.node.create_timer(1.0 / (rate * obs_factor), self.on_obs_timer)

    def now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def on_obs_timer(self) -> None:
        stamp = self.now()
        if self.count % self.subgoal_every == 0:  # the planner plans from this observation
            self.subgoal_pub.publish(self._vector_msg(self.subgoal, self.subgoal_names, stamp))
        if self.robot is None:
            self.obs_pub.publish(self._vector_msg(self.obs, self.obs_names, stamp))
        else:
            for topic, msg in self.robot.items():
                if hasattr(msg, "header"):
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                self.robot_pubs[topic].publish(msg)
        self.count += 1

    def on_robot_command(self, msg) -> None:
        t = msg.twist if hasattr(msg, "twist") else None
        values = ([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z] if t is not None
                  else list(getattr(msg, "data", [])))
        self.commands.append((self.now(), self._stamp_to_ns(msg.header.stamp) if hasattr(msg, "header") else 0,
                              not any(values)))

    def on_command(self, msg) -> None:
        now = self.now()
        safe = not any(msg.position)
        self.commands.append((now, self._stamp_to_ns(msg.header.stamp), safe))

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if "flow_controller" in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def _robot_messages(meta) -> tuple[dict, np.ndarray]:
    """The robot model's messages of one env state (rclpy classes) and that state's observation."""
    from nfhiql_core.evaluation.episodes import make_env
    from nfhiql_core.evaluation.robot_model import RobotModel, fill_messages
    from nfhiql_ros.robot_io import MESSAGE_CLASSES

    env = make_env(meta.env)
    obs, _ = env.reset(seed=0, options=dict(task_id=1))
    model = RobotModel(env)
    messages = fill_messages(model.readings(), model.topics, 1, lambda t: MESSAGE_CLASSES[t]())
    env.close()
    return messages, np.asarray(obs, dtype=np.float64)


def _fixed_inputs(bundle: str, interface: bool = False):
    from nfhiql_core.deploy.runtime import PolicyRuntime

    runtime = PolicyRuntime(bundle, ["CPUExecutionProvider"])
    meta = runtime.metadata
    robot = None
    if interface:
        if meta.interface is None:
            raise SystemExit(f"nfhiql bench ros --interface: {bundle} carries no robot interface")
        robot, obs = _robot_messages(meta)
    else:
        obs = np.full(meta.obs_dim, 1.0)
    goal = np.full(meta.goal_dim, 5.0)
    subgoal = np.asarray(runtime.plan(obs.astype(np.float32), goal.astype(np.float32)).subgoal,
                         dtype=np.float64).reshape(-1)
    return meta, obs, goal, subgoal, robot


def bench_rate(rate: float, args, bundle: str, meta, obs, goal, subgoal, context, env, run_dir: Path,
               robot: dict | None = None) -> dict:
    from nfhiql_ros.bringup.supervisor import Supervisor

    replan = int(meta.subgoal_steps or 1)
    params = {"flow_controller": {"ros__parameters": {
        "bundle": bundle, "trigger": "timer", "control_period_s": 1.0 / rate, "command_output": "sim",
        "executor": args.executor, "providers": ["CPUExecutionProvider"], "replan_every": replan,
        **({"interface": "bundle"} if robot is not None else {})}}}
    params_file = run_dir / f"flow_controller-{rate:g}.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    supervisor = Supervisor(echo=args.verbose)
    sim = None
    try:
        child = supervisor.start("flow_controller", [sys.executable, "-m", "nfhiql_ros.flow_controller",
                                                     "--ros-args", "--params-file", str(params_file)], env)
        sim = SyntheticSim(context, args.executor, rate, args.obs_factor, meta, obs, goal, subgoal, replan, robot)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        first_policy = None
        while True:  # warm-up: until policy commands have flowed for WARMUP_S
            sim.spin_for(0.05)
            if child.proc.poll() is not None:
                raise RuntimeError("flow_controller exited during start-up:\n" + "\n".join(list(child.lines)[-20:]))
            if first_policy is None and any(not safe for _, _, safe in sim.commands[-5:]):
                first_policy = time.monotonic()
            if first_policy is not None and time.monotonic() - first_policy >= WARMUP_S:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no policy commands within {STARTUP_TIMEOUT_S:g} s:\n"
                                   + "\n".join(list(child.lines)[-20:]))
        t0 = sim.now()
        sim.spin_for(args.seconds)
        t1 = sim.now()
        window = [(r, s, safe) for r, s, safe in sim.commands if t0 <= r < t1]
        diagnostics = dict(sim.diagnostics)
    finally:
        if sim is not None:
            sim.close()
        supervisor.stop()
    seconds = (t1 - t0) / 1e9
    latencies = np.array([(r - s) / 1e6 for r, s, _ in window]) if window else np.array([math.nan])
    return {"rate_hz": rate, "achieved_hz": len(window) / seconds, "ticks_pct": 100.0 * len(window) / (seconds * rate),
            "latency_p50_ms": float(np.percentile(latencies, 50)),
            "latency_p99_ms": float(np.percentile(latencies, 99)),
            "latency_max_ms": float(np.max(latencies)), "safe_commands": sum(safe for _, _, safe in window),
            "commands": len(window), "seconds": seconds,
            "controller_overruns": diagnostics.get("overruns", "?"),
            "controller_safe_total": diagnostics.get("safe_commands", "?")}


def format_table(rows: list[dict]) -> str:
    header = (f"{'rate Hz':>8} {'achieved Hz':>11} {'% ticks':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
              f"{'safe cmds':>9}")
    lines = [header]
    for r in rows:
        lines.append(f"{r['rate_hz']:>8g} {r['achieved_hz']:>11.1f} {r['ticks_pct']:>8.2f} {r['latency_p50_ms']:>7.3f} "
                     f"{r['latency_p99_ms']:>7.3f} {r['latency_max_ms']:>7.3f} {r['safe_commands']:>9d}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    bundle = str(Path(args.bundle).resolve())
    if not (Path(bundle) / "bundle.json").is_file():
        raise SystemExit(f"nfhiql bench ros: no bundle at {bundle}")
    domain_id = args.domain_id if args.domain_id is not None else 20 + os.getpid() % 80
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="1", RCUTILS_COLORIZED_OUTPUT="0")
    if args.interface_bundle:
        print_assembly(args.interface_bundle)
    meta, obs, goal, subgoal, robot = _fixed_inputs(bundle, args.interface)
    print(f"nfhiql bench ros: bundle {bundle}, executor {args.executor}, {args.seconds:g} s per rate, observations "
          f"at {args.obs_factor:g}x the rate, ROS_DOMAIN_ID {domain_id}"
          + (", on the robot's topics (robot interface)" if robot is not None else ""), flush=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="nfhiql-bench-ros-") as tmp:
            for rate in args.rates:
                rows.append(bench_rate(rate, args, bundle, meta, obs, goal, subgoal, context, env, Path(tmp), robot))
                print(f"  {rate:g} Hz done (controller diagnostics: overruns {rows[-1]['controller_overruns']}, "
                      f"safe commands since start {rows[-1]['controller_safe_total']})", flush=True)
    finally:
        rclpy.try_shutdown(context=context)
    print(format_table(rows), flush=True)
    return rows


def print_assembly(bundle: str) -> None:
    """The robot interface's per-tick cost (`nfhiql bench assembly`), before the DDS runs."""
    from nfhiql_core.bench.assembly import bench_assembly, format_rows

    print(f"robot interface of {bundle} (in-process, 1 thread):", flush=True)
    print(format_rows(bench_assembly(bundle)), flush=True)
