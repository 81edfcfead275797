"""The stack's contract, in one rclpy-free module: topic names, modes, command outputs, choices.

Every node, `nfhiql-bringup`, the launch files and `nfhiql bench ros` take these names from here.
Node parameter dataclasses live here too (one section per node), so a launch file or a test can
read a node's parameters without importing rclpy, MuJoCo or torch.
"""
from __future__ import annotations

# ---- topics (relative names: a namespace moves them all)
OBSERVATION_TOPIC = "observation"
GOAL_TOPIC = "goal"
SUBGOAL_TOPIC = "subgoal"
SUBGOAL_LOG_LIKELIHOOD_TOPIC = "subgoal/log_likelihood"
SIM_COMMAND_TOPIC = "command"  # mujoco_sim's JointState command input (command_output `sim`)
SIM_FORWARD_TOPIC = "forward_command"  # mujoco_sim's Float64MultiArray command input
SERVO_TOPIC = "servo_node/delta_twist_cmds"  # MoveIt Servo's TwistStamped input
EPISODE_TOPIC = "sim/episode"  # mujoco_sim's per-episode DiagnosticStatus
DIAGNOSTICS_TOPIC = "/diagnostics"

# ---- diagnostic status names published by mujoco_sim
EPISODE_STATUS = "mujoco_sim/episode"
SUMMARY_STATUS = "mujoco_sim/summary"

# ---- modes and choices
MODES = ("lockstep", "realtime")  # how the stack is paced (the sim's `mode`)
TRIGGERS = ("timer", "observation")  # what paces the policy nodes
TRIGGER = {"lockstep": "observation", "realtime": "timer"}  # policy nodes' trigger per sim mode
OUTPUTS = ("sim", "forward", "servo_twist")  # the controller's command outputs
SAFE_COMMANDS = ("zero", "hold")
OOD_ACTIONS = ("warn", "safe_stop")
EXECUTORS = ("single_threaded", "events")
DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
