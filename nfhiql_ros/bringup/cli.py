"""`nfhiql-bringup`: the launch-free equivalent of `ros2 launch nfhiql_ros <stack>.launch.py`.

    nfhiql-bringup manipulation                                   # cube arm, shipped bundle, 5 tasks
    nfhiql-bringup navigation --bundle runs/bundles/pointmaze-flow --tasks 1 2 --max-episode-steps 300
    nfhiql-bringup manipulation --mode realtime --json report.json
    nfhiql-bringup manipulation --no-sim --command-output forward   # a real arm; stop with Ctrl-C

Exit status: 0 run completed (--no-sim: stopped by SIGINT/SIGTERM), 1 a node failed or the run did
not complete, 2 bad arguments, 3 --timeout reached, 128+signal when interrupted. How a run starts,
stops and is reported: docs/design/bringup.md.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from nfhiql_core.interface.spec import load_spec
from nfhiql_ros import stack as stack_mod
from nfhiql_ros.bringup.monitor import SPIN_S, Monitor
from nfhiql_ros.bringup.run_report import ReportError, build_report, format_report, read_node_report, report_path
from nfhiql_ros.bringup.supervisor import GRACE_S, Child, Signals, Supervisor
from nfhiql_ros.contract import SimParams

STARTUP_TIMEOUT_S = 60.0  # how long to wait for this process to discover planner and controller
GATE_PARAMETER = "min_observation_subscribers"
REPORT_PARAMETER = "report_file"
DRAIN_S = 0.3  # after the nodes exit, keep listening this long for their last messages


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nfhiql-bringup", description="Start an nfhiql_ros stack (sim + planner + controller) as separate "
        "processes, the launch-free equivalent of `ros2 launch nfhiql_ros <stack>.launch.py`, and report the run. "
        "The stack options are the launch arguments (an omitted one keeps the parameter file's value).")
    p.add_argument("stack", choices=sorted(stack_mod.STACKS))
    for a in stack_mod.ARGUMENTS:
        if a.name == "sim":
            p.add_argument("--no-sim", action="store_true", help="hardware: do not start mujoco_sim; run until "
                           "Ctrl-C (launch argument sim:=false)")
        elif a.name == "activate":
            p.add_argument("--no-activate", action="store_true", help="configure the planner and controller but "
                           "leave them inactive for an operator (launch argument activate:=false)")
        else:
            p.add_argument(a.option, type=a.type, nargs="+" if a.many else None, choices=a.choices or None,
                           help=a.description)
    p.add_argument("--timeout", type=float, help="stop everything after this many seconds (exit status 3)")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for this run (default: the environment's)")
    p.add_argument("--quiet", action="store_true", help="do not relay the nodes' output (shown on failure)")
    p.add_argument("--log-dir", type=Path, help="also write each node's output to <dir>/<node>.log")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--print-plan", action="store_true", help="print the node command lines and exit")
    return p.parse_args(argv)


def launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The options as launch arguments (strings, '' = the parameter file's value)."""
    out = {}
    for a in stack_mod.ARGUMENTS:
        if a.name in ("sim", "activate"):
            out[a.name] = "false" if getattr(args, f"no_{a.name}") else "true"
            continue
        value = getattr(args, a.name)
        out[a.name] = ",".join(str(v) for v in value or []) if a.many else "" if value is None else str(value)
    return out


def with_bringup_overrides(plan: list[stack_mod.NodeLaunch], params: dict[str, dict],
                           run_dir: Path) -> list[stack_mod.NodeLaunch]:
    """What differs from the launch file: each node writes its report to `<run_dir>/<node>.json`,
    and mujoco_sim waits for one more `observation` subscriber, bringup's own listener (see
    Monitor.open_observation_gate)."""
    out = []
    for node in plan:
        extra: dict[str, Any] = {REPORT_PARAMETER: str(report_path(run_dir, node.name))}
        if node.name == "mujoco_sim":
            extra[GATE_PARAMETER] = int(params["mujoco_sim"].get(GATE_PARAMETER, 1)) + 1
        out.append(dataclasses.replace(node, overrides={**node.overrides, **extra}))
    return out


def _robot_topics(robot_spec: str | None) -> dict[str, type] | None:
    """The robot-mode sim's state topics (what its spec observes) and their message classes."""
    if not robot_spec:
        return None
    from nfhiql_ros.robot_io import MESSAGE_CLASSES, observation_topics

    return {topic: MESSAGE_CLASSES[kind] for topic, kind in observation_topics(load_spec(robot_spec)).items()}


def _bundle_info(path: str) -> dict[str, Any]:
    meta_path = Path(path) / "bundle.json"
    if not meta_path.is_file():
        raise stack_mod.StackError(f"no policy bundle at {path} (missing bundle.json): export one with "
                                   f"`nfhiql export CHECKPOINT -o DIR` and pass --bundle DIR")
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise stack_mod.StackError(f"{meta_path}: not a readable bundle.json ({e})") from None


