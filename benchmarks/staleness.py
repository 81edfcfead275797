"""Time from the last observation (or the planner's death) to the first safe command, over DDS.

Starts `subgoal_planner` and `flow_controller` (timer trigger) on the shipped cube bundle at its
20 Hz control rate, plays a sim here that streams observations at 20 Hz for 1 s and then stops,
STOPS times (each time at a random phase against the controller's timer); then kills the planner
KILLS times while observations go on. Prints median, p99 and max of (first safe command − last
observation published) and (first safe command − planner killed), in control periods (50 ms).

    python benchmarks/staleness.py [STOPS] [KILLS]

STALENESS_BUNDLE: another bundle; STALENESS_NODE_ARGS: more `-p name:=value` for both nodes;
STALENESS_VERBOSE=1: every figure. Run it from the checkout whose code is measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from nfhiql_ros.ros_io import COMMAND_QOS, LATCHED_QOS, STATE_QOS, vector_msg

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = Path(os.environ.get("STALENESS_BUNDLE", ROOT / "bundles" / "cube-single-play"))
PERIOD = 0.05


def main(stops: int = 20, kills: int = 5) -> None:
    domain = int(os.environ.get("ROS_DOMAIN_ID", "120"))
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    args = ["--ros-args", "-r", "__ns:=/stale", "-p", f"bundle:={BUNDLE}", "-p", "providers:=[CPUExecutionProvider]",
            "-p", "trigger:=timer", "-p", "replan_every:=1", *os.environ.get("STALENESS_NODE_ARGS", "").split()]

    def start(node: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", f"nfhiql_ros.{node}", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    planner, controller = start("subgoal_planner"), start("flow_controller")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("stale_sim", namespace="/stale", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    commands: list[tuple[float, bool]] = []  # (receipt, is zero)
    node.create_subscription(JointState, "command", lambda m: commands.append(
        (time.monotonic(), not any(m.position))), COMMAND_QOS)
    obs_pub = node.create_publisher(JointState, "observation", STATE_QOS)
    goal_pub = node.create_publisher(JointState, "goal", LATCHED_QOS)
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.1, 28)

    def spin(seconds: float, publishing: bool) -> float:
        end, next_pub, last = time.monotonic() + seconds, time.monotonic(), 0.0
        while time.monotonic() < end:
            if publishing and time.monotonic() >= next_pub:
                obs_pub.publish(vector_msg(obs, [], node.get_clock().now().nanoseconds))
                last, next_pub = time.monotonic(), next_pub + PERIOD
            executor.spin_once(timeout_sec=0.001)
        return last

    while obs_pub.get_subscription_count() < 2:
        executor.spin_once(timeout_sec=0.05)
    goal_pub.publish(vector_msg(obs, [], node.get_clock().now().nanoseconds))
    spin(3.0, True)  # start-up
    after_stop = []
    for _ in range(stops):
        last = spin(1.0, True)
        n = len(commands)
        spin(0.5 + rng.uniform(0, PERIOD), False)  # a new phase of the stream against the control timer
        first_safe = next((t for t, zero in commands[n:] if zero and t > last), None)
        after_stop.append(np.nan if first_safe is None else (first_safe - last) / PERIOD)
    after_kill = []
    for _ in range(kills):
        spin(1.5, True)
        planner.kill()
        killed = time.monotonic()
        n = len(commands)
        spin(1.0, True)
        first_safe = next((t for t, zero in commands[n:] if zero and t > killed), None)
        after_kill.append(np.nan if first_safe is None else (first_safe - killed) / PERIOD)
        planner.wait()
        planner = start("subgoal_planner")
        spin(3.0, True)
    for proc in (planner, controller):
        proc.terminate()
        proc.wait(timeout=10)
    rclpy.shutdown(context=context)
    if os.environ.get("STALENESS_VERBOSE"):
        print("stops:", np.round(after_stop, 2).tolist(), "kills:", np.round(after_kill, 2).tolist())
    for label, values in (("observations stop", after_stop), ("planner killed", after_kill)):
        v = np.asarray(values)
        print(f"{label}: first safe command after {np.nanmedian(v):.2f} (median) / {np.nanpercentile(v, 99):.2f} "
              f"(p99) / {np.nanmax(v):.2f} (max) control periods over {len(v)} ({np.isnan(v).sum()} never), "
              f"{(v > 2).sum()} over 2 periods")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
