"""`flow_controller`: the bundle's low-level (flow) policy at the control rate, and the safety layer.

Topics (relative names, so a namespace moves them all):
  in   `observation` (JointState vector; sensor QoS, lossless LOCKSTEP_QOS with trigger `observation`),
       `goal` (latched; only its stamp is used: it restarts the observation count and retires the
       previous goal's subgoals and, in lockstep, observations), `subgoal`
       (JointState vector stamped with its planning observation, RELIABLE), `subgoal/log_likelihood`
       (std_msgs/Float64)
  out  the command, RELIABLE depth 1, chosen by `command_output`:
         sim          `command` (JointState, values in position, stamped with the observation it answers)
         forward      `<forward_controller>/commands` (std_msgs/Float64MultiArray, ros2_control
                      forward_command_controller; values in action order)
         servo_twist  `servo_node/delta_twist_cmds` (geometry_msgs/TwistStamped, MoveIt Servo): for
                      end-effector-delta policies; component i of [linear x, y, z, angular x, y, z] is
                      twist_scale[i] · action[twist_axes[i]], or 0 where twist_axes[i] = -1; the header
                      carries the observation stamp and `twist_frame_id`
       `/diagnostics` (diagnostic_msgs/DiagnosticArray), every diagnostics_period_s and on each change
       of the safety state.

Triggers (the shared `trigger` parameter). `timer` (realtime): every control period act on the
latest observation and the latest subgoal. `observation` (lockstep, README's contract): act once per
observation k with the subgoal planned from observation k − k % replan_every, waiting for it up to
subgoal_wait_s. The sim does not step until it is answered, so an observation's age is no measure of
staleness there and never decides between the policy and the safe command: lockstep runs do not
depend on timing (short of a subgoal_wait_s timeout).

Safety (this node's job; the planner and the policy runtime do no safety):
* a message that cannot be used (wrong length, NaN/inf, zero stamp, an observation not newer than the
  previous one or, in lockstep, stamped before the latest goal) is dropped and counted, never used;
* a stale observation (timer trigger: now − stamp > observation_timeout_s, node clock), no subgoal,
  or a stale subgoal → the safe command and a diagnostic. In timer mode a subgoal is stale once its
  replacement is overdue: now > its stamp + replan_every · period + subgoal_timeout_s (until then
  the controller holds the last subgoal). In observation mode the subgoal wait times out. Defaults
  (0): observation_timeout_s = 1.5 periods, subgoal_timeout_s = 2 periods, so a lost observation
  stream gives a safe command within 2 periods of the observation that did not come; in
  observation mode a stream that stops (nothing new for observation_timeout_s after the last
  answer) gives one safe command (the controller has nothing to answer);
* a non-finite policy output → the safe command;
* every command is clamped to the bundle's action bounds, after an optional per-step rate limit
  (|command − previous command| ≤ max_delta_per_step per element; safe commands are not limited);
* on shutdown (SIGINT/SIGTERM) the safe command is sent before the node is destroyed.
The safe command is `zero` (zeros: zero motion for velocity/delta actions such as OGBench's and
for Servo twists, the right choice for those) or `hold` (repeat the last policy command: for
absolute-position commands, where zeros would be a jump; never for velocities or twists).

OOD alarm: bundle.json's `ood_log_likelihood` holds thresholds taken from the training data at
export (1st percentile of each level's log-likelihood of its own outputs). When the low level's
log-likelihood of the action it just produced, or the latest `subgoal/log_likelihood`, falls below
its threshold, the controller counts an alarm, logs a throttled warning and reports WARN in
`/diagnostics`. It does not stop the robot unless `ood_action: safe_stop`. Only a flow's
log-likelihood is an exact density of multimodal data; a Gaussian policy's works as a cruder signal.
Bundles exported without their dataset have no thresholds: the alarm is then off (with a warning).
"""
from __future__ import annotations

import sys
import time
from collections import Counter, OrderedDict
from typing import NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray

from nfhiql_core.deploy.runtime import NonFiniteOutputError
from nfhiql_ros.diagnostics import ERROR, OK, WARN, CadenceMonitor, status_array
from nfhiql_ros.executors import run_node
from nfhiql_ros.contract import SERVO_TOPIC, ControllerParams
from nfhiql_ros.params import declare_parameters, with_command_line_overrides
from nfhiql_ros.policy_common import ReplanSchedule, load_runtime, observation_qos, replan_every
from nfhiql_ros.ros_io import (COMMAND_QOS, LATCHED_QOS, STATE_QOS, MessageError, ns_to_stamp, vector_from_msg,
                               vector_msg)

