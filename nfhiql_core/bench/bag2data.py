"""`nfhiql bench bag2data`: conversion throughput (messages/s) and peak memory at several bag sizes.

Each bag is a synthetic teleoperation log written with rosbags' Writer, per second of recording:
500 `/joint_states` (sensor_msgs/JointState, 7 joints with position/velocity/effort), 100
`/object_pose` (geometry_msgs/PoseStamped), 100 `/servo/twist` commands (geometry_msgs/TwistStamped)
and an episode marker (std_msgs/Header) every 60 s. The spec maps joint positions and velocities
and the object pose to a 21-D observation and the twist to a 6-D action at 10 Hz.

Every conversion runs in a fresh process, single-threaded: messages/s = messages in the bag / wall
time of `bag2data` (both passes, checksums and the npz included). Memory: the process's RSS before
converting (imports, type store) and its peak RSS during the conversion, so growth with bag size
would show.
"""
from __future__ import annotations

import functools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from tqdm import tqdm

JOINTS = [f"joint_{i}" for i in range(7)]
RATES_HZ = {"/joint_states": 500, "/object_pose": 100, "/servo/twist": 100}
MARKER_PERIOD_S = 60
CONTROL_RATE_HZ = 10.0
SPEC = {
    "rate_hz": CONTROL_RATE_HZ,
    "time_source": "header",
    "interpolation": "zoh",
    "episodes": {"marker_topic": "/episode", "max_gap_s": 1.0},
    "observation": [
        {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "position", "names": JOINTS},
        {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "velocity", "names": JOINTS},
        {"topic": "/object_pose", "type": "geometry_msgs/msg/PoseStamped"},
    ],
    "action": {"fields": [{"topic": "/servo/twist", "type": "geometry_msgs/msg/TwistStamped", "scale": 0.5}]},
}


def write_bench_bag(path: Path, messages: int, storage: str = "mcap", compression: str = "none",
                    progress: bool = True) -> int:
    """Write a synthetic teleop bag of about `messages` messages; returns the exact count."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from nfhiql_core.bags.bag2data import typestore

    ts = typestore()
    types = ts.types
    header = types["std_msgs/msg/Header"]
    stamp = types["builtin_interfaces/msg/Time"]
    joint_state, pose_stamped, twist_stamped = (types[t] for t in (
        "sensor_msgs/msg/JointState", "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TwistStamped"))
    pose, point, quat = types["geometry_msgs/msg/Pose"], types["geometry_msgs/msg/Point"], types[
        "geometry_msgs/msg/Quaternion"]
    twist, vector = types["geometry_msgs/msg/Twist"], types["geometry_msgs/msg/Vector3"]
    per_second = sum(RATES_HZ.values())
    seconds = max(1, round(messages / per_second))
    rng = np.random.default_rng(0)
    writer = Writer(path, version=Writer.VERSION_LATEST,
                    storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    if compression != "none":
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    count = 0
    t0 = 1_700_000_000 * 10**9
    with writer, tqdm(total=seconds * per_second, unit="msg", unit_scale=True, desc="writing bench bag",
                      disable=not progress, mininterval=0.5) as bar:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=ts) for topic, msgtype in (
            ("/joint_states", joint_state.__msgtype__), ("/object_pose", pose_stamped.__msgtype__),
            ("/servo/twist", twist_stamped.__msgtype__), ("/episode", header.__msgtype__))}

        def hdr(t: int):
            return header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id="base")

        def put(topic: str, t: int, msg) -> None:
            nonlocal count
            writer.write(conns[topic], t + 200_000, ts.serialize_cdr(msg, msg.__msgtype__))
            count += 1

        for s in range(seconds):
            base = t0 + s * 10**9
            if s % MARKER_PERIOD_S == 0:
                put("/episode", base, hdr(base))
            q = rng.normal(size=7)
            for i in range(RATES_HZ["/joint_states"]):
                t = base + i * 2_000_000 + 1
                put("/joint_states", t, joint_state(header=hdr(t), name=JOINTS, position=q + 1e-3 * i,
                                                    velocity=np.full(7, 0.5), effort=np.zeros(7)))
            for i in range(RATES_HZ["/object_pose"]):
                t = base + i * 10_000_000 + 3
                put("/object_pose", t, pose_stamped(header=hdr(t), pose=pose(
                    position=point(x=0.1 * s, y=0.0, z=0.02 * i), orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0))))
                put("/servo/twist", t + 5, twist_stamped(header=hdr(t + 5), twist=twist(
                    linear=vector(x=0.01 * i, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.1))))
            bar.update(per_second)
    return count


def _status_mb(key: str) -> float:
    """A VmRSS/VmHWM line of /proc/self/status in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def convert_and_measure(bag: str, spec: str, output: str) -> dict:
    """One timed conversion in this (fresh) process: RSS before it, and its peak RSS.

    The kernel's peak-RSS mark is reset just before converting (/proc/self/clear_refs), so the peak
    is the conversion's own; without that (not Linux) it is the process's lifetime peak.
    """
    import nfhiql_core.bags.bag2data as b2d

    b2d.typestore()  # imports and the type store are done before the baseline
    baseline = _status_mb("VmRSS") if Path("/proc/self/status").exists() else 0.0
    try:
        Path("/proc/self/clear_refs").write_text("5")
        peak = functools.partial(_status_mb, "VmHWM")
    except OSError:
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # noqa: E731 (KiB on Linux)
    start = time.perf_counter()
    result = b2d.bag2data([bag], spec, output, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "baseline_mb": baseline, "peak_mb": peak(), "rows": result.summary["rows"],
            "episodes": len(result.summary["episodes"])}


