"""An OGBench env seen through a robot interface spec, in-process: the policy's observation is
assembled from the robot model's messages and its action goes out as the spec's commands, which
the robot model executes — the path mujoco_sim's robot mode and the policy nodes take over DDS,
without the transport. `nfhiql eval --interface SPEC` evaluates a policy this way.
"""
from __future__ import annotations

import gymnasium
import numpy as np

from nfhiql_core.control.assembly import Assembled, ObservationAssembler
from nfhiql_core.control.commands import CommandEncoder, RawCommand
from nfhiql_core.errors import ConfigError
from nfhiql_core.evaluation.robot_model import GRIPPER_JOINT, RobotModel, RobotTopics, fill_messages, plain_message
from nfhiql_core.interface.spec import InterfaceSpec

TWIST_COMPONENTS = ("vx", "vy", "vz", "wx", "wy", "wz")


def robot_commands(commands: list[RawCommand], topics: RobotTopics) -> tuple[np.ndarray, float]:
    """The (twist, gripper speed) the robot receives from encoded commands (absent: zero)."""
    twist, gripper = np.zeros(6), 0.0
    for c in commands:
        if c.topic == topics.twist:
            for name, value in zip(c.names, c.values):
                twist[TWIST_COMPONENTS.index(name)] = value
        elif c.topic == topics.gripper and GRIPPER_JOINT in c.names:
            gripper = float(c.values[c.names.index(GRIPPER_JOINT)])
        else:
            raise ConfigError(f"interface spec: command topic {c.topic} is not one the robot listens to "
                              f"({topics.twist}, {topics.gripper})")
    return twist, gripper


class InterfaceEnv(gymnasium.Wrapper):
    """`env` with observations and actions through `spec`; `max_action_error` is the largest
    |executed env action − policy action| so far (the mapping's round-trip error)."""

    def __init__(self, env: gymnasium.Env, spec: InterfaceSpec):
        super().__init__(env)
        self.interface, self.model = spec, RobotModel(env)
        self.encoder = CommandEncoder(spec)
        if self.encoder.dim != env.action_space.shape[0]:
            raise ConfigError(f"interface spec: its action has {self.encoder.dim} values, the env's "
                              f"{env.action_space.shape[0]}")
        self.assembler = ObservationAssembler(spec, max_skew_ns=0, lockstep=True)
        self.period_ns = round(spec.period_ns)
        self.clock = 0
        self.max_action_error = 0.0

    def _observe(self) -> np.ndarray:
        self.clock += self.period_ns
        messages = fill_messages(self.model.readings(), self.model.topics, self.clock, plain_message)
        missing = [t for t in self.assembler.topics if t not in messages]
        if missing:
            raise ConfigError(f"interface spec: topic {missing[0]} is not published by the "
                              f"{self.model.family} robot (it publishes {', '.join(messages)})")
        result = None
        for topic in self.assembler.topics:
            result = self.assembler.on_message(topic, messages[topic], self.clock)
        if not isinstance(result, Assembled):  # every stream has this stamp: never expected
            raise ConfigError("interface spec: the robot's messages did not assemble into an observation")
        return result.values.astype(self.env.observation_space.dtype)

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        return self._observe(), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        executed = self.model.env_action(*robot_commands(self.encoder.encode(action), self.model.topics))
        self.max_action_error = max(self.max_action_error, float(np.abs(executed - action).max()))
        _, reward, terminated, truncated, info = self.env.step(executed.astype(self.env.action_space.dtype))
        return self._observe(), reward, terminated, truncated, info
