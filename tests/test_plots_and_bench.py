"""Learning-curve figure and the training-throughput benchmark on tiny inputs."""
from pathlib import Path

import pytest
import yaml

from nfhiql_core.analysis.plots import is_expert_run, plot_expert_run, plot_runs
from nfhiql_core.bench.train import bench_train, synthetic_dataset
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.training.metrics import MetricsLogger


def test_plot_runs_writes_a_png(tmp_path):
    for name, offset in (("flow", 0.1), ("gaussian", 0.0)):
        logger = MetricsLogger(tmp_path / name)
        for step in (100, 200, 300):
            logger.log("train", step, {"value/loss": 1.0 / step, "low_actor/log_prob": -2.0 + offset,
                                       "high_actor/log_prob": -5.0})
            logger.log("eval", step, {"success": step / 400 + offset, "ci95": 0.05})
        logger.close()
    out = plot_runs([tmp_path / "flow", tmp_path / "gaussian"], tmp_path / "fig" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_plot_rejects_a_directory_without_metrics(tmp_path):
    with pytest.raises(NfhiqlError, match="train.csv"):
        plot_runs([tmp_path], tmp_path / "x.png")


def test_plot_expert_run_writes_a_png(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in (10_000, 20_000):
        logger.log("train", step, {"episode_velocity": step / 1e5, "critic_loss": 1.0, "alpha": 0.5})
    logger.log("eval", 20_000, {"velocity": 0.3, "velocity_min": 0.1, "return": 30.0, "length": 900.0})
    logger.close()
    assert is_expert_run(tmp_path)
    out = plot_expert_run(tmp_path, tmp_path / "expert.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not is_expert_run(tmp_path / "elsewhere")


def test_bench_train_reports_both_policies(tmp_path, capsys):
    recipe = {"run_dir": str(tmp_path / "run"), "env": "cube-single-play",
              "dataset": {"path": str(tmp_path / "missing.npz")},
              "agent": {"actor_hidden_dims": [16], "value_hidden_dims": [16], "flow_hidden_dims": [16],
                        "flow_encode_dim": 8, "flow_blocks": 2},
              "train": {"batch_size": 32}}
    path = Path(tmp_path / "recipe.yaml")
    path.write_text(yaml.safe_dump(recipe))
    rows = bench_train([str(path)], steps=3, warmup=1, device="cpu")
    assert [r["policy"] for r in rows] == ["flow", "gaussian"]
    assert all(r["steps_per_s"] > 0 and r["cpu_ms_per_step"] > 0 for r in rows)
    assert all(r["dataset"] == synthetic_dataset().source for r in rows)
    out = capsys.readouterr().out
    assert "steps/s" in out and "cpu ms" in out and "(CPU time: " in out
    assert "missing.npz not found: using <synthetic random walk> of cube-single-play's shapes, obs 28 / act 5" in out
