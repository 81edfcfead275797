"""The robot interface spec (nfhiql_core.interface) and its live halves (control.assembly,
control.commands), in-process: the shipped robot specs reproduce the envs' own observations from
the robot model's messages, joints are found by name, bad or stale streams are named, commands
respect their limits and map back to the policy's action."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from nfhiql_core.control.assembly import Assembled, ObservationAssembler, Unusable
from nfhiql_core.control.commands import CommandEncoder
from nfhiql_core.control.intake import Rejected
from nfhiql_core.errors import ConfigError
from nfhiql_core.evaluation.episodes import make_env
from nfhiql_core.evaluation.robot_model import RobotModel, fill_messages, plain_message
from nfhiql_core.evaluation.through_interface import InterfaceEnv
from nfhiql_core.interface.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
CUBE_SPEC = REPO / "config" / "robots" / "ur5e-robotiq-cube.yaml"
MAZE_SPEC = REPO / "config" / "robots" / "pointmaze.yaml"
MS = 1_000_000


@pytest.mark.parametrize("env_name, spec_path, steps", [("cube-single-play-v0", CUBE_SPEC, 300),
                                                         ("pointmaze-medium-navigate-v0", MAZE_SPEC, 300)])
def test_assembled_observation_is_the_envs_own(env_name, spec_path, steps) -> None:
    """Over a few hundred random steps the assembled observation equals the env's (<= 1e-6) and the
    executed action equals the policy's (the command mapping inverts exactly)."""
    env, through = make_env(env_name), InterfaceEnv(make_env(env_name), load_spec(spec_path))
    np.random.seed(5)  # the maze's reset noise comes from numpy's global RNG: the same for both
    own, _ = env.reset(seed=3, options=dict(task_id=1))
    np.random.seed(5)
    assembled, _ = through.reset(seed=3, options=dict(task_id=1))
    rng, worst = np.random.default_rng(0), np.abs(own - assembled).max()
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(env.action_space.dtype)
        own, *_ = env.step(action)
        assembled, *_ = through.step(action)
        worst = max(worst, np.abs(own - assembled).max())
    assert worst <= 1e-6 and through.max_action_error <= 1e-9
    print(f"{env_name}: max |assembled - env| {worst:.2e}, max |executed - policy action| "
          f"{through.max_action_error:.2e} over {steps} steps")


@pytest.fixture(scope="module")
def cube_messages():
    env = make_env("cube-single-play-v0")
    env.reset(seed=0, options=dict(task_id=2))
    env.step(env.action_space.sample())
    model = RobotModel(env)
    return load_spec(CUBE_SPEC), model, lambda stamp: fill_messages(model.readings(), model.topics, stamp,
                                                                    plain_message)


def _feed(assembler: ObservationAssembler, messages: dict, now: int) -> Assembled | None:
    out = None
    for topic in assembler.topics:
        out = assembler.on_message(topic, messages[topic], now)
    return out


def test_joint_order_in_messages_is_never_assumed(cube_messages) -> None:
    spec, _, messages = cube_messages
    in_order = _feed(ObservationAssembler(spec, 100 * MS, lockstep=True), messages(10 * MS), 10 * MS)
    shuffled = messages(10 * MS)
    js = shuffled["/joint_states"]
    order = list(range(len(js.name)))
    random.Random(1).shuffle(order)
    js.name, js.position, js.velocity = ([getattr(js, a)[i] for i in order] for a in ("name", "position", "velocity"))
    again = _feed(ObservationAssembler(spec, 100 * MS, lockstep=True), shuffled, 10 * MS)
    assert in_order is not None and again is not None
    np.testing.assert_array_equal(in_order.values, again.values)


def test_nan_in_an_unused_joint_is_ignored_in_a_used_one_names_it(cube_messages) -> None:
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS, lockstep=True)
    msgs = messages(10 * MS)
    js = msgs["/joint_states"]
    js.position[js.name.index("robotiq/left_follower_joint")] = float("nan")  # not in the spec
    assert _feed(assembler, msgs, 10 * MS) is not None
    msgs = messages(20 * MS)
    msgs["/joint_states"].velocity[msgs["/joint_states"].name.index("elbow_joint")] = float("inf")
    with pytest.raises(Rejected, match="arm_qd.elbow_joint is not finite"):
        assembler.on_message("/joint_states", msgs["/joint_states"], 20 * MS)
    verdict = assembler.assemble(21 * MS)
    assert isinstance(verdict, Unusable) and verdict.topic == "/joint_states" and verdict.reason == "invalid"
    assembler.on_message("/joint_states", messages(30 * MS)["/joint_states"], 30 * MS)  # a good one heals it
    assert isinstance(assembler.assemble(31 * MS), Assembled)


