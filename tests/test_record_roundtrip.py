"""Demonstrations end to end over real DDS: the scripted teleop drives mujoco_sim (lockstep,
pointmaze) while four recorders write the same run to mcap and sqlite3 bags, zstd-compressed and
not; `bag2data` with the shipped spec (config/bags/pointmaze-sim.yaml) must give the sim's own
log of those episodes (record_path), and the result trains with `nfhiql train`. The same for a
cube-single demonstration (the arm). Also `nfhiql record` itself: --duration, --force, refusal of
an existing output.

Every process is a separate `python -m` process on a ROS domain of this module (101-103) with
discovery limited to localhost; every wait has a timeout and every process is killed at teardown.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from recipes import write_recipe  # noqa: E402

from nfhiql_core import cli  # noqa: E402
from nfhiql_core.bags.bag2data import bag2data, typestore  # noqa: E402
from nfhiql_core.interface.spec import load_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "config" / "bags" / "pointmaze-sim.yaml"
CUBE_SPEC = REPO / "config" / "robots" / "ur5e-robotiq-cube.yaml"
ROUNDTRIP_DOMAIN, RECORD_DOMAIN, CUBE_DOMAIN = 101, 102, 103
TASKS, STEPS = (1, 3), 15  # two 15-step episodes at 10 Hz
BAGS = [("mcap", "none"), ("mcap", "message"), ("sqlite3", "none"), ("sqlite3", "file")]
TOPICS = ["/observation", "/command", "/teleop/episode", "/goal", "/sim/episode"]


class Processes:
    """Start `python -m module --ros-args ...` processes; stderr to files; all killed at close()."""

    def __init__(self, workdir: Path, domain: int):
        self.workdir, self.procs = workdir, {}
        self.env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                    "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, argv: list[str], cwd: Path = REPO) -> subprocess.Popen:
        err = open(self.workdir / f"{name}.stderr", "wb")
        self.procs[name] = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=self.env, stdout=err, stderr=err)
        err.close()
        return self.procs[name]

    def node(self, name: str, module: str, **params) -> subprocess.Popen:
        argv = ["-m", module, "--ros-args"]
        for key, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(list(value) if isinstance(value, tuple)
                                                                            else value)
            argv += ["-p", f"{key}:={text}"]
        return self.start(name, argv)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.stderr").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            assert self.procs[name].poll() is None, f"{name} exited: {self.log(name)}"
            assert time.monotonic() < deadline, f"{name}: no {text!r} within {timeout} s: {self.log(name)}"
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def record_demos(procs: Processes, env: str, tasks: tuple, steps: int, bags: dict, robot_spec: Path | None = None
                 ) -> None:
    """Recorders (one per bag), then the teleop, then the sim; returns once all have exited cleanly.
    With `robot_spec` the sim and the teleop speak the robot's own topics, and those are recorded."""
    work = procs.workdir
    topics, commands = TOPICS, ["/command"]
    robot = {}
    if robot_spec is not None:
        spec = load_spec(robot_spec)
        commands = [f.topic for f in spec.action.fields]
        topics = [*spec.topics, "/teleop/episode", "/goal", "/sim/episode"]
        robot = {"robot_spec": robot_spec}
    # The sim's topics appear once it has loaded, which took more than the default 10 s of discovery under load.
    for (storage, compression), bag in bags.items():
        procs.node(f"rec-{storage}-{compression}", "nfhiql_ros.recorder", output=bag, topics=tuple(topics),
                   storage=storage, compression=compression, discovery_timeout_s=120.0)
    teleop = procs.node("teleop", "nfhiql_ros.teleop", env=env, noise=0.3 if "maze" in env else -1.0, seed=1,
                        **robot)
    for storage, compression in bags:  # every recorder listens to the teleop before the sim starts
        for topic in (*commands, "/teleop/episode"):
            procs.wait_for_log(f"rec-{storage}-{compression}", f"subscribed {topic}", timeout=60)
    sim = procs.node("sim", "nfhiql_ros.mujoco_sim", env=env, mode="lockstep", tasks=tasks, max_episode_steps=steps,
                     start_delay_s=0.2, record_path=work / "sim.npz", min_observation_subscribers=1 + len(bags),
                     **robot)
    assert sim.wait(timeout=90) == 0, procs.log("sim")
    assert teleop.wait(timeout=15) == 0, procs.log("teleop")
    for storage, compression in bags:
        procs.procs[f"rec-{storage}-{compression}"].send_signal(signal.SIGINT)
    for storage, compression in bags:
        name = f"rec-{storage}-{compression}"
        assert procs.procs[name].wait(timeout=20) == 0, procs.log(name)
        assert "Traceback" not in procs.log(name)


