"""Experiment grids: cell expansion, scoring (mean of the last evaluations), aggregation over seeds,
and a real tiny grid (subprocess training + pointmaze evaluation) that resumes where it stopped."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from recipes import make_dataset, write_recipe

from nfhiql_core.analysis.experiment import (
    RESULT_NAME,
    _curve,
    adopt_results,
    cell_result,
    grid_cells,
    idle_core_shares,
    load_experiment_config,
    run_experiment,
    write_report,
)
from nfhiql_core.checksums import sha256_file
from nfhiql_core.cli import main
from nfhiql_core.config import to_dict
from nfhiql_core.errors import ConfigError, NfhiqlError
from nfhiql_core.training.metrics import MetricsLogger, read_csv

TASK = "pointmaze-medium-navigate"


def write_grid(tmp_path: Path, steps: int = 20, **fields) -> Path:
    """A grid over a tiny recipe on a 2-D random walk, evaluated in pointmaze (2-D observations)."""
    dataset = make_dataset(tmp_path / "walk.npz")
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "unused", dataset, log_interval=10)
    data = yaml.safe_load(recipe.read_text())
    data["env"] = TASK
    recipe.write_text(yaml.safe_dump(data))
    grid = {"output_dir": str(tmp_path / "grid"), "policies": ["flow", "gaussian"], "data_fractions": [1.0],
            "seeds": [0], "final_evals": 2, "jobs": 2,
            "tasks": [{"name": TASK, "recipe": str(recipe),
                       "overrides": [f"train.steps={steps}", "train.eval_interval=10", "train.eval_episodes=1"],
                       "reference": "OGBench HIQL 79 ± 5 %"}], **fields}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_cells_cover_the_grid_with_their_own_recipes(tmp_path):
    config = load_experiment_config(write_grid(tmp_path, seeds=[0, 1], data_fractions=[1.0, 0.1]))
    cells = grid_cells(config)
    assert len(cells) == 2 * 2 * 2
    assert len({c.run_dir for c in cells}) == len(cells)
    for c in cells:
        assert (c.recipe.agent.policy, c.recipe.dataset.data_fraction, c.recipe.seed) == \
               (c.policy, c.data_fraction, c.seed)
        assert c.recipe.run_dir == str(c.run_dir) and c.recipe.train.steps == 20
    assert [c.seed for c in cells] == [0, 0, 0, 0, 1, 1, 1, 1]  # seed-major: a partial grid covers every arm


def test_a_task_may_run_its_own_data_fractions(tmp_path):
    path = write_grid(tmp_path)
    grid = yaml.safe_load(path.read_text())
    grid["tasks"].append({**grid["tasks"][0], "name": "with-less-data", "data_fractions": [1.0, 0.1]})
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    cells = grid_cells(load_experiment_config(path))
    assert sorted({(c.task, c.data_fraction) for c in cells}) == [
        (TASK, 1.0), ("with-less-data", 0.1), ("with-less-data", 1.0)]
    grid["tasks"][1]["data_fractions"] = [1.5]
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    with pytest.raises(ConfigError, match=r"tasks\[with-less-data\]\.data_fractions must lie in \(0, 1\]"):
        load_experiment_config(path)


@pytest.mark.parametrize("field, value, message", [
    ("data_fractions", [0.0], "data_fractions must lie in (0, 1]"),
    ("seeds", [], "must be non-empty"),
    ("final_evals", 0, "final_evals and jobs must be >= 1"),
    ("typo", 1, "unknown key typo"),
])
def test_bad_grid_config_is_one_line(tmp_path, field, value, message):
    path = write_grid(tmp_path, **{field: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        load_experiment_config(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_grid_recipe_without_env_is_rejected(tmp_path):
    path = write_grid(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    data = yaml.safe_load(recipe.read_text())
    data["env"] = None
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="env is required"):
        grid_cells(load_experiment_config(path))


def with_variant(path: Path, **variant) -> Path:
    """Add a second row to the grid at `path`: the first task's recipe with one more override."""
    grid = yaml.safe_load(path.read_text())
    base = grid["tasks"][0]
    grid["tasks"].append({**base, "name": "variant", "overrides": [*base["overrides"], "agent.expectile=0.8"],
                          **variant})
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_rows_are_recipe_variants_with_their_own_policies(tmp_path):
    config = load_experiment_config(with_variant(write_grid(tmp_path), policies=["flow"]))
    cells = grid_cells(config)
    assert [(c.task, c.policy) for c in cells] == [(TASK, "flow"), (TASK, "gaussian"), ("variant", "flow")]
    assert cells[2].recipe.agent.expectile == 0.8 and cells[0].recipe.agent.expectile == 0.7
    fake_run(cells[2], [0.4, 0.6])
    report = write_report(config)
    assert [(g["task"], g["policy"]) for g in report["groups"]] == [(TASK, "flow"), (TASK, "gaussian"),
                                                                     ("variant", "flow")]
    table = (Path(config.output_dir) / "results.md").read_text()
    assert "| variant | 1 | 50.0 | n/a |" in table and f"| {TASK} | 1 | — | — |" in table

    path = with_variant(write_grid(tmp_path), policies=["diffusion"])
    with pytest.raises(ConfigError, match=r"tasks\[variant\].policies: 'diffusion' is not one of") as e:
        load_experiment_config(path)
    assert "\n" not in str(e.value)


