"""bringup's in-process rclpy node: episode results, node diagnostics and subgoal arrivals, live."""
from __future__ import annotations

import time
from collections import defaultdict

from nfhiql_ros.bringup.supervisor import SPIN_S
from nfhiql_ros.contract import (
    DIAGNOSTICS_TOPIC,
    EPISODE_STATUS,
    EPISODE_TOPIC,
    OBSERVATION_TOPIC,
    SUBGOAL_TOPIC,
    SUMMARY_STATUS,
)

Status = tuple[float, int, str, dict[str, str]]  # (receipt time, level, message, values)


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


class Monitor:
    """An rclpy node in this process: episode results, node diagnostics, subgoal arrivals."""

    def __init__(self, domain_id: int | None):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import JointState

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("nfhiql_bringup", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.episodes: list[dict[str, str]] = []
        self.summary_at: float | None = None
        self.statuses: dict[str, list[Status]] = defaultdict(list)
        self.subgoal_times: list[float] = []
        # Same QoS as the publishers: RELIABLE, deep enough to miss nothing (VOLATILE: start first).
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.episode_sub = self.node.create_subscription(DiagnosticStatus, EPISODE_TOPIC, self._on_episode, reliable)
        self.diagnostics_sub = self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics,
                                                             reliable)
        self.subgoal_sub = self.node.create_subscription(JointState, SUBGOAL_TOPIC, self._on_subgoal,
                                                         qos_profile_sensor_data)
        self._joint_state, self._sensor_qos = JointState, qos_profile_sensor_data
        self.observation_gate = None
        self.observed = False
        self.lifecycle_clients: dict = {}

    def open_observation_gate(self, topics: dict[str, type] | None = None) -> None:
        """Subscribe to the sim's state topics (`observation`, or in robot mode the robot's topics:
        topic → message class) until the first message arrives: counted by mujoco_sim's
        min_observation_subscribers, it holds a lockstep start until the sim has matched this node
        (and so the `sim/episode` reader next to it). DDS discovery between processes started
        together can take seconds here; without the gate a short run's results could be missed."""
        self.observation_gate = [self.node.create_subscription(kind, topic, self._on_observation, self._sensor_qos)
                                 for topic, kind in (topics or {OBSERVATION_TOPIC: self._joint_state}).items()]

    def _on_observation(self, msg) -> None:
        self.observed = True

    def close_observation_gate(self) -> None:
        if self.observation_gate is not None and self.observed:
            for subscription in self.observation_gate:
                self.node.destroy_subscription(subscription)
            self.observation_gate = None

    def _on_episode(self, msg) -> None:
        kv = values(msg)
        if msg.name == EPISODE_STATUS:
            self.episodes.append(kv)
        elif msg.name == SUMMARY_STATUS:
            self.summary_at = time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        now = time.monotonic()
        for status in msg.status:
            level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
            self.statuses[status.name.lstrip("/")].append((now, level, status.message, values(status)))

    def _on_subgoal(self, msg) -> None:
        self.subgoal_times.append(time.monotonic())

    def change_state(self, node: str, transition: str, deadline: float, give_up) -> str:
        """Drive `node` through a lifecycle `transition` (configure, activate, ...) via its
        `/<node>/change_state` service: '' on success, else why not. `give_up()` aborts the wait."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.lifecycle_clients.get(node)
        if client is None:
            client = self.lifecycle_clients[node] = self.node.create_client(ChangeState, f"/{node}/change_state")
        while not client.service_is_ready():
            if give_up() or time.monotonic() > deadline:
                return f"no /{node}/change_state service"
            self.spin_once(SPIN_S)
        request = ChangeState.Request()
        request.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
        future = client.call_async(request)
        while not future.done():
            if give_up() or time.monotonic() > deadline:
                return f"{transition} of {node}: no answer"
            self.spin_once(SPIN_S)
        return "" if future.result().success else f"{transition} of {node} failed (see its log)"

    def spin_once(self, timeout_s: float = SPIN_S) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.spin_once(min(SPIN_S, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        try:
            self.executor.remove_node(self.node)
            self.node.destroy_node()
            self.executor.shutdown(timeout_sec=1.0)
        finally:
            self.rclpy.try_shutdown(context=self.context)
