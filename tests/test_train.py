"""Training loop: clean and simulated-crash resume (bitwise, also with a learning-rate schedule and EMA
policies), config validation, run-dir protection, metrics CSV. Tiny nets on a 2-D random-walk dataset;
env=None so no evaluation runs (one test stubs the evaluation out)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from recipes import make_dataset, write_recipe

import nfhiql_core.training.train as train_module
from nfhiql_core.algo.agent import lr_factor
from nfhiql_core.checksums import sha256_file
from nfhiql_core.data.convert import convert_npz
from nfhiql_core.errors import ConfigError, DatasetError, OutputExistsError
from nfhiql_core.training.checkpoint import load_checkpoint
from nfhiql_core.training.metrics import read_csv
from nfhiql_core.training.train import (
    DATASET_RECORD,
    THREADS_APPLIED,
    THREADS_REQUEST,
    TrainConfig,
    load_train_config,
    train,
)

LOSS_COLUMNS = ("value/loss", "low_actor/loss", "high_actor/loss", "loss")
SCHEDULE_AND_EMA = ("agent.lr_schedule=cosine", "agent.lr_warmup_steps=5", "agent.lr_final_fraction=0.1",
                    "agent.optimizer=adamw", "agent.weight_decay=0.01", "agent.policy_ema=0.9")


def config(recipe: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    return load_train_config(recipe, [f"run_dir={run_dir}", *overrides])


def assert_same_state(a, b, where: str = "") -> None:
    """Recursive bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"tensor differs at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_checkpoint(path_a: Path, path_b: Path, step: int) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a.step == b.step == step
    assert_same_state(a.model, b.model, "model")
    assert_same_state(a.optimizer, b.optimizer, "optimizer")
    assert_same_state(a.scheduler, b.scheduler, "scheduler")
    assert a.numpy_rng == b.numpy_rng
    assert torch.equal(a.torch_rng, b.torch_rng)


def assert_same_losses(csv_a: Path, csv_b: Path) -> None:
    rows_a, rows_b = read_csv(csv_a), read_csv(csv_b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k != "steps_per_s"} == \
               {k: v for k, v in rb.items() if k != "steps_per_s"}, f"row at step {ra['step']} differs"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Dataset, recipe, and reference run A: 40 steps straight (checkpoint every 10, log every 5)."""
    root = tmp_path_factory.mktemp("train")
    dataset = make_dataset(root / "walk.npz")
    recipe = write_recipe(root / "recipe.yaml", root / "unused", dataset, log_interval=5)
    run_a = root / "A"
    ckpt = train(config(recipe, run_a), progress=False)
    assert ckpt == run_a / "checkpoint.pt"
    return recipe, run_a


@pytest.fixture(scope="module")
def scheduled(setup):
    """Reference run A with a warm-up + cosine schedule, AdamW and EMA policies: 40 steps straight."""
    recipe, run_a = setup
    run = run_a.parent / "A-scheduled"
    train(config(recipe, run, *SCHEDULE_AND_EMA), progress=False)
    return recipe, run


def test_clean_resume_is_bitwise_identical(setup, tmp_path):
    recipe, run_a = setup
    run_b = tmp_path / "B"
    train(config(recipe, run_b, "train.steps=20"), progress=False)
    assert load_checkpoint(run_b / "checkpoint.pt").step == 20
    train(config(recipe, run_b, "train.steps=40"), resume=True, progress=False)

    assert_same_checkpoint(run_a / "checkpoint.pt", run_b / "checkpoint.pt", 40)
    steps = [r["step"] for r in read_csv(run_b / "train.csv")]
    assert steps == list(range(5, 41, 5))  # each step exactly once
    assert_same_losses(run_a / "train.csv", run_b / "train.csv")


def test_a_thread_request_in_the_run_dir_raises_torch_threads_at_the_next_log_step(setup, tmp_path, capsys):
    """How the grid hands a finished run's cores to a running one; the request is acknowledged by renaming."""
    recipe, _ = setup
    run = tmp_path / "R"
    train(config(recipe, run, "train.steps=10"), progress=False)
    before = torch.get_num_threads()
    (run / THREADS_REQUEST).write_text(str(before + 1))
    try:
        train(config(recipe, run, "train.steps=20"), resume=True, progress=False)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
    assert not (run / THREADS_REQUEST).exists() and (run / THREADS_APPLIED).read_text() == str(before + 1)
    assert f"torch threads raised to {before + 1}" in capsys.readouterr().out