def test_a_stream_that_stops_is_named_at_its_deadline(cube_messages) -> None:
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS)
    first = assembler.assemble(0)
    assert isinstance(first, Unusable) and first.reason == "missing"
    _feed(assembler, messages(10 * MS), 10 * MS)
    for t in range(60, 311, 50):  # every stream but the tracker's keeps publishing at 20 Hz
        for topic in assembler.topics:
            if topic != "/cube/pose":
                assembler.on_message(topic, messages(t * MS)[topic], t * MS)
    max_age = spec.max_age_ns("/cube/pose")  # the spec's 0.3 s for its 10 Hz tracker
    joints_due = 310 * MS + spec.max_age_ns("/joint_states")
    assert assembler.next_deadline(310 * MS) == min(10 * MS + max_age, joints_due)
    assert assembler.next_deadline(10 * MS + max_age + 1) == joints_due  # the tracker's deadline has passed
    assert isinstance(assembler.assemble(10 * MS + max_age), Assembled)
    stale = assembler.assemble(10 * MS + max_age + 1)
    assert isinstance(stale, Unusable) and (stale.topic, stale.reason) == ("/cube/pose", "stale")
    assert "/cube/pose" in stale.detail


def test_lockstep_waits_for_every_stream_of_the_newest_stamp(cube_messages) -> None:
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS, lockstep=True)
    msgs, topics = messages(10 * MS), assembler.topics
    assert [assembler.on_message(t, msgs[t], 10 * MS) for t in topics[:-1]] == [None] * (len(topics) - 1)
    done = assembler.on_message(topics[-1], msgs[topics[-1]], 10 * MS)
    assert isinstance(done, Assembled) and done.stamp == 10 * MS and done.values.shape == (28,)


def test_lockstep_assembles_every_state_of_a_consumer_that_fell_behind(cube_messages) -> None:
    """Three states arrive interleaved (each stream in order, the streams out of step, the header-less
    contact last): every state comes out, in order, from its own messages; a state one stream never
    delivered is dropped and counted, not mixed into the next."""
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS, lockstep=True)
    states = {k: messages(k * 10 * MS) for k in (1, 2, 3, 4)}
    for k in (2, 3):
        states[k]["/gripper/contact"].data = 0.1 * k  # tell the states apart by their contact value
    out = []
    for k in (1, 2, 3):
        for topic in ("/joint_states", "/tcp_pose_broadcaster/pose", "/cube/pose"):
            out.append(assembler.on_message(topic, states[k][topic], k * 10 * MS))
    for k in (1, 2, 3):
        out.append(assembler.on_message("/gripper/contact", states[k]["/gripper/contact"], (40 + k) * MS))
    done = [o for o in out if o is not None]
    assert [o.stamp for o in done] == [10 * MS, 20 * MS, 30 * MS]
    assert [round(o.values[18], 6) for o in done[1:]] == [0.2, 0.3]  # gripper_contact: each state's own
    for topic in ("/joint_states", "/tcp_pose_broadcaster/pose", "/gripper/contact"):  # the tracker lost state 4
        assembler.on_message(topic, states[4][topic], 50 * MS + 1)
    state5 = messages(60 * MS)
    results = [assembler.on_message(t, state5[t], 60 * MS + i) for i, t in enumerate(assembler.topics)]
    assert results[-1] is not None and results[-1].stamp == 60 * MS
    assert assembler.drops["/joint_states: incomplete_state"] == 1


def test_a_future_stamp_is_refused_and_does_not_freeze_the_stream(cube_messages) -> None:
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS)
    _feed(assembler, messages(10 * MS), 10 * MS)
    with pytest.raises(Rejected, match="ahead"):
        assembler.on_message("/cube/pose", messages(10_000 * MS)["/cube/pose"], 20 * MS)
    assembler.on_message("/cube/pose", messages(30 * MS)["/cube/pose"], 30 * MS)
    assert assembler.drops["/cube/pose: future_stamp"] == 1
    assert isinstance(assembler.assemble(31 * MS), Assembled)


def test_commands_stay_within_limits_and_map_back_to_the_action() -> None:
    spec = load_spec(CUBE_SPEC)
    encoder = CommandEncoder(spec)
    twist, gripper = encoder.encode(np.array([0.5, -1.0, 0.25, 1.0, -0.5]))
    assert twist.topic == "/servo_node/delta_twist_cmds" and twist.frame_id == "world"
    assert twist.names == ("vx", "vy", "vz", "wz")
    np.testing.assert_allclose(twist.values, [0.5, -1.0, 0.25, 6.0])
    assert gripper.topic == "/gripper_controller/joint_trajectory" and gripper.array == "velocities"
    np.testing.assert_allclose(gripper.values, [-8.0])  # the driver joint's rad/s
    over, _ = encoder.encode(np.array([3.0, 0, 0, -2.0, 0]))  # beyond the action range: the limits hold
    np.testing.assert_allclose(over.values, [1.0, 0, 0, -6.0])