def bench_bag2data(sizes: Sequence[int] = (250_000, 1_000_000), storage: str = "mcap", compression: str = "none",
                   workdir: str | None = None, progress: bool = True) -> list[dict]:
    """Print and return messages/s and peak RSS of `bag2data` for bags of each size."""
    root = Path(tempfile.mkdtemp(prefix="bench-bag2data-", dir=workdir))
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    rows = []
    try:
        for size in sizes:
            bag = root / f"bag-{size}"
            count = write_bench_bag(bag, size, storage, compression, progress)
            bag_mb = sum(p.stat().st_size for p in bag.iterdir()) / 2**20
            child = subprocess.run(
                [sys.executable, "-c", "import json, sys; from nfhiql_core.bench.bag2data import convert_and_measure; "
                 "print(json.dumps(convert_and_measure(*sys.argv[1:])))", str(bag), str(spec),
                 str(root / f"out-{size}.npz")], capture_output=True, text=True, check=False)
            if child.returncode:
                raise RuntimeError(f"conversion of {bag} failed:\n{child.stderr}")
            r = json.loads(child.stdout.splitlines()[-1])
            rows.append({"messages": count, "bag_mb": bag_mb, **r, "messages_per_s": count / r["seconds"]})
            shutil.rmtree(bag)
    finally:
        shutil.rmtree(root)
    print(f"bag2data: {storage}{'' if compression == 'none' else ' + zstd ' + compression}, a fresh process per "
          f"bag, {', '.join(f'{t} {r} Hz' for t, r in RATES_HZ.items())} → 21-D obs / 6-D action at "
          f"{CONTROL_RATE_HZ:g} Hz")
    print(f"{'messages':>10} {'bag MB':>8} {'seconds':>8} {'messages/s':>11} {'rows':>8} {'episodes':>8} "
          f"{'RSS before MB':>13} {'peak RSS MB':>11}")  # peak: during the conversion
    for r in rows:
        print(f"{r['messages']:>10} {r['bag_mb']:>8.1f} {r['seconds']:>8.2f} {r['messages_per_s']:>11.0f} "
              f"{r['rows']:>8} {r['episodes']:>8} {r['baseline_mb']:>13.1f} {r['peak_mb']:>11.1f}")
    return rows