@pytest.mark.parametrize("reference, overrides", [("setup", ()), ("scheduled", SCHEDULE_AND_EMA)])
def test_resume_after_crash_drops_lost_rows(reference, overrides, request, tmp_path, monkeypatch):
    """A crash right before the step-30 checkpoint: rows 25 and 30 are in the CSV, the checkpoint
    is at 20; resuming must drop those rows and redo the work identically (schedule and EMA included)."""
    recipe, run_a = request.getfixturevalue(reference)
    run_b = tmp_path / "B"
    real_save = train_module.save_checkpoint

    def crash_at_30(path, agent, cfg, step, rng, **kwargs):
        if step == 30:
            raise KeyboardInterrupt("simulated crash")
        real_save(path, agent, cfg, step, rng, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", crash_at_30)
    with pytest.raises(KeyboardInterrupt):
        train(config(recipe, run_b, *overrides), progress=False)
    monkeypatch.undo()
    assert load_checkpoint(run_b / "checkpoint.pt").step == 20
    assert [r["step"] for r in read_csv(run_b / "train.csv")][-2:] == [25, 30]

    train(config(recipe, run_b, *overrides), resume=True, progress=False)
    assert_same_checkpoint(run_a / "checkpoint.pt", run_b / "checkpoint.pt", 40)
    assert [r["step"] for r in read_csv(run_b / "train.csv")] == list(range(5, 41, 5))
    assert_same_losses(run_a / "train.csv", run_b / "train.csv")


def test_scheduled_run_logs_its_learning_rate_and_checkpoints_schedule_and_ema(scheduled):
    recipe, run = scheduled
    ckpt = load_checkpoint(run / "checkpoint.pt")
    agent_config = load_train_config(recipe, SCHEDULE_AND_EMA).agent
    assert ckpt.scheduler["last_epoch"] == 40
    assert any(k.startswith("ema_actors.") for k in ckpt.model)
    # the row of step k logs the learning rate of update k (0-based k − 1); the last one is lr · final fraction
    for row in read_csv(run / "train.csv"):
        assert row["lr"] == pytest.approx(agent_config.lr * lr_factor(int(row["step"]) - 1, agent_config, 40))
    assert row["lr"] == pytest.approx(0.1 * agent_config.lr)
    assert ckpt.build_agent().scheduler.last_epoch == 40
    assert load_checkpoint(run.parent / "A" / "checkpoint.pt").scheduler is None  # constant: no schedule


def test_cosine_run_refuses_to_resume_with_another_step_count(scheduled, tmp_path):
    recipe, _ = scheduled
    run = tmp_path / "run"
    train(config(recipe, run, *SCHEDULE_AND_EMA, "train.steps=10"), progress=False)
    with pytest.raises(ConfigError, match="train.steps differs .* cosine") as e:
        train(config(recipe, run, *SCHEDULE_AND_EMA, "train.steps=20"), resume=True, progress=False)
    assert "\n" not in str(e.value)


def test_checkpoint_from_before_the_new_knobs_resumes(setup, tmp_path):
    """A checkpoint whose recipe lacks the knobs added since (and has no scheduler entry) resumes: they
    count at their defaults, which are the behaviour it was trained with."""
    recipe, _ = setup
    run = tmp_path / "run"
    train(config(recipe, run, "train.steps=10"), progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("lr_schedule", "lr_warmup_steps", "lr_final_fraction", "optimizer", "weight_decay", "policy_ema",
                "flow_layer_norm", "flow_zero_init", "flow_cond_hidden_dims", "flow_cond_activation"):
        del state["config"]["agent"][key]
    del state["config"]["train"]["eval_subgoal_candidates"], state["scheduler"]
    torch.save(state, run / "checkpoint.pt")
    train(config(recipe, run, "train.steps=15"), resume=True, progress=False)
    assert load_checkpoint(run / "checkpoint.pt").step == 15


def test_evaluation_uses_the_recipes_subgoal_candidates(setup, tmp_path, monkeypatch):
    import nfhiql_core.evaluation.protocol as protocol

    recipe, _ = setup
    seen = []

    def fake_evaluate(policy, env, **kwargs):
        seen.append(policy)
        assert policy(np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)).shape == (3, 2)
        return SimpleNamespace(success=0.0, ci95=0.0, per_task_success={1: 0.0})

    monkeypatch.setattr(protocol, "evaluate", fake_evaluate)
    train(config(recipe, tmp_path / "run", "env=somewhere", "train.steps=10", "train.eval_interval=10",
                 "agent.subgoal_space=state", "train.eval_subgoal_candidates=4"), progress=False)
    assert [p.subgoal_candidates for p in seen] == [4]


def test_metrics_csv_header_and_finite_values(setup):
    _, run_a = setup
    path = run_a / "train.csv"
    header = path.read_text().splitlines()[0].split(",")
    assert header[0] == "step" and header[-1] == "steps_per_s"
    for column in ("value/loss", "value/v_mean", "low_actor/loss", "low_actor/log_prob",
                   "high_actor/loss", "high_actor/log_prob", "loss"):
        assert column in header
    assert len(set(header)) == len(header)
    rows = read_csv(path)
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    for row in rows:
        assert list(row) == header
        assert all(math.isfinite(v) for v in row.values()), row
        assert row["steps_per_s"] > 0
        assert row["loss"] == pytest.approx(row["value/loss"] + row["low_actor/loss"] + row["high_actor/loss"],
                                            rel=1e-5, abs=1e-5)


def test_written_config_yaml_reloads_to_the_same_recipe(setup):
    recipe, run_a = setup
    assert load_train_config(run_a / "config.yaml") == config(recipe, run_a)


# ------------------------------------------------------------------ config validation
def config_error(recipe: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_train_config(recipe, list(overrides))
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture
def recipe(tmp_path) -> Path:
    # load_train_config does not read the dataset: no file needed
    return write_recipe(tmp_path / "recipe.yaml", tmp_path / "run", tmp_path / "walk.npz", log_interval=5)


def test_unknown_key_in_override_names_file_and_dotted_key(recipe):
    message = config_error(recipe, "agent.polcy=flow")
    assert str(recipe) in message and "agent.polcy" in message


def test_unknown_key_in_yaml_names_file_and_dotted_key(recipe):
    data = yaml.safe_load(recipe.read_text())
    data["train"]["stpes"] = 10
    recipe.write_text(yaml.safe_dump(data))
    message = config_error(recipe)
    assert str(recipe) in message and "train.stpes" in message
    data["train"].pop("stpes")
    data["trian"] = {}
    recipe.write_text(yaml.safe_dump(data))
    assert "trian" in config_error(recipe)


def test_wrong_type_and_bad_values(recipe):
    message = config_error(recipe, "train.steps=abc")
    assert str(recipe) in message and "train.steps" in message and "abc" in message
    assert "train.batch_size" in config_error(recipe, "train.batch_size=true")  # bool is not an int
    message = config_error(recipe, "agent.policy=banana")
    assert str(recipe) in message and "banana" in message and "policy" in message
    assert "steps" in config_error(recipe, "train.steps=0")
    assert "dataset.path" in config_error(recipe, "dataset={}")


def test_bad_override_syntax(recipe):
    message = config_error(recipe, "foo")
    assert "'foo'" in message and "key.sub=value" in message
    assert "'=1'" in config_error(recipe, "=1")
    assert "seed" in config_error(recipe, "seed.x=1")  # seed is not a section


def test_sampler_probabilities_must_sum_to_one(recipe):
    message = config_error(recipe, "sampler.value_p_curgoal=0.5")
    assert "value_p_curgoal" in message and "sum to 1" in message
    load_train_config(recipe, ["sampler.value_p_curgoal=0.5", "sampler.value_p_randomgoal=0.0"])  # sums to 1


def test_sampler_discount_points_to_agent_section(recipe):
    for key in ("discount", "subgoal_steps"):
        message = config_error(recipe, f"sampler.{key}=5")
        assert f"sampler.{key}" in message and "agent section" in message
    assert "sampler.typo" in config_error(recipe, "sampler.typo=1")


@pytest.mark.parametrize("overrides, message", [
    (["agent.lr_schedule=cosine", "agent.lr_warmup_steps=40"], r"agent.lr_warmup_steps \(40\) must be < train.steps"),
    (["agent.lr_warmup_steps=50"], r"agent.lr_warmup_steps \(50\) must be < train.steps \(40\)"),
    (["train.eval_subgoal_candidates=4"], "train.eval_subgoal_candidates > 1 needs agent.subgoal_space: state"),
    (["train.eval_subgoal_candidates=0"], "eval_subgoal_candidates must be >= 1"),
    (["agent.optimizer=sgd"], "optimizer must be one of"),
])
def test_recipe_knob_errors_name_the_field(recipe, overrides, message):
    error = config_error(recipe, *overrides)
    assert str(recipe) in error and re.search(message, error), error


def test_sampler_errors_name_the_file(recipe):
    for override in ("sampler.value_p_curgoal=0.5", "sampler.discount=0.9", "sampler.typo=1"):
        assert str(recipe) in config_error(recipe, override)


# ------------------------------------------------------------------ run-dir protection
def test_run_dir_protection_force_and_changed_recipe(setup, tmp_path):
    recipe, _ = setup
    run = tmp_path / "run"
    cfg = config(recipe, run, "train.steps=10")
    train(cfg, progress=False)
    before = snapshot(run)
    assert {"checkpoint.pt", "config.yaml", "train.csv"} <= set(before)

    with pytest.raises(OutputExistsError, match="--resume") as e:
        train(cfg, progress=False)
    assert str(run) in str(e.value)
    assert snapshot(run) == before  # nothing touched

    with pytest.raises(ConfigError, match="mutually exclusive"):
        train(cfg, resume=True, force=True, progress=False)
    assert snapshot(run) == before

    changed = config(recipe, run, "train.steps=20", "agent.expectile=0.8")
    with pytest.raises(ConfigError, match="'agent' differs") as e:
        train(changed, resume=True, progress=False)
    assert str(run / "checkpoint.pt") in str(e.value)
    assert snapshot(run) == before
    other_seed = config(recipe, run, "train.steps=20", "seed=1")
    with pytest.raises(ConfigError, match="'seed' differs"):
        train(other_seed, resume=True, progress=False)
    assert snapshot(run) == before

    # --force with an unreadable dataset: refused before the existing run is touched.
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DatasetError) as e:
        train(config(recipe, run, "train.steps=5", f"dataset.path={bad}"), force=True, progress=False)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert snapshot(run) == before  # checkpoint, CSVs and TensorBoard logs all still there

    (run / "notes.txt").write_text("stale")
    train(config(recipe, run, "train.steps=5"), force=True, progress=False)
    assert not (run / "notes.txt").exists()
    assert load_checkpoint(run / "checkpoint.pt").step == 5
    assert [r["step"] for r in read_csv(run / "train.csv")] == [5]


def test_resume_refuses_a_dataset_that_changed(setup, tmp_path):
    """A run records the sha256 of its dataset; resuming on a regenerated file is refused, nothing touched."""
    recipe, _ = setup
    data, run = make_dataset(tmp_path / "walk.npz"), tmp_path / "run"
    train(config(recipe, run, "train.steps=10", f"dataset.path={data}"), progress=False)
    record = json.loads((run / DATASET_RECORD).read_text())
    assert record == {"path": str(data), "sha256": sha256_file(data)}

    make_dataset(data, seed=1)  # same path and shape, other contents
    before = snapshot(run)
    with pytest.raises(ConfigError, match="cannot resume: .* is not the dataset this run was trained on") as e:
        train(config(recipe, run, "train.steps=20", f"dataset.path={data}"), resume=True, progress=False)
    assert str(run / DATASET_RECORD) in str(e.value) and "\n" not in str(e.value)
    assert snapshot(run) == before

    make_dataset(data)  # the original bytes again: resumes
    train(config(recipe, run, "train.steps=20", f"dataset.path={data}"), resume=True, progress=False)
    assert load_checkpoint(run / "checkpoint.pt").step == 20


def test_training_from_the_memory_mapped_layout_equals_training_from_its_npz(setup, tmp_path):
    """The converted layout trains to the very same checkpoint; the run records the layout's manifest."""
    recipe, run_a = setup
    layout = tmp_path / "walk-npy"
    convert_npz(load_train_config(recipe).dataset.path, layout, progress=False)
    run = tmp_path / "run"
    train(config(recipe, run, f"dataset.path={layout}"), progress=False)
    assert_same_checkpoint(run_a / "checkpoint.pt", run / "checkpoint.pt", 40)
    assert json.loads((run / DATASET_RECORD).read_text()) == {"path": str(layout),
                                                             "sha256": sha256_file(layout / "dataset.json")}


def test_non_empty_dir_without_checkpoint_is_protected(setup, tmp_path):
    recipe, _ = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError):
        train(config(recipe, run, "train.steps=5"), progress=False)
    assert snapshot(run) == {"keep.txt": b"precious"}
