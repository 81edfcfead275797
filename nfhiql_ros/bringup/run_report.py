"""bringup's run report: built from the nodes' report files (`report_file`) and what the monitor saw live."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from nfhiql_ros.bringup.monitor import Status
from nfhiql_ros.sim_run import finite_or_none, mean_success, per_task_success

REPORTING_NODES = ("mujoco_sim", "subgoal_planner", "flow_controller")


class ReportError(ValueError):
    """A node's report file exists but is not a JSON object; names the file."""


class LiveView(Protocol):
    """What the monitor saw (nfhiql_ros.bringup.monitor.Monitor)."""

    episodes: list[dict[str, str]]
    statuses: Mapping[str, list[Status]]
    subgoal_times: list[float]


def report_path(run_dir: Path, node: str) -> Path:
    return run_dir / f"{node}.json"


def read_node_report(path: Path) -> dict[str, Any] | None:
    """The report a node wrote on exit; None when it wrote none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ReportError(f"{path}: unreadable report ({e})") from None
    try:
        report = json.loads(text)
    except ValueError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None
    if not isinstance(report, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(report).__name__}")
    return report


def _num(values: Mapping[str, Any], key: str, default: float = math.nan) -> float:
    try:
        x = values[key]
        return default if x is None else float(x)
    except (KeyError, TypeError, ValueError):
        return default


def controller_rate(statuses: Sequence[Status]) -> tuple[float, float]:
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
    return (commands / seconds if seconds > 0 else math.nan), seconds


def planner_rate(times: Sequence[float]) -> float:
    """Subgoals per second between the first and the last one received."""
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return (len(times) - 1) / (times[-1] - times[0])


def _live_episode(values: Mapping[str, str]) -> dict[str, Any]:
    """A `sim/episode` status as the sim report's episode entry."""
    return {"task_id": int(values["task_id"]), "episode": int(values.get("episode", 0)),
            "env_seed": int(values.get("env_seed", 0)), "success": values.get("success") == "true",
            "length": int(values.get("length", 0))}