def fake_run(cell, successes: list[float], wall_per_row: float = 2.0) -> None:
    """Write the metrics a finished run leaves (eval.csv, train.csv) and score it."""
    metrics = MetricsLogger(cell.run_dir)
    for i, s in enumerate(successes):
        metrics.log("eval", 10 * (i + 1), {"success": s, "ci95": 0.1, **{f"task{t}": s for t in range(1, 6)}})
        metrics.log("train", 10 * (i + 1), {"loss": 0.0, "steps_per_s": 10 / wall_per_row})
    metrics.close()
    (cell.run_dir / RESULT_NAME).write_text(json.dumps(cell_result(cell, 2)))


def test_training_only_some_tasks_names_unknown_ones(tmp_path):
    config = load_experiment_config(with_variant(write_grid(tmp_path), policies=["flow"]))
    with pytest.raises(ConfigError, match="no task named 'nope'"):
        run_experiment(config, tasks=["nope"], progress=False)


def test_report_aggregates_last_evaluations_over_seeds(tmp_path):
    config = load_experiment_config(write_grid(tmp_path, seeds=[0, 1, 2], data_fractions=[1.0, 0.1]))
    cells = {(c.policy, c.data_fraction, c.seed): c for c in grid_cells(config)}
    flow_full = {0: [0.0, 0.6, 0.8], 1: [0.1, 0.7, 0.7], 2: [0.2, 0.5, 0.9]}  # last-2 means .7, .7, .7
    for seed, curve in flow_full.items():
        fake_run(cells["flow", 1.0, seed], curve)
    fake_run(cells["flow", 0.1, 0], [0.4, 0.6])  # mean .5 → retention 5/7
    fake_run(cells["gaussian", 1.0, 0], [0.2, 0.4])
    fake_run(cells["gaussian", 1.0, 1], [0.6, 0.8])  # .3 and .7 → mean .5, std .2828
    report = write_report(config)

    groups = {(g["policy"], g["data_fraction"]): g for g in report["groups"]}
    assert groups["flow", 1.0]["success_mean"] == pytest.approx(0.7)
    assert groups["flow", 1.0]["success_std"] == pytest.approx(0.0, abs=1e-12)
    assert groups["flow", 1.0]["train_wall_s_mean"] == pytest.approx(6.0)
    assert groups["gaussian", 1.0]["success_std"] == pytest.approx(np.std([0.3, 0.7], ddof=1))
    assert groups["gaussian", 0.1]["success_mean"] is None
    spreads = [np.std(curve[-2:], ddof=1) for curve in flow_full.values()]  # .141, 0, .283
    assert groups["flow", 1.0]["eval_spread_mean"] == pytest.approx(np.mean(spreads))
    assert groups["flow", 1.0]["eval_spread_runs"] == 3
    (retention,) = [r for r in report["retention"] if r["policy"] == "flow"]
    assert retention["retention"] == pytest.approx(0.5 / 0.7)
    assert (retention["seeds"], retention["full_data_seeds"]) == (1, 3)
    table = (Path(config.output_dir) / "results.md").read_text()
    assert f"- {TASK}, flow, data 0.1: 71 % (1 vs 3 seeds: not yet like for like)" in table
    assert f"| {TASK} | 1 | 70.0 ± 0.0 | 50.0 ± 28.3 (2/3 seeds) |" in table
    assert f"| {TASK} | 0.1 | 50.0 (1/3 seeds) | — |" in table
    assert "OGBench HIQL 79 ± 5 %" in table
    assert f"- {TASK}, flow, data 1: 14.1 (3 runs)" in table
    assert f"- {TASK}, flow, data 0.1: 14.1 (1 run)" in table
    assert f"{TASK}, gaussian, data 0.1:" not in table.split("Training stability")[1]
    for figure in ("curves.png", "data_fraction.png"):
        assert (Path(config.output_dir) / figure).read_bytes()[:4] == b"\x89PNG"


