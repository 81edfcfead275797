"""teleop: a scripted teleoperator driving `mujoco_sim` over ROS topics with OGBench's oracles.

It does what a human with a joystick would: watches `goal` and `observation`, and answers each
observation with a noisy oracle command on `command` (a stamped vector, stamped with the
observation it answers: the lockstep contract). With `pace` (lockstep sims) the command for the
k-th observation of an episode goes out k + 1 control periods after that episode's first
observation was stamped (or arrived, if the sim's clock is not ours), so the demonstration unfolds
at the control rate in wall time, as it would in a real teleoperation; realtime sims pace
themselves (`pace: false`, commands go out at once).
At every new goal it publishes an episode marker on `teleop/episode` (a stamped vector
[episode index], stamped with the goal's stamp, i.e. before the episode's first observation;
latched like the goal, so a recorder that subscribes late still gets the current episode's).
It exits after the sim's summary status. With `robot_spec` it works like the robot's operator: the
observation is assembled from the robot's own topics by that spec and the commands go out on its
command topics (a Servo twist and a gripper trajectory for the arm), so a recording of it converts
with the same spec.

The oracles are OGBench's (`nfhiql_core.data.oracles`): point mazes (BFS direction to the goal plus
Gaussian noise) and cube-single (the pick-and-place plan oracle with correlated plan noise), run
from the observation and goal messages; the teleop's own copy of the env only supplies what the
oracles read from it (maze map, arm bounds, timestep). Every step happens in the sim.

    teleop --ros-args -p env:=pointmaze-medium-navigate-v0 -p noise:=0.2 -p seed:=1
"""
from __future__ import annotations

import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState

from nfhiql_core.control.assembly import ObservationAssembler
from nfhiql_core.control.intake import Rejected
from nfhiql_core.data.oracles import make_oracle
from nfhiql_core.evaluation.episodes import canonical_env_name, make_env
from nfhiql_core.interface.spec import load_spec
from nfhiql_ros import ros_io
from nfhiql_ros.contract import SUMMARY_STATUS, TeleopParams
from nfhiql_ros.executors import run_node
from nfhiql_ros.mujoco_sim import STATUS_QOS, control_timestep
from nfhiql_ros.params import declare_parameters, with_command_line_overrides
from nfhiql_ros.robot_io import InterfaceOutput, observation_topics, subscribe

MARKER_TOPIC = "teleop/episode"