@pytest.mark.parametrize("patch, message", [
    ({"observation": [{"topic": "/p", "type": "geometry_msgs/msg/PoseStamped", "names": ["x"],
                       "derive": "yaw"}]}, "derive: yaw needs names: \\[qx, qy, qz, qw\\]"),
    ({"goal_fields": ["nope"]}, "goal_fields: 'nope' is not an observation label"),
    ({"goal_fill": "home"}, "goal_fill: 'home' is not one of"),
    ({"goal_reference": {"x": [1.0, 2.0]}}, r"goal_reference.x: expected 1 finite raw values"),
    ({"goal_reference": {"y": [1.0]}}, "goal_reference: 'y' is not an observation label"),
    ({"goal_success": {"fields": ["x"], "tolerance": 0.0}}, "goal_success.tolerance: must be > 0"),
    ({"goal_success": {"fields": ["y"], "tolerance": 1.0}}, "goal_success.fields: 'y' is not an observation label"),
    ({"action": {"fields": [{"topic": "/c", "type": "std_msgs/msg/Float64MultiArray", "size": 1,
                             "clip": [0, 1]}]}}, "derive/clip are for observation fields"),
    ({"action": {"fields": [{"topic": "/c", "type": "std_msgs/msg/Float64MultiArray", "size": 1,
                             "scale": 0.0}]}}, "scale: 0 cannot be inverted"),
])
def test_spec_errors_name_the_key(tmp_path, patch, message) -> None:
    import yaml

    data = {"rate_hz": 10.0, "observation": [{"topic": "/x", "type": "std_msgs/msg/Float64", "label": "x"}],
            "action": {"fields": [{"topic": "/c", "type": "std_msgs/msg/Float64MultiArray", "size": 1}]}}
    data.update(patch)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_spec(path)


def test_every_shipped_robot_spec_loads() -> None:
    for path in sorted((REPO / "config" / "robots").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.goal_fields and CommandEncoder(spec).dim == len(spec.action_names), path


def test_a_quaternion_comes_through_with_its_own_sign(cube_messages) -> None:
    """Live values are the message's own (the env reports MuJoCo's quaternion as it is); only
    bag2data's linear interpolation aligns signs between messages."""
    spec, _, messages = cube_messages
    assembler = ObservationAssembler(spec, 100 * MS, lockstep=True)
    first = _feed(assembler, messages(10 * MS), 10 * MS)
    flipped = messages(20 * MS)
    q = flipped["/cube/pose"].pose.orientation
    q.x, q.y, q.z, q.w = -q.x, -q.y, -q.z, -q.w
    second = _feed(assembler, flipped, 20 * MS)
    quat = slice(22, 26)  # cube_quat: w x y z
    np.testing.assert_allclose(second.values[quat], -first.values[quat])
    np.testing.assert_allclose(second.values[26:], first.values[26:])  # yaw does not care


def test_nfhiql_bundle_interface_attaches_a_fitting_spec_and_refuses_another(tmp_path, capsys) -> None:
    import json
    import shutil

    from nfhiql_core import cli
    from nfhiql_core.deploy.bundle import load_bundle

    bundle = tmp_path / "pointmaze"
    shutil.copytree(REPO / "bundles" / "pointmaze-medium-navigate", bundle)
    assert cli.main(["bundle", "interface", str(bundle), str(MAZE_SPEC)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["action"] == ["dx", "dy"]
    assert load_bundle(bundle).metadata.interface_spec() == load_spec(MAZE_SPEC)
    before = (bundle / "bundle.json").read_bytes()
    assert cli.main(["bundle", "interface", str(bundle), str(CUBE_SPEC)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "this interface's observation has 28 values, the bundle's 2" in err
    assert (bundle / "bundle.json").read_bytes() == before  # nothing written


def test_an_ant_is_a_legged_robot_model_of_joint_states_only() -> None:
    """antmaze's ant: its 8 hinge joints on /joint_states (the free root joint has no scalar position);
    it takes the action vector, so a twist command is refused in one line."""
    env = make_env("antmaze-medium-navigate-v0")
    try:
        env.reset(seed=0)
        model = RobotModel(env)
        readings = model.readings()
        assert model.family == "legged" and len(readings.joint_names) == 8 == readings.position.size
        assert set(fill_messages(readings, model.topics, 1, plain_message)) == {"/joint_states"}
        with pytest.raises(ConfigError, match="legged robot takes the action vector"):
            model.env_action(np.zeros(6))
    finally:
        env.close()
