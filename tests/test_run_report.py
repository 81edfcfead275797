"""bringup's run report from the nodes' report files (in the schema the nodes write) and live data."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from nfhiql_ros.bringup.cli import read_node_reports
from nfhiql_ros.bringup.run_report import ReportError, build_report, format_report, read_node_report, report_path

CONTROLLER = {
    "node": "flow_controller", "trigger": "observation", "command_output": "sim", "target_rate_hz": 20.0,
    "achieved_rate_hz": 18.5, "duration_s": 12.0, "commands": 400, "overruns": 3, "compute_ms_p50": 1.5,
    "compute_ms_p99": 4.0, "latency_ms_p50": 2.5, "latency_ms_p99": 7.0,
    "safe_commands": {"stale_observation": 1, "shutdown": 1, "ood": 2}, "dropped": {"stale": 2, "bad": 1},
    "ood_alarms": 2, "provider": "CPUExecutionProvider", "replan_every": 25,
}
PLANNER = {"node": "subgoal_planner", "plans": 16, "replan_every": 25, "plan_ms_p50": 3.0, "plan_ms_p99": None,
           "dropped": {"stale": 4}, "non_finite_plans": 0, "provider": "CPUExecutionProvider"}
SIM = {
    "node": "mujoco_sim", "mode": "lockstep", "env": "cube-single-play-v0", "done": True, "episodes_expected": 4,
    "episodes": [{"task_id": t, "episode": e, "env_seed": 10 * t + e, "success": ok, "length": 100}
                 for t, e, ok in ((2, 0, True), (2, 1, False), (1, 0, True), (1, 1, True))],
    "per_task_success": {"2": 0.5, "1": 1.0}, "mean_success": 0.75, "steps": 400, "wall_s": 12.0,
    "ignored_commands": 0, "rejected_commands": 1, "missed_deadlines": None, "period_s": None,
    "latency_ms_p50": 3.0, "latency_ms_p99": 9.0,
}


def _live(episodes=(), ctrl=(), plan=(), subgoals=()) -> types.SimpleNamespace:
    return types.SimpleNamespace(episodes=list(episodes), statuses={"flow_controller": list(ctrl),
                                                                    "subgoal_planner": list(plan)},
                                 subgoal_times=list(subgoals))


def _report(node_reports: dict, live=None, sim_done_at=None) -> dict:
    return build_report(stack="manipulation", status="completed", mode="lockstep", bundle="b", episodes_expected=4,
                        live=live or _live(subgoals=(0.0, 1.0, 2.0)), node_reports=node_reports,
                        exit_codes={"mujoco_sim": 0}, pids={"mujoco_sim": 1}, wall_s=13.0,
                        sim_done_at=sim_done_at, period_s=0.05)


def _write(tmp_path: Path, reports: dict) -> dict:
    for name, rep in reports.items():
        report_path(tmp_path, name).write_text(json.dumps(rep))
    return read_node_reports(tmp_path, ["mujoco_sim", "subgoal_planner", "flow_controller"])


def test_report_from_the_nodes_files(tmp_path) -> None:
    r = _report(_write(tmp_path, {"mujoco_sim": SIM, "subgoal_planner": PLANNER, "flow_controller": CONTROLLER}))
    assert r["tasks"] == {"1": {"episodes": 2, "successes": 2, "success": 1.0},
                          "2": {"episodes": 2, "successes": 1, "success": 0.5}}
    assert r["mean_success"] == 0.75 and r["episodes"] == 4
    c = r["controller"]
    assert (c["rate_hz"], c["target_rate_hz"], c["commands"], c["overruns"]) == (18.5, 20.0, 400, 3)
    assert (c["compute_ms_p50"], c["compute_ms_p99"], c["provider"]) == (1.5, 4.0, "CPUExecutionProvider")
    assert r["latency_ms"] == {"controller_p50": 2.5, "controller_p99": 7.0, "sim_p50": 3.0, "sim_p99": 9.0}
    assert r["planner"]["plans"] == 16 and r["planner"]["replan_every"] == 25 and r["planner"]["rate_hz"] == 1.0
    # 4 safe commands in all: the shutdown one is not "during the run"
    assert r["safe_commands"]["total"] == 4 and r["safe_commands"]["during_run"] == 3
    assert r["dropped_messages"] == {"controller": 3, "planner": 4} and r["ood_alarms"] == 2
    assert r["sim"] == {"steps": 400, "ignored_commands": 0, "rejected_commands": 1, "missed_deadlines": None}
    text = format_report(r)
    assert "mean success 0.750 over 4 episodes" in text and "not reported" not in text
    assert "18.50 Hz achieved vs 20.00 Hz target" in text and "3.00/9.00 ms (sim receipt)" in text
    json.dumps(r, allow_nan=False)  # --json: plain data


def test_missing_policy_reports_say_not_reported_and_fall_back_on_live_diagnostics(tmp_path) -> None:
    window = {"window_commands": "20", "achieved_rate_hz": "10", "commands": "120", "overruns": "1",
              "latency_ms_p50": "2.0", "latency_ms_p99": "5.0", "safe_commands": "1", "safe_shutdown": "1",
              "provider": "CPUExecutionProvider", "dropped": "2"}
    live = _live(ctrl=[(1.0, 0, "ok", window)], plan=[(1.0, 0, "ok", {"plans": "5", "replan_every": "25"})])
    r = _report(_write(tmp_path, {"mujoco_sim": SIM}), live=live)
    assert r["node_reports"]["flow_controller"] is None and r["node_reports"]["subgoal_planner"] is None
    c = r["controller"]
    assert (c["rate_hz"], c["commands"], c["overruns"], c["compute_ms_p50"]) == (10.0, 120, 1, None)
    assert r["latency_ms"]["controller_p50"] == 2.0 and r["planner"]["plans"] == 5
    assert r["safe_commands"]["during_run"] == 0 and r["dropped_messages"]["controller"] == 2
    assert "subgoal_planner, flow_controller: not reported" in format_report(r)


def test_without_any_report_the_live_episodes_count(tmp_path) -> None:
    live = _live(episodes=[{"task_id": "3", "episode": "0", "env_seed": "1", "success": "true", "length": "9"},
                           {"task_id": "3", "episode": "1", "env_seed": "2", "success": "false", "length": "9"}])
    r = _report(read_node_reports(tmp_path, ["mujoco_sim", "flow_controller"]), live=live)
    assert r["tasks"] == {"3": {"episodes": 2, "successes": 1, "success": 0.5}} and r["sim"] is None
    assert r["controller"]["commands"] is None and r["latency_ms"]["sim_p50"] is None
    text = format_report(r)
    assert "mujoco_sim, flow_controller: not reported" in text and "0 commands" not in text


def test_the_stale_observation_after_the_last_episode_is_not_counted_during_the_run(tmp_path) -> None:
    before = {"safe_stale_observation": "0"}
    live = _live(ctrl=[(5.0, 0, "ok", before), (9.0, 0, "ok", {"safe_stale_observation": "1"})])
    r = _report({"flow_controller": CONTROLLER}, live=live, sim_done_at=6.0)
    assert r["safe_commands"]["after_last_episode"] == 1 and r["safe_commands"]["during_run"] == 2


def test_a_broken_report_file_is_named_and_left_out(tmp_path, capsys) -> None:
    path = report_path(tmp_path, "flow_controller")
    path.write_text("{not json")
    with pytest.raises(ReportError, match="flow_controller.json: not JSON"):
        read_node_report(path)
    path.write_text("[1, 2]")
    assert read_node_reports(tmp_path, ["flow_controller"]) == {"flow_controller": None}
    assert "flow_controller.json: expected a JSON object, got list" in capsys.readouterr().err
