"""recorder: chosen topics → a rosbag2 recording, for machines without `ros2 bag record`.

Each topic is subscribed once it has a publisher (its type comes from the ROS graph, its QoS
adapts to the publishers': RELIABLE and TRANSIENT_LOCAL only when every publisher offers them, as
rosbag2 does) and received as serialized CDR (`raw=True`), written unchanged by rosbags' Writer with
the message definition and type hash from rosbags' type store (which must match the graph's type
hash) and the publishers' offered QoS, so `ros2 bag info`/`ros2 bag play` and rosbags read it.
Log time = the middleware's reception time.

mcap by default, sqlite3 on request; optional zstd compression per message or per file. The bag is
written to a hidden directory beside OUTPUT and renamed to OUTPUT when recording stops (SIGINT/SIGTERM
or `duration_s`), after the messages already received are written: an interrupted run never leaves
a half-written OUTPUT, and an existing OUTPUT is replaced only with `force` (and only if it is a bag).

    recorder --ros-args -p output:=demos -p "topics:=[/observation, /command, /teleop/episode]"
    nfhiql record -o demos /observation /command /teleop/episode
"""
from __future__ import annotations

import functools
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from nfhiql_core.bags.bag2data import typestore
from nfhiql_ros.executors import run_node
from nfhiql_ros.params import declare_parameters
from nfhiql_ros.recording import RecorderParams, check_output

DISCOVERY_PERIOD_S = 0.1
DEPTH = 1000  # per-topic subscription queue: nothing is lost to a slow writer
DRAIN_S = 0.05  # on stop: spin until no message arrived for this long


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/JointState' → the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def subscription_qos(publishers: list) -> QoSProfile:
    """What rosbag2 subscribes with: RELIABLE / TRANSIENT_LOCAL only if every publisher offers it."""
    reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
    latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def offered_qos(profile: QoSProfile):
    """An rclpy QoS profile as rosbags' Qos (metadata `offered_qos_profiles`)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def time(duration) -> QosTime:
        return QosTime(*divmod(duration.nanoseconds, 1_000_000_000))

    return Qos(QosHistory(int(profile.history)), profile.depth, QosReliability(int(profile.reliability)),
               QosDurability(int(profile.durability)), time(profile.deadline), time(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), time(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


class Recorder(Node):
    """The recorder node; `done` turns true when `duration_s` has passed (counted from when every topic
    is subscribed), or when a topic still has no publisher after `discovery_timeout_s`."""

    executor_name = "single_threaded"

    def __init__(self, **kwargs) -> None:
        super().__init__("recorder", **kwargs)
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.p = declare_parameters(self, RecorderParams)
        self.output = check_output(self.p)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.recording-", dir=self.output.parent))
        self.partial = self.workdir / self.output.name
        plugin = StoragePlugin.MCAP if self.p.storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.partial, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        if self.p.compression != "none":
            self.writer.set_compression(CompressionMode[self.p.compression.upper()], CompressionFormat.ZSTD)
        self.writer.open()
        self.store = typestore()
        self.pending = list(dict.fromkeys(self.p.topics))
        self.counts: dict[str, int] = {}
        self.subscriptions_by_topic: dict[str, object] = {}
        self.done = False
        self.exit_status = 0
        self.discovery = self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self.discovery_deadline = self.create_timer(self.p.discovery_timeout_s, self._discovery_timed_out)
        self.get_logger().info(f"recording {len(self.pending)} topics to {self.output} ({self.p.storage}"
                               f"{'' if self.p.compression == 'none' else ', zstd ' + self.p.compression}); "
                               f"waiting for publishers on {', '.join(self.pending)}")

    def _stop(self) -> None:
        self.done = True

    def _discovery_timed_out(self) -> None:
        self.discovery_deadline.cancel()
        if self.pending:
            self.get_logger().error(f"no publisher on {', '.join(self.pending)} after "
                                    f"{self.p.discovery_timeout_s:g} s: stopping")
            self.done = True

    def _discover(self) -> None:
        """Subscribe every pending topic that has publishers by now."""
        types = dict(self.get_topic_names_and_types())
        for topic in [t for t in self.pending if t in types]:
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self.pending.remove(topic)
            if len(types[topic]) != 1:
                self.get_logger().error(f"{topic}: several types {types[topic]}; not recording it")
                continue
            self._subscribe(topic, types[topic][0], publishers)
        if not self.pending:
            self.discovery.cancel()
            self.discovery_deadline.cancel()
            self.get_logger().info(f"recording all {len(self.subscriptions_by_topic)} topics"
                                   + (f" for {self.p.duration_s:g} s" if self.p.duration_s else ""))
            if self.p.duration_s:  # the duration counts from here, not from start-up (discovery takes time)
                self.create_timer(self.p.duration_s, self._stop)

    def _subscribe(self, topic: str, msgtype: str, publishers: list) -> None:
        if msgtype not in self.store.types:
            self.get_logger().error(f"{topic}: {msgtype} has no definition in rosbags' type store; not recording it")
            return
        expected = self.store.hash_rihs01(msgtype)
        graph_hash = str(publishers[0].topic_type_hash)
        if graph_hash != expected:
            self.get_logger().warning(f"{topic}: the graph's type hash {graph_hash} differs from rosbags' "
                                      f"{expected} for {msgtype}")
        connection = self.writer.add_connection(
            topic, msgtype, typestore=self.store,
            offered_qos_profiles=[offered_qos(p.qos_profile) for p in publishers])
        self.counts[topic] = 0
        self.subscriptions_by_topic[topic] = self.create_subscription(
            message_class(msgtype), topic, functools.partial(self._on_message, topic, connection),
            subscription_qos(publishers), raw=True)
        self.get_logger().info(f"subscribed {topic} [{msgtype}]")

    def _on_message(self, topic: str, connection, raw: bytes, info) -> None:
        stamp = info.get("received_timestamp") or self.get_clock().now().nanoseconds
        self.writer.write(connection, stamp, raw)
        self.counts[topic] += 1

    def on_exit(self) -> None:
        """Write what already arrived, close the bag and move it into place."""
        executor = self.executor
        if executor is not None:
            while True:
                before = sum(self.counts.values())
                executor.spin_once(timeout_sec=DRAIN_S)
                if sum(self.counts.values()) == before:
                    break
        self.writer.close()
        total = sum(self.counts.values())
        missing = [*self.pending, *(t for t, n in self.counts.items() if n == 0)]
        if total == 0:  # never a silently empty bag; an existing OUTPUT stays as it was
            shutil.rmtree(self.workdir)
            self.get_logger().error(f"no message recorded (no message on {', '.join(missing)}): no bag written")
            self.exit_status = 1
            return
        if self.output.exists():  # force: checked at start-up to be a bag
            shutil.rmtree(self.output)
        os.replace(self.partial, self.output)
        self.workdir.rmdir()
        self.get_logger().info(f"wrote {self.output}: {total} messages ("
                               + ", ".join(f"{t} {n}" for t, n in self.counts.items()) + ")")
        if missing:
            self.get_logger().error(f"no message on {', '.join(missing)}: the bag lacks these topics")
            self.exit_status = 1


def main(args: list[str] | None = None) -> int:
    """Record until SIGINT/SIGTERM (or duration_s); 0, or 1 when the node cannot start."""
    return run_node(Recorder, args)


if __name__ == "__main__":
    sys.exit(main())
