"""The stack's contract, in one rclpy-free module: topic names, modes, command outputs, choices.

Every node, `nfhiql-bringup`, the launch files and `nfhiql bench ros` take these names from here.
Node parameter dataclasses live here too (one section per node), so a launch file or a test can
read a node's parameters without importing rclpy, MuJoCo or torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from nfhiql_core.deploy import DEFAULT_PROVIDERS
from nfhiql_core.errors import ConfigError

# ---- topics (relative names: a namespace moves them all)
OBSERVATION_TOPIC = "observation"
GOAL_TOPIC = "goal"
SUBGOAL_TOPIC = "subgoal"
SUBGOAL_LOG_LIKELIHOOD_TOPIC = "subgoal/log_likelihood"
SIM_COMMAND_TOPIC = "command"  # mujoco_sim's JointState command input (command_output `sim`)
SIM_FORWARD_TOPIC = "forward_command"  # mujoco_sim's Float64MultiArray command input
EPISODE_TOPIC = "sim/episode"  # mujoco_sim's per-episode DiagnosticStatus
DIAGNOSTICS_TOPIC = "/diagnostics"

# ---- diagnostic status names published by mujoco_sim
EPISODE_STATUS = "mujoco_sim/episode"
SUMMARY_STATUS = "mujoco_sim/summary"

# ---- modes and choices
MODES = ("lockstep", "realtime")  # how the stack is paced (the sim's `mode`)
TRIGGERS = ("timer", "observation")  # what paces the policy nodes
TRIGGER = {"lockstep": "observation", "realtime": "timer"}  # policy nodes' trigger per sim mode
OUTPUTS = ("sim", "forward")  # the controller's vector-contract command outputs (robot commands: `interface`)
INTERFACES = ("robot", "vector")  # what the stack talks to the robot through (bringup and launch argument)
SAFE_COMMANDS = ("zero", "hold")
OOD_ACTIONS = ("warn", "safe_stop")
EXECUTORS = ("single_threaded", "events")
GOAL_OUTPUTS = ("topic", "action")  # how mujoco_sim gives each episode's goal


# ---- node parameters
# Each field is a ROS parameter of its node, declared once from here (`nfhiql_ros.params`): its
# default, description, range/choices and whether it may change at run time. None of the nodes
# re-reads a parameter after start-up, so every parameter is read-only unless it says otherwise.

class ParameterError(ConfigError):
    """A node parameter is out of its range or not one of its choices; names the node and parameter."""


def param(default: Any, description: str, *, low: float | None = None, high: float | None = None,
          choices: tuple[str, ...] = (), read_only: bool = True) -> Any:
    """A parameter field: default, description, inclusive range [low, high] (None = open), choices."""
    return dataclasses.field(default=default, metadata={
        "description": description, "low": low, "high": high, "choices": choices, "read_only": read_only})


def describe(params_cls: type, name: str) -> dict[str, Any]:
    """The metadata of parameter `name` (description, low, high, choices, read_only)."""
    return next(f.metadata for f in dataclasses.fields(params_cls) if f.name == name)


def check_fields(params: Any, node: str) -> None:
    """Raise ParameterError for the first field outside its range or choices."""
    for f in dataclasses.fields(params):
        value, meta = getattr(params, f.name), f.metadata
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if meta.get("choices") and v not in meta["choices"]:
                raise ParameterError(f"{node} parameter {f.name}: must be one of {', '.join(meta['choices'])}, "
                                     f"got {v!r}")
            if meta.get("low") is not None and not v >= meta["low"]:
                raise ParameterError(f"{node} parameter {f.name}: must be >= {meta['low']:g}, got {v!r}")
            if meta.get("high") is not None and not v <= meta["high"]:
                raise ParameterError(f"{node} parameter {f.name}: must be <= {meta['high']:g}, got {v!r}")


@dataclass(frozen=True)
class PolicyParams:
    """Parameters of both policy nodes (the `/**` block of the parameter file)."""

    NODE: ClassVar[str] = "policy node"

    bundle: str = param("", "policy bundle directory (required)")
    trigger: str = param("timer", "what paces the stack: timer (realtime: the controller acts every control "
                         "period on the latest observation) or observation (lockstep with mujoco_sim: one command "
                         "per observation, observations subscribed lossless and in order)", choices=TRIGGERS)
    replan_every: int = param(0, "observations per subgoal; 0 = the bundle's subgoal_steps", low=0, high=10_000)
    providers: tuple[str, ...] = param(DEFAULT_PROVIDERS, "ONNX Runtime execution providers in priority order "
                                       "(short names like CUDA allowed); CPU is the fallback")
    executor: str = param("single_threaded", "rclpy executor", choices=EXECUTORS)
    diagnostics_period_s: float = param(1.0, "period of the /diagnostics status (s)", low=1e-3, high=3600.0)
    max_clock_skew_s: float = param(0.1, "how far a message's stamp may lie ahead of this node's clock (s); "
                                    "messages stamped further in the future are dropped and counted",
                                    low=0.0, high=10.0)
    report_file: str = param("", "JSON file the node writes its run summary to on shutdown; '' = off")
    interface: str = param("", "'' = the vector contract (`observation` in; `command_output` out); 'bundle' = the "
                           "robot interface spec the bundle carries, or a spec file: the robot's own topics in, "
                           "its command topics out (nfhiql_core/interface/spec.py)")
    topic_wait_s: float = param(10.0, "robot interface: how long configure waits for every spec topic to appear "
                                "with its type before refusing to run", low=0.0, high=600.0)
    autostart: bool = param(True, "bring the node to active by itself (configure, then activate); false = a managed "
                            "node that waits unconfigured for lifecycle transitions (launch, nfhiql-bringup, "
                            "`ros2 lifecycle set`)")

    def __post_init__(self) -> None:
        node = self.NODE
        if not self.bundle:
            raise ParameterError(f"{node} parameter bundle: required (the policy bundle directory)")
        if not self.providers:
            raise ParameterError(f"{node} parameter providers: name at least one ONNX Runtime execution provider")
        check_fields(self, node)


@dataclass(frozen=True)
class PlannerParams(PolicyParams):
    """`subgoal_planner`: the shared policy parameters plus its rate."""

    NODE: ClassVar[str] = "subgoal_planner"

    rate_hz: float = param(0.0, "planner rate in Hz, realtime only: sets replan_every from the bundle's control "
                           "period; 0 = use replan_every", low=0.0, high=10_000.0)
    goals_file: str = param("", "named goals (YAML: goals: {name: {observation: [...]} | {fields: {label: raw "
                            "values}}}) an operator can send by name; '' = none (teach_goal adds more)")
    goal_range_margin: float = param(0.1, "a goal value may lie this fraction of the training data's span outside "
                                     "its range (the bundle's data_range) before the goal is rejected", low=0.0,
                                     high=10.0)
    goal_plausibility_margin: float = param(10.0, "a goal is rejected when the subgoal policy's log-likelihood of its "
                                            "plan from the current observation falls more than this (nats) below the "
                                            "bundle's high-level OOD threshold", low=0.0)
    check_goal_plausibility: bool = param(True, "apply that log-likelihood test (it needs the bundle's OOD thresholds)")
    progress_period_s: float = param(0.5, "feedback period of a goal, in robot time (control steps x period) (s)",
                                     low=1e-3, high=3600.0)
    stall_time_s: float = param(5.0, "a goal whose estimated steps to go have not fallen by min_progress_steps for "
                                "this long is aborted as stalled (robot time, s)", low=1e-3, high=1e6)
    min_progress_steps: float = param(5.0, "how far the estimated steps must fall to count as progress", low=1e-6)
    step_budget: int = param(0, "control steps a goal may take before it is aborted; 0 = no budget (a request's "
                             "step_budget overrides it)", low=0)
    success_steps: float = param(0.0, "a goal also counts as reached when the value function's estimated steps to go "
                                 "fall to this; 0 = only the robot interface's success test", low=0.0)


@dataclass(frozen=True)
class ControllerParams(PolicyParams):
    """`flow_controller`: the shared policy parameters plus the safety layer and the command output."""

    NODE: ClassVar[str] = "flow_controller"

    control_period_s: float = param(0.0, "control period (s); 0 = the bundle's", low=0.0, high=10.0)
    observation_timeout_s: float = param(0.0, "an observation older than this is stale (s); 0 = 1.5 control "
                                         "periods", low=0.0, high=60.0)
    subgoal_timeout_s: float = param(0.0, "how long past its due time (the last subgoal's arrival + replan_every "
                                     "periods) the next subgoal may be late (s); 0 = 1.5 control periods",
                                     low=0.0, high=60.0)
    subgoal_wait_s: float = param(1.0, "lockstep: how long an observation waits for its planned subgoal before "
                                  "the safe command answers it (s)", low=0.0, high=60.0)
    safe_command: str = param("zero", "the safe command: zero (velocity/delta actions, Servo twists) or hold "
                              "(repeat the last policy command: absolute-position commands)", choices=SAFE_COMMANDS)
    max_delta_per_step: float = param(0.0, "rate limit: largest change of a command element per step; 0 = off",
                                      low=0.0)
    ood_alarm: bool = param(True, "alarm when a log-likelihood falls below the bundle's training-data threshold")
    ood_action: str = param("warn", "what a sustained OOD alarm does: warn, or safe_stop (send the safe command)",
                            choices=OOD_ACTIONS)
    ood_raise_after: int = param(5, "commands in a row below the OOD threshold before the alarm is sustained "
                                 "(warned about, acted on)", low=1, high=100_000)
    ood_clear_after: int = param(20, "commands in a row above it before a sustained alarm clears", low=1,
                                 high=100_000)
    require_enable: bool = param(False, "no policy command without an enable: True on `enable` (std_msgs/Bool) or "
                                 "the `set_enable` service (std_srvs/SetBool); on by default for hardware (sim:=false)")
    enable_timeout_s: float = param(0.5, "deadman: an enable must be renewed within this long (s); 0 = it holds "
                                    "until revoked", low=0.0, high=3600.0)
    command_output: str = param("sim", "without an interface: sim (JointState `command`) or forward (ros2_control "
                                "forward command controller); with one, the spec's command topics are the output",
                                choices=OUTPUTS)
    forward_controller: str = param("forward_position_controller", "command_output forward: the controller name "
                                    "(publishes <name>/commands)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.interface and self.command_output != "sim":
            raise ParameterError("flow_controller parameter command_output: with an interface the spec's command "
                                 "topics are the output; leave command_output at its default")


@dataclass(frozen=True)
class SimParams:
    """`mujoco_sim` (sim/*.yaml are parameter files for these)."""

    env: str = param("pointmaze-medium-navigate-v0", "OGBench env id or dataset name")
    mode: str = param("lockstep", "lockstep (one step per command answering the latest observation) or realtime "
                      "(wall-clock timer, latest fresh command)", choices=MODES)
    control_period_s: float = param(0.0, "realtime timer period (s); 0 = the env's control timestep",
                                    low=0.0, high=10.0)
    seed: int = param(0, "evaluation seed: episode seeds as `nfhiql eval`'s", low=0)
    tasks: tuple[int, ...] = param((1, 2, 3, 4, 5), "evaluation task ids", low=1)
    episodes_per_task: int = param(1, "episodes per task", low=1)
    max_episode_steps: int = param(0, "episode step cap; 0 = the env's time limit", low=0)
    start_delay_s: float = param(1.0, "wait this long (discovery) before the first episode (s)", low=0.0)
    min_observation_subscribers: int = param(1, "lockstep: also wait for this many `observation` subscribers",
                                             low=0)
    wait_for_controller: bool = param(False, "realtime: wait, as lockstep does, for the state topics' subscribers and "
                                      "a command publisher before the first episode (the stacks set it: no episode "
                                      "runs before the managed controller is active)")
    command_timeout_s: float = param(0.5, "realtime: a command older than this means the zero action (s)",
                                     low=1e-6)
    record_path: str = param("", "npz trajectory log written on exit; '' = off")
    report_file: str = param("", "JSON run report (episodes, success, steps, command counts, latency) written "
                             "on exit; '' = off")
    exit_when_done: bool = param(True, "shut down (exit code 0) after the last episode")
    goal_output: str = param("topic", "how each episode's goal is given: topic (published on `goal`, latched) or "
                             "action (sent to the planner's reach_goal action as an operator would: the episode "
                             "starts on the goal's first feedback, its last state is published for the planner's "
                             "success test, a goal still running when the env ends the episode is canceled)",
                             choices=GOAL_OUTPUTS)
    goal_timeout_s: float = param(5.0, "goal_output action: how long to wait for the planner's answers (s)",
                                  low=0.01, high=600.0)
    video_path: str = param("", "render the first episode from the env's camera (headless EGL) to this .gif or "
                            ".mp4, written when the episode ends; '' = off")
    frame_id: str = param("world", "header.frame_id of every message the sim publishes")
    robot_spec: str = param("", "'' = the vector contract (observation / command vectors); a robot interface spec "
                           "(config/robots/*.yaml) = robot mode: only what the robot and a tracker publish "
                           "(joint_states, tcp pose, object pose, gripper contact) and only robot commands (Servo "
                           "twist, gripper speed); the goal vector carries the spec's names")
    tracker_rate_hz: float = param(0.0, "robot mode, realtime: object pose rate (Hz); 0 = every step",
                                   low=0.0, high=1000.0)
    tracker_latency_s: float = param(0.0, "robot mode, realtime: object pose delivery delay (s)", low=0.0, high=1.0)
    tracker_noise_m: float = param(0.0, "robot mode, realtime: Gaussian noise on the object position (m)",
                                   low=0.0, high=1.0)
    tracker_dropout: float = param(0.0, "robot mode, realtime: probability a tracker message is lost",
                                   low=0.0, high=1.0)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ParameterError("mujoco_sim parameter tasks: must be a non-empty list of task ids >= 1")
        check_fields(self, "mujoco_sim")


@dataclass(frozen=True)
class TeleopParams:
    """`teleop`: OGBench's scripted oracle answering the sim's observations."""

    env: str = param("pointmaze-medium-navigate-v0", "the sim's env: point mazes and cube-single")
    seed: int = param(0, "seed of the command noise", low=0)
    noise: float = param(-1.0, "the oracle's noise level; < 0 = OGBench's (maze 0.5, cube 0.1)")
    control_period_s: float = param(0.0, "pacing period (s); 0 = the env's control timestep", low=0.0, high=10.0)
    pace: bool = param(True, "answer at the control rate (lockstep sims); false for realtime sims")
    robot_spec: str = param("", "'' = the sim's observation/command vectors; a robot interface spec = the robot's "
                            "own topics in (assembled by it) and its command topics out, as mujoco_sim's robot mode")
    exit_when_done: bool = param(True, "exit after the sim's summary status")

    def __post_init__(self) -> None:
        check_fields(self, "teleop")