def _window_latency(ctrl: Sequence[Status]) -> tuple[float, float]:
    """Without the controller's report: median of the window medians, worst window p99."""
    p50s = sorted(x for *_, v in ctrl if math.isfinite(x := _num(v, "latency_ms_p50")))
    p99s = [x for *_, v in ctrl if math.isfinite(x := _num(v, "latency_ms_p99"))]
    return (p50s[len(p50s) // 2] if p50s else math.nan), (max(p99s) if p99s else math.nan)


def _live_safe_commands(last: Mapping[str, str]) -> dict[str, int]:
    return {k[len("safe_"):]: int(_num(last, k, 0)) for k in last if k.startswith("safe_") and k != "safe_commands"}


def _pick(report: Mapping[str, Any] | None, key: str, live: Mapping[str, str], live_key: str | None = None) -> Any:
    """The node report's `key`, else the last live status's `live_key` (as int), else None."""
    if report is not None and key in report:
        return report[key]
    if live:
        return int(_num(live, live_key or key, 0))
    return None


def _dropped(report: Mapping[str, Any] | None, live: Mapping[str, str]) -> int | None:
    if report is not None and isinstance(report.get("dropped"), dict):
        return sum(int(n) for n in report["dropped"].values())
    return int(_num(live, "dropped", 0)) if live else None


def build_report(*, stack: str, status: str, mode: str, bundle: str, episodes_expected: int, live: LiveView,
                 node_reports: Mapping[str, dict[str, Any] | None], exit_codes: dict[str, int | None],
                 pids: dict[str, int], wall_s: float, sim_done_at: float | None, period_s: float | None) -> dict:
    """Everything the run produced, as plain data (printed by `format_report`, written by --json)."""
    sim, planner, ctrl_report = (node_reports.get(n) for n in REPORTING_NODES)
    episodes = sim["episodes"] if sim else [_live_episode(v) for v in live.episodes]
    results: dict[int, list[bool]] = {}
    for ep in episodes:
        results.setdefault(int(ep["task_id"]), []).append(bool(ep["success"]))
    per_task = per_task_success([(int(e["task_id"]), bool(e["success"])) for e in episodes])
    tasks = {str(t): {"episodes": len(results[t]), "successes": sum(results[t]), "success": per_task[t]}
             for t in sorted(per_task)}

    ctrl = live.statuses.get("flow_controller", [])
    plan = live.statuses.get("subgoal_planner", [])
    last_ctrl = ctrl[-1][3] if ctrl else {}
    last_plan = plan[-1][3] if plan else {}
    rate, active_s = controller_rate(ctrl)
    if not math.isfinite(rate) and ctrl_report:  # no status window reached us: the node's own figure
        rate = _num(ctrl_report, "achieved_rate_hz")
    if ctrl_report:
        latency = (_num(ctrl_report, "latency_ms_p50"), _num(ctrl_report, "latency_ms_p99"))
        compute = (_num(ctrl_report, "compute_ms_p50"), _num(ctrl_report, "compute_ms_p99"))
        by_reason = {str(k): int(n) for k, n in (ctrl_report.get("safe_commands") or {}).items()}
        total_safe = sum(by_reason.values())
    else:
        latency, compute = _window_latency(ctrl), (math.nan, math.nan)
        by_reason = _live_safe_commands(last_ctrl)
        total_safe = int(_num(last_ctrl, "safe_commands", 0))

    # Safe commands during the run: less the one sent on shutdown (or deactivation), lockstep's `idle`
    # ones (the stream stopped after every observation was answered), `no_goal` ones (answering an
    # episode's last state after its goal ended) and the one that marks the end of the observation
    # stream after the sim's last episode (a timer trigger sees it stop).
    after_end = 0
    if sim_done_at is not None and by_reason.get("stale_observation"):
        before = [v for t, _, _, v in ctrl if t <= sim_done_at]
        stale_before = int(_num(before[-1], "safe_stale_observation", 0)) if before else 0
        after_end = min(1, by_reason["stale_observation"] - stale_before)
    during = total_safe - sum(by_reason.get(k, 0) for k in ("shutdown", "deactivated", "idle", "no_goal")) - after_end

    target_hz = _num(ctrl_report or {}, "target_rate_hz")
    if not math.isfinite(target_hz):
        target_hz = _num(last_ctrl, "target_rate_hz")
    if not math.isfinite(target_hz) and period_s:
        target_hz = 1.0 / period_s
    provider = (ctrl_report or {}).get("provider") or last_ctrl.get("provider")
    return {
        "stack": stack, "status": status, "mode": mode, "bundle": bundle, "wall_s": round(wall_s, 3),
        "episodes": len(episodes), "episodes_expected": episodes_expected,
        "tasks": tasks, "mean_success": mean_success(per_task),
        "planner": {"rate_hz": finite_or_none(planner_rate(live.subgoal_times)),
                    "subgoals_received": len(live.subgoal_times),
                    "plans": _pick(planner, "plans", last_plan),
                    "replan_every": _pick(planner, "replan_every", last_plan)},
        "controller": {"rate_hz": finite_or_none(rate), "active_s": round(active_s, 3),
                       "target_rate_hz": finite_or_none(target_hz),
                       "commands": _pick(ctrl_report, "commands", last_ctrl),
                       "overruns": _pick(ctrl_report, "overruns", last_ctrl),
                       "compute_ms_p50": finite_or_none(compute[0]), "compute_ms_p99": finite_or_none(compute[1]),
                       "provider": provider},
        "latency_ms": {"controller_p50": finite_or_none(latency[0]), "controller_p99": finite_or_none(latency[1]),
                       "sim_p50": (sim or {}).get("latency_ms_p50"), "sim_p99": (sim or {}).get("latency_ms_p99")},
        "safe_commands": {"during_run": during if (ctrl_report or last_ctrl) else None,
                          "after_last_episode": after_end, "total": total_safe, "by_reason": by_reason},
        "ood_alarms": _pick(ctrl_report, "ood_alarms", last_ctrl),
        "ood_threshold": last_ctrl.get("ood_threshold_low"),
        "dropped_messages": {"controller": _dropped(ctrl_report, last_ctrl), "planner": _dropped(planner, last_plan)},
        "sim": {k: sim.get(k) for k in ("steps", "ignored_commands", "rejected_commands", "missed_deadlines")}
        if sim else None,
        "goals": goal_summary((sim or {}).get("goals") or []),
        "node_reports": dict(node_reports),
        "processes": pids, "exit_codes": exit_codes,
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _int(x: Any) -> str:
    return "?" if x is None else str(x)


def goal_summary(goals: list[dict]) -> dict | None:
    """The sim's per-episode goals (goal_output action): outcome counts and estimated-vs-actual steps."""
    if not goals:
        return None
    outcomes: dict[str, int] = {}
    for g in goals:
        outcomes[g["outcome"]] = outcomes.get(g["outcome"], 0) + 1
    estimates = " ".join(f"{'-' if g['estimated_steps_at_start'] is None else round(g['estimated_steps_at_start'])}"
                         f"/{g['steps']}" for g in goals)
    return {"outcomes": outcomes, "estimates": estimates, "episodes": goals}


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
                 f"{_int(r['dropped_messages']['controller'])}/{_int(r['dropped_messages']['planner'])} "
                 f"(controller/planner)")
    if r["sim"]:
        s = r["sim"]
        lines.append(f"sim         {s['steps']} steps, commands ignored {s['ignored_commands']}, rejected "
                     f"{s['rejected_commands']}" + ("" if s["missed_deadlines"] is None
                                                    else f", missed deadlines {s['missed_deadlines']}"))
    if r.get("goals"):
        g = r["goals"]
        lines.append("goals       " + ", ".join(f"{k} {n}" for k, n in g["outcomes"].items())
                     + f"; value-estimated steps at the start vs actual (per episode): {g['estimates']}")
    missing = [n for n, rep in r["node_reports"].items() if rep is None]
    if missing:
        lines.append(f"reports     {', '.join(missing)}: not reported (figures from live diagnostics where seen)")
    lines.append("exit codes  " + ", ".join(f"{k} {v}" for k, v in r["exit_codes"].items()))
    return "\n".join(lines)
