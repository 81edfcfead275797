"""mujoco_sim: an OGBench environment standing in for the robot, the ROS side of `sim_run.SimRun`.

Runs the evaluation episodes of one scenario (seeded as `nfhiql eval`'s), publishes `goal`, one
`sim/episode` status per episode and a summary status at the end of the run, steps on commands
(lockstep or realtime, see nfhiql_ros/README.md) and writes `record_path` and `report_file` on exit.

Two interfaces. Vector (`robot_spec` ''): `observation` and `joint_states` out, the `command` or
`forward_command` vector in. Robot mode (`robot_spec` = a robot spec): MuJoCo as the hardware, only
what the robot and a tracker publish (`evaluation.robot_model`: joint_states, the tcp pose, the
object pose at the tracker's rate and latency, the gripper contact) and only its command
interfaces (a Servo TwistStamped, a gripper speed Float64MultiArray), turned back into the env's
action as the robot's controllers would execute them.

    mujoco_sim --ros-args --params-file sim/pointmaze-medium.yaml -p mode:=realtime

This module must not use `from __future__ import annotations`: rclpy passes `TimerInfo` to a timer
callback only when the parameter's annotation *is* the class, not its name.
"""
import signal
import sys

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.timer import TimerInfo
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from nfhiql_core.atomic_io import save_json, save_npz
from nfhiql_core.errors import ConfigError, NfhiqlError
from nfhiql_core.evaluation.episodes import Episode, EpisodeRecord, canonical_env_name, episode_seed, make_env
from nfhiql_core.evaluation.names import component_names
from nfhiql_core.evaluation.robot_model import GRIPPER_JOINT, RobotModel, fill_messages
from nfhiql_core.evaluation.video import EpisodeFilm
from nfhiql_core.interface.spec import load_spec
from nfhiql_ros import ros_io
from nfhiql_ros.contract import (
    EPISODE_STATUS,
    EPISODE_TOPIC,
    GOAL_TOPIC,
    OBSERVATION_TOPIC,
    SIM_COMMAND_TOPIC,
    SIM_FORWARD_TOPIC,
    SUMMARY_STATUS,
    SimParams,
)
from nfhiql_ros.diagnostics import OK, WARN, status_array
from nfhiql_ros.goal_client import EpisodeGoals, GoalRecord
from nfhiql_ros.params import declare_parameters, with_command_line_overrides
from nfhiql_ros.sim_run import RobotCommands, SimClock, SimRun, Tracker, summary_line

# Episode results: RELIABLE, deep enough that a slow subscriber misses none of a run's statuses.
STATUS_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Command subscriptions: RELIABLE like ros2_control's; depth 10 so that in lockstep a valid command
# queued behind rejected ones is never dropped.
COMMAND_SUB_QOS = ros_io.STATE_QOS
ROBOT_MESSAGES = {"sensor_msgs/msg/JointState": JointState, "geometry_msgs/msg/PoseStamped": PoseStamped,
                  "std_msgs/msg/Float64": Float64}
TWIST_FRAMES = ("", "world")  # the frames a twist may be given in (Servo: '' = its command frame)
STARTUP_POLL_S = 0.05
LOCKSTEP_STALL_S = 2.0  # warn when a lockstep run has waited this long for a command
GOAL_ACK_TIMEOUT_S = 1.0  # wait for the new goal to be acknowledged before the first observation
FLUSH_TIMEOUT_S = 1.0  # on exit, wait at most this long for subscribers to acknowledge the last statuses


def control_timestep(env) -> float:
    """Seconds of simulated time per env step: manipspace's control_timestep(), else MujocoEnv.dt."""
    u = env.unwrapped
    return float(u.control_timestep() if callable(getattr(u, "control_timestep", None)) else u.dt)