class Teleop(Node):
    """The teleoperator node; `done` turns true after the sim's summary."""

    executor_name = "single_threaded"

    def __init__(self, **kwargs) -> None:
        super().__init__("teleop", **with_command_line_overrides(kwargs))
        self.p = declare_parameters(self, TeleopParams)
        self.env = env = make_env(self.p.env)
        name = canonical_env_name(self.p.env)
        self.oracle = make_oracle(env, name, None if self.p.noise < 0 else self.p.noise, self.p.seed)
        self.obs_dim = env.observation_space.shape[0]
        self.names = ros_io.vector_names("action", env.action_space.shape[0])
        self.period_ns = round((self.p.control_period_s or control_timestep(env)) * 1e9)
        self.goal: np.ndarray | None = None
        self.goal_stamp = 0
        self.episode = -1
        self.step = 0  # observations answered in this episode
        self.start_ns = 0  # when the episode's first observation was stamped (or arrived)
        self.pacer = None
        self.done = False
        # Goal first: when goal and observation are both ready, rclpy takes them in creation order.
        self.create_subscription(JointState, "goal", self._on_goal, ros_io.LATCHED_QOS)
        qos = ros_io.LOCKSTEP_QOS if self.p.pace else ros_io.SENSOR_QOS
        self.assembler = self.output = None
        if self.p.robot_spec:
            spec = load_spec(self.p.robot_spec)
            self.assembler = ObservationAssembler(spec, max_skew_ns=int(1e9), lockstep=self.p.pace)
            self.output = InterfaceOutput(self, spec, self.period_ns * 1e-9)
            subscribe(self, observation_topics(spec), self._on_robot_message, qos)
        else:
            self.obs_sub = self.create_subscription(JointState, "observation", self._on_observation, qos)
            self.command_pub = self.create_publisher(JointState, "command", ros_io.COMMAND_QOS)
        self.create_subscription(DiagnosticStatus, "sim/episode", self._on_status, STATUS_QOS)
        self.marker_pub = self.create_publisher(JointState, MARKER_TOPIC, ros_io.LATCHED_QOS)
        self.get_logger().info(f"{self.oracle.family} oracle teleop for {name}: noise {self.p.noise}, "
                               f"seed {self.p.seed}, " + (f"paced at {self.period_ns * 1e-9:g} s" if self.p.pace
                                                          else "unpaced"))

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_goal(self, msg: JointState) -> None:
        try:
            goal, stamp = ros_io.vector_from_msg(msg, self.obs_dim, "goal")
        except ros_io.MessageError as e:
            self.get_logger().warning(f"goal ignored: {e}")
            return
        self.goal, self.goal_stamp = goal, stamp
        self.episode += 1
        self.step = 0
        self.marker_pub.publish(ros_io.vector_msg(np.array([self.episode]), ["episode"], stamp))
        self.get_logger().info(f"episode {self.episode}: new goal")

    def _on_observation(self, msg: JointState) -> None:
        try:
            obs, stamp = ros_io.vector_from_msg(msg, self.obs_dim, self.obs_sub.topic_name)
        except ros_io.MessageError as e:
            self.get_logger().warning(f"observation ignored: {e}")
            return
        self._answer(obs, stamp)

    def _on_robot_message(self, topic: str, msg) -> None:
        try:
            result = self.assembler.on_message(topic, msg, self._now_ns())
        except Rejected as e:
            self.get_logger().warning(f"robot message ignored: {e}")
            return
        if result is not None:
            self._answer(result.values, result.stamp)

    def _answer(self, obs: np.ndarray, stamp: int) -> None:
        if self.goal is None or stamp < self.goal_stamp:  # before any goal, or of the previous episode
            return
        if self.step == 0:  # the schedule starts at the first observation: its stamp if our clocks agree
            arrival = self._now_ns()
            self.start_ns = stamp if 0 <= arrival - stamp < self.period_ns else arrival
        action = self.oracle.action(obs, self.goal, self.step)
        due = self.start_ns + (self.step + 1) * self.period_ns
        self.step += 1
        if self.pacer is not None:
            self.destroy_timer(self.pacer)
            self.pacer = None
        now = self._now_ns()  # after the oracle, whose first plan of an episode takes 20-50 ms
        if not self.p.pace or due <= now:
            self._publish(action, stamp)
            return
        self.pacer = self.create_timer((due - now) * 1e-9, lambda: self._fire(action, stamp))

    def _fire(self, action: np.ndarray, stamp: int) -> None:
        self.pacer.cancel()  # one shot
        self._publish(action, stamp)

    def _publish(self, action: np.ndarray, stamp: int) -> None:
        if self.output is not None:
            self.output.publish(action, stamp)
        else:
            self.command_pub.publish(ros_io.vector_msg(action, self.names, stamp))

    def _on_status(self, msg: DiagnosticStatus) -> None:
        if msg.name == SUMMARY_STATUS:
            self.get_logger().info(f"sim done: {msg.message}; {self.episode + 1} episodes demonstrated")
            self.done = self.p.exit_when_done

    def on_exit(self) -> None:
        """Close the oracle's env (the sim holds no state of ours)."""
        self.env.close()


def main(args: list[str] | None = None) -> int:
    """Run until the sim's summary (exit_when_done) or SIGINT/SIGTERM; 0, or 1 when it cannot start."""
    return run_node(Teleop, args)


if __name__ == "__main__":
    sys.exit(main())
