"""`nfhiql bag2data` on real rosbag2 files written with rosbags (mcap and sqlite3, zstd or not):
every supported message type, joint-name lookup, zoh vs linear resampling, episode markers and
gaps, next-state-delta actions, every bad input's one-line error, --force, and training on the result."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from bag_helpers import SEC, T0, BagWriter, cmd_field, js_field, write_spec
from recipes import write_recipe

from nfhiql_core import cli
from nfhiql_core.bags.bag2data import bag2data, sidecar_path, typestore
from nfhiql_core.bags.spill import SpillArray, write_npz
from nfhiql_core.data.dataset import load_dataset
from nfhiql_core.errors import ConfigError, DatasetError
from nfhiql_core.interface.extract import JointSelector, JointStateDecoder, deserializer
from nfhiql_core.interface.spec import FieldSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
DT = SEC // 10  # 10 Hz


def simple_bag(path: Path, steps: int = 20, storage: str = "mcap", compression: str = "none",
               markers: tuple[int, ...] = (), start: int = T0) -> Path:
    """/js (JointState a, b: position = k, -k) and /cmd (Float64MultiArray [0.1 k, 1], no header) at
    10 Hz; /marker (std_msgs/Header) at each step index in `markers`."""
    with BagWriter(path, storage, compression) as bag:
        for k in range(steps):
            t = start + k * DT
            if k in markers:
                bag.marker("/marker", t - DT // 2)
            bag.joint_state("/js", t, ["a", "b"], [k, -k])
            bag.multiarray("/cmd", t + 3_000, [0.1 * k, 1.0])
    return path


def simple_spec(tmp_path: Path, **top) -> Path:
    """/js → observation, /cmd → action; /cmd's log times trail /js's stamps by 3 µs: tolerance 10 ms."""
    return write_spec(tmp_path / "spec.yaml", [js_field()], {"fields": [cmd_field()]}, **{"tolerance_s": 0.01, **top})


def run_cli(*argv: str, capsys) -> tuple[int, str]:
    code = cli.main(["bag2data", *argv])
    return code, capsys.readouterr().err


# ---- conversion --------------------------------------------------------------------------------

def test_every_message_type_by_joint_name_with_scale_and_offset(tmp_path) -> None:
    steps = 12
    rot = np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)])
    with BagWriter(tmp_path / "bag") as bag:
        for k in range(steps):
            t = T0 + k * DT
            # joint order differs between messages; velocity missing (not mapped: no problem)
            names, pos = (["a", "b", "c"], [k, 2 * k, 3 * k]) if k % 2 else (["c", "a", "b"], [3 * k, k, 2 * k])
            bag.joint_state("/joint_states", t, names, pos)
            bag.multiarray("/f32", t + 1_000, [k, 10 + k, 20 + k], f32=True)
            bag.multiarray("/f64", t + 1_000, [-k, 0.5])
            bag.pose("/object", t, [k, 0.0, 1.0], rot)
            bag.pose("/tf_obj", t, [0.0, k, 0.0], rot, transform=True)
            bag.twist("/servo", t, [0.1 * k, 0.0, 0.0], [0.0, 0.0, -0.1 * k])
            bag.trajectory("/jtc", t, ["a", "b"], [k, -k])
    spec = write_spec(tmp_path / "spec.yaml", [
        {"topic": "/joint_states", "type": "sensor_msgs/JointState", "names": ["b", "c"], "scale": [1.0, 10.0]},
        {"topic": "/f32", "type": "std_msgs/msg/Float32MultiArray", "size": 3, "indices": [2, 0]},
        {"topic": "/f64", "type": "std_msgs/msg/Float64MultiArray", "size": 2, "offset": 1.0},
        {"topic": "/object", "type": "geometry_msgs/msg/PoseStamped"},
        {"topic": "/tf_obj", "type": "geometry_msgs/msg/TransformStamped", "names": ["y", "qw"]},
    ], {"fields": [
        {"topic": "/servo", "type": "geometry_msgs/msg/TwistStamped", "names": ["vx", "wz"], "scale": 2.0},
        {"topic": "/jtc", "type": "trajectory_msgs/msg/JointTrajectory", "names": ["b", "a"]},
    ]}, tolerance_s=0.01)
    result = bag2data([tmp_path / "bag"], spec, tmp_path / "out.npz", progress=False)
    data = np.load(tmp_path / "out.npz")
    k = np.arange(steps, dtype=np.float64)
    ones, zeros = np.ones(steps), np.zeros(steps)
    expected_obs = np.column_stack([2 * k, 30 * k, 20 + k, k, -k + 1, 1.5 * ones, k, zeros, ones,
                                    *(np.full(steps, q) for q in rot), k, np.full(steps, rot[3])])
    expected_act = np.column_stack([0.2 * k, -0.2 * k, -k, k])
    np.testing.assert_allclose(data["observations"], expected_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data["actions"], expected_act, rtol=1e-6, atol=1e-6)
    assert data["terminals"].tolist() == [0.0] * (steps - 1) + [1.0]
    side = json.loads(sidecar_path(tmp_path / "out.npz").read_text())
    assert side["observation_names"][:3] == ["/joint_states.position.b", "/joint_states.position.c", "/f32.data[2]"]
    assert side["action_names"] == ["/servo.vx", "/servo.wz", "/jtc.positions.b", "/jtc.positions.a"]
    topics = side["bags"][0]["topics"]
    assert topics["/joint_states"]["messages"] == steps and topics["/joint_states"]["rate_hz"] == pytest.approx(10)
    assert topics["/f64"]["stamps"] == "log" and topics["/object"]["stamps"] == "header"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "bag").iterdir()}
    assert side["bags"][0]["sha256"] == files and set(files) == {"metadata.yaml", "bag.mcap"}
    assert side["spec"]["rate_hz"] == 10.0 and result.summary["rows"] == steps
    assert "episodes: 1" in result.report()


def test_linear_interpolates_and_zoh_holds(tmp_path) -> None:
    """/slow (7 Hz ramp, value = seconds) against /clock (10 Hz, starts 0.03 s later); a pose turning
    about z whose quaternion flips sign on every other message."""
    with BagWriter(tmp_path / "bag") as bag:
        for i in range(15):
            t = T0 + round(i * SEC / 7)
            theta = 0.2 * i
            sign = -1 if i % 2 else 1
            bag.joint_state("/slow", t, ["a"], [(t - T0) / SEC])
            bag.pose("/pose", t, [0, 0, 0], sign * np.array([0, 0, np.sin(theta / 2), np.cos(theta / 2)]))
        for k in range(20):
            bag.joint_state("/clock", T0 + 30_000_000 + k * DT, ["a"], [k])
    obs = [js_field("/clock", ["a"]), js_field("/slow", ["a"]),
           {"topic": "/pose", "type": "geometry_msgs/msg/PoseStamped", "names": ["qz", "qw", "qx", "qy"]}]
    out = {}
    for mode in ("zoh", "linear"):
        spec = write_spec(tmp_path / f"{mode}.yaml", obs, {"delta_of": ["/clock.position"]}, interpolation=mode)
        bag2data([tmp_path / "bag"], spec, tmp_path / f"{mode}.npz", progress=False)
        out[mode] = np.load(tmp_path / f"{mode}.npz")["observations"].astype(np.float64)
    last_slow = 14 / 7
    grid = 0.03 + 0.1 * np.arange(int((last_slow - 0.03) / 0.1) + 1)  # row times, s after T0
    assert len(out["linear"]) == len(out["zoh"]) == len(grid)
    np.testing.assert_allclose(out["linear"][:, 1], grid, atol=1e-6)  # exact on a ramp
    np.testing.assert_allclose(out["zoh"][:, 1], np.floor(grid * 7 + 1e-9) / 7, atol=1e-6)  # latest sample
    theta = 0.2 * 7 * grid  # the rotation angle at row times (linear in time)
    q_lin = out["linear"][:, 2:4]  # qz, qw (the spec's component order)
    np.testing.assert_allclose(np.linalg.norm(out["linear"][:, 2:6], axis=1), 1.0, atol=1e-6)
    assert (q_lin[:, 1] > 0).all()  # sign-aligned with the first message: no flips
    np.testing.assert_allclose(np.arctan2(q_lin[:, 0], q_lin[:, 1]) * 2, theta, atol=0.01)  # nlerp ≈ slerp here


def test_a_headerless_topic_with_its_own_tolerance_pairs_with_its_state_despite_receive_latency(tmp_path) -> None:
    """/contact (no header: stamped on receipt) arrives 2-70 ms after the /js state it belongs to (10 Hz).
    With the spec's 10 ms tolerance, the late ones pair with the row after theirs; with its own 90 ms,
    every row gets its own value, and the first row stays on /js's first stamp."""
    lags_ms = [2, 30, 5, 70, 12, 45, 3, 8]
    with BagWriter(tmp_path / "bag") as bag:
        for k, lag in enumerate(lags_ms):
            bag.joint_state("/js", T0 + k * DT, ["a"], [k])
            bag.multiarray("/contact", T0 + k * DT + lag * 1_000_000, [10.0 * k])
    out = {}
    for name, own in (("spec", {}), ("own", {"tolerance_s": 0.09})):
        spec = write_spec(tmp_path / f"{name}.yaml", [js_field(names=["a"]), {**cmd_field("/contact", 1), **own}],
                          {"delta_of": ["/js.position"]}, tolerance_s=0.01)
        bag2data([tmp_path / "bag"], spec, tmp_path / f"{name}.npz", progress=False)
        out[name] = np.load(tmp_path / f"{name}.npz")["observations"]
    k = np.arange(len(lags_ms))
    np.testing.assert_array_equal(out["own"], np.column_stack([k, 10.0 * k]))
    # The spec's tolerance on a grid from /contact's first receipt (2 ms late): a value received more than
    # 2 + 10 ms after its state misses its row, which holds the previous value.
    late = np.array(lags_ms) > lags_ms[0] + 10
    assert out["spec"][:, 0].tolist() == k.tolist()
    assert (out["spec"][late, 1] == 10.0 * (k[late] - 1)).all() and (out["spec"][~late, 1] == 10.0 * k[~late]).all()


