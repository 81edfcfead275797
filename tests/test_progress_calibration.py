"""`nfhiql calibrate-progress` on the tiny pointmaze bundle: the recorded values are V of the episodes'
own observations, the episodes are `nfhiql eval`'s, and the figure and JSON are written; the alarm
and threshold arithmetic on hand-made traces."""
from __future__ import annotations

import json

import pytest
from bundle_helpers import MAZE, exported
from test_progress import value_of

from nfhiql_core.analysis.progress_calibration import Trace, alarm_rates, calibration_stats, success_threshold
from nfhiql_core.cli import main
from nfhiql_core.control.progress import ProgressConfig
from nfhiql_core.deploy.bundle import BundleError
from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_core.deploy.value_runtime import ValueRuntime
from nfhiql_core.evaluation.bundle_eval import evaluate_bundle
from nfhiql_core.evaluation.episodes import Episode, episode_seed, make_env

CPU = ["CPUExecutionProvider"]


def test_calibrate_progress_writes_its_figure_and_json(tmp_path, capsys) -> None:
    bundle = exported("flow", "rep")[1]
    out = tmp_path / "calibration"
    assert main(["calibrate-progress", str(bundle), "--episodes", "2", "--seed", "3", "--tasks", "1", "3",
                 "--max-steps", "150", "--stall-times", "1", "3", "-o", str(out), "--quiet"]) == 0
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "calibration.json").read_text())
    episodes = evaluate_bundle(PolicyRuntime(bundle, CPU), MAZE, episodes_per_task=2, seed=3, task_ids=[1, 3],
                               max_steps=150, progress=False).episodes
    assert [(e["task_id"], e["episode"], e["success"], e["length"]) for e in report["episodes"]] == \
        [(e.task_id, e.episode, e.success, e.length) for e in episodes]  # recording does not change the episodes
    assert all(len(e["values"]) == e["length"] for e in report["episodes"])
    value, env = ValueRuntime.from_bundle(bundle, CPU), make_env(MAZE)
    for e in report["episodes"]:  # the first value is V(s_0, g) of the episode's own reset
        first = Episode(env, e["task_id"], e["episode"], episode_seed(3, e["task_id"], e["episode"]))
        assert e["values"][0] == pytest.approx(value.value(first.observation, first.goal), abs=1e-4)
    env.close()
    assert report["discount"] == 0.99 and report["control_period_s"] == pytest.approx(0.1)
    assert [row["stall_time_s"] for row in report["stall_detector"]["sweep"]] == [1.0, 3.0]
    assert report["stall_detector"]["config"] == {"stall_time_s": 5.0, "min_progress_steps": 5.0, "step_budget": None,
                                                  "success_value": None, "smoothing": 0.2}
    assert report["calibration"]["observations"] == sum(e["length"] for e in report["episodes"] if e["success"])
    printed = capsys.readouterr().out
    assert "true alarms" in printed and "calibration.json" in printed
    assert main(["calibrate-progress", str(bundle), "-o", str(out), "--quiet"]) == 2  # exists: needs --force


def test_a_bundle_without_a_value_model_cannot_be_calibrated(tmp_path) -> None:
    """A copy of the shipped pointmaze bundle without its value model (as exported before value.onnx)."""
    import shutil
    from pathlib import Path

    from bundle_helpers import edit_metadata

    from nfhiql_core.analysis.progress_calibration import calibrate_progress
    shipped = Path(__file__).resolve().parents[1] / "bundles" / "pointmaze-medium-navigate"
    bundle = shutil.copytree(shipped, tmp_path / "bundle")
    (bundle / "value.onnx").unlink()
    edit_metadata(bundle, value=None)
    with pytest.raises(BundleError, match="no value model"):
        calibrate_progress(bundle, tmp_path / "out")


def trace(success: bool, steps: list[float], task_id: int = 1) -> Trace:
    """An episode whose estimated steps to go are `steps` (one per observation)."""
    return Trace(task_id, 0, success, len(steps), tuple(value_of(s) for s in steps))


def test_alarm_rates_and_threshold_on_hand_made_traces() -> None:
    closing = trace(True, [20.0 - k for k in range(20)])  # 1 step per step: never stalls
    slow = trace(True, [40.0] * 12 + [30.0 - k for k in range(30)])  # stuck for 12 steps, then succeeds
    stuck = trace(False, [60.0] * 50)
    wandering = trace(False, [50.0 + (k % 3) for k in range(50)])
    traces = [closing, slow, stuck, wandering]
    config = ProgressConfig(stall_time_s=1.0, min_progress_steps=5.0)  # 10 steps at 0.1 s per step
    rates = alarm_rates(traces, config, 0.99, 0.1)
    assert (rates["true_alarm_rate"], rates["false_alarm_rate"]) == (1.0, 0.5)  # `slow` is aborted at step 10
    assert rates["median_alarm_step_in_failed"] == 10.0
    assert alarm_rates(traces, ProgressConfig(stall_time_s=1.5), 0.99, 0.1)["false_alarm_rate"] == 0.0
    stats = calibration_stats([closing], 0.99)
    assert stats["median_ratio"] == pytest.approx(1.0) and stats["spearman"] == pytest.approx(1.0)
    threshold = success_threshold(traces)  # peaks: V(1 step) in the successes, V(50)/V(60) in the failures
    assert value_of(50.0) < threshold["success_value"] <= value_of(1.0)
    assert (threshold["successful_reaching_it"], threshold["failed_reaching_it"]) == (1.0, 0.0)
    assert success_threshold([closing, slow]) is None
