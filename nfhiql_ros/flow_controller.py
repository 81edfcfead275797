"""`flow_controller`: the bundle's low-level (flow) policy at the control rate, behind the safety layer.

Topics (relative names, so a namespace moves them all):
  in   the observation: with an `interface`, the robot's own topics (the spec's streams, assembled by
       `control.assembly`; a stale or bad stream is named in the safe command's reason), else
       `observation` (JointState vector); lossless LOCKSTEP_QOS with trigger `observation`, sensor QoS
       otherwise. `goal` (latched; restarts the observation count), `subgoal` (stamped with its
       planning observation, RELIABLE), `subgoal/log_likelihood` (std_msgs/Float64)
  out  the command (RELIABLE depth 1): with an `interface`, the spec's command topics (e.g. a Servo
       TwistStamped and a gripper Float64MultiArray; stamped with the observation answered where they
       have a header); else `command_output` `sim` (`command`, JointState stamped with the observation
       it answers) or `forward` (`<forward_controller>/commands`, Float64MultiArray); `/diagnostics`.
  safety  `enable` (std_msgs/Bool; with `require_enable` nothing but the safe command without a
       renewed True, `enable_timeout_s` deadman) and the `set_enable` service (std_srvs/SetBool);
       `estop` (std_msgs/Bool: True latches the e-stop) and `reset_estop` (std_srvs/Trigger; refused
       while still pressed). With an interface, the spec's `workspace` limits stop the arm too.

With an interface the node first waits (`topic_wait_s`) for every spec topic to be there with its
type, and refuses to run, naming each missing one, if one is not.

Every decision (which observation and subgoal a command answers, staleness, the safe command, rate
limit, bounds, OOD) is `nfhiql_core.control.ControllerCore`'s; this node wires topics to it, arms a
timer for its next deadline, publishes and reports. Safety promise and rationale:
docs/design/safety.md; the lockstep contract: docs/design/lockstep.md.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from nfhiql_core.atomic_io import save_json
from nfhiql_core.control.assembly import ObservationAssembler, Unusable, header_stamp
from nfhiql_core.control.controller import ERROR_REASONS, Command, ControllerCore, Names, Timing
from nfhiql_core.control.intake import Rejected
from nfhiql_core.control.safety import CommandFilter, OodMonitor
from nfhiql_core.control.supervisor import SafetySupervisor, workspace_from_spec
from nfhiql_ros.contract import ControllerParams
from nfhiql_ros.diagnostics import ERROR, OK, WARN, CadenceMonitor, run_summary, status_array
from nfhiql_ros.executors import run_node
from nfhiql_ros.managed import ManagedNode
from nfhiql_ros.policy_common import (
    load_runtime,
    observation_qos,
    replan_every,
    resolve_interface,
    wait_for_topics,
)
from nfhiql_ros.robot_io import InterfaceOutput, command_topics, observation_topics, subscribe
from nfhiql_ros.ros_io import COMMAND_QOS, LATCHED_QOS, STATE_QOS, vector_fields, vector_msg

SAFETY_STATE_TOPIC = "safety_state"  # std_msgs/String, latched: the controller's state on each change

ACK_TIMEOUT_S = 1.0  # how long shutdown waits for the last safe command to be acknowledged
QUIET_STATES = ("ok", "starting", "idle", "shutdown", "no_goal", "inactive")  # not a warning


class SimOutput:
    """`command`: the action as a JointState, stamped with the observation it answers."""

    def __init__(self, node: Node, names: tuple[str, ...]):
        self.names = names
        self.publisher = node.create_publisher(JointState, "command", COMMAND_QOS)
        self.publishers = {"command": self.publisher}

    def publish(self, command: np.ndarray, stamp: int) -> None:
        self.publisher.publish(vector_msg(command, self.names, stamp))


class ForwardOutput:
    """`<controller>/commands`: the action as Float64MultiArray (ros2_control forward command controller)."""

    def __init__(self, node: Node, controller: str):
        self.publisher = node.create_publisher(Float64MultiArray, f"{controller.rstrip('/')}/commands", COMMAND_QOS)
        self.publishers = {"commands": self.publisher}

    def publish(self, command: np.ndarray, stamp: int) -> None:
        self.publisher.publish(Float64MultiArray(data=[float(v) for v in command]))


class FlowController(ManagedNode):
    """Low-level policy node: topics in, `ControllerCore` decisions, commands out (a managed node)."""

    def __init__(self, **node_kwargs) -> None:  # node_kwargs: rclpy Node's (context, cli_args, ...)
        super().__init__("flow_controller", ControllerParams, **node_kwargs)
        self.goal_msg: JointState | None = None  # the latest goal, replayed into a re-activation's core
        self.deadline_timer = None
        self.activations = 0

    def configure(self) -> None:
        """Load and verify the bundle, create the safety layer and the outputs, check the robot's topics."""
        p = self.params
        self.runtime = load_runtime(self, p)
        meta = self.runtime.metadata
        self.period_s = p.control_period_s or meta.control_period_s
        if not self.period_s:
            raise ValueError("the bundle has no control period: set control_period_s")
        self.every = replan_every(p, self.runtime)
        period = int(1e9 * self.period_s)
        self.timing = Timing(period=period,
                             observation_timeout=int(1e9 * p.observation_timeout_s) or int(1.5 * period),
                             subgoal_timeout=int(1e9 * p.subgoal_timeout_s) or int(1.5 * period),
                             subgoal_wait=int(1e9 * p.subgoal_wait_s), max_skew=int(1e9 * p.max_clock_skew_s),
                             replan=self.every * period)
        self.ood_thresholds = self._ood_thresholds()
        self._ood_sustained = False
        self.spec = resolve_interface(p, self.runtime)
        workspace = workspace_from_spec(meta.observation_names, self.spec.workspace_limits()) if self.spec else None
        self.supervisor = SafetySupervisor(p.require_enable, int(1e9 * p.enable_timeout_s), workspace)
        self.assembler = None if self.spec is None else ObservationAssembler(
            self.spec, self.timing.max_skew, lockstep=p.trigger == "observation")
        self.output = self._make_output()
        for publisher in self.output.publishers.values():
            self.own(publisher, "configured")
        self.monitor = CadenceMonitor(self.period_s)
        self.reported_state = "inactive"
        self._window_alarms = 0
        self._last_dropped = 0

        # Creation order is the order messages ready together are taken in: the goal before the next
        # observation, a subgoal's log-likelihood (published first) before the subgoal itself.
        own = lambda entity: self.own(entity, "configured")  # noqa: E731
        own(self.create_subscription(JointState, "goal", self.on_goal, LATCHED_QOS))
        own(self.create_subscription(Float64, "subgoal/log_likelihood", self.on_subgoal_log_likelihood, STATE_QOS))
        own(self.create_subscription(JointState, "subgoal", self.on_subgoal, STATE_QOS))
        own(self.create_subscription(Bool, "enable", lambda msg: self.on_enable(msg.data), STATE_QOS))
        own(self.create_subscription(Bool, "estop", lambda msg: self.on_estop(msg.data), STATE_QOS))
        own(self.create_service(SetBool, "set_enable", self.on_set_enable))
        own(self.create_service(Trigger, "reset_estop", self.on_reset_estop))
        self.diagnostics_pub = own(self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10)))
        self.state_pub = own(self.create_publisher(String, SAFETY_STATE_TOPIC, LATCHED_QOS))
        self.core = self._make_core()
        own(self.create_timer(p.diagnostics_period_s, self.publish_diagnostics))
        if self.spec is not None:  # the robot's topics: no observation is taken before they are all there
            wait_for_topics(self, observation_topics(self.spec), command_topics(self.spec), p.topic_wait_s)
        t = self.timing
        self.get_logger().info(
            f"trigger {p.trigger}, period {self.period_s * 1e3:.1f} ms, replan every {self.every}, output "
            f"{self.output_name}, timeouts observation {t.observation_timeout / 1e6:.0f} ms / subgoal "
            f"{t.subgoal_timeout / 1e6:.0f} ms, clock skew {t.max_skew / 1e6:.0f} ms, safe command "
            f"{p.safe_command}, OOD alarm {'off' if self.ood_thresholds is None else self.ood_thresholds}")
        self.publish_state()

    def _make_core(self) -> ControllerCore:
        p, meta = self.params, self.runtime.metadata
        ood = (OodMonitor(self.ood_thresholds["low"], self.ood_thresholds["high"], p.ood_raise_after,
                          p.ood_clear_after) if self.ood_thresholds else None)
        return ControllerCore(
            lambda obs, subgoal: self.runtime.act(obs, subgoal),
            (meta.obs_dim, meta.goal_dim, meta.subgoal_dim),
            Names(meta.observation_names, meta.goal_names, tuple(f"subgoal_{i}" for i in range(meta.subgoal_dim))),
            self.timing, CommandFilter(meta.action_low, meta.action_high, p.safe_command, p.max_delta_per_step),
            self.every, p.trigger == "observation", ood, p.ood_action == "safe_stop", time.perf_counter,
            self.supervisor)

    def _ood_thresholds(self) -> dict[str, float] | None:
        if not self.params.ood_alarm:
            return None
        meta = self.runtime.metadata
        if meta.ood_log_likelihood is None:
            self.get_logger().warning("the bundle has no OOD thresholds (exported without its dataset): "
                                      "OOD alarm off")
            return None
        return {level: meta.ood_threshold(level) for level in ("high", "low")}

    def _make_output(self) -> SimOutput | ForwardOutput | InterfaceOutput:
        p, meta = self.params, self.runtime.metadata
        if self.spec is not None:
            return InterfaceOutput(self, self.spec, self.period_s)
        if p.command_output == "sim":
            return SimOutput(self, meta.action_names)
        return ForwardOutput(self, p.forward_controller)

    @property
    def output_name(self) -> str:
        return "interface " + ", ".join(self.output.publishers) if self.spec is not None else self.params.command_output

    def activate(self) -> None:
        """Take observations and run the control timer (a re-activation starts a fresh core with the
        latest goal)."""
        p = self.params
        if self.activations:
            self.core = self._make_core()
            if self.goal_msg is not None:
                self.on_goal(self.goal_msg)
        self.activations += 1
        if self.spec is None:
            self.own(self.create_subscription(JointState, "observation", self.on_observation, observation_qos(p)),
                     "active")
        else:
            for sub in subscribe(self, observation_topics(self.spec), self.on_robot_message, observation_qos(p)):
                self.own(sub, "active")
        self.own(self.create_timer(self.period_s, self.on_tick), "active")
        # the latched state leaves 'inactive' now, not at the first observation: a planner that matches late
        # would otherwise take the configure-time 'inactive' for a stop and abort its goal
        self.report_state()

    def deactivate(self) -> None:
        """The safe command, then nothing until activated again."""
        self._cancel_deadline()
        command = self.core.shutdown_command(self.now_ns(), "deactivated")
        self.output.publish(command.values, command.stamp)
        self.core.state, self.core.detail = "inactive", ""
        self.report_state()

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---- topics → core → commands

    def on_goal(self, msg: JointState) -> None:
        """A goal, or its withdrawal (a goal message without values: cancelled, reached or aborted)."""
        self.goal_msg = msg
        if not msg.position:
            self._intake(lambda now: self.core.on_goal_cleared(header_stamp(msg) or now, now))
            return
        self._intake(lambda now: self.core.on_goal(*vector_fields(msg), now) or [])

    def on_subgoal(self, msg: JointState) -> None:
        self._intake(lambda now: self.core.on_subgoal(*vector_fields(msg), now))

    def on_subgoal_log_likelihood(self, msg: Float64) -> None:
        self._intake(lambda now: self.core.on_subgoal_log_likelihood(msg.data) or [])

    def on_observation(self, msg: JointState) -> None:
        self._intake(lambda now: self.core.on_observation(*vector_fields(msg), now))

    def on_enable(self, value: bool) -> None:
        self.supervisor.on_enable(bool(value), self.now_ns())
        self._supervisor_changed()

    def on_estop(self, pressed: bool) -> None:
        self.supervisor.on_estop(bool(pressed))
        self._supervisor_changed()

    def _supervisor_changed(self) -> None:
        """A safe command at once if the supervisor now says stop; the deadman's deadline armed."""
        if not self.active:
            return
        self.send(self.core.on_supervisor_change(self.now_ns()))
        self.arm_deadline()
        self.report_state()

    def on_set_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.on_enable(request.data)
        response.success, response.message = True, "enabled" if request.data else "disabled"
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.supervisor.reset()
        self.get_logger().info(f"reset_estop: {response.message}")
        self.report_state()
        return response

    def on_robot_message(self, topic: str, msg) -> None:
        """A robot topic's message: into the assembler; in lockstep a complete state is an observation
        and a message that cannot be used is answered with the safe command."""
        now = self.now_ns()
        try:
            result = self.assembler.on_message(topic, msg, now)
        except Rejected as exc:
            if exc.reason != "invalid":
                self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)
                return
            self.send(self.core.on_assembly(Unusable(topic, "invalid", str(exc)), now, header_stamp(msg)))
            self.arm_deadline()
            return
        if result is not None and self.core.lockstep:
            self._intake(lambda now: self.core.on_assembly(result, now))

    def _intake(self, handle) -> None:
        now = self.now_ns()
        if not self.active:  # configured, not commanding: messages keep the core's inputs current
            try:
                handle(now)
            except Rejected:
                pass
            return
        try:
            commands = handle(now)
        except Rejected as exc:
            if exc.reason not in ("previous_goal",):  # lockstep: the previous episode's backlog, expected
                self.get_logger().warning(f"dropped a message: {exc}", throttle_duration_sec=1.0)
            return
        self.send(commands)
        self.arm_deadline()

    def on_tick(self) -> None:
        now = self.now_ns()
        late = self.monitor.tick(now) if not self.core.lockstep else False
        self.send(self._assembled(now) or self.core.on_tick(now), late)
        self.arm_deadline()

    def on_deadline(self) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        now = self.now_ns()
        self.send(self._assembled(now) or self.core.on_deadline(now))
        self.arm_deadline()

    def _assembled(self, now: int) -> list[Command]:
        """Realtime with an interface: the assembler's verdict now (a safe command if a stream is unusable)."""
        if self.assembler is None or self.core.lockstep:
            return []
        try:
            return self.core.on_assembly(self.assembler.assemble(now), now)
        except Rejected as exc:  # e.g. the newest stamp is ahead of this clock: counted by the core
            self.get_logger().warning(f"dropped an observation: {exc}", throttle_duration_sec=1.0)
            return []

    def _cancel_deadline(self) -> None:
        if self.deadline_timer is not None:
            self.destroy_timer(self.deadline_timer)
            self.deadline_timer = None

    def arm_deadline(self) -> None:
        """A one-shot timer for the next deadline of the core or the assembler (a lost stream is answered
        then, not at a tick)."""
        deadlines = [self.core.next_deadline()]
        if self.assembler is not None and not self.core.lockstep:
            stream = self.assembler.next_deadline(self.now_ns())
            deadlines.append(None if stream is None else stream + 1)
        deadline = min((d for d in deadlines if d is not None), default=None)
        self._cancel_deadline()
        if deadline is not None and self.active:
            delay = max(deadline - self.now_ns(), 0) / 1e9
            self.deadline_timer = self.create_timer(max(delay, 1e-4), self.on_deadline)

    def send(self, commands: list[Command], late: bool = False) -> None:
        for command in commands:
            self.output.publish(command.values, command.stamp)
            if command.reason != "shutdown":  # not a control cycle
                latency = (self.now_ns() - command.stamp) / 1e9 if command.reason is None else None
                self.monitor.command(self.now_ns(), command.compute_s, latency, late)
            if command.alarm:
                self._window_alarms += 1
            if command.alarm is not None and self.core.ood.sustained != self._ood_sustained:
                self._ood_sustained = self.core.ood.sustained
                self._report_ood(command)
            self.report_state()

    def _report_ood(self, command: Command) -> None:
        """A warning when the OOD alarm becomes sustained (not one per command; clearing is a debug line)."""
        ood, thresholds = self.core.ood, self.ood_thresholds
        if not ood.sustained:
            self.get_logger().debug(f"OOD alarm cleared ({ood.clear_after} commands in a row above the thresholds)")
            return
        which = " and ".join(w for w, bad in (("action", command.alarm.action), ("subgoal", command.alarm.subgoal))
                             if bad) or "action"
        percentile = (self.runtime.metadata.ood_log_likelihood or {}).get("percentile", "?")
        self.get_logger().warning(
            f"OOD alarm sustained ({ood.raise_after} commands in a row): {which} log-likelihood below the training "
            f"data's {percentile}th percentile (action {ood.action_log_likelihood:.2f} vs {thresholds['low']:.2f}, "
            f"subgoal {ood.subgoal_log_likelihood} vs {thresholds['high']:.2f})"
            + ("; safe stop" if self.params.ood_action == "safe_stop" else ""))

    def report_state(self) -> None:
        """Log and report each change of the safety state right away."""
        state, detail = self.core.state, self.core.detail
        if state == self.reported_state:
            return
        previous, self.reported_state = self.reported_state, state
        self.publish_state()
        if state == "ok":
            self.get_logger().info(f"policy commands resumed (after {previous})")
        elif state in ("idle", "no_goal", "inactive"):
            self.get_logger().info(state.replace("_", " ") + (f": {detail}" if detail else "") + "; safe command sent")
        else:
            self.get_logger().warning(f"safe command: {state.replace('_', ' ')}" + (f" ({detail})" if detail else ""))
        self.publish_diagnostics()

    # ---- reporting

    def publish_state(self) -> None:
        """`safety_state`: 'state: detail' (latched), what the planner ends a goal on."""
        detail = self.core.detail if self.configured and self.core.state == self.reported_state else ""
        self.state_pub.publish(String(data=self.reported_state + (f": {detail}" if detail else "")))

    def summary(self) -> dict:
        """The run's figures (the report file and the final /diagnostics status)."""
        core, now = self.core, self.now_ns()
        return {"node": "flow_controller", "trigger": self.params.trigger,
                "command_output": self.output_name,
                "assembly_drops": dict(sorted(self.assembler.drops.items())) if self.assembler else {},
                **run_summary(self.monitor, now, 1.0 / self.period_s),
                "safe_commands": dict(sorted(core.safe.items())), "dropped": dict(sorted(core.dropped.items())),
                "dropped_reasons": dict(sorted(core.drop_reasons.items())),
                "ood_alarms": core.ood.alarms if core.ood else 0, "ood_episodes": core.ood.episodes if core.ood else 0,
                "provider": self.runtime.providers[0],
                "replan_every": self.every}

    def publish_diagnostics(self) -> None:
        core, now = self.core, self.now_ns()
        window = self.monitor.window(now)
        dropped = sum(core.dropped.values())
        window_drops, self._last_dropped = dropped - self._last_dropped, dropped
        alarms, self._window_alarms = self._window_alarms, 0
        state = core.state
        if state in ERROR_REASONS:
            level = ERROR
        elif (state not in QUIET_STATES or (core.ood is not None and core.ood.sustained) or window["window_overruns"]
              or window_drops):
            level = WARN
        else:
            level = OK
        message = state if state in QUIET_STATES else f"safe command: {state}" + (
            f" ({core.detail})" if core.detail else "")
        if core.ood is not None and core.ood.sustained:
            message += f"; OOD alarm sustained ({alarms} in the last {self.params.diagnostics_period_s:g} s)"
        ood = core.ood
        values = {
            "state": state, "trigger": self.params.trigger, "command_output": self.output_name,
            "target_rate_hz": 1.0 / self.period_s, **window, "commands": self.monitor.commands,
            "overruns": self.monitor.overruns, "safe_commands": sum(core.safe.values()),
            **{f"safe_{k}": n for k, n in sorted(core.safe.items())}, "dropped": dropped,
            **{f"dropped_{k}": n for k, n in sorted(core.dropped.items())},
            **{f"dropped_{k}": n for k, n in sorted(core.drop_reasons.items())},
            "ood_alarms": ood.alarms if ood else 0, "ood_alarms_window": alarms,
            "ood_sustained": ood.sustained if ood else False, "ood_episodes": ood.episodes if ood else 0,
            "ood_threshold_low": "off" if ood is None else ood.thresholds["low"],
            "ood_threshold_high": "off" if ood is None else ood.thresholds["high"],
            "action_log_likelihood": "none" if ood is None or ood.action_log_likelihood is None
            else ood.action_log_likelihood,
            "subgoal_log_likelihood": "none" if ood is None or ood.subgoal_log_likelihood is None
            else ood.subgoal_log_likelihood,
            "provider": self.runtime.providers[0], "replan_every": self.every,
            "require_enable": self.supervisor.require_enable, "enabled": self.supervisor.enabled_at is not None,
            "estop_latched": self.supervisor.estop_latched, "estops": self.supervisor.estops,
        }
        self.diagnostics_pub.publish(status_array(now, self.get_fully_qualified_name(), level, message, values,
                                                  self.params.bundle))

    def finish(self) -> None:
        """Safe command (acknowledged if possible), last diagnostics, run summary (log line and report file)."""
        command = self.core.shutdown_command(self.now_ns())
        self.output.publish(command.values, command.stamp)
        self.get_logger().info("safe command: shutdown")
        if not all(pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)) for pub in self.output.publishers.values()):
            self.get_logger().warning("the shutdown safe command was not acknowledged by every subscriber")
        self.publish_diagnostics()
        summary = self.summary()
        if self.params.report_file:
            save_json(self.params.report_file, summary)
        safe = ", ".join(f"{k} {n}" for k, n in sorted(self.core.safe.items()))
        extra = (f"safe commands {sum(self.core.safe.values())} ({safe}), dropped messages "
                 f"{sum(self.core.dropped.values())}, OOD alarms {summary['ood_alarms']}, provider "
                 f"{self.runtime.providers[0]}")
        self.get_logger().info(self.monitor.summary(self.now_ns(), 1.0 / self.period_s, extra))


def main(args: list[str] | None = None) -> int:
    return run_node(FlowController, args)


if __name__ == "__main__":
    sys.exit(main())