def test_markers_gaps_and_pre_roll_cut_episodes(tmp_path) -> None:
    with BagWriter(tmp_path / "bag") as bag:
        for k in range(50):  # 0 … 4.9 s
            t = T0 + k * DT
            if k in (10, 30):
                bag.marker("/marker", t - DT // 2)
            bag.joint_state("/js", t, ["a", "b"], [k, -k])
            if not 40 < k < 46:  # /cmd silent from 4.0 s to 4.6 s
                bag.multiarray("/cmd", t + 3_000, [0.1 * k, 1.0])
    with_markers = simple_spec(tmp_path, episodes={"marker_topic": "/marker", "max_gap_s": 0.3})
    result = bag2data([tmp_path / "bag"], with_markers, tmp_path / "m.npz", progress=False)
    lengths = [e["rows"] for e in result.summary["episodes"]]
    # [0.95, 2.95): pre-roll dropped; 2.95 s → /cmd's gap (its 4.0 s value held one period, to 4.1 s);
    # 4.6 s → end
    assert lengths == [20, 12, 4]
    assert [e["started_by"] for e in result.summary["episodes"]] == ["marker", "marker", "gap"]
    data = np.load(tmp_path / "m.npz")
    assert data["observations"][[0, 20, 32], 0].tolist() == [10, 30, 46]
    assert np.flatnonzero(data["terminals"]).tolist() == [19, 31, 35]
    assert load_dataset(str(tmp_path / "m.npz")).num_trajectories == 3
    without = simple_spec(tmp_path, episodes={"max_gap_s": 0.3})
    result = bag2data([tmp_path / "bag"], without, tmp_path / "g.npz", progress=False)
    assert [e["rows"] for e in result.summary["episodes"]] == [42, 4]
    assert result.summary["bags"][0]["cuts"] == {"marker": 0, "gap": 1}


def test_a_slow_stream_does_not_cut_the_end_of_an_episode(tmp_path) -> None:
    """50 Hz joint states and a 10 Hz object pose, the pose's last sample 80 ms before the end: the
    episode still runs to the last joint state (its last 4 rows are where the goal is reached), and a
    declared max age shorter than that cuts it where the pose is too old."""
    ms = 1_000_000
    with BagWriter(tmp_path / "bag") as bag:
        for k in range(101):  # joint states 0 … 2.00 s at 50 Hz
            bag.joint_state("/js", T0 + k * 20 * ms, ["a", "b"], [k, -k])
        for k in range(20):  # poses 0 … 1.90 s at 10 Hz: the last one 100 ms before the end
            bag.multiarray("/cmd", T0 + k * 100 * ms, [0.1 * k, 1.0])
    spec = write_spec(tmp_path / "spec.yaml", [js_field(), {"topic": "/cmd", "type": "std_msgs/Float64MultiArray",
                                                             "size": 2}], {"delta_of": ["/js.position"]},
                      rate_hz=50.0)
    result = bag2data([tmp_path / "bag"], spec, tmp_path / "out.npz", progress=False)
    (episode,) = result.summary["episodes"]
    assert episode["rows"] == 101  # to 2.00 s: the pose's 1.90 s value is held 100 ms (its period)
    assert np.load(tmp_path / "out.npz")["observations"][-1, 0] == 100
    short = write_spec(tmp_path / "short.yaml", [js_field(), {"topic": "/cmd", "type": "std_msgs/Float64MultiArray",
                                                              "size": 2, "max_age_s": 0.04}],
                       {"delta_of": ["/js.position"]}, rate_hz=50.0)
    result = bag2data([tmp_path / "bag"], short, tmp_path / "short.npz", progress=False, force=True)
    assert result.summary["episodes"][0]["rows"] == 98  # to 1.94 s: the pose may be 40 ms old at most


def test_next_state_delta_actions(tmp_path) -> None:
    with BagWriter(tmp_path / "bag") as bag:
        for k in range(10):
            bag.joint_state("/js", T0 + k * DT, ["a", "b"], [k * k, 1.0], velocity=[2 * k, 0.0])
    spec = write_spec(tmp_path / "spec.yaml", [js_field(), js_field(field="velocity", names=["a"])],
                      {"delta_of": ["/js.position"], "delta_scale": 10.0})
    bag2data([tmp_path / "bag"], spec, tmp_path / "out.npz", progress=False)
    data = np.load(tmp_path / "out.npz")
    k = np.arange(10)
    assert data["observations"][:, 2].tolist() == (2 * k).tolist()
    expected = np.column_stack([10 * (2 * k + 1), np.zeros(10)])
    expected[-1] = 0.0  # the last row has no next state (and is not a valid transition)
    np.testing.assert_allclose(data["actions"], expected)


@pytest.mark.parametrize("storage, compression, single_file", [
    ("mcap", "none", False), ("mcap", "message", False), ("mcap", "file", False), ("mcap", "storage", False),
    ("sqlite3", "none", False), ("sqlite3", "message", False), ("sqlite3", "file", False),
    ("mcap", "none", True), ("sqlite3", "none", True)])
def test_storage_and_compression_give_the_same_dataset(tmp_path, storage, compression, single_file) -> None:
    bag = simple_bag(tmp_path / "bag", storage=storage, compression=compression)
    source = next(bag.glob("bag.*")) if single_file else bag
    spec = simple_spec(tmp_path)
    result = bag2data([source], spec, tmp_path / "out.npz", progress=False)
    data = np.load(tmp_path / "out.npz")
    k = np.arange(20)
    np.testing.assert_array_equal(data["observations"], np.column_stack([k, -k]).astype(np.float32))
    np.testing.assert_allclose(data["actions"], np.column_stack([0.1 * k, np.ones(20)]), rtol=1e-6)
    info = result.summary["bags"][0]
    assert info["storage"] == storage and info["messages"] == 40
    assert ("zstd" in info["compression"]) == (compression in ("message", "file"))


def test_several_bags_and_the_cli_report(tmp_path, capsys) -> None:
    first = simple_bag(tmp_path / "one", steps=10)
    second = simple_bag(tmp_path / "two", steps=15, storage="sqlite3", start=T0 + 100 * SEC)
    code = cli.main(["bag2data", str(first), str(second), "--spec", str(simple_spec(tmp_path)),
                     "-o", str(tmp_path / "out.npz"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert np.flatnonzero(np.load(tmp_path / "out.npz")["terminals"]).tolist() == [9, 24]
    assert f"bag {first}: mcap" in out and f"bag {second}: sqlite3" in out
    assert "/js" in out and "sensor_msgs/msg/JointState" in out and "wrote" in out and "25 rows, 2 episodes" in out


def test_spec_override_on_the_command_line(tmp_path, capsys) -> None:
    bag = simple_bag(tmp_path / "bag")
    code = cli.main(["bag2data", str(bag), "--spec", str(simple_spec(tmp_path)), "-o", str(tmp_path / "o.npz"),
                     "--quiet", "--set", "rate_hz=5"])
    assert code == 0, capsys.readouterr().err
    assert np.load(tmp_path / "o.npz")["observations"][:, 0].tolist() == list(range(0, 20, 2))


def test_output_trains_with_nfhiql_train(tmp_path) -> None:
    from nfhiql_core.training.train import load_train_config, train

    with BagWriter(tmp_path / "bag") as bag:
        for ep in range(4):
            bag.marker("/marker", T0 + ep * 10 * SEC - 1)
            for k in range(30):
                t = T0 + ep * 10 * SEC + k * DT
                bag.joint_state("/js", t, ["a", "b"], [np.sin(0.1 * k + ep), np.cos(0.1 * k)])
                bag.multiarray("/cmd", t + 1_000, [np.cos(0.1 * k), -np.sin(0.1 * k)])
    spec = simple_spec(tmp_path, episodes={"marker_topic": "/marker"})
    bag2data([tmp_path / "bag"], spec, tmp_path / "demos.npz", progress=False)
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", tmp_path / "demos.npz", steps=20)
    ckpt = train(load_train_config(recipe), progress=False)
    assert ckpt.is_file()
    assert load_dataset(str(tmp_path / "demos.npz")).num_trajectories == 4


# ---- bad input: one line naming the bag, topic and field; exit status 2 --------------------------

def _truncate(bag: Path) -> None:
    storage = next(bag.glob("bag.*"))
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])


def _corrupt_sqlite(bag: Path) -> None:
    db = next(bag.glob("bag.*"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE messages SET data = X'0001000041' WHERE id = 7")


def _corrupt_mcap(bag: Path) -> None:
    storage = next(bag.glob("bag.*"))
    raw = bytearray(storage.read_bytes())
    middle = len(raw) // 2
    raw[middle: middle + 64] = b"\xff" * 64
    storage.write_bytes(bytes(raw))


BAD_CASES = {
    # name: (bag builder, spec overrides, the pieces the one-line error must contain)
    "unknown topic": (lambda p: simple_bag(p), {"obs_topic": "/nope"},
                      ["topic /nope (observation[0]) is not in the bag; it has: /cmd [std_msgs/msg/Float64MultiArray], "
                       "/js [sensor_msgs/msg/JointState]"]),
    "type mismatch": (lambda p: simple_bag(p), {"cmd_type": "sensor_msgs/msg/JointState"},
                      ["topic /cmd (action.fields[0].type): the spec says sensor_msgs/msg/JointState, "
                       "the bag has std_msgs/msg/Float64MultiArray"]),
    "truncated mcap": (lambda p: _truncate(simple_bag(p)), {}, ["not a readable rosbag2 recording"]),
    "truncated sqlite3": (lambda p: _truncate(simple_bag(p, storage="sqlite3")), {}, ["not a readable rosbag2"]),
    "corrupt mcap": (lambda p: _corrupt_mcap(simple_bag(p, steps=400)), {},
                     ["corrupt or truncated storage, unreadable after"]),
    "corrupt message": (lambda p: _corrupt_sqlite(simple_bag(p, storage="sqlite3")), {},
                        ["topic /", "field (whole message): cannot be decoded as", "(message 3)"]),
    "stamps go backwards": (lambda p: _backwards(p), {},
                            ["topic /js field header.stamp: stamps go backwards", "(message 5)"]),
    "empty episode": (lambda p: simple_bag(p, markers=(3, 4)), {"markers": True},
                      ["episode 0", "topic /js field /js.position", "(empty episode)"]),
    "episode without commands": (lambda p: _no_commands_after(p, 10), {"markers": True},
                                 ["episode 1", "topic /cmd field /cmd.data: no messages in this episode",
                                  "(empty episode)"]),
    "array size": (lambda p: simple_bag(p), {"cmd_size": 3}, ["topic /cmd field data: 2 values, the spec says size 3",
                                                              "(message 0)"]),
    "missing joint": (lambda p: simple_bag(p), {"js_names": ["a", "z"]},
                      ["topic /js field position[z]: joint 'z' missing (message has a, b)"]),
    "missing velocity": (lambda p: simple_bag(p), {"js_field": "velocity"},
                         ["topic /js field velocity[a]: NaN/missing value (message 0)"]),
}


def _backwards(path: Path) -> Path:
    with BagWriter(path) as bag:
        for k in range(10):
            stamp = T0 + (k if k != 5 else 2) * DT  # message 5 is stamped before message 4
            bag.joint_state("/js", stamp, ["a", "b"], [k, -k], log=T0 + k * DT + 1000)
            bag.multiarray("/cmd", T0 + k * DT + 2000, [0.0, 1.0])
    return path


def _no_commands_after(path: Path, steps: int) -> Path:
    with BagWriter(path) as bag:
        for k in range(2 * steps):
            t = T0 + k * DT
            if k in (0, steps):
                bag.marker("/marker", t - 1)
            bag.joint_state("/js", t, ["a", "b"], [k, -k])
            if k < steps:
                bag.multiarray("/cmd", t + 1_000, [0.0, 1.0])
    return path


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_naming_bag_topic_and_field(tmp_path, capsys, case) -> None:
    build, options, pieces = BAD_CASES[case]
    build(tmp_path / "bag")
    obs = js_field(options.get("obs_topic", "/js"), options.get("js_names", ["a", "b"]),
                   **({"field": options["js_field"]} if "js_field" in options else {}))
    cmd = {**cmd_field(size=options.get("cmd_size", 2)), **({"type": options["cmd_type"], "names": ["a"], "size": 0}
                                                             if "cmd_type" in options else {})}
    episodes = {"marker_topic": "/marker"} if options.get("markers") else {}
    spec = write_spec(tmp_path / "spec.yaml", [obs], {"fields": [cmd]}, episodes=episodes)
    code, err = run_cli(str(tmp_path / "bag"), "--spec", str(spec), "-o", str(tmp_path / "out.npz"), "--quiet",
                        capsys=capsys)
    assert code == 2
    assert err.startswith(f"nfhiql: error: {tmp_path / 'bag'}") and err.count("\n") == 1, err
    for piece in pieces:
        assert piece in err, err
    assert not (tmp_path / "out.npz").exists() and not sidecar_path(tmp_path / "out.npz").exists()
    assert not list(tmp_path.glob(".bag2data-*")), "temporary files left behind"


def test_missing_bag_and_no_overwrite_without_force(tmp_path, capsys) -> None:
    spec = simple_spec(tmp_path)
    code, err = run_cli(str(tmp_path / "nope"), "--spec", str(spec), "-o", str(tmp_path / "o.npz"), capsys=capsys)
    assert code == 2 and f"{tmp_path / 'nope'}: no such bag" in err
    bag = simple_bag(tmp_path / "bag")
    out = tmp_path / "out.npz"
    out.write_bytes(b"precious")
    code, err = run_cli(str(bag), "--spec", str(spec), "-o", str(out), "--quiet", capsys=capsys)
    assert code == 2 and "already exists (pass --force to overwrite)" in err and out.read_bytes() == b"precious"
    out.unlink()
    sidecar_path(out).write_text("{}")  # the sidecar alone also blocks
    code, err = run_cli(str(bag), "--spec", str(spec), "-o", str(out), "--quiet", capsys=capsys)
    assert code == 2 and f"{sidecar_path(out)}: already exists" in err and not out.exists()
    code, _ = run_cli(str(bag), "--spec", str(spec), "-o", str(out), "--quiet", "--force", capsys=capsys)
    assert code == 0 and len(np.load(out)["observations"]) == 20
    assert json.loads(sidecar_path(out).read_text())["rows"] == 20


@pytest.mark.parametrize("change, message", [
    ({"observation": [{"topic": "/js", "type": "sensor_msgs/msg/JointState"}]},
     "observation[0]: names: required for sensor_msgs/msg/JointState"),
    ({"observation": [js_field(), {"topic": "/p", "type": "geometry_msgs/msg/PoseStamped", "names": ["yaw"]}]},
     "observation[1]: names: 'yaw' is not a component"),
    ({"observation": [{**js_field(), "topc": "/x"}]}, "unknown key observation[0].topc"),
    ({"observation": [{**js_field(), "type": "sensor_msgs/msg/Image"}]}, "observation[0]: type: unsupported"),
    ({"action": {"delta_of": ["/nope.position"]}}, "action.delta_of: '/nope.position' is not an observation label"),
    ({"action": {"fields": [cmd_field()], "delta_of": ["/js.position"]}}, "action: give exactly one of"),
    ({"action": {"fields": [cmd_field(size=0)]}}, "action.fields[0]: size: required"),
    ({"interpolation": "cubic"}, "interpolation: 'cubic' is not one of"),
    ({"tolerance_s": 0.5}, "tolerance_s: must be in [0, 1/rate_hz)"),
    ({"observation": [js_field(tolerance_s=0.1)]}, "/js.position: tolerance_s: must be in [0, 1/rate_hz)"),
    ({"observation": [js_field(tolerance_s=0.02), js_field(names=["a"], label="a", tolerance_s=0.03)]},
     "topic /js: fields declare different tolerance_s"),
    ({"episodes": {"max_gap_s": 0}}, "episodes: max_gap_s: must be > 0"),
    ({"episodes": {"max_gap_s": 0.05}}, "episodes.max_gap_s: must be longer than a control period"),
])
def test_spec_errors_name_the_file_and_key(tmp_path, change, message) -> None:
    base = {"rate_hz": 10.0, "observation": [js_field()], "action": {"fields": [cmd_field()]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**base, **change}))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_shipped_specs_are_valid() -> None:
    specs = sorted((REPO / "config" / "bags").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        assert spec.observation_names and spec.action_names


def test_conversion_and_the_cli_need_no_ros() -> None:
    """nfhiql_core never imports ROS: with rclpy unimportable, the CLI (entry-point verbs included)
    parses and bag2data imports."""
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from nfhiql_core import cli\nfrom nfhiql_core.bags import bag2data\n"
            "from nfhiql_core.bench import bag2data as bench_bag2data\n"
            "args = cli.build_parser().parse_args(['bag2data', 'b', '--spec', 's', '-o', 'o'])\n"
            "assert args.func is cli._bag2data\n"
            "ros = [m for m, mod in sys.modules.items() if mod and m.split('.')[0] in ('rclpy', 'sensor_msgs')]\n"
            "assert not ros, ros\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# ---- building blocks ----------------------------------------------------------------------------

def test_joint_state_fast_path_agrees_with_rosbags() -> None:
    """The CDR shortcut for JointState against rosbags' deserializer: names of every length (CDR
    padding), empty arrays, and a change of name layout mid-stream."""
    ts = typestore()
    T = ts.types
    rng = np.random.default_rng(0)
    field = FieldSpec(topic="/js", type="sensor_msgs/msg/JointState", names=("j", "kk", "lll"))
    vel = FieldSpec(topic="/js", type="sensor_msgs/msg/JointState", field="velocity", names=("lll",))
    decoder = JointStateDecoder([field, vel], deserializer(ts.deserialize_cdr, field.type), header_stamps=True)
    reference = JointSelector([field, vel])
    for i in range(60):
        names = ["lll", "j", "kk", "m" * (i % 7)][: 3 + (i // 20 == 1)]
        if i % 3 == 0:
            names = names[::-1]
        n = len(names)
        msg = T["sensor_msgs/msg/JointState"](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=i, nanosec=7 * i),
                                            frame_id="f" * (i // 10)),
            name=names, position=rng.normal(size=n), velocity=rng.normal(size=n) if i % 4 else np.zeros(0),
            effort=np.zeros(n if i % 5 else 0))
        raw = bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
        stamp, values = decoder(raw)
        expected = reference.select(tuple(names), {a: getattr(msg, a) for a in ("position", "velocity")})
        assert stamp == i * SEC + 7 * i
        np.testing.assert_array_equal(values, expected)
    assert decoder.fast and decoder.prefix is not None


def test_spill_array_and_npz_roundtrip(tmp_path) -> None:
    rows = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    spilled = SpillArray(tmp_path / "rows", np.float32, 3, block=8)
    for row in rows[:30]:
        spilled.append(row)
    spilled.extend(rows[30:])
    stamps = SpillArray(tmp_path / "t", np.int64, block=4)
    for t in range(0, 100, 2):
        stamps.append(t)
    assert spilled.shape == (50, 3) and len(stamps) == 50
    np.testing.assert_array_equal(spilled.read(5, 21), rows[5:21])
    assert stamps.searchsorted(11) == 6 and stamps.searchsorted(12, "right") == 7 and stamps.item(49) == 98
    write_npz(tmp_path / "x.npz", {"rows": spilled, "t": stamps})
    with np.load(tmp_path / "x.npz") as data:
        np.testing.assert_array_equal(data["rows"], rows)
        np.testing.assert_array_equal(data["t"], np.arange(0, 100, 2))


def test_output_that_could_not_train_fails_at_conversion_naming_the_bag(tmp_path) -> None:
    """A value finite in the bag but not in float32 (the dataset's dtype): refused by the checks
    `nfhiql train` applies, before anything is written."""
    with BagWriter(tmp_path / "bag") as bag:
        for k in range(20):
            bag.joint_state("/js", T0 + k * DT, ["a", "b"], [1e300 if k == 7 else k, -k])
    spec = write_spec(tmp_path / "spec.yaml", [js_field()], {"delta_of": ["/js.position"]})
    with pytest.raises(DatasetError) as e:
        bag2data([tmp_path / "bag"], spec, tmp_path / "out.npz", progress=False)
    assert str(tmp_path / "bag") in str(e.value) and "observations" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.npz.json").exists()
