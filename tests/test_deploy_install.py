"""A robot's install: the `deploy` extra alone (no torch, no MuJoCo, no OGBench) runs the policy nodes.

The test builds `.venv-deploy/` beside the repository's `.venv/` (once; rebuilt when setup.py or
constraints.txt change), checks that torch, mujoco and ogbench are not importable there, then starts
`subgoal_planner` and `flow_controller` from it on the shipped cube bundle with the stack's own
parameter file, and drives them over DDS from this process: a goal and an observation in, one
command answering that observation out.
"""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from nfhiql_ros.ros_io import COMMAND_QOS, LATCHED_QOS, LOCKSTEP_QOS, stamp_to_ns, vector_msg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("NFHIQL_DEPLOY_VENV", ROOT / ".venv-deploy"))
BUNDLE = ROOT / "bundles" / "cube-single-play"
INSTALL_TIMEOUT_S = 900
COMMAND_TIMEOUT_S = 120.0  # start-up (bundle load) + discovery of two fresh processes on a loaded machine


def _install_key() -> str:
    inputs = [ROOT / "setup.py", ROOT / "constraints.txt", *sorted((ROOT / "nfhiql_interfaces").rglob("*.*"))]
    return hashlib.sha256(b"".join(p.read_bytes() for p in inputs)).hexdigest()


@pytest.fixture(scope="module")
def deploy_python() -> Path:
    """The deploy-only venv's interpreter, installed with `pip install -e '.[deploy]'` and the goal
    interface package (`nfhiql_interfaces/install.sh`)."""
    python, stamp = VENV / "bin" / "python", VENV / ".installed"
    if not (python.exists() and stamp.exists() and stamp.read_text() == _install_key()):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                        str(ROOT / "constraints.txt"), "-e", f"{ROOT}[deploy]"], check=True, cwd=ROOT,
                       timeout=INSTALL_TIMEOUT_S)
        subprocess.run([str(ROOT / "nfhiql_interfaces" / "install.sh"), str(VENV)], check=True, cwd=ROOT,
                       timeout=INSTALL_TIMEOUT_S)
        stamp.write_text(_install_key())
    return python


def test_the_deploy_extra_has_no_training_stack(deploy_python: Path) -> None:
    """torch, MuJoCo and OGBench are not installed, the nodes import, and nothing sets MUJOCO_GL."""
    code = ("import importlib.util as u, sys\n"
            "missing = [m for m in ('torch', 'mujoco', 'ogbench') if u.find_spec(m) is None]\n"
            "import nfhiql_core.deploy.runtime, nfhiql_ros.flow_controller, nfhiql_ros.subgoal_planner\n"
            "loaded = [m for m in ('torch', 'mujoco', 'ogbench') if m in sys.modules]\n"
            "import os; assert 'MUJOCO_GL' not in os.environ, 'importing nfhiql set MUJOCO_GL'\n"
            "print(missing, loaded)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUJOCO_GL")}
    out = subprocess.run([str(deploy_python), "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['torch', 'mujoco', 'ogbench'] []"


def test_planner_and_controller_run_from_the_deploy_venv(deploy_python: Path) -> None:
    domain = random.Random(os.getpid()).randrange(101, 113)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    args = ["--ros-args", "-r", "__ns:=/deploy_test", "--params-file", str(ROOT / "config/manipulation.yaml"),
            "-p", f"bundle:={BUNDLE}", "-p", "providers:=[CPUExecutionProvider]",
            "-p", "interface:=''"]  # the vector contract: this process plays the sim with `observation`
    procs = [subprocess.Popen([str(deploy_python), "-m", f"nfhiql_ros.{node}", *args], cwd="/", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in ("subgoal_planner", "flow_controller")]
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    commands: list[tuple[int, np.ndarray]] = []
    try:
        node = rclpy.create_node("deploy_sim", namespace="/deploy_test", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        node.create_subscription(JointState, "command", lambda m: commands.append(
            (stamp_to_ns(m.header.stamp), np.asarray(m.position))), COMMAND_QOS)
        obs_pub = node.create_publisher(JointState, "observation", LOCKSTEP_QOS)
        goal_pub = node.create_publisher(JointState, "goal", LATCHED_QOS)
        deadline = node.get_clock().now().nanoseconds + int(COMMAND_TIMEOUT_S * 1e9)

        def wait(condition) -> bool:
            while not condition():
                if node.get_clock().now().nanoseconds > deadline or any(p.poll() is not None for p in procs):
                    return False
                executor.spin_once(timeout_sec=0.05)
            return True

        assert wait(lambda: obs_pub.get_subscription_count() >= 2 and goal_pub.get_subscription_count() >= 2), \
            "planner and controller never subscribed"
        obs = np.zeros(28)
        now = node.get_clock().now().nanoseconds
        goal_pub.publish(vector_msg(obs, [], now))
        stamp = now + 1_000_000
        obs_pub.publish(vector_msg(obs, [], stamp))
        assert wait(lambda: any(s == stamp for s, _ in commands)), "no command answered the observation"
        (values,) = [v for s, v in commands if s == stamp]
        assert values.shape == (5,) and np.isfinite(values).all() and (np.abs(values) <= 1).all()
    finally:
        rclpy.shutdown(context=context)
        for p in procs:
            p.terminate()
        outputs = [p.communicate(timeout=30)[0] for p in procs]
    for out in outputs:
        assert "cannot start" not in out, out