ERROR_REASONS = ("no_observation", "stale_observation", "non_finite_output")  # the rest is WARN
SUBGOALS_KEPT = 32
ACK_TIMEOUT_S = 1.0  # how long shutdown waits for the last safe command to be acknowledged


class Stamped(NamedTuple):
    values: np.ndarray
    stamp: int  # ns, the message's header stamp


class Pending(NamedTuple):
    """An observation waiting for its subgoal (observation trigger)."""

    values: np.ndarray
    stamp: int
    plan_stamp: int | None  # stamp of the observation its subgoal is planned from; None before a goal
    arrival: int  # ns, node clock


class SimOutput:
    """`command`: the action as a JointState, stamped with the observation it answers."""

    def __init__(self, node: Node, names: tuple[str, ...]):
        self.names = names
        self.publisher = node.create_publisher(JointState, "command", COMMAND_QOS)

    def publish(self, command: np.ndarray, stamp: int) -> None:
        self.publisher.publish(vector_msg(command, self.names, stamp))


class ForwardOutput:
    """`<controller>/commands`: the action as Float64MultiArray (ros2_control forward command controller)."""

    def __init__(self, node: Node, controller: str):
        self.publisher = node.create_publisher(Float64MultiArray, f"{controller.rstrip('/')}/commands", COMMAND_QOS)

    def publish(self, command: np.ndarray, stamp: int) -> None:
        self.publisher.publish(Float64MultiArray(data=[float(v) for v in command]))


class TwistOutput:
    """`servo_node/delta_twist_cmds`: action components mapped to a TwistStamped (MoveIt Servo)."""

    def __init__(self, node: Node, axes: tuple[int, ...], scale: tuple[float, ...], frame_id: str, action_dim: int):
        if any(not -1 <= a < action_dim for a in axes):
            raise ValueError(f"twist_axes entries must be -1 or an action index < {action_dim}, got {list(axes)}")
        self.axes, self.scale, self.frame_id = axes, scale, frame_id
        self.publisher = node.create_publisher(TwistStamped, SERVO_TOPIC, COMMAND_QOS)

    def publish(self, command: np.ndarray, stamp: int) -> None:
        parts = [s * float(command[a]) if a >= 0 else 0.0 for a, s in zip(self.axes, self.scale)]
        msg = TwistStamped()
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp), self.frame_id
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = parts[:3]
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = parts[3:]
        self.publisher.publish(msg)