def assert_matches_sim_log(result, data, sim) -> None:
    """Same episode boundaries, observations and actions (as applied) as the sim's own log."""
    offsets = sim["episode_offsets"]
    assert [e["rows"] for e in result.summary["episodes"]] == np.diff(offsets).tolist()
    assert np.flatnonzero(data["terminals"]).tolist() == (offsets[1:] - 1).tolist()
    np.testing.assert_allclose(data["observations"], sim["observations"], atol=1e-6)
    np.testing.assert_allclose(data["actions"], sim["actions"], atol=1e-6)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One teleoperated pointmaze run recorded by four recorders: (workdir, bags by (storage, compression))."""
    work = tmp_path_factory.mktemp("demos")
    procs = Processes(work, ROUNDTRIP_DOMAIN)
    bags = {key: work / f"demos-{key[0]}-{key[1]}" for key in BAGS}
    try:
        record_demos(procs, "pointmaze-medium-navigate-v0", TASKS, STEPS, bags)
        yield work, bags, procs
    finally:
        procs.close()


@pytest.mark.parametrize("storage, compression", BAGS, ids=[f"{s}-{c}" for s, c in BAGS])
def test_bag2data_of_recorded_demos_matches_the_sims_log(demo_run, storage, compression) -> None:
    work, bags, _ = demo_run
    bag = bags[(storage, compression)]
    assert sorted(p.name for p in work.glob(".*recording*")) == []  # moved into place
    out = work / f"{bag.name}.npz"
    result = bag2data([bag], SPEC, out, progress=False)
    sim = np.load(work / "sim.npz")
    assert sim["lengths"].tolist() == [STEPS] * len(TASKS)
    assert_matches_sim_log(result, np.load(out), sim)
    info = result.summary["bags"][0]
    assert info["storage"] == storage and ("zstd" in info["compression"]) == (compression != "none")
    assert {"/observation", "/command"} <= set(info["topics"]) and info["cuts"]["marker"] == len(TASKS)
    print(f"{storage}/{compression}: {result.summary['rows']} rows in {len(result.summary['episodes'])} episodes "
          f"= the sim's log; bag {sum(p.stat().st_size for p in bag.iterdir())} bytes")


def test_recorded_bags_carry_message_definitions_hashes_and_qos(demo_run) -> None:
    from rosbags.highlevel import AnyReader

    _, bags, procs = demo_run
    store = typestore()
    for (storage, compression), bag in bags.items():
        meta = (bag / "metadata.yaml").read_text()
        assert "version: 9" in meta and f"storage_identifier: {storage}" in meta
        with AnyReader([bag]) as reader:  # no default type store: the definitions come from the bag
            topics = reader.topics
            assert set(topics) == set(TOPICS)
            for topic, info in topics.items():
                conn = info.connections[0]
                assert conn.msgdef.data and conn.digest == store.hash_rihs01(info.msgtype), topic
            goal_qos = topics["/goal"].connections[0].ext.offered_qos_profiles[0]
            assert goal_qos.durability.name == "TRANSIENT_LOCAL"  # replayed latched, like the sim's
            assert topics["/observation"].msgcount == topics["/command"].msgcount == STEPS * len(TASKS)
            assert topics["/teleop/episode"].msgcount == topics["/goal"].msgcount == len(TASKS)
        log = procs.log(f"rec-{storage}-{compression}")
        assert f"wrote {bag}" in log and "differs from rosbags'" not in log


def test_converted_demos_train(demo_run, tmp_path) -> None:
    from nfhiql_core.training.train import load_train_config, train

    _, bags, _ = demo_run
    data = tmp_path / "demos.npz"
    bag2data([bags[("mcap", "none")]], SPEC, data, progress=False)
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", data, steps=20)
    assert train(load_train_config(recipe), progress=False).is_file()
    assert (tmp_path / "run" / "train.csv").read_text().count("\n") >= 2


def test_cube_demonstration_on_the_robots_topics(tmp_path) -> None:
    """The arm through its robot interface: the teleop's plan oracle solves a cube-single task with
    the sim in robot mode (joint_states, tcp pose, tracker, contact out; Servo twist and gripper
    trajectory in), and the recorded (mcap + zstd) robot topics convert with the same spec
    (config/robots/ur5e-robotiq-cube.yaml) to the sim's log."""
    procs = Processes(tmp_path, CUBE_DOMAIN)
    bag = tmp_path / "cube-demo"
    try:
        record_demos(procs, "cube-single-play-v0", (1,), 150, {("mcap", "message"): bag}, robot_spec=CUBE_SPEC)
    finally:
        procs.close()
    sim = np.load(tmp_path / "sim.npz")
    assert sim["successes"].tolist() == [True]  # the demonstration does the task
    result = bag2data([bag], CUBE_SPEC, tmp_path / "cube.npz", progress=False)
    assert_matches_sim_log(result, np.load(tmp_path / "cube.npz"), sim)
    assert "/tcp_pose_broadcaster/pose" in result.summary["bags"][0]["topics"]
    print(f"cube: task 1 solved in {sim['lengths'][0]} steps on the robot's topics, demonstration = the sim's log")