def scenario_name(env: str) -> str:
    """'cube-single-play' / 'cube-single-play-v0' → 'cube-single' (the scenario, not the dataset)."""
    from nfhiql_core.evaluation.episodes import canonical_env_name

    return re.sub(r"-(play|noisy|navigate|stitch|explore)-v\d+$", "", canonical_env_name(env))


def read_node_reports(run_dir: Path, nodes: Sequence[str]) -> dict[str, dict | None]:
    """Each node's report file (None: not written); a broken one is named on stderr and left out."""
    reports: dict[str, dict | None] = {}
    for name in nodes:
        try:
            reports[name] = read_node_report(report_path(run_dir, name))
        except ReportError as e:
            print(f"nfhiql-bringup: warning: {e}", file=sys.stderr)
            reports[name] = None
    return reports


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
    if sim and meta.get("env") and scenario_name(str(meta["env"])) != scenario_name(str(sim.get("env", ""))):
        print(f"nfhiql-bringup: warning: the bundle was trained on {meta['env']} but the sim runs {sim.get('env')}",
              file=sys.stderr)
    defaults = SimParams()
    expected = len(sim.get("tasks", defaults.tasks)) * int(sim.get("episodes_per_task", defaults.episodes_per_task)) \
        if sim else 0
    run_dir = Path(tempfile.mkdtemp(prefix="nfhiql-bringup-"))  # the override files and the nodes' reports
    atexit.register(shutil.rmtree, run_dir, True)
    plan = with_bringup_overrides(plan, params, run_dir)
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

    signals = Signals()
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
        # 1. the policy nodes (unconfigured) and the sim, which in lockstep waits for the observation
        # subscribers that activation creates and for this process (observation gate); 2. configure
        # (in robot mode it waits for the sim's robot topics), then activate the managed nodes.
        for node in plan:
            if node.name != "mujoco_sim":
                start(node.name)
        if sim:
            monitor.open_observation_gate(_robot_topics(sim.get("robot_spec")))
            start("mujoco_sim")
        policy_nodes = sum(n.name != "mujoco_sim" for n in plan)
        ready_by = time.monotonic() + STARTUP_TIMEOUT_S
        transitions = ["configure"] + ([] if args.no_activate else ["activate"])
        for transition in transitions:  # the managed nodes, each transition on both before the next
            for name in stack_mod.MANAGED:
                why = monitor.change_state(name, transition, ready_by, lambda: interrupted() or dead_node())
                if why:
                    failed = failed or name
                    print(f"nfhiql-bringup: {why}", file=sys.stderr, flush=True)
                    break
            else:
                print(f"nfhiql-bringup: {' and '.join(stack_mod.MANAGED)} "
                      f"{'configured' if transition == 'configure' else 'active'}", flush=True)
                continue
            break
        while not (monitor.diagnostics_sub.get_publisher_count() >= policy_nodes
                   and monitor.subgoal_sub.get_publisher_count() >= 1):
            monitor.spin_once(SPIN_S)
            if interrupted() or dead_node() or failed or time.monotonic() > ready_by:
                break
        if not (interrupted() or dead_node() or failed):
            print(f"nfhiql-bringup: planner and controller {'up' if time.monotonic() <= ready_by else 'NOT seen'} "
                  f"after {time.monotonic() - t0:.1f} s", flush=True)
        children = {c.name: c for c in supervisor.children}
        while not failed:  # (a lifecycle transition that failed ends the run at once)
            monitor.spin_once(SPIN_S)
            monitor.close_observation_gate()
            if signals.first is not None:
                status = "stopped" if not sim else "interrupted"
                code = 0 if not sim else 128 + signals.first
                break
            if sim and "mujoco_sim" in children and children["mujoco_sim"].proc.poll() is not None:
                sim_done_at = monitor.summary_at or time.monotonic()
                rc = children["mujoco_sim"].proc.returncode
                sim_report = read_node_reports(run_dir, ["mujoco_sim"])["mujoco_sim"]
                if sim_report is None and rc == 0 and len(monitor.episodes) < expected:
                    monitor.drain(DRAIN_S)  # statuses still in flight
                done = len(sim_report["episodes"]) if sim_report else len(monitor.episodes)
                complete = rc == 0 and done == expected
                status, code = ("completed", 0) if complete else ("failed", 1)
                if not complete:
                    failed = "mujoco_sim" if rc else None
                    print(f"nfhiql-bringup: mujoco_sim exited with status {rc} after {done}/{expected} episodes",
                          file=sys.stderr, flush=True)
                break
            dead = dead_node()
            if dead is not None and sim and dead.name == "mujoco_sim":
                continue  # it exited since the check above: the sim's own branch judges its run
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
        else:
            status, code = "failed", 1
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
                    stack=args.stack, status=status, mode=mode, bundle=bundle, episodes_expected=expected,
                    live=monitor, node_reports=read_node_reports(run_dir, [n.name for n in plan]),
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