class FlowController(Node):
    """Low-level policy node with the safety layer (see the module docstring)."""

    def __init__(self, **node_kwargs) -> None:  # node_kwargs: rclpy Node's (context, cli_args, ...)
        super().__init__("flow_controller", **with_command_line_overrides(node_kwargs))
        p = self.params = declare_parameters(self, ControllerParams)
        self.executor_name = p.executor
        self.runtime = load_runtime(self, p)
        meta = self.runtime.metadata
        self.period_s = p.control_period_s or meta.control_period_s
        if not self.period_s:
            raise ValueError("the bundle has no control period: set control_period_s")
        self.every = replan_every(p, self.runtime)
        self.obs_timeout_ns = int(1e9 * (p.observation_timeout_s or 1.5 * self.period_s))
        self.subgoal_timeout_ns = int(1e9 * (p.subgoal_timeout_s or 2.0 * self.period_s))
        self.subgoal_wait_ns = int(1e9 * p.subgoal_wait_s)
        self.replan_ns = int(1e9 * self.every * self.period_s)
        self.low = np.asarray(meta.action_low, dtype=np.float64)
        self.high = np.asarray(meta.action_high, dtype=np.float64)
        self.ood = self._ood_thresholds()
        self.output = self._make_output()
        if p.safe_command == "hold" and p.command_output == "servo_twist":
            self.get_logger().warning("safe_command 'hold' repeats the last twist: use 'zero' for Servo")

        self.schedule = ReplanSchedule(self.every)
        self.obs: Stamped | None = None
        self.pending: Pending | None = None
        self.subgoals: OrderedDict[int, np.ndarray] = OrderedDict()
        self.planner_log_likelihood: float | None = None
        self.last_log_likelihood: float | None = None
        self.last_good = np.zeros(meta.action_dim)
        self.last_command: np.ndarray | None = None
        self.stale_sent = False
        self.state, self.state_detail = "starting", ""
        self.monitor = CadenceMonitor(self.period_s)
        self.safe: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.ood_alarms = self._window_alarms = 0
        self._last_dropped = 0

        # Creation order is the order messages ready together are taken in: the goal before the next
        # observation, a subgoal's log-likelihood (published first) before the subgoal itself.
        self.create_subscription(JointState, "goal", self.on_goal, LATCHED_QOS)
        self.create_subscription(Float64, "subgoal/log_likelihood", self.on_subgoal_log_likelihood, STATE_QOS)
        self.create_subscription(JointState, "subgoal", self.on_subgoal, STATE_QOS)
        self.create_subscription(JointState, "observation", self.on_observation, observation_qos(p))
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.create_timer(self.period_s, self.on_tick)
        self.create_timer(p.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(
            f"trigger {p.trigger}, period {self.period_s * 1e3:.1f} ms, replan every {self.every}, output "
            f"{p.command_output}, timeouts observation {self.obs_timeout_ns / 1e6:.0f} ms / subgoal "
            f"{self.subgoal_timeout_ns / 1e6:.0f} ms, safe command {p.safe_command}, OOD alarm "
            f"{'off' if self.ood is None else self.ood}")

    def _ood_thresholds(self) -> dict[str, float] | None:
        if not self.params.ood_alarm:
            return None
        meta = self.runtime.metadata
        if meta.ood_log_likelihood is None:
            self.get_logger().warning("the bundle has no OOD thresholds (exported without its dataset): "
                                      "OOD alarm off")
            return None
        return {level: meta.ood_threshold(level) for level in ("high", "low")}

    def _make_output(self) -> SimOutput | ForwardOutput | TwistOutput:
        p, meta = self.params, self.runtime.metadata
        if p.command_output == "sim":
            return SimOutput(self, meta.action_names)
        if p.command_output == "forward":
            return ForwardOutput(self, p.forward_controller)
        return TwistOutput(self, p.twist_axes, p.twist_scale, p.twist_frame_id, meta.action_dim)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---- inputs

    def on_goal(self, msg: JointState) -> None:
        try:
            _, stamp = vector_from_msg(msg, self.runtime.metadata.goal_dim, "goal")
        except MessageError as exc:
            return self.drop("goal", exc)
        self.schedule.reset(stamp)
        for old in [s for s in self.subgoals if s < stamp]:  # planned for the previous goal
            del self.subgoals[old]

    def on_subgoal(self, msg: JointState) -> None:
        try:
            subgoal, stamp = vector_from_msg(msg, self.runtime.metadata.subgoal_dim, "subgoal")
        except MessageError as exc:
            return self.drop("subgoal", exc)
        if self.schedule.before_goal(stamp):
            self.dropped["subgoal_previous_goal"] += 1
            return
        self.subgoals[stamp] = subgoal
        self.subgoals.move_to_end(stamp)
        while len(self.subgoals) > SUBGOALS_KEPT:
            self.subgoals.popitem(last=False)
        if self.pending is not None and self.pending.plan_stamp == stamp:
            self.answer_pending(self.now_ns())

    def on_subgoal_log_likelihood(self, msg: Float64) -> None:
        if not np.isfinite(msg.data):
            return self.drop("subgoal/log_likelihood", MessageError("subgoal/log_likelihood: non-finite value"))
        self.planner_log_likelihood = float(msg.data)

    def on_observation(self, msg: JointState) -> None:
        try:
            values, stamp = vector_from_msg(msg, self.runtime.metadata.obs_dim, "observation")
        except MessageError as exc:
            return self.drop("observation", exc)
        if self.obs is not None and stamp <= self.obs.stamp:
            return self.drop("observation", MessageError("observation: stamp not newer than the previous one"))
        lockstep = self.params.trigger == "observation"
        if lockstep and self.schedule.before_goal(stamp):
            return self.drop("observation", MessageError("observation: stamped before the latest goal (lockstep)"))
        self.obs = Stamped(values, stamp)
        self.stale_sent = False
        if lockstep:
            self.on_lockstep_observation(values, stamp)

    def on_lockstep_observation(self, values: np.ndarray, stamp: int) -> None:
        """Observation trigger: wait for this observation's planned subgoal (or answer at once if here)."""
        plan_stamp = self.schedule.observe(stamp)[1] if self.schedule.goal_stamp is not None else None
        if self.pending is not None:
            self.dropped["superseded_observation"] += 1
        now = self.now_ns()
        self.pending = Pending(values, stamp, plan_stamp, now)
        self.answer_pending(now)

    def drop(self, topic: str, exc: Exception) -> None:
        self.dropped[topic] += 1
        self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)

    # ---- control

    def on_tick(self) -> None:
        now = self.now_ns()
        if self.params.trigger == "timer":
            self.control_step(now, self.monitor.tick(now))
        else:
            self.watchdog(now)

    def control_step(self, now: int, late: bool) -> None:
        """Timer trigger: the latest observation with the latest subgoal, or the safe command."""
        obs = self.obs
        if obs is None:
            return self.send_safe("no_observation", now, now, late=late)
        if now - obs.stamp > self.obs_timeout_ns:
            return self.send_safe("stale_observation", obs.stamp, now, f"age {(now - obs.stamp) / 1e9:.3f} s",
                                  late=late)
        if not self.subgoals:
            return self.send_safe("no_subgoal", obs.stamp, now, late=late)
        stamp = next(reversed(self.subgoals))
        overdue = now - (stamp + self.replan_ns)
        if overdue > self.subgoal_timeout_ns:
            return self.send_safe("stale_subgoal", obs.stamp, now, f"next subgoal overdue by {overdue / 1e9:.3f} s",
                                  late=late)
        self.act(obs.values, obs.stamp, self.subgoals[stamp], now, late)

    def answer_pending(self, now: int) -> None:
        """Observation trigger: answer the waiting observation if its subgoal is here."""
        pending = self.pending
        subgoal = self.subgoals.get(pending.plan_stamp) if pending.plan_stamp is not None else None
        if subgoal is not None:
            self.pending = None
            self.act(pending.values, pending.stamp, subgoal, now)

    def watchdog(self, now: int) -> None:
        """Observation trigger: subgoal wait timeout, and one safe command when observations stop."""
        if self.pending is not None:
            if now - self.pending.arrival > self.subgoal_wait_ns:
                stamp, self.pending = self.pending.stamp, None
                reason = "stale_subgoal" if self.subgoals else "no_subgoal"
                self.send_safe(reason, stamp, now, "no subgoal for this observation in time")
        elif self.obs is not None and not self.stale_sent and now - self.obs.stamp > self.obs_timeout_ns:
            self.stale_sent = True
            self.send_safe("stale_observation", self.obs.stamp, now, f"age {(now - self.obs.stamp) / 1e9:.3f} s")

    def act(self, obs: np.ndarray, stamp: int, subgoal: np.ndarray, now: int, late: bool = False) -> None:
        """The policy's command for (obs, subgoal), OOD-checked, rate-limited and clamped; or the safe one."""
        start = time.perf_counter()
        try:
            action, log_prob = self.runtime.act(obs, subgoal)
        except NonFiniteOutputError as exc:
            return self.send_safe("non_finite_output", stamp, now, str(exc), late=late)
        if self.check_ood(float(log_prob)) and self.params.ood_action == "safe_stop":
            return self.send_safe("ood", stamp, now, "log-likelihood below the training-data threshold", late=late)
        command = action.astype(np.float64)
        if self.params.max_delta_per_step > 0 and self.last_command is not None:
            d = self.params.max_delta_per_step
            command = self.last_command + np.clip(command - self.last_command, -d, d)
        command = np.clip(command, self.low, self.high)
        if not np.isfinite(command).all():
            return self.send_safe("non_finite_output", stamp, now, "non-finite command", late=late)
        self.last_good = command
        compute = time.perf_counter() - start
        self.publish(command, stamp, None, compute_s=compute, latency_s=(self.now_ns() - stamp) / 1e9, late=late)

    def check_ood(self, log_prob: float) -> bool:
        """Alarm when the action's or the latest subgoal's log-likelihood is below its threshold."""
        self.last_log_likelihood = log_prob
        if self.ood is None:
            return False
        low = log_prob < self.ood["low"]
        high = self.planner_log_likelihood is not None and self.planner_log_likelihood < self.ood["high"]
        if not (low or high):
            return False
        self.ood_alarms += 1
        self._window_alarms += 1
        which = " and ".join(w for w, bad in (("action", low), ("subgoal", high)) if bad)
        self.get_logger().warning(
            f"OOD alarm: {which} log-likelihood below the training data's {self.ood_percentile()} percentile "
            f"(action {log_prob:.2f} vs {self.ood['low']:.2f}, subgoal {self.planner_log_likelihood} vs "
            f"{self.ood['high']:.2f})", throttle_duration_sec=1.0)
        return True

    def ood_percentile(self) -> str:
        percentile = (self.runtime.metadata.ood_log_likelihood or {}).get("percentile", "?")
        return f"{percentile}th"

    def safe_command(self) -> np.ndarray:
        command = self.last_good if self.params.safe_command == "hold" else np.zeros_like(self.low)
        return np.clip(command, self.low, self.high)

    def send_safe(self, reason: str, stamp: int, now: int, detail: str = "", late: bool = False) -> None:
        self.safe[reason] += 1
        self.publish(self.safe_command(), stamp, reason, detail=detail, late=late)

    def publish(self, command: np.ndarray, stamp: int, reason: str | None, detail: str = "",
                compute_s: float | None = None, latency_s: float | None = None, late: bool = False) -> None:
        self.output.publish(command, stamp)
        self.last_command = command
        if reason != "shutdown":  # not a control cycle
            self.monitor.command(self.now_ns(), compute_s, latency_s, late)
        self.set_state(reason or "ok", detail)

    def set_state(self, state: str, detail: str) -> None:
        """Log and report each change of the safety state right away."""
        if state == self.state:
            return
        previous, self.state, self.state_detail = self.state, state, detail
        if state == "ok":
            self.get_logger().info(f"policy commands resumed (after {previous})")
        else:
            self.get_logger().warning(f"safe command: {state.replace('_', ' ')}" + (f" ({detail})" if detail else ""))
        self.publish_diagnostics()

    # ---- reporting

    def publish_diagnostics(self) -> None:
        now = self.now_ns()
        window = self.monitor.window(now)
        dropped = sum(self.dropped.values())
        window_drops, self._last_dropped = dropped - self._last_dropped, dropped
        alarms, self._window_alarms = self._window_alarms, 0
        if self.state in ERROR_REASONS:
            level = ERROR
        elif self.state not in ("ok", "starting") or alarms or window["window_overruns"] or window_drops:
            level = WARN
        else:
            level = OK
        if self.state in ("ok", "starting"):
            message = self.state
        else:
            message = f"safe command: {self.state}" + (f" ({self.state_detail})" if self.state_detail else "")
        if alarms:
            message += f"; OOD alarm ({alarms} in the last {self.params.diagnostics_period_s:g} s)"
        values = {
            "state": self.state, "trigger": self.params.trigger, "command_output": self.params.command_output,
            "target_rate_hz": 1.0 / self.period_s, **window, "commands": self.monitor.commands,
            "overruns": self.monitor.overruns, "safe_commands": sum(self.safe.values()),
            **{f"safe_{k}": n for k, n in sorted(self.safe.items())}, "dropped": dropped,
            **{f"dropped_{k}": n for k, n in sorted(self.dropped.items())}, "ood_alarms": self.ood_alarms,
            "ood_alarms_window": alarms,
            "ood_threshold_low": "off" if self.ood is None else self.ood["low"],
            "ood_threshold_high": "off" if self.ood is None else self.ood["high"],
            "action_log_likelihood": "none" if self.last_log_likelihood is None else self.last_log_likelihood,
            "subgoal_log_likelihood": "none" if self.planner_log_likelihood is None else self.planner_log_likelihood,
            "provider": self.runtime.providers[0], "replan_every": self.every,
        }
        self.diagnostics_pub.publish(status_array(now, self.get_fully_qualified_name(), level, message, values,
                                                  self.params.bundle))

    def on_shutdown(self) -> None:
        """Safe command (acknowledged if possible), last diagnostics, cadence summary."""
        now = self.now_ns()
        stamp = self.pending.stamp if self.pending else self.obs.stamp if self.obs else now
        self.pending = None
        self.send_safe("shutdown", stamp, now)
        if not self.output.publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
            self.get_logger().warning("the shutdown safe command was not acknowledged by every subscriber")
        safe = ", ".join(f"{k} {n}" for k, n in sorted(self.safe.items()))
        extra = (f"safe commands {sum(self.safe.values())} ({safe}), dropped messages {sum(self.dropped.values())}, "
                 f"OOD alarms {self.ood_alarms}, provider {self.runtime.providers[0]}")
        self.get_logger().info(self.monitor.summary(self.now_ns(), 1.0 / self.period_s, extra))


def main(args: list[str] | None = None) -> int:
    return run_node(FlowController, args)


if __name__ == "__main__":
    sys.exit(main())