def test_stability_of_runs_scored_without_a_curve_is_not_recorded(tmp_path):
    """Results written before they carried their evaluation curve (the 2026-11-25 snapshot) have no spread."""
    config = load_experiment_config(write_grid(tmp_path))
    cell = grid_cells(config)[0]
    fake_run(cell, [0.2, 0.4])
    result = json.loads((cell.run_dir / RESULT_NAME).read_text())
    del result["curve"]
    (cell.run_dir / RESULT_NAME).write_text(json.dumps(result))
    (group, *_) = write_report(config)["groups"]
    assert (group["policy"], group["eval_spread_mean"], group["eval_spread_runs"]) == ("flow", None, 0)
    table = (Path(config.output_dir) / "results.md").read_text()
    assert f"- {TASK}, flow, data 1: not recorded (no evaluation curve kept)" in table


def test_report_names_each_device_and_dataset_file_its_runs_used(tmp_path):
    """Runs continued on another machine (other CPU, dataset regenerated there) are reported apart, not blended."""
    config = load_experiment_config(write_grid(tmp_path, seeds=[0, 1]))
    cells = {(c.policy, c.seed): c for c in grid_cells(config)}
    fake_run(cells["flow", 0], [0.2, 0.4], wall_per_row=60.0)  # 2 min of training
    fake_run(cells["gaussian", 0], [0.1, 0.3], wall_per_row=60.0)
    fake_run(cells["flow", 1], [0.5, 0.7], wall_per_row=120.0)  # 4 min, elsewhere
    moved = json.loads((cells["flow", 1].run_dir / RESULT_NAME).read_text())
    here, there = moved["device"], "CPU (Other CPU, 2 cores)"
    moved.update(device=there, dataset_sha256="ab" * 32)
    (cells["flow", 1].run_dir / RESULT_NAME).write_text(json.dumps(moved))
    report = write_report(config)

    (flow, gaussian) = [g for g in report["groups"] if g["data_fraction"] == 1.0]
    assert flow["train_wall_s_by_device"] == {here: pytest.approx(120.0), there: pytest.approx(240.0)}
    assert gaussian["train_wall_s_by_device"] == {here: pytest.approx(120.0)}
    table = (Path(config.output_dir) / "results.md").read_text()
    walls = {here: "2 min", there: "4 min"}
    flow_walls = ", ".join(f"{walls[d]} on {d}" for d in sorted(walls))
    assert (f"| flow {flow_walls} / gaussian 2 min on {here} | {'; '.join(sorted(walls))} |") in table
    assert f"- {TASK}: not recorded (2 runs), abababababab… (1 run)" in table


def test_scoring_needs_enough_evaluations(tmp_path):
    cell = grid_cells(load_experiment_config(write_grid(tmp_path)))[0]
    MetricsLogger(cell.run_dir).log("eval", 10, {"success": 1.0, "ci95": 0.0})
    with pytest.raises(NfhiqlError, match="1 evaluation.*last 2"):
        cell_result(cell, 2)


def test_idle_cores_go_to_the_runs_still_training():
    assert idle_core_shares({"a": 1}, 2) == {"a": 2}
    assert idle_core_shares({"a": 1, "b": 1}, 16) == {"a": 8, "b": 8}
    assert idle_core_shares({"a": 1, "b": 2, "c": 3}, 6) == {"a": 2}  # never fewer than a run has
    assert idle_core_shares({"a": 0}, 8) == {}  # torch's default already uses every core
    assert idle_core_shares({"a": 1, "b": 1}, 2) == {} and idle_core_shares({}, 2) == {}


