"""launch/*.launch.py run by the real launch system (`launch`, `launch_ros` from
../shared/vendor/ros2_launch, or $NFHIQL_ROS2_LAUNCH), as `ros2 launch nfhiql_ros <file>` would.

The package is installed the way colcon lays it out: an ament prefix with the package's resource-index
marker, `share/nfhiql_ros/{config,sim,launch}` and the node executables in `lib/nfhiql_ros/`. The
navigation stack runs the tiny test bundle for one short episode:

- by default the managed planner and controller are configured and activated by the launch file
  (launch_ros LifecycleNode + ChangeState), the episode runs, and the launch ends cleanly with the sim;
- with `activate:=false` both stay inactive (lifecycle `get_state` over DDS), nothing is commanded and
  the sim waits; an operator's `change_state` activate then runs the episode to the end.

Domains 226..229, localhost discovery, hard timeouts; the launch's process group is killed at the end.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from nfhiql_ros import stack  # noqa: E402
from nfhiql_ros.ros_io import COMMAND_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENDOR = Path(os.environ.get("NFHIQL_ROS2_LAUNCH", ROOT.parent / "shared" / "vendor" / "ros2_launch"))
DOMAINS = iter(random.Random(os.getpid()).sample(range(226, 230), 4))
EXECUTABLES = ("subgoal_planner", "flow_controller", "mujoco_sim")
RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

path, *arguments = sys.argv[1:]
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[a.split(":=", 1) for a in arguments])]))
sys.exit(service.run())
"""

pytestmark = pytest.mark.skipif(not (VENDOR / "python" / "launch_ros").is_dir(),
                                reason=f"the real launch_ros is not at {VENDOR} (set NFHIQL_ROS2_LAUNCH)")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """An ament install prefix for nfhiql_ros as colcon builds it."""
    prefix = tmp_path_factory.mktemp("ament")
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / stack.PACKAGE).touch()
    share = prefix / "share" / stack.PACKAGE
    for sub in ("config", "sim", "launch"):
        shutil.copytree(ROOT / sub, share / sub, ignore=shutil.ignore_patterns("train", "experiments"))
    shutil.copy(ROOT / "package.xml", share)
    lib = prefix / "lib" / stack.PACKAGE
    lib.mkdir(parents=True)
    scripts = Path(sys.executable).parent
    for name in EXECUTABLES:
        assert (scripts / name).exists(), f"{name} is not installed next to {sys.executable}"
        (lib / name).symlink_to(scripts / name)
    return prefix


@pytest.fixture(scope="module")
def bundle() -> Path:
    from bundle_helpers import exported

    return exported("flow", "rep")[1]


class Launch:
    """`launch` of one stack file in its own process group, its output in a log file."""

    def __init__(self, prefix: Path, domain: int, log: Path, arguments: list[str]):
        env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
               "AMENT_PREFIX_PATH": os.pathsep.join(filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH")])),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(VENDOR / "python"), str(VENDOR / "stubs"),
                                                           os.environ.get("PYTHONPATH")]))}
        self.log = log
        launch_file = prefix / "share" / stack.PACKAGE / "launch" / "navigation.launch.py"
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(launch_file), *arguments], cwd=log.parent,
                                     env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        print(f"--- launch output\n{self.output()[-4000:]}")


class Operator:
    """An rclpy node on the launch's domain: lifecycle services of the managed nodes, and the commands."""

    def __init__(self, domain: int):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("test_operator", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.commands = 0
        self.node.create_subscription(JointState, "/command", self._on_command, COMMAND_QOS)

    def _on_command(self, _msg) -> None:
        self.commands += 1

    def call(self, service_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(service_type, name)
        try:
            assert self._spin_until(client.service_is_ready, timeout), f"no {name} service"
            future = client.call_async(request)
            assert self._spin_until(future.done, timeout), f"no answer from {name}"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def state(self, node: str) -> str:
        return self.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.label

    def wait_for_state(self, node: str, label: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(node) == label:
                return True
            self._spin_until(lambda: False, 0.2)
        return False

    def _spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def spin(self, seconds: float) -> None:
        self._spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run_arguments(bundle: Path, *extra: str) -> list[str]:
    return [f"bundle:={bundle}", "tasks:=1", "episodes_per_task:=1", "max_episode_steps:=12", *extra]


def test_launch_file_brings_the_managed_nodes_to_active_and_ends_with_the_sim(prefix, bundle, tmp_path) -> None:
    launch = Launch(prefix, next(DOMAINS), tmp_path / "launch.log", run_arguments(bundle))
    try:
        assert launch.wait(timeout=120) == 0
        out = launch.output()
        for node in ("subgoal_planner", "flow_controller"):
            assert f"[{node}]: active: commanding" in out, node
            assert "process has finished cleanly" in out.split(f"[{node}-")[-1], node
        assert "task 1 episode 0:" in out and "done: 1/1 episodes" in out
        assert "mujoco_sim finished: shutting the stack down" in out and "Traceback" not in out
    finally:
        launch.kill()


def test_activate_false_leaves_them_inactive_until_an_operator_activates(prefix, bundle, tmp_path) -> None:
    domain = next(DOMAINS)
    operator = Operator(domain)
    launch = Launch(prefix, domain, tmp_path / "launch.log", run_arguments(bundle, "activate:=false"))
    try:
        for node in stack.MANAGED:
            assert operator.wait_for_state(node, "inactive"), f"{node} did not reach inactive"
        operator.spin(2.0)  # nodes configured, the sim up and waiting for a controller
        assert operator.commands == 0, "an inactive controller commanded"
        assert launch.proc.poll() is None and "task 1 episode 0:" not in launch.output()
        for node in ("subgoal_planner", "flow_controller"):
            response = operator.call(ChangeState, f"/{node}/change_state",
                                     ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
            assert response.success, f"{node} refused to activate"
        assert operator._spin_until(lambda: launch.proc.poll() is not None, 120), "the run did not end"
        assert launch.wait(timeout=5) == 0
        assert "task 1 episode 0:" in launch.output() and operator.commands > 0
    finally:
        launch.kill()
        operator.close()
