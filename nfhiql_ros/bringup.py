"""`nfhiql-bringup`: the launch-free equivalent of `ros2 launch nfhiql_ros <stack>.launch.py`.

    nfhiql-bringup manipulation                                   # cube arm, shipped bundle, 5 tasks
    nfhiql-bringup navigation --bundle runs/bundles/pointmaze-flow --tasks 1 2 --max-episode-steps 300
    nfhiql-bringup manipulation --mode realtime --json report.json
    nfhiql-bringup manipulation --no-sim --command-output forward   # a real arm; stop with Ctrl-C

It starts the same nodes with the same parameter files and overrides as the launch file (both read
`nfhiql_ros.stack`), each as its own process in its own process group:

    python -m nfhiql_ros.<node> --ros-args -r __node:=<name> --params-file <yaml>... --params-file <overrides>

(the overrides from the options, as a parameter file keyed `/**/<node>`, exactly what the launch
file passes; `-p k:=v` would lose to the parameter files' per-node blocks, see nfhiql_ros/stack.py).
It starts planner and controller first and the sim once this process has discovered them; in
lockstep the sim also waits for this process (one more required `observation` subscriber, the only
parameter that differs from the launch file), so no result is missed while DDS discovery between
freshly started processes takes its time (seconds, on a loaded machine). It forwards SIGINT/SIGTERM
to all nodes, waits for mujoco_sim to finish its episodes (it exits after the last one), then stops
planner and controller (SIGINT, SIGKILL after a grace period), as the launch file does. No node
outlives it: every exit path (normal, exception, signal, atexit) stops them all, and on Linux each
node also gets SIGTERM if bringup itself is killed (PR_SET_PDEATHSIG).

In-process, a small rclpy node listens to `sim/episode` (per-episode results and the sim's summary),
`/diagnostics` (the planner's and controller's status) and `subgoal` (the planner's achieved rate);
the nodes' output is relayed line by line with a `[node]` prefix and their shutdown summaries
(the controller's cadence line, the sim's latency) are read from it. The final report gives per-task
success and the mean, the achieved planner and controller rates, observation→command latency
p50/p99, safe commands and OOD alarms; `--json` writes it as JSON.

Exit status: 0 run completed (--no-sim: stopped by SIGINT/SIGTERM), 1 a node failed or the run did
not complete, 2 bad arguments, 3 --timeout reached, 128+signal when interrupted.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from nfhiql_ros import stack as stack_mod

# Must equal nfhiql_ros.mujoco_sim's STATUS_NAME / SUMMARY_NAME (a test checks); not imported from
# there because that module pulls in MuJoCo and OGBench.
EPISODE_STATUS = "mujoco_sim/episode"
SUMMARY_STATUS = "mujoco_sim/summary"
GRACE_S = 5.0  # after SIGINT/SIGTERM, how long a node may take before SIGKILL
SPIN_S = 0.1
STARTUP_TIMEOUT_S = 60.0  # how long to wait for this process to discover planner and controller
GATE_PARAMETER = "min_observation_subscribers"
DRAIN_S = 0.3  # after the nodes exit, keep listening this long for their last messages
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

_CADENCE = re.compile(r"cadence: achieved ([\d.]+) Hz vs target ([\d.]+) Hz.*?compute p50/p99 ([\w.]+)/([\w.]+) ms, "
                      r"observation→command latency p50/p99 ([\w.]+)/([\w.]+) ms")
_SIM_LATENCY = re.compile(r"latency p50 ([\d.]+) ms, p99 ([\d.]+) ms")


# ---- processes ----------------------------------------------------------------------------------

@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    lines: deque = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))
    reader: threading.Thread | None = None
    signalled: bool = False  # we asked it to stop

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
        self.on_line: Callable[[str, str], None] | None = None

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
                if self.on_line:
                    self.on_line(child.name, line)
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
            child.signalled = True
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


# ---- listening ----------------------------------------------------------------------------------

def _values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _num(values: dict[str, str], key: str, default: float = float("nan")) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return default


class Monitor:
    """An rclpy node in this process: episode results, node diagnostics, subgoal arrivals."""

    def __init__(self, domain_id: int | None):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import JointState

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("nfhiql_bringup", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.episodes: list[dict[str, str]] = []
        self.summary: dict[str, str] | None = None
        self.summary_at: float | None = None
        self.statuses: dict[str, list[tuple[float, int, str, dict[str, str]]]] = defaultdict(list)
        self.subgoal_times: list[float] = []
        self.on_episode: Callable[[dict[str, str]], None] | None = None
        # Same QoS as the publishers: RELIABLE, deep enough to miss nothing (VOLATILE: start first).
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.episode_sub = self.node.create_subscription(DiagnosticStatus, "sim/episode", self._on_episode, reliable)
        self.diagnostics_sub = self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                                             reliable)
        self.subgoal_sub = self.node.create_subscription(JointState, "subgoal", self._on_subgoal,
                                                         qos_profile_sensor_data)
        self._joint_state, self._sensor_qos = JointState, qos_profile_sensor_data
        self.observation_gate = None
        self.observed = False

    def open_observation_gate(self) -> None:
        """Subscribe to `observation` until the first one arrives: counted by mujoco_sim's
        min_observation_subscribers, it holds a lockstep start until the sim has matched this node
        (and so the `sim/episode` reader next to it). DDS discovery between processes started
        together can take seconds here; without the gate a short run's results could be missed."""
        self.observation_gate = self.node.create_subscription(
            self._joint_state, "observation", self._on_observation, self._sensor_qos)

    def _on_observation(self, msg) -> None:
        self.observed = True

    def close_observation_gate(self) -> None:
        if self.observation_gate is not None and self.observed:
            self.node.destroy_subscription(self.observation_gate)
            self.observation_gate = None

    def _on_episode(self, msg) -> None:
        values = _values(msg)
        if msg.name == EPISODE_STATUS:
            self.episodes.append(values)
            if self.on_episode:
                self.on_episode(values)
        elif msg.name == SUMMARY_STATUS:
            self.summary, self.summary_at = values, time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        now = time.monotonic()
        for status in msg.status:
            level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
            self.statuses[status.name.lstrip("/")].append((now, level, status.message, _values(status)))

    def _on_subgoal(self, msg) -> None:
        self.subgoal_times.append(time.monotonic())

    def spin_once(self, timeout_s: float = SPIN_S) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.spin_once(min(SPIN_S, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        try:
            self.executor.remove_node(self.node)
            self.node.destroy_node()
            self.executor.shutdown(timeout_sec=1.0)
        finally:
            self.rclpy.try_shutdown(context=self.context)


# ---- the report ---------------------------------------------------------------------------------

def controller_rate(statuses: list[tuple[float, int, str, dict[str, str]]]) -> tuple[float, float]:
    """(achieved Hz while commanding, seconds commanding) from the controller's status windows.

    Each status reports the commands of its window and the rate over the window's span from its
    first command; span = commands / rate, so idle windows (before the first observation, after the
    last) do not dilute the rate.
    """
    commands = seconds = 0.0
    for _, _, _, values in statuses:
        n, rate = _num(values, "window_commands", 0.0), _num(values, "achieved_rate_hz", 0.0)
        if n > 0 and rate > 0:
            commands += n
            seconds += n / rate
    return (commands / seconds if seconds > 0 else float("nan")), seconds


def planner_rate(times: list[float]) -> float:
    """Subgoals per second between the first and the last one received."""
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _int(x: Any) -> str:
    return "?" if x is None else str(x)


def _finite_or_none(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def build_report(*, stack: str, status: str, mode: str, bundle: str, expected: list[tuple[int, int]],
                 monitor: Monitor, outputs: dict[str, list[str]], exit_codes: dict[str, int | None],
                 pids: dict[str, int], wall_s: float, sim_done_at: float | None, period_s: float | None) -> dict:
    """Everything the run produced, as plain data (printed by `format_report`, written by --json)."""
    per_task: dict[int, list[bool]] = defaultdict(list)
    for ep in monitor.episodes:
        per_task[int(ep["task_id"])].append(ep.get("success") == "true")
    tasks = {t: {"episodes": len(s), "successes": int(sum(s)), "success": sum(s) / len(s)}
             for t, s in sorted(per_task.items())}
    mean = sum(v["success"] for v in tasks.values()) / len(tasks) if tasks else None

    ctrl = monitor.statuses.get("flow_controller", [])
    plan = monitor.statuses.get("subgoal_planner", [])
    last_ctrl = ctrl[-1][3] if ctrl else {}
    last_plan = plan[-1][3] if plan else {}
    rate, active_s = controller_rate(ctrl)
    cadence = next((m for line in reversed(outputs.get("flow_controller", [])) if (m := _CADENCE.search(line))), None)
    if not math.isfinite(rate) and cadence:  # no status window reached us: the node's own run summary
        rate = float(cadence.group(1))
    sim_latency = next((m for line in reversed(outputs.get("mujoco_sim", []))
                        if ("done:" in line or "stopped:" in line) and (m := _SIM_LATENCY.search(line))), None)
    if cadence:
        latency = (float(cadence.group(5)), float(cadence.group(6)))
        compute = (float(cadence.group(3)), float(cadence.group(4)))
    else:  # fall back on the windows: median of the window medians, worst window p99
        p50s = sorted(_num(v, "latency_ms_p50") for *_, v in ctrl if math.isfinite(_num(v, "latency_ms_p50")))
        p99s = [_num(v, "latency_ms_p99") for *_, v in ctrl if math.isfinite(_num(v, "latency_ms_p99"))]
        latency = (p50s[len(p50s) // 2] if p50s else float("nan"), max(p99s) if p99s else float("nan"))
        compute = (float("nan"), float("nan"))

    # Safe commands: the controller's count, less the one it sends on shutdown and the one that marks
    # the end of the observation stream after the sim's last episode (lockstep's trigger sees it stop).
    by_reason = {k[len("safe_"):]: int(_num(last_ctrl, k, 0)) for k in last_ctrl
                 if k.startswith("safe_") and k != "safe_commands"}
    after_end = 0
    if sim_done_at is not None and by_reason.get("stale_observation"):
        before = [v for t, _, _, v in ctrl if t <= sim_done_at]
        stale_before = int(_num(before[-1], "safe_stale_observation", 0)) if before else 0
        after_end = min(1, by_reason["stale_observation"] - stale_before)
    total_safe = int(_num(last_ctrl, "safe_commands", 0))
    during = total_safe - by_reason.get("shutdown", 0) - after_end

    summary = monitor.summary or {}
    target_hz = _num(last_ctrl, "target_rate_hz")
    if not math.isfinite(target_hz) and period_s:
        target_hz = 1.0 / period_s
    return {
        "stack": stack, "status": status, "mode": mode, "bundle": bundle, "wall_s": round(wall_s, 3),
        "episodes": len(monitor.episodes), "episodes_expected": len(expected),
        "tasks": {str(t): v for t, v in tasks.items()}, "mean_success": mean,
        "planner": {"rate_hz": _finite_or_none(planner_rate(monitor.subgoal_times)),
                    "subgoals_received": len(monitor.subgoal_times),
                    "plans": int(_num(last_plan, "plans", 0)) if last_plan else None,
                    "replan_every": int(_num(last_plan, "replan_every", 0)) if last_plan else None},
        "controller": {"rate_hz": _finite_or_none(rate), "active_s": round(active_s, 3),
                       "target_rate_hz": _finite_or_none(target_hz),
                       "commands": int(_num(last_ctrl, "commands", 0)) if last_ctrl else None,
                       "overruns": int(_num(last_ctrl, "overruns", 0)) if last_ctrl else None,
                       "compute_ms_p50": _finite_or_none(compute[0]), "compute_ms_p99": _finite_or_none(compute[1]),
                       "provider": last_ctrl.get("provider")},
        "latency_ms": {"controller_p50": _finite_or_none(latency[0]), "controller_p99": _finite_or_none(latency[1]),
                       "sim_p50": float(sim_latency.group(1)) if sim_latency else None,
                       "sim_p99": float(sim_latency.group(2)) if sim_latency else None},
        "safe_commands": {"during_run": during if last_ctrl else None, "after_last_episode": after_end,
                          "total": total_safe, "by_reason": by_reason},
        "ood_alarms": int(_num(last_ctrl, "ood_alarms", 0)) if last_ctrl else None,
        "ood_threshold": last_ctrl.get("ood_threshold_low"),
        "dropped_messages": {"controller": int(_num(last_ctrl, "dropped", 0)) if last_ctrl else None,
                             "planner": int(_num(last_plan, "dropped", 0)) if last_plan else None},
        "sim": {k: int(_num(summary, k, 0)) for k in ("steps", "ignored_commands", "rejected_commands",
                                                      "missed_deadlines")} if summary else None,
        "processes": pids, "exit_codes": exit_codes,
    }


def format_report(r: dict) -> str:
    lines = [f"== nfhiql-bringup {r['stack']}: {r['status']} ({r['mode']}, {r['episodes']}/{r['episodes_expected']} "
             f"episodes, {r['wall_s']:.1f} s) ==", f"bundle      {r['bundle']}"]
    if r["tasks"]:
        lines.append("task  episodes  success")
        lines += [f"{t:>4}  {v['episodes']:>8}  {v['success']:>7.2f}" for t, v in r["tasks"].items()]
        lines.append(f"mean success {r['mean_success']:.3f} over {r['episodes']} episodes")
    p, c, lat, safe = r["planner"], r["controller"], r["latency_ms"], r["safe_commands"]
    lines.append(f"planner     {_fmt(p['rate_hz'])} Hz achieved ({_int(p['plans'])} plans, "
                 f"replan every {_int(p['replan_every'])} observations)")
    pace = " (lockstep: as fast as sim and policy go)" if r["mode"] == "lockstep" else ""
    lines.append(f"controller  {_fmt(c['rate_hz'])} Hz achieved vs {_fmt(c['target_rate_hz'])} Hz target{pace} "
                 f"({_int(c['commands'])} commands, {_int(c['overruns'])} overruns, compute p50/p99 "
                 f"{_fmt(c['compute_ms_p50'])}/{_fmt(c['compute_ms_p99'])} ms, {c['provider'] or '?'})")
    lines.append(f"latency     observation→command p50/p99 {_fmt(lat['controller_p50'])}/"
                 f"{_fmt(lat['controller_p99'])} ms (controller publish), {_fmt(lat['sim_p50'])}/"
                 f"{_fmt(lat['sim_p99'])} ms (sim receipt)")
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(safe["by_reason"].items())) or "none"
    lines.append(f"safety      safe commands {_int(safe['during_run'])} during the "
                 f"run (all: {reasons}); OOD alarms {_int(r['ood_alarms'])} "
                 f"(threshold {r['ood_threshold'] or '?'}); dropped messages "
                 f"{r['dropped_messages']['controller']}/{r['dropped_messages']['planner']} (controller/planner)")
    if r["sim"]:
        s = r["sim"]
        lines.append(f"sim         {s['steps']} steps, commands ignored {s['ignored_commands']}, rejected "
                     f"{s['rejected_commands']}, missed deadlines {s['missed_deadlines']}")
    lines.append("exit codes  " + ", ".join(f"{k} {v}" for k, v in r["exit_codes"].items()))
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nfhiql-bringup", description="Start an nfhiql_ros stack (sim + planner + controller) as separate "
        "processes, the launch-free equivalent of `ros2 launch nfhiql_ros <stack>.launch.py`, and report the run.")
    p.add_argument("stack", choices=sorted(stack_mod.STACKS))
    p.add_argument("--bundle", help="policy bundle directory (default: the parameter file's, relative to the "
                   "repository / share directory)")
    p.add_argument("--mode", choices=stack_mod.MODES, help="lockstep or realtime (default: the parameter file's)")
    p.add_argument("--no-sim", action="store_true", help="hardware: do not start mujoco_sim; run until Ctrl-C")
    p.add_argument("--replan-every", type=int, help="observations per subgoal (0: the bundle's subgoal_steps)")
    p.add_argument("--rate-hz", type=float, help="planner rate (realtime only)")
    p.add_argument("--control-period-s", type=float, help="controller (and realtime sim) period")
    p.add_argument("--executor", choices=("single_threaded", "events"))
    p.add_argument("--command-output", choices=("sim", "forward", "servo_twist"))
    p.add_argument("--providers", nargs="+", help="ONNX Runtime providers in priority order (e.g. CPU)")
    p.add_argument("--tasks", type=int, nargs="+", help="evaluation task ids (default: the scenario's 1..5)")
    p.add_argument("--episodes-per-task", type=int)
    p.add_argument("--max-episode-steps", type=int, help="0: the env's limit")
    p.add_argument("--seed", type=int)
    p.add_argument("--record-path", help="mujoco_sim's per-step trajectory log (npz, written on exit)")
    p.add_argument("--timeout", type=float, help="stop everything after this many seconds (exit status 3)")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for this run (default: the environment's)")
    p.add_argument("--quiet", action="store_true", help="do not relay the nodes' output (shown on failure)")
    p.add_argument("--log-dir", type=Path, help="also write each node's output to <dir>/<node>.log")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--print-plan", action="store_true", help="print the node command lines and exit")
    return p.parse_args(argv)


def with_monitor_gate(plan: list[stack_mod.NodeLaunch], params: dict[str, dict]) -> list[stack_mod.NodeLaunch]:
    """The only difference from the launch file: mujoco_sim waits for one more `observation`
    subscriber, bringup's own listener (see Monitor.open_observation_gate)."""
    out = []
    for node in plan:
        if node.name == "mujoco_sim":
            needed = int(params["mujoco_sim"].get("min_observation_subscribers", 1)) + 1
            node = dataclasses.replace(node, overrides={**node.overrides, GATE_PARAMETER: needed})
        out.append(node)
    return out


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The options as launch arguments (strings, '' = the parameter file's value)."""
    def s(v: Any) -> str:
        return "" if v is None else str(v)
    return {"bundle": s(args.bundle), "sim": "false" if args.no_sim else "true", "mode": s(args.mode),
            "replan_every": s(args.replan_every), "rate_hz": s(args.rate_hz),
            "control_period_s": s(args.control_period_s), "executor": s(args.executor),
            "command_output": s(args.command_output), "providers": ",".join(args.providers or []),
            "tasks": ",".join(str(t) for t in args.tasks or []), "episodes_per_task": s(args.episodes_per_task),
            "max_episode_steps": s(args.max_episode_steps), "seed": s(args.seed),
            "record_path": s(args.record_path)}


def _bundle_info(path: str) -> dict[str, Any]:
    meta_path = Path(path) / "bundle.json"
    if not meta_path.is_file():
        raise stack_mod.StackError(f"no policy bundle at {path} (missing bundle.json): export one with "
                                   f"`nfhiql export CHECKPOINT -o DIR` and pass --bundle DIR")
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise stack_mod.StackError(f"{meta_path}: not a readable bundle.json ({e})") from None


def _env_base(name: str) -> str:
    """'cube-single-play-v0' / 'cube-single-play' → 'cube-single' (the scenario, not the dataset)."""
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"-(play|noisy|navigate|stitch|explore)$", "", name)


class _Signals:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = stack_mod.plan(args.stack, launch_arguments(args))
        params = {n.name: stack_mod.effective_parameters(n) for n in plan}
        bundle = params["flow_controller"]["bundle"]
        meta = _bundle_info(bundle)
    except (stack_mod.StackError, OSError) as e:
        print(f"nfhiql-bringup: {e}", file=sys.stderr)
        return 2
    sim = params.get("mujoco_sim")
    mode = str(sim.get("mode", "lockstep")) if sim else f"hardware, trigger {params['flow_controller'].get('trigger')}"
    if sim and meta.get("env") and _env_base(str(meta["env"])) != _env_base(str(sim.get("env", ""))):
        print(f"nfhiql-bringup: warning: the bundle was trained on {meta['env']} but the sim runs {sim.get('env')}",
              file=sys.stderr)
    expected = [(t, e) for t in sim.get("tasks", [1, 2, 3, 4, 5])
                for e in range(int(sim.get("episodes_per_task", 1)))] if sim else []
    plan = with_monitor_gate(plan, params)
    run_dir = Path(tempfile.mkdtemp(prefix="nfhiql-bringup-"))  # the override parameter files
    atexit.register(shutil.rmtree, run_dir, True)
    argvs = {n.name: [sys.executable, "-m", n.module, *n.ros_args(stack_mod.write_override_file(n, run_dir))]
             for n in plan}
    if args.print_plan:
        for n in plan:
            print(" ".join(argvs[n.name]))
            if n.overrides:
                print("  # overrides: " + json.dumps(n.override_blocks()))
        return 0

    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="1",
               RCUTILS_COLORIZED_OUTPUT=os.environ.get("RCUTILS_COLORIZED_OUTPUT", "0"))
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)

    signals = _Signals()
    supervisor = Supervisor(echo=not args.quiet, log_dir=args.log_dir)
    atexit.register(supervisor.kill_all)
    monitor: Monitor | None = None
    status, code = "failed", 1
    sim_done_at: float | None = None
    failed: str | None = None
    t0 = time.monotonic()
    deadline = t0 + args.timeout if args.timeout else None

    def start(name: str) -> None:
        child = supervisor.start(name, argvs[name], env)
        print(f"nfhiql-bringup: started {name} (pid {child.pid}): {' '.join(argvs[name][1:])}", flush=True)

    def interrupted() -> bool:
        return signals.first is not None or (deadline is not None and time.monotonic() > deadline)

    def dead_node() -> Child | None:
        return next((c for c in supervisor.children if c.proc.poll() is not None), None)

    try:
        monitor = Monitor(args.domain_id)  # listening before any node starts
        print(f"nfhiql-bringup {args.stack}: {mode}, bundle {bundle}"
              + (f", tasks {list(sim.get('tasks', []))} x {sim.get('episodes_per_task', 1)} episode(s)" if sim else "")
              + f", ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0')}", flush=True)
        # 1. the policy nodes; 2. once this process has discovered them (their /diagnostics and
        # `subgoal` writers), the sim, which in lockstep also waits for this process (observation gate).
        for node in plan:
            if node.name != "mujoco_sim":
                start(node.name)
        policy_nodes = sum(n.name != "mujoco_sim" for n in plan)
        ready_by = time.monotonic() + STARTUP_TIMEOUT_S
        while not (monitor.diagnostics_sub.get_publisher_count() >= policy_nodes
                   and monitor.subgoal_sub.get_publisher_count() >= 1):
            monitor.spin_once(SPIN_S)
            if interrupted() or dead_node() or time.monotonic() > ready_by:
                break
        if not (interrupted() or dead_node()):
            print(f"nfhiql-bringup: planner and controller {'up' if time.monotonic() <= ready_by else 'NOT seen'} "
                  f"after {time.monotonic() - t0:.1f} s", flush=True)
            if sim:
                monitor.open_observation_gate()
                start("mujoco_sim")
        children = {c.name: c for c in supervisor.children}
        while True:
            monitor.spin_once(SPIN_S)
            monitor.close_observation_gate()
            if signals.first is not None:
                status = "stopped" if not sim else "interrupted"
                code = 0 if not sim else 128 + signals.first
                break
            if sim and "mujoco_sim" in children and children["mujoco_sim"].proc.poll() is not None:
                sim_done_at = monitor.summary_at or time.monotonic()
                rc = children["mujoco_sim"].proc.returncode
                if rc == 0 and len(monitor.episodes) < len(expected):
                    monitor.drain(DRAIN_S)  # statuses still in flight
                complete = rc == 0 and len(monitor.episodes) == len(expected)
                status, code = ("completed", 0) if complete else ("failed", 1)
                if not complete:
                    failed = "mujoco_sim" if rc else None
                    print(f"nfhiql-bringup: mujoco_sim exited with status {rc} after {len(monitor.episodes)}/"
                          f"{len(expected)} episodes", file=sys.stderr, flush=True)
                break
            dead = dead_node()
            if dead is not None:
                failed = dead.name
                print(f"nfhiql-bringup: {failed} exited with status {dead.proc.returncode} during the run",
                      file=sys.stderr, flush=True)
                status, code = "failed", 1
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"nfhiql-bringup: --timeout {args.timeout:g} s reached: stopping", file=sys.stderr, flush=True)
                status, code = "timed out", 3
                break
        stop_signal = signals.first if signals.first is not None else signal.SIGINT
        supervisor.stop(stop_signal, GRACE_S, idle=lambda: monitor.spin_once(SPIN_S), force=signals.force)
        monitor.drain(DRAIN_S)
        if failed and args.quiet:
            print(f"--- last output of {failed} ---\n" + "\n".join(children[failed].lines), file=sys.stderr)
    except Exception:
        status, code = "failed", 1
        raise
    finally:
        supervisor.kill_all()
        signals.restore()
        if monitor is not None:
            try:
                report = build_report(
                    stack=args.stack, status=status, mode=mode, bundle=bundle, expected=expected, monitor=monitor,
                    outputs={c.name: list(c.lines) for c in supervisor.children},
                    exit_codes={c.name: c.proc.returncode for c in supervisor.children},
                    pids={c.name: c.pid for c in supervisor.children}, wall_s=time.monotonic() - t0,
                    sim_done_at=sim_done_at, period_s=meta.get("control_period_s"))
                print(format_report(report), flush=True)
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(report, indent=2) + "\n")
            finally:
                monitor.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