def test_real_grid_trains_scores_and_resumes(tmp_path, capsys):
    path = write_grid(tmp_path, steps=20)
    assert main(["experiment", str(path), "--quiet"]) == 0
    config = load_experiment_config(path)
    cells = grid_cells(config)
    for cell in cells:
        result = json.loads((cell.run_dir / RESULT_NAME).read_text())
        evals = read_csv(cell.run_dir / "eval.csv")
        assert [r["step"] for r in evals] == [10, 20]
        assert result["success"] == pytest.approx(np.mean([r["success"] for r in evals]))
        assert result["evaluated_steps"] == [10, 20] and result["steps"] == 20
        assert result["dataset_sha256"] == sha256_file(tmp_path / "walk.npz")
        # jobs 2: whichever run finishes first hands its core to the other, if that one is still training
        assert result["threads"] == 1 and result["threads_raised_to"] in (None, len(os.sched_getaffinity(0)))
    assert "| flow | gaussian |" in capsys.readouterr().out

    # Extend the budget: finished results are re-scored only for cells that run again. Dropping
    # one cell's result makes the grid resume exactly that run from its last checkpoint.
    longer = write_grid(tmp_path, steps=30)
    flow, gaussian = grid_cells(load_experiment_config(longer))
    (flow.run_dir / RESULT_NAME).unlink()
    report = run_experiment(load_experiment_config(longer), progress=False)
    assert [r["step"] for r in read_csv(flow.run_dir / "eval.csv")] == [10, 20, 30]
    assert [r["step"] for r in read_csv(flow.run_dir / "train.csv")] == [10, 20, 30]  # resumed, not restarted
    assert [r["step"] for r in read_csv(gaussian.run_dir / "eval.csv")] == [10, 20]  # finished: untouched
    assert report["runs"][flow.key]["evaluated_steps"] == [20, 30]


def test_adopting_a_snapshot_counts_matching_runs_only(tmp_path):
    """Runs of an earlier results.json (a committed snapshot) fill cells whose budget matches, nothing else."""
    config = load_experiment_config(write_grid(tmp_path, seeds=[0, 1]))
    cells = {(c.policy, c.seed): c for c in grid_cells(config)}
    fake_run(cells["flow", 0], [0.2, 0.4])
    fake_run(cells["gaussian", 0], [0.1, 0.3])
    fake_run(cells["flow", 1], [0.5, 0.7])
    write_report(config)
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text((Path(config.output_dir) / "results.json").read_text())
    # A fresh machine: a new output directory, one cell already finished there, one recipe changed.
    fresh_grid = write_grid(tmp_path, seeds=[0, 1], output_dir=str(tmp_path / "fresh"))
    fresh = load_experiment_config(fresh_grid)
    fresh_cells = {(c.policy, c.seed): c for c in grid_cells(fresh)}
    fake_run(fresh_cells["flow", 1], [0.9, 0.9])
    report = json.loads(snapshot.read_text())
    report["runs"][fresh_cells["gaussian", 0].key]["steps"] = 999
    snapshot.write_text(json.dumps(report))

    assert main(["experiment", str(fresh_grid), "--adopt", str(snapshot), "--report-only"]) == 0
    result = json.loads((fresh_cells["flow", 0].run_dir / RESULT_NAME).read_text())
    assert result["success"] == pytest.approx(0.3) and result["adopted_from"] == str(snapshot)
    assert [p["step"] for p in result["curve"]] == [10, 20]
    assert not (fresh_cells["gaussian", 0].run_dir / RESULT_NAME).exists()  # budget differs: runs again
    kept = json.loads((fresh_cells["flow", 1].run_dir / RESULT_NAME).read_text())
    assert kept["success"] == pytest.approx(0.9) and "adopted_from" not in kept  # never overwritten
    groups = {(g["policy"], g["data_fraction"]): g for g in write_report(fresh)["groups"]}
    assert sorted(groups["flow", 1.0]["success_per_seed"]) == pytest.approx([0.3, 0.9])
    assert groups["gaussian", 1.0]["success_mean"] is None

    # The curve figure of adopted runs comes from the curve their result carries (no eval.csv here).
    assert _curve(fresh_cells["flow", 0], result) == result["curve"]

    # A run scored before knobs were added (its agent and budget lack them) is adopted: they are at their defaults.
    older = json.loads(snapshot.read_text())
    run = older["runs"][fresh_cells["gaussian", 1].key] = dict(older["runs"][fresh_cells["flow", 0].key])
    del run["agent"]["policy_ema"], run["agent"]["lr_schedule"], run["eval_subgoal_candidates"]
    run["agent"]["policy"] = "gaussian"
    snapshot.write_text(json.dumps(older))
    assert adopt_results(fresh, snapshot) == [fresh_cells["gaussian", 1].key]

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(NfhiqlError, match="bad.json: not a results.json") as e:
        adopt_results(fresh, bad)
    assert "\n" not in str(e.value)