class MujocoSim(Node):
    """The sim node: ROS plumbing around a `SimRun`; `done` turns true after the last episode."""

    def __init__(self, **kwargs) -> None:
        super().__init__("mujoco_sim", **with_command_line_overrides(kwargs))
        self.p = declare_parameters(self, SimParams)
        self.env = make_env(self.p.env)
        self.env_name = canonical_env_name(self.p.env)
        u = self.env.unwrapped
        if any(t > len(u.task_infos) for t in self.p.tasks):
            raise ConfigError(f"mujoco_sim parameters: tasks must be within 1..{len(u.task_infos)} "
                              f"for {self.env_name} (got {list(self.p.tasks)})")
        self.space = self.env.action_space
        if len(self.space.shape) != 1 or len(self.env.observation_space.shape) != 1:
            raise ConfigError(f"{self.env_name}: mujoco_sim needs 1-D observation and action spaces")
        self.act_dim = self.space.shape[0]
        self.model = RobotModel(self.env)
        self.robot = bool(self.p.robot_spec)
        if self.robot and self.model.family == "legged":
            raise ConfigError(f"mujoco_sim parameters: robot_spec: {self.env_name} is a legged robot, which runs on "
                              "the vector interface (robot_spec '')")
        if self.robot:
            self.obs_names = load_spec(self.p.robot_spec).observation_names
        else:
            self.obs_names, _ = component_names(self.env_name, self.env.observation_space.shape[0],
                                                self.env.action_space.shape[0])
        self.env_period_s = control_timestep(self.env)
        self.period_s = self.p.control_period_s or self.env_period_s
        self.lockstep = self.p.mode == "lockstep"
        self.max_steps = self.p.max_episode_steps or None
        self.run = SimRun(self.p.mode, self.p.tasks, self.p.episodes_per_task, self.p.command_timeout_s,
                          self.period_s)

        # Lockstep: no observation may be lost on the way to the planner, which counts them (README).
        state_qos = ros_io.LOCKSTEP_QOS if self.lockstep else ros_io.STATE_QOS
        self.goal_pub = self.create_publisher(JointState, GOAL_TOPIC, ros_io.LATCHED_QOS)
        self.status_pub = self.create_publisher(DiagnosticStatus, EPISODE_TOPIC, STATUS_QOS)
        topics = self.model.topics
        if self.robot:
            kinds = {topics.joint_states: JointState, topics.tcp_pose: PoseStamped, topics.object_pose: PoseStamped,
                     topics.contact: Float64}
            present = fill_messages(self.model.readings(), topics, 1, lambda t: ROBOT_MESSAGES[t]())
            self.robot_pubs = {topic: self.create_publisher(kinds[topic], topic, state_qos) for topic in present}
            self.obs_pub = self.robot_pubs[topics.joint_states]  # what the start-up wait counts subscribers on
            self.commands = RobotCommands(self.lockstep, needs_gripper=self.model.family == "arm")
            self.tracker = Tracker(self.lockstep, self.period_s, self.p.tracker_rate_hz, self.p.tracker_latency_s,
                                   self.p.tracker_noise_m, self.p.tracker_dropout, self.p.seed)
            self.cmd_sub = self.create_subscription(TwistStamped, topics.twist, self._on_twist, COMMAND_SUB_QOS)
            self.fwd_sub = self.create_subscription(JointTrajectory, topics.gripper, self._on_gripper,
                                                    COMMAND_SUB_QOS)
        else:
            self.obs_pub = self.create_publisher(JointState, OBSERVATION_TOPIC, state_qos)
            self.joint_pub = self.create_publisher(JointState, "joint_states", ros_io.STATE_QOS)
            self.cmd_sub = self.create_subscription(JointState, SIM_COMMAND_TOPIC, self._on_command, COMMAND_SUB_QOS)
            self.fwd_sub = self.create_subscription(
                Float64MultiArray, SIM_FORWARD_TOPIC, self._on_forward_command, COMMAND_SUB_QOS)

        self.goals = EpisodeGoals(self, self.p.goal_timeout_s) if self.p.goal_output == "action" else None
        self.film = EpisodeFilm(self.p.video_path) if self.p.video_path else None
        self.episode: Episode | None = None
        self.clock = SimClock(self.lockstep, self.period_s)
        self.last_step_ns = 0
        self.t_created_ns = self._now_ns()
        self.t_started_ns = 0
        self.rt_timer = None
        self.startup_timer = self.create_timer(STARTUP_POLL_S, self._try_start)
        self.watchdog = self.create_timer(1.0, self._watch) if self.lockstep else None
        self.get_logger().info(
            f"{self.env_name} ({self.p.mode}, {self.run.n_episodes} episodes, tasks {list(self.p.tasks)}, "
            f"seed {self.p.seed}, env step {self.env_period_s:g} s"
            + ("" if self.lockstep else f", control period {self.period_s:g} s") + ")")

    @property
    def done(self) -> bool:
        return self.run.done

    # --- time --------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _stamp(self) -> int:
        """The stamp of the episode's current state (`SimClock`: unique, simulation time in lockstep)."""
        return self.clock.step(self._now_ns(), self.episode.record.length)

    # --- start-up ----------------------------------------------------------------------------
    def _controller_connected(self) -> bool:
        """Lockstep start: every state topic has its subscribers (robot mode: each of the robot's topics,
        or a state's messages could be lost before they match) and something publishes commands."""
        state_pubs = self.robot_pubs.values() if self.robot else [self.obs_pub]
        return (min(p.get_subscription_count() for p in state_pubs) >= self.p.min_observation_subscribers
                and self.cmd_sub.get_publisher_count() + self.fwd_sub.get_publisher_count() > 0
                and (self.goals is None or self.goals.ready()))

    def _try_start(self) -> None:
        if self._now_ns() - self.t_created_ns < self.p.start_delay_s * 1e9:
            return
        if (self.lockstep or self.p.wait_for_controller) and not self._controller_connected():
            self.get_logger().info(
                f"waiting for a controller: >= {self.p.min_observation_subscribers} subscriber(s) on "
                f"{self.obs_pub.topic_name} and a publisher on {self.cmd_sub.topic_name} or "
                f"{self.fwd_sub.topic_name}", throttle_duration_sec=5.0)
            return
        self.startup_timer.cancel()
        self.t_started_ns = self._now_ns()
        if not self.lockstep:
            if self.period_s != self.env_period_s:
                self.get_logger().warning(f"stepping every {self.period_s:g} s of wall time; each step "
                                       f"advances the env by {self.env_period_s:g} s")
            self.rt_timer = self.create_timer(self.period_s, self._tick)
        self._next_episode()

    def _watch(self) -> None:
        if self.episode is not None and self._now_ns() - self.last_step_ns > LOCKSTEP_STALL_S * 1e9:
            self.get_logger().warning(
                f"lockstep: no command for the observation stamped {self.run.obs_stamp} "
                f"(task {self.episode.record.task_id}, step {self.episode.record.length})",
                throttle_duration_sec=10.0)

    # --- commands ----------------------------------------------------------------------------
    def _reject(self, why: str) -> None:
        self.run.reject()
        self.get_logger().warning(f"command rejected: {why}", throttle_duration_sec=2.0)

    def _on_command(self, msg: JointState) -> None:
        now = self._now_ns()
        try:
            action, stamp = ros_io.vector_from_msg(msg, self.act_dim, self.cmd_sub.topic_name)
        except ros_io.MessageError as e:
            self._reject(str(e))
            return
        self._accept(action, stamp, now)

    def _on_forward_command(self, msg: Float64MultiArray) -> None:
        action = np.asarray(msg.data, dtype=np.float64)
        topic = self.fwd_sub.topic_name
        if action.shape != (self.act_dim,):
            self._reject(f"{topic}: expected {self.act_dim} values in data, got {action.size}")
        elif not np.isfinite(action).all():
            self._reject(f"{topic}: non-finite value at index {int(np.flatnonzero(~np.isfinite(action))[0])}")
        else:
            self._accept(action, None, self._now_ns())

    def _on_twist(self, msg: TwistStamped) -> None:
        t, a = msg.twist.linear, msg.twist.angular
        twist = np.array([t.x, t.y, t.z, a.x, a.y, a.z])
        topic = self.cmd_sub.topic_name
        if not np.isfinite(twist).all():
            self._reject(f"{topic}: non-finite twist component {int(np.flatnonzero(~np.isfinite(twist))[0])}")
        elif msg.header.frame_id not in TWIST_FRAMES:
            self._reject(f"{topic}: twist in frame {msg.header.frame_id!r}; this arm takes {TWIST_FRAMES[1]!r}")
        elif (ready := self.commands.on_twist(twist, ros_io.stamp_to_ns(msg.header.stamp))) is not None:
            self._robot_step(*ready)

    def _on_gripper(self, msg: JointTrajectory) -> None:
        topic = self.fwd_sub.topic_name
        point = msg.points[0] if msg.points else None
        if GRIPPER_JOINT not in msg.joint_names or point is None or len(point.velocities) != len(msg.joint_names):
            self._reject(f"{topic}: expected one point with velocities for {GRIPPER_JOINT}")
            return
        speed = float(point.velocities[list(msg.joint_names).index(GRIPPER_JOINT)])
        if not np.isfinite(speed):
            self._reject(f"{topic}: non-finite gripper speed")
        elif (ready := self.commands.on_gripper(speed, ros_io.stamp_to_ns(msg.header.stamp))) is not None:
            self._robot_step(*ready)

    def _robot_step(self, twist: np.ndarray, gripper: float, stamp: int) -> None:
        self._accept(self.model.env_action(twist, gripper), stamp or None, self._now_ns())

    def _accept(self, action: np.ndarray, stamp: int | None, now: int) -> None:
        """A valid command; `stamp` is the observation it answers (None: forward_command, unstamped)."""
        ignored = self.run.ignored
        cmd = self.run.accept(action, stamp, now)
        if cmd is not None:
            self._step(cmd.action, cmd.latency_s)
        elif self.lockstep and self.run.ignored > ignored and self.episode is not None:
            self.get_logger().warning(f"lockstep: ignored a command stamped {stamp}; the latest observation is "
                                   f"stamped {self.run.obs_stamp}", throttle_duration_sec=5.0)

    def _tick(self, info: TimerInfo) -> None:
        """Realtime: step with the latest fresh command (zero action when none is fresh)."""
        cmd = self.run.tick(info.expected_call_time.nanoseconds, info.actual_call_time.nanoseconds,
                            self._now_ns(), self.act_dim)
        if cmd is not None:
            self._step(cmd.action, cmd.latency_s)

    # --- episodes ----------------------------------------------------------------------------
    def _step(self, action: np.ndarray, latency_s: float) -> None:
        ep = self.episode
        action = np.clip(action, self.space.low, self.space.high).astype(self.space.dtype)
        now = self._now_ns()
        self.run.stepped(ep.observation, action, now, latency_s)
        over = ep.step(action, self.max_steps)
        if self.film is not None:
            self.film.shoot(self.env, ep.record.length, last=over)
        self.last_step_ns = now
        if over:
            if self.goals is not None:  # the planner judges its goal on the last state too
                self._publish_observation()
            elif not (self.robot and self.lockstep):  # no command is due for the terminal state: in lockstep
                self._publish_state(self._stamp())  # over robot topics the policy would answer it
            record = self._end_episode()
            if self.goals is None:
                self._report_episode(record, None)
                self._next_episode()
            else:
                self.goals.finish(lambda goal: (self._report_episode(record, goal), self._next_episode()))
        else:
            self._publish_observation()

    def _publish_state(self, stamp: int) -> None:
        """The robot's messages for the current state (vector mode: joint_states only)."""
        messages = fill_messages(self.model.readings(), self.model.topics, stamp, lambda t: ROBOT_MESSAGES[t](),
                                 self.p.frame_id)
        if not self.robot:
            self.joint_pub.publish(messages[self.model.topics.joint_states])
            return
        step = self.episode.record.length if self.episode is not None else 0
        for topic, msg in messages.items():
            if topic != self.model.topics.object_pose:
                self.robot_pubs[topic].publish(msg)
                continue
            pose = msg.pose
            measured = self.tracker.measure(step, np.array([pose.position.x, pose.position.y, pose.position.z]))
            if measured is None:
                continue
            (pose.position.x, pose.position.y, pose.position.z), delay = measured[0].tolist(), measured[1]
            if delay:
                self._publish_later(topic, msg, delay)
            else:
                self.robot_pubs[topic].publish(msg)

    def _publish_later(self, topic: str, msg: PoseStamped, delay_s: float) -> None:
        def fire() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            self.robot_pubs[topic].publish(msg)

        timer = self.create_timer(delay_s, fire)

    def _publish_observation(self, first_of_episode: bool = False) -> None:
        stamp = self._stamp()
        self.run.observed(stamp, first_of_episode)
        if not self.robot:
            self.obs_pub.publish(ros_io.vector_msg(self.episode.observation, self.obs_names, stamp, self.p.frame_id))
        self._publish_state(stamp)  # same instant, same stamp

    def _next_episode(self) -> None:
        job = self.run.next_job()
        if job is None:
            self._finish_all()
            return
        task_id, ep = job
        self.episode = Episode(self.env, task_id, ep, episode_seed(self.p.seed, task_id, ep))
        if self.film is not None:
            self.film.shoot(self.env, 0)
        if self.goals is not None:
            self.goals.send(self.episode.goal, self._begin_episode)
            return
        self.last_step_ns = self._now_ns()
        self.clock.start_episode()
        goal_stamp = self.clock.now(self._now_ns())
        self.goal_pub.publish(ros_io.vector_msg(self.episode.goal, self.obs_names, goal_stamp, self.p.frame_id))
        # The goal must reach every subscriber before the episode's first observation: planner and
        # controller count observations from the goal (lockstep contract).
        if not self.goal_pub.wait_for_all_acked(Duration(seconds=GOAL_ACK_TIMEOUT_S)):
            self.get_logger().warning(f"goal not acknowledged by all subscribers within {GOAL_ACK_TIMEOUT_S} s")
        self._publish_observation(first_of_episode=True)

    def _begin_episode(self) -> None:
        """goal_output action: the planner has the goal (its first feedback came): the first observation."""
        self.last_step_ns = self._now_ns()
        self.clock.start_episode()
        self._publish_observation(first_of_episode=True)

    def _publish_status(self, name: str, message: str, level: bytes, values: dict) -> None:
        self.status_pub.publish(status_array(self._now_ns(), name, level, message, values, self.env_name).status[0])

    def _end_episode(self) -> EpisodeRecord:
        """The env ended the episode: record it (no command steps it any more)."""
        ep, self.episode = self.episode, None
        if self.film is not None:
            self.film.write()
            self.get_logger().info(f"wrote {self.film.path} ({len(self.film.frames)} frames of the first episode)")
            self.film = None
        self.run.finished(ep.goal, ep.record)
        return ep.record

    def _report_episode(self, rec: EpisodeRecord, goal: GoalRecord | None) -> None:
        """The episode's status on `sim/episode` (with its goal's outcome and estimate) and a log line."""
        outcome = "success" if rec.success else "failure"
        values = dict(task_id=rec.task_id, episode=rec.episode, env_seed=rec.env_seed, success=str(rec.success).lower(),
                      length=rec.length)
        line = f"task {rec.task_id} episode {rec.episode}: {outcome} after {rec.length} steps"
        if goal is not None:
            estimate = goal.estimated_steps_at_start
            self.run.goals.append(dict(task_id=rec.task_id, episode=rec.episode, outcome=goal.outcome,
                                       reason=goal.reason, estimated_steps_at_start=estimate, steps=rec.length,
                                       estimates=[round(e, 2) for e in goal.estimates]))
            values.update(goal_outcome=goal.outcome, goal_reason=goal.reason,
                          estimated_steps_at_start="none" if estimate is None else f"{estimate:.1f}")
            line += (f"; goal {goal.outcome} ({goal.reason}); value-estimated steps at the start "
                     + ("none" if estimate is None else f"{estimate:.1f}") + f", actual {rec.length}")
        self._publish_status(EPISODE_STATUS, outcome, OK if rec.success else WARN, values)
        self.get_logger().info(f"{line} ({len(self.run.recorder.records)}/{self.run.n_episodes})")

    def _finish_all(self) -> None:
        """The end of the run: the summary status on `sim/episode` announces it to every node."""
        if self.rt_timer is not None:
            self.rt_timer.cancel()
        if self.watchdog is not None:
            self.watchdog.cancel()
        r = self.report()
        self._publish_status(SUMMARY_STATUS, "done", OK, dict(
            success=f"{r['mean_success']:.6g}", episodes=len(r["episodes"]), steps=r["steps"],
            ignored_commands=r["ignored_commands"], rejected_commands=r["rejected_commands"],
            missed_deadlines=r["missed_deadlines"] or 0, mode=r["mode"],
            **{f"task_{t}": f"{s:.6g}" for t, s in r["per_task_success"].items()}))
        self.get_logger().info("done: " + summary_line(r))

    def report(self) -> dict:
        wall = (self._now_ns() - self.t_started_ns) * 1e-9 if self.t_started_ns else 0.0
        return self.run.report(self.env_name, wall)

    # --- exit --------------------------------------------------------------------------------
    def flush(self) -> None:
        """Give subscribers a moment to acknowledge the last statuses before the process exits."""
        self.status_pub.wait_for_all_acked(Duration(seconds=FLUSH_TIMEOUT_S))

    def close(self) -> None:
        """Write the record and the report (if asked) and close the env."""
        report = self.report()
        if not self.done:
            self.get_logger().info("stopped: " + summary_line(report))
        if self.p.record_path:
            meta = dict(env_name=self.env_name, mode=self.p.mode, seed=self.p.seed, period_s=self.period_s,
                        missed_deadlines=self.run.deadlines.missed, ignored_commands=self.run.ignored,
                        rejected_commands=self.run.rejected)
            save_npz(self.p.record_path, self.run.recorder.arrays(
                self.env.observation_space.shape, self.space.shape, meta), compressed=False)
            self.get_logger().info(f"wrote {self.p.record_path}")
        if self.p.report_file:
            save_json(self.p.report_file, report)
        self.env.close()


def main(args: list[str] | None = None) -> int:
    """Run the node until the last episode (exit_when_done) or SIGINT/SIGTERM; exit code 0, 2 on bad parameters."""
    stop: list[int] = []

    def on_signal(signum, _frame) -> None:
        if stop:  # a second signal: give up on the clean path
            raise KeyboardInterrupt
        stop.append(signum)

    # Our own handlers, not rclpy's: a signal only sets a flag that the spin loop polls, so no
    # exception ever surfaces inside a callback and shutdown cannot deadlock (ros2-deploy.md §4).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = executor = None
    code = 0
    try:
        node = MujocoSim()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop and not (node.done and node.p.exit_when_done):
            executor.spin_once(timeout_sec=0.1)
        if node.done and not stop:
            node.flush()
    except (NfhiqlError, ParameterException) as e:  # bad parameters: one line, no traceback
        print(f"mujoco_sim: {e}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node is not None:
                node.close()
                node.destroy_node()
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
        finally:
            rclpy.try_shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
