"""`nfhiql bench assembly`: the per-tick cost of the robot interface in-process, on a bundle's spec.

Messages are the robot model's (the cube arm: joint_states, tcp pose, tracker pose, contact), built
once with ROS's attribute layout; each timed tick hands every stream's message to the assembler
(decode by joint name, derived features, stamp checks) and assembles the observation; the whole
tick adds `plan` + `act` through ONNX Runtime and encoding the commands. Printed: p50/p99/max in µs
and the share of ticks that fit a 500 Hz period (2 ms).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nfhiql_core.bench.timing import latencies_us
from nfhiql_core.control.assembly import ObservationAssembler
from nfhiql_core.control.commands import CommandEncoder
from nfhiql_core.deploy.bundle import BundleError
from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_core.evaluation.episodes import make_env
from nfhiql_core.evaluation.robot_model import RobotModel, fill_messages, plain_message

ASSEMBLY_P99_TARGET_US = 200.0
TICK_PERIOD_US = 2000.0  # 500 Hz


def bench_assembly(bundle: str, calls: int = 2000, warmup: int = 200) -> list[dict[str, Any]]:
    runtime = PolicyRuntime(bundle, ["CPUExecutionProvider"], intra_op_threads=1)
    spec = runtime.metadata.interface_spec()
    if spec is None:
        raise BundleError(f"{bundle}: the bundle carries no robot interface to assemble observations with")
    env = make_env(runtime.metadata.env)
    env.reset(seed=0, options=dict(task_id=1))
    model = RobotModel(env)
    assembler, encoder = ObservationAssembler(spec, max_skew_ns=10**18), CommandEncoder(spec)
    messages = fill_messages(model.readings(), model.topics, 1, plain_message)
    topics = assembler.topics
    goal = np.asarray(env.unwrapped.compute_observation(), dtype=np.float32)
    clock = [0]

    def assemble() -> np.ndarray:
        clock[0] += 1
        for topic in topics:
            msg = messages[topic]
            if hasattr(msg, "header"):
                msg.header.stamp.nanosec = clock[0]
            assembler.on_message(topic, msg, clock[0])
        return assembler.assemble(clock[0]).values

    def tick() -> None:
        obs = assemble().astype(np.float32)
        subgoal = runtime.plan(obs, goal).subgoal
        encoder.encode(runtime.act(obs, subgoal).action)

    rows = []
    for name, call in ((f"assemble {len(topics)} streams", assemble), ("whole tick (assemble+plan+act+encode)", tick)):
        us = latencies_us(call, calls, warmup)
        rows.append({"case": name, "p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
                     "max_us": float(us.max()), "within_2ms": float(np.mean(us <= TICK_PERIOD_US))})
    env.close()
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'case':<40} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8} {'<= 2 ms':>8}"]
    lines += [f"{r['case']:<40} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['max_us']:8.1f} {r['within_2ms']:8.2%}"
              for r in rows]
    lines.append(f"target: assembly p99 <= {ASSEMBLY_P99_TARGET_US:.0f} µs")
    return "\n".join(lines)
