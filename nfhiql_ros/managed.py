"""Managed (lifecycle) policy nodes: configure loads and checks, activate commands, deactivate stops.

A `ManagedNode` subclass implements `configure()` (load and verify the bundle, create what an
inactive node needs, check the robot's topics; raising refuses the transition with the reason),
`activate()` (subscribe the observations, start the timers: from here on it commands),
`deactivate()` (its safe command) and `finish()` (the last word before the process exits).
Entities created with `own(entity, stage)` are destroyed when their stage ends (deactivate for
"active", cleanup for "configured"), so a node can go round the state machine any number of times.

With the `autostart` parameter the node brings itself to active (the standalone default); without
it, it waits unconfigured for `/<node>/change_state` (launch_ros' LifecycleNode, `nfhiql-bringup`,
`ros2 lifecycle set`). An autostarted node whose configure fails exits with status 1.
"""
from __future__ import annotations

from typing import Any, TypeVar

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from nfhiql_ros.params import declare_parameters, with_command_line_overrides

T = TypeVar("T")
STAGES = ("configured", "active")
DESTROYABLE = ("subscription", "publisher", "timer", "service", "client")  # Node.destroy_<kind>


class ManagedNode(LifecycleNode):
    """A lifecycle node with per-stage entities and the run_node protocol (done, exit_status, on_exit)."""

    def __init__(self, name: str, params_cls: type, **node_kwargs: Any) -> None:
        super().__init__(name, **with_command_line_overrides(node_kwargs))
        self.params = declare_parameters(self, params_cls)
        self.executor_name = self.params.executor
        self.configured = self.active = self.finished = False
        self.refused = ""  # why the last configure failed
        self._entities: dict[str, list[Any]] = {stage: [] for stage in STAGES}

    # ---- what a node implements

    def configure(self) -> None:
        raise NotImplementedError

    def activate(self) -> None:
        raise NotImplementedError

    def deactivate(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    # ---- the run_node protocol

    @property
    def done(self) -> bool:
        """An autostarted node that could not configure ends its run."""
        return bool(self.params.autostart and self.refused)

    @property
    def exit_status(self) -> int:
        return 1 if self.done else 0

    def start(self) -> None:
        """`autostart`: configure, then activate."""
        if self.params.autostart and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_exit(self) -> None:
        """The process ends (or the shutdown transition): `finish` once, if configured (a controller sends
        its shutdown safe command there)."""
        self.active = False
        if self.configured and not self.finished:
            self.finished = True
            self.finish()

    # ---- entities per stage

    def own(self, entity: T, stage: str) -> T:
        self._entities[stage].append(entity)
        return entity

    def _destroy(self, stage: str) -> None:
        for entity in reversed(self._entities[stage]):
            kind = type(entity).__name__.lower()
            destroy = getattr(self, f"destroy_{kind}", None) if kind in DESTROYABLE else None
            if destroy is not None:
                destroy(entity)
            else:  # e.g. an ActionServer
                entity.destroy()
        self._entities[stage].clear()

    # ---- lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure()
        except Exception as exc:  # a refusal: one line, nothing half-made left behind
            self.refused = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Refused) else str(exc)
            self.get_logger().error(f"cannot configure: {self.refused}")
            self._destroy("configured")
            return TransitionCallbackReturn.FAILURE
        self.refused = ""
        self.configured = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.activate()
        self.active = True
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self._destroy("active")
        self.active = False
        self.get_logger().info("inactive: safe command sent, not commanding")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy("configured")
        self.configured = False
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_exit()
        self._destroy("active")
        self._destroy("configured")
        self.configured = False
        return TransitionCallbackReturn.SUCCESS


class Refused(RuntimeError):
    """configure() refuses with this message as the whole reason (e.g. the robot's topics are missing)."""