def test_shipped_recipe_ablation_changes_one_thing_per_row(tmp_path, monkeypatch):
    """config/experiments/recipe-ablation.yaml: every recipe validates, each row changes what its name says on
    the same budget, and the baseline row takes cpu-grid's finished cube runs."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the grid names its recipes relative to the repository
    config = load_experiment_config("config/experiments/recipe-ablation.yaml")
    cells = grid_cells(config)
    agents = {c.task: to_dict(c.recipe.agent) for c in cells if c.policy == "flow"}
    base = agents["cube-single-play"]

    def changed(task: str) -> set[str]:
        return {k for k, v in agents[task].items() if v != base[k]}

    schedule = {"lr_schedule", "lr_warmup_steps", "lr_final_fraction", "optimizer", "weight_decay"}
    flow = {"flow_blocks", "flow_hidden_dims", "flow_cond_hidden_dims", "flow_cond_activation"}
    state = {"subgoal_space", "subgoal_steps"}
    assert changed("cube-cosine-adamw") == schedule and changed("cube-ema") == {"policy_ema"}
    assert changed("cube-bigger-flow") == flow and changed("cube-state-subgoals") == state
    assert changed("cube-v2") == schedule | {"policy_ema"} | flow
    assert changed("cube-v2-small-flow") == schedule | {"policy_ema"}  # the baseline's flow: issue 19's cost
    assert changed("cube-v2-state-subgoals") == schedule | {"policy_ema"} | flow | state
    for task in agents:
        assert {k: v for k, v in agents[task].items() if k in changed(task)} == \
            {k: agents["cube-v2-state-subgoals"][k] for k in changed(task)}  # the same value in every row
    assert {(c.recipe.train.steps, c.recipe.train.batch_size, c.recipe.train.eval_interval, c.recipe.train.eval_start,
             c.recipe.train.eval_episodes, c.recipe.train.eval_subgoal_candidates) for c in cells} == \
           {(40000, 256, 4000, 32000, 50, 1)}
    assert {c.task for c in cells if c.policy == "gaussian"} == {"cube-single-play", "cube-v2"}
    assert {c.task for c in cells if c.data_fraction != 1.0} == {"cube-v2"}  # 10 % of the data: the candidate only
    assert len(cells) == 30 + 6

    moved = dataclasses.replace(config, output_dir=str(tmp_path / "grid"))
    adopted = adopt_results(moved, root / "docs" / "experiments" / "cpu-grid" / "results.json")
    assert sorted(adopted) == sorted(f"cube-single-play/{p}-frac1-seed{s}" for p in ("flow", "gaussian")
                                     for s in (0, 1, 2))


def test_shipped_manipulation_grid_runs_the_cube_v2_recipe_on_each_task(monkeypatch):
    """config/experiments/manipulation-cpu.yaml: scene, puzzle-3x3 and cube-double with the cube-v2 row's agent
    and budget; only the env and the data differ."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    cells = grid_cells(load_experiment_config("config/experiments/manipulation-cpu.yaml"))
    ablation = grid_cells(load_experiment_config("config/experiments/recipe-ablation.yaml"))
    v2 = {c.policy: c.recipe for c in ablation if c.task == "cube-v2" and c.data_fraction == 1.0}
    assert {c.task for c in cells} == {"scene-play", "puzzle-3x3-play", "cube-double-play"} and len(cells) == 12
    for c in cells:
        assert c.recipe.env == c.task and c.recipe.dataset.path == f"data/{c.task}-v0.npz"
        assert to_dict(c.recipe.agent) == to_dict(v2[c.policy].agent)
        assert to_dict(c.recipe.train) == to_dict(v2[c.policy].train)
