"""Executor selection and the main loop of a node: spin until SIGINT/SIGTERM, then shut down cleanly.

rclpy's own signal handlers shut the context down on SIGINT, after which a node can no longer
publish, so a controller could not send its last safe command. `run_node` therefore initialises
rclpy without them, turns SIGINT/SIGTERM into a flag, spins with `spin_once(timeout)` and, once
the flag is set (or a callback raised), calls the node's `on_exit()` while the context is still
up, then destroys the node and shuts rclpy down: no KeyboardInterrupt, no traceback.

The loop never calls `executor.shutdown()` from another thread and never lets a KeyboardInterrupt
reach a callback: both hang rclpy 9.1.2's experimental EventsExecutor (see the reference notes).
"""
from __future__ import annotations

import signal
import threading
from typing import Callable, Protocol

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from nfhiql_ros.contract import EXECUTORS

SPIN_TIMEOUT_S = 0.1  # how often the loop checks the stop flag


class PolicyNode(Protocol):
    """What `run_node` needs of a node besides rclpy's Node."""

    executor_name: str

    def on_exit(self) -> None:
        """Called once, before the node is destroyed, while the node can still publish."""


def make_executor(name: str, context: Context | None = None) -> Executor:
    """`single_threaded` → SingleThreadedExecutor; `events` → rclpy.experimental.EventsExecutor."""
    if name == "single_threaded":
        return SingleThreadedExecutor(context=context)
    if name == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM, shut it down; the process exit status.

    A node that cannot start (bad parameter, bad bundle, missing provider) logs one line and gives 1.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = executor = None
    try:
        try:
            node = factory()
            executor = make_executor(node.executor_name)
        except Exception as exc:  # startup errors: one line, no traceback
            name = getattr(factory, "__name__", "node")
            get_logger(name).fatal(f"cannot start: {type(exc).__name__}: {exc}")
            return 1
        executor.add_node(node)
        if hasattr(node, "start"):  # a managed node with autostart configures and activates itself
            node.start()
        try:  # a node may end its own run by setting `done` (e.g. a recorder's duration)
            while not stop.is_set() and rclpy.ok() and not getattr(node, "done", False):
                executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        finally:  # also after a callback raised: the safe command goes out first
            node.on_exit()
        return getattr(node, "exit_status", 0)  # a node may fail its run (e.g. a recorder that got nothing)
    finally:
        if executor is not None and node is not None:
            executor.remove_node(node)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
