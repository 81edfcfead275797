"""Node processes of a bringup run: each in its own process group, relayed line by line, never outliving bringup."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

GRACE_S = 5.0  # after SIGINT/SIGTERM, how long a node may take before SIGKILL
SPIN_S = 0.1
RUN_ENV = "NFHIQL_BRINGUP_RUN"  # set in every node's environment: identifies a run's processes
OUTPUT_LINES = 200  # lines of each node's output kept for error reports

# Runs in a fresh interpreter before the node: die with bringup (SIGTERM when it goes away, also on
# SIGKILL), then exec the node in place (same pid). argv: <bringup pid> <python> <args...>
_CHILD_TRAMPOLINE = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,int(signal.SIGTERM),0,0,0)\n"  # PR_SET_PDEATHSIG
    "if os.getppid()!=int(sys.argv[1]):os._exit(70)\n"  # bringup already gone
    "os.execv(sys.argv[2],sys.argv[2:])\n"
)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    lines: deque = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    """Starts node processes (each its own process group) and guarantees they are gone at the end."""

    def __init__(self, echo: bool = True, log_dir: Path | None = None):
        self.children: list[Child] = []
        self.echo = echo
        self.log_dir = log_dir
        self.token = uuid.uuid4().hex
        self._print_lock = threading.Lock()

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        env = {**env, RUN_ENV: self.token}
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _CHILD_TRAMPOLINE, str(os.getpid()), *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)  # own session = own process group
        child = Child(name, proc)
        self.children.append(child)
        child.reader = threading.Thread(target=self._relay, args=(child,), name=f"relay-{name}", daemon=True)
        child.reader.start()
        return child

    def _relay(self, child: Child) -> None:
        log = open(self.log_dir / f"{child.name}.log", "w", encoding="utf-8") if self.log_dir else None
        try:
            for raw in child.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                child.lines.append(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
                if self.echo:
                    with self._print_lock:
                        print(f"[{child.name}] {line}", flush=True)
        except (OSError, ValueError):
            pass
        finally:
            if log:
                log.close()

    def alive(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is None]

    def signal_all(self, signum: int, children: Sequence[Child] | None = None) -> None:
        for child in (self.alive() if children is None else children):
            _killpg(child.pid, signum)

    def stop(self, signum: int = signal.SIGINT, grace_s: float = GRACE_S, children: Sequence[Child] | None = None,
             idle: Callable[[], None] | None = None, force: Callable[[], bool] | None = None) -> None:
        """`signum` to each group, SIGKILL to those still there after `grace_s` (or when force())."""
        targets = [c for c in (self.children if children is None else children) if c.proc.poll() is None]
        self.signal_all(signum, targets)
        deadline = time.monotonic() + grace_s
        while any(c.proc.poll() is None for c in targets):
            if time.monotonic() > deadline or (force and force()):
                break
            idle() if idle else time.sleep(SPIN_S)
        self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL every process group we started (their leftovers too) and reap. Idempotent."""
        for child in self.children:
            _killpg(child.pid, signal.SIGKILL)  # the group may outlive its leader
            if child.proc.poll() is None:
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=1.0)


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Signals:
    """SIGINT/SIGTERM → a flag the main loop reads; a second one asks for SIGKILL."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, _frame) -> None:
        self.received.append(signum)

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None

    def force(self) -> bool:
        return len(self.received) > 1

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
