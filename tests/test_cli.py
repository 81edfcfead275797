"""The `nfhiql` console script: a real SIGKILL mid-training then --resume, one-line errors, eval JSON."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes import make_dataset, write_recipe

from nfhiql_core.cli import main
from nfhiql_core.training.checkpoint import load_checkpoint
from nfhiql_core.training.metrics import read_csv
from nfhiql_core.training.train import load_train_config, train

NFHIQL = str(Path(sys.executable).with_name("nfhiql"))
# One torch thread in the child processes: on a busy 2-core machine torch's default thread pool
# makes tiny-model runs (eval especially) tens of times slower.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def nfhiql(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([NFHIQL, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def assert_one_line_error(stderr: str, *needles: str) -> None:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("nfhiql: error: "), repr(stderr)
    for needle in needles:
        assert needle in stderr, (needle, stderr)


# ------------------------------------------------------------------ crash + resume
FINAL_STEP = 300


def last_logged_step(csv_path: Path) -> int:
    lines = [line for line in csv_path.read_text().splitlines(keepends=True)[1:] if line.endswith("\n")]
    return int(float(lines[-1].split(",", 1)[0])) if lines else 0


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    dataset = make_dataset(tmp_path / "walk.npz")
    run = tmp_path / "crashed"
    recipe = write_recipe(tmp_path / "recipe.yaml", run, dataset, steps=3000, checkpoint_interval=50)
    ckpt = run / "checkpoint.pt"
    proc = subprocess.Popen([NFHIQL, "train", "--config", str(recipe), "--quiet"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"training exited early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint at step >= 50 within 30 s"
            time.sleep(0.01)
            if not ckpt.exists():
                continue
            # Freeze it, and kill it only between checkpoints, with metrics logged after the last one.
            proc.send_signal(signal.SIGSTOP)
            # Writes are atomic (temp file + rename): reading while it trains never sees a torn file.
            killed_at = load_checkpoint(ckpt).step
            if killed_at >= 50 and last_logged_step(run / "train.csv") > killed_at:
                break
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert load_checkpoint(ckpt).step == killed_at
    assert 50 <= killed_at < FINAL_STEP and killed_at % 50 == 0
    assert last_logged_step(run / "train.csv") > killed_at  # the crash lost logged work

    resumed = nfhiql("train", "--config", str(recipe), "--resume", "--quiet", f"train.steps={FINAL_STEP}")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == f"checkpoint: {ckpt}"

    reference = tmp_path / "straight"
    train(load_train_config(recipe, [f"run_dir={reference}", f"train.steps={FINAL_STEP}"]), progress=False)

    a, b = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(ckpt)
    assert a.step == b.step == FINAL_STEP
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    assert a.optimizer["param_groups"] == b.optimizer["param_groups"]
    assert a.optimizer["state"].keys() == b.optimizer["state"].keys()
    for i, sa in a.optimizer["state"].items():
        sb = b.optimizer["state"][i]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), i
    assert a.numpy_rng == b.numpy_rng and torch.equal(a.torch_rng, b.torch_rng)

    rows_a, rows_b = read_csv(reference / "train.csv"), read_csv(run / "train.csv")
    assert [r["step"] for r in rows_b] == list(range(10, FINAL_STEP + 1, 10))  # each step once
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ra.pop("steps_per_s"), rb.pop("steps_per_s")
        assert ra == rb


# ------------------------------------------------------------------ one-line errors
def test_train_missing_config_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = nfhiql("train", "--config", str(missing))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(missing), "not found")


def test_train_on_nan_dataset_is_a_one_line_error(tmp_path):
    dataset = make_dataset(tmp_path / "nan.npz", nan_at=123)
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", dataset)
    result = nfhiql("train", "--config", str(recipe), "--quiet")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(dataset), "observations", "123")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_eval_on_non_checkpoint_is_a_one_line_error(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint\n")
    result = nfhiql("eval", str(bogus), "--env", "pointmaze-medium-navigate", "--episodes", "1")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(bogus))


@pytest.mark.parametrize("case", ["missing", "foreign_torch_file", "bad_override", "unknown_key"])
def test_more_one_line_errors_in_process(tmp_path, capsys, case):
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", tmp_path / "walk.npz")
    if case == "missing":
        path = tmp_path / "nope.pt"
        argv, needles = ["eval", str(path)], [str(path), "not found"]
    elif case == "foreign_torch_file":
        path = tmp_path / "weights.pt"
        torch.save({"weights": torch.zeros(3)}, path)
        argv, needles = ["eval", str(path)], [str(path), "not an nfhiql checkpoint"]
    elif case == "bad_override":
        argv, needles = ["train", "--config", str(recipe), "foo"], ["'foo'"]
    else:
        argv, needles = ["train", "--config", str(recipe), "agent.polcy=flow"], [str(recipe), "agent.polcy"]
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, *needles)


def test_train_overrides_may_follow_later_options(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", make_dataset(tmp_path / "walk.npz"))
    assert main(["train", "--config", str(recipe), "train.steps=20", "--quiet", "agent.policy=gaussian"]) == 0
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved.step == 20 and saved.config["agent"]["policy"] == "gaussian"


def test_unknown_option_is_still_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "x.pt"), "--bogus", "a=1"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus a=1" in capsys.readouterr().err


# ------------------------------------------------------------------ eval
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    recipe = write_recipe(root / "recipe.yaml", root / "run", make_dataset(root / "walk.npz"), steps=10)
    return train(load_train_config(recipe), progress=False)


def test_export_cli_passes_the_parity_tolerances_given_and_the_exporters_otherwise(tiny_checkpoint, tmp_path):
    from nfhiql_core.training.export import PARITY_ATOL, PARITY_RTOL

    for name, options, expected in (("default", [], (PARITY_ATOL, PARITY_RTOL)),
                                    ("given", ["--atol", "2e-5", "--rtol", "0"], (2e-5, 0.0))):
        assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / name), "--control-period", "0.1",
                     *options]) == 0
        parity = json.loads((tmp_path / name / "bundle.json").read_text())["parity"]
        assert (parity["atol"], parity["rtol"]) == expected


def test_eval_without_env_asks_for_one(tiny_checkpoint, capsys):
    assert main(["eval", str(tiny_checkpoint), "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tiny_checkpoint), "--env")


def test_eval_subgoal_candidates_need_state_subgoals_and_a_checkpoint(tiny_checkpoint, capsys):
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "cube-single-play"
    assert main(["eval", str(bundle), "--subgoal-candidates", "4", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--subgoal-candidates", "not in bundles")
    assert main(["eval", str(tiny_checkpoint), "--env", "pointmaze-medium-navigate", "--episodes", "1",
                 "--subgoal-candidates", "4", "--quiet"]) == 2  # the tiny recipe plans in rep space
    assert_one_line_error(capsys.readouterr().err, "subgoal_space: state", "'rep'")


def test_eval_cli_writes_per_task_and_per_episode_json(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval" / "result.json"
    result = nfhiql("eval", str(tiny_checkpoint), "--env", "pointmaze-medium-navigate", "--episodes", "2",
                    "--num-envs", "10", "--json", str(out), "--quiet", timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["step"] == 10 and summary["env"] == "pointmaze-medium-navigate-v0"

    d = json.loads(out.read_text())
    assert d["env_name"] == "pointmaze-medium-navigate-v0" and d["episodes_per_task"] == 2
    assert d["max_steps"] is None  # full OGBench protocol
    assert sorted(d["per_task_success"]) == ["1", "2", "3", "4", "5"]
    episodes = d["episodes"]
    assert [(e["task_id"], e["episode"]) for e in episodes] == [(t, i) for t in range(1, 6) for i in range(2)]
    for e in episodes:
        assert isinstance(e["success"], bool) and 1 <= e["length"] <= 1000
        assert e["success"] or e["length"] == 1000  # failures run to the time limit
    for task, success in d["per_task_success"].items():
        assert success == np.mean([e["success"] for e in episodes if e["task_id"] == int(task)])
    assert d["success"] == pytest.approx(np.mean(list(d["per_task_success"].values())))
    assert summary["per_task"] == d["per_task_success"] and summary["success"] == round(d["success"], 4)