def test_nfhiql_record_cli_duration_force_and_refusal(tmp_path, capsys) -> None:
    bag = tmp_path / "numbers"
    bag.mkdir()
    code = cli.main(["record", "-o", str(bag), "/numbers"])
    assert code == 2 and "already exists (pass --force to overwrite)" in capsys.readouterr().err
    code = cli.main(["record", "-o", str(bag), "/numbers", "--force"])
    assert code == 2 and "is not a rosbag2 directory; not replacing it" in capsys.readouterr().err
    bag.rmdir()
    procs = Processes(tmp_path, RECORD_DOMAIN)
    publisher = ["-c", (
        "import rclpy, time\n"
        "from std_msgs.msg import Float64MultiArray\n"
        "rclpy.init(); node = rclpy.create_node('numbers'); pub = node.create_publisher(Float64MultiArray, "
        "'numbers', 10)\n"
        "print('publishing', flush=True)\n"
        "for i in range(10000):\n"
        "    pub.publish(Float64MultiArray(data=[float(i), 2.0 * i])); time.sleep(0.02)\n")]
    try:
        procs.start("publisher", publisher)
        procs.wait_for_log("publisher", "publishing", timeout=60)
        for run, extra in enumerate(([], ["--force"])):
            # `nfhiql record` as installed (the verb comes through the nfhiql.commands entry points)
            record = procs.start(f"record{run}", ["-m", "nfhiql_core.cli", "record", "-o", str(bag), "/numbers",
                                                  "--storage", "sqlite3", "--duration", "3", *extra], cwd=tmp_path)
            assert record.wait(timeout=60) == 0, procs.log(f"record{run}")
            assert (bag / "metadata.yaml").is_file() and not list(tmp_path.glob(".numbers.recording-*"))
            spec = tmp_path / "spec.yaml"
            spec.write_text(json.dumps({
                "rate_hz": 10.0, "observation": [{"topic": "/numbers", "type": "std_msgs/msg/Float64MultiArray",
                                                  "size": 2, "indices": [0]}],
                "action": {"delta_of": ["/numbers.data"]}}))
            result = bag2data([bag], spec, tmp_path / f"n{run}.npz", progress=False)
            topic = result.summary["bags"][0]["topics"]["/numbers"]
            # 3 s counted from the subscription, not from start-up: about 150 messages at <= 50 Hz
            assert topic["type"] == "std_msgs/msg/Float64MultiArray" and topic["messages"] >= 50
            assert np.all(np.diff(np.load(tmp_path / f"n{run}.npz")["observations"][:, 0]) > 0)
        # A topic that never appears: non-zero exit naming it, and no bag at all instead of an empty one.
        missing = tmp_path / "missing"
        record = procs.start("record-missing", ["-m", "nfhiql_core.cli", "record", "-o", str(missing), "/nobody",
                                                "--duration", "1", "--discovery-timeout", "2"], cwd=tmp_path)
        assert record.wait(timeout=60) != 0
        assert "/nobody" in procs.log("record-missing") and "no bag written" in procs.log("record-missing")
        assert not missing.exists() and not list(tmp_path.glob(".missing.recording-*"))
    finally:
        procs.close()
