"""Experiment grids: task × policy × data fraction × seed, trained and evaluated run by run.

A grid config (YAML, see config/experiments/) names base training recipes per task and the
axes to sweep. A task is a row of the report: its recipe and overrides can also be variants of one
recipe on the same env (e.g. config/experiments/recipe-ablation.yaml), and it may run a subset of the
grid's policies. Each cell is an ordinary `nfhiql train` run in its own directory, started as a
subprocess (`jobs` at a time) with `--resume`, so a killed grid continues where it stopped:
finished cells (those with a `result.json`) are skipped, interrupted ones resume from their last
checkpoint. Once no cell waits, the cores of finished cells go to those still training (`share_idle_cores`:
their torch threads are raised through the run directory, see `training.train.THREADS_REQUEST`). Each
cell's success follows OGBench's protocol: the mean of its last `final_evals`
periodic evaluations (5 tasks × eval_episodes each). The report aggregates seeds (mean ± sample
std), the data-fraction retention, and the budget (steps, batch, nets, wall time, device), and
writes `results.md`, `results.json`, `curves.png` (learning curves with seed spread) and
`data_fraction.png` (success vs data fraction).
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence, TypeVar

import numpy as np
import yaml
from tqdm import tqdm

from nfhiql_core.algo.agent import AgentConfig
from nfhiql_core.analysis.plots import pyplot, save_figure
from nfhiql_core.atomic_io import atomic_open, save_json
from nfhiql_core.config import from_dict, load_yaml, to_dict
from nfhiql_core.errors import ConfigError, NfhiqlError
from nfhiql_core.training.metrics import read_csv
from nfhiql_core.training.train import (
    DATASET_RECORD,
    THREADS_APPLIED,
    THREADS_REQUEST,
    LoopConfig,
    TrainConfig,
    load_train_config,
)

RESULT_NAME = "result.json"


@dataclass(frozen=True)
class TaskSpec:
    """One task of the grid: a base recipe, the overrides that set the grid's budget, and a reference."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    reference: str = ""  # published figure to compare the Gaussian control with, e.g. "OGBench HIQL 79 ± 5 %"
    policies: tuple[str, ...] = ()  # the policies this task runs, a subset of the grid's; () = all of them
    data_fractions: tuple[float, ...] = ()  # the data fractions this task runs; () = the grid's


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid: every task × policy × data fraction × seed is one training run."""

    output_dir: str
    tasks: tuple[TaskSpec, ...]
    policies: tuple[str, ...] = ("flow", "gaussian")
    data_fractions: tuple[float, ...] = (1.0, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    final_evals: int = 3  # success of a run = mean of its last `final_evals` evaluations
    jobs: int = 1  # runs trained at the same time (each uses the recipe's train.threads)
    # Once no run waits, the cores of finished runs go to those still training: their train.threads
    # (where set) is raised to cores / runs left at their next log step. Off: every run keeps its recipe's.
    share_idle_cores: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not self.tasks or not self.policies or not self.data_fractions or not self.seeds:
            raise ValueError("tasks, policies, data_fractions and seeds must be non-empty")
        if len({t.name for t in self.tasks}) != len(self.tasks):
            raise ValueError("task names must be unique")
        if any(not 0.0 < f <= 1.0 for f in self.data_fractions):
            raise ValueError(f"data_fractions must lie in (0, 1] (got {list(self.data_fractions)})")
        if self.final_evals < 1 or self.jobs < 1:
            raise ValueError("final_evals and jobs must be >= 1")
        for task in self.tasks:
            if any(not 0.0 < f <= 1.0 for f in task.data_fractions):
                raise ValueError(f"tasks[{task.name}].data_fractions must lie in (0, 1] "
                                 f"(got {list(task.data_fractions)})")
            extra = sorted(set(task.policies) - set(self.policies))
            if extra:
                raise ValueError(f"tasks[{task.name}].policies: {extra[0]!r} is not one of the grid's policies "
                                 f"{list(self.policies)}")

    def task_policies(self, task: TaskSpec) -> tuple[str, ...]:
        """The policies `task` runs, in the grid's order."""
        return tuple(p for p in self.policies if not task.policies or p in task.policies)

    def task_fractions(self, task: TaskSpec) -> tuple[float, ...]:
        """The data fractions `task` runs."""
        return task.data_fractions or self.data_fractions


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    task: str
    policy: str
    data_fraction: float
    seed: int
    run_dir: Path
    recipe: TrainConfig = field(compare=False)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.policy}-frac{self.data_fraction:g}-seed{self.seed}"


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a grid config."""
    return from_dict(ExperimentConfig, load_yaml(path), str(path))


def grid_cells(config: ExperimentConfig) -> list[Cell]:
    """All cells in run order: task by task (config order), then seed, data fraction, policy.

    Each cell's recipe is the task's base recipe with the task's overrides and the cell's policy,
    data fraction, seed and run directory; every recipe is validated here, before anything runs.
    """
    cells = []
    for task in config.tasks:
        for seed, fraction, policy in itertools.product(config.seeds, config.task_fractions(task),
                                                        config.task_policies(task)):
            run_dir = Path(config.output_dir) / task.name / f"{policy}-frac{fraction:g}-seed{seed}"
            overrides = [*task.overrides, f"agent.policy={policy}", f"dataset.data_fraction={fraction}",
                         f"seed={seed}", f"run_dir={run_dir}"]
            recipe = load_train_config(task.recipe, overrides)
            if not recipe.env:
                raise ConfigError(f"{task.recipe}: env is required in a grid recipe (runs are scored by evaluation)")
            if not recipe.train.eval_interval:
                raise ConfigError(f"{task.recipe}: train.eval_interval must be > 0 in a grid recipe")
            cells.append(Cell(task.name, policy, fraction, seed, run_dir, recipe))
    return cells


def run_experiment(config: ExperimentConfig, jobs: int | None = None, progress: bool = True,
                   tasks: Sequence[str] = ()) -> dict[str, Any]:
    """Train every unfinished cell (`jobs` at a time; only those of `tasks` when given, in that order),
    then write and return the report (of every finished cell)."""
    cells = grid_cells(config)
    unknown = sorted(set(tasks) - {c.task for c in cells})
    if unknown:
        names = ', '.join(t.name for t in config.tasks)
        raise ConfigError(f"experiment: no task named {unknown[0]!r} (tasks: {names})")
    if tasks:
        cells = sorted((c for c in cells if c.task in tasks), key=lambda c: list(tasks).index(c.task))
    todo = [c for c in cells if not (c.run_dir / RESULT_NAME).exists()]
    out = Path(config.output_dir)
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    report_lock, pool_lock = threading.Lock(), threading.Lock()
    running: dict[Cell, int] = {}  # cell → the threads it trains with
    waiting = [len(todo)]
    with tqdm(total=len(cells), initial=len(cells) - len(todo), desc="grid", unit="run",
              disable=not progress, dynamic_ncols=True) as bar:
        def work(cell: Cell) -> None:
            with pool_lock:
                waiting[0] -= 1
                running[cell] = cell.recipe.train.threads
            error = _run_cell(cell, config.final_evals, out)
            with pool_lock:
                del running[cell]
                if config.share_idle_cores and not waiting[0]:
                    for other, threads in idle_core_shares(running, _cores()).items():
                        running[other] = threads
                        with atomic_open(other.run_dir / THREADS_REQUEST, "w") as f:
                            f.write(str(threads))
            if error:
                failures.append(error)
                tqdm.write(f"FAILED {error}")
            else:
                tqdm.write(f"done {cell.key}")
                with report_lock:  # the table and plots stay current while the grid runs
                    write_report(config)
            bar.update(1)

        with ThreadPoolExecutor(max_workers=jobs or config.jobs) as pool:
            list(pool.map(work, todo))
    report = write_report(config)
    if failures:
        raise NfhiqlError(f"{len(failures)} run(s) failed, first: {failures[0]}")
    return report


def _run_cell(cell: Cell, final_evals: int, out: Path) -> str | None:
    """Train one cell to completion as a subprocess and write its result; an error line on failure."""
    name = cell.key.replace("/", "__")
    recipe_path = out / "recipes" / f"{name}.yaml"
    with atomic_open(recipe_path, "w") as f:
        yaml.safe_dump(to_dict(cell.recipe), f, sort_keys=False)
    log_path = out / "logs" / f"{name}.log"
    (cell.run_dir / THREADS_REQUEST).unlink(missing_ok=True)  # unread, from an earlier grid: this one decides anew
    command = [sys.executable, "-m", "nfhiql_core.cli", "train", "--config", str(recipe_path), "--resume", "--quiet"]
    with log_path.open("a") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0:
        return f"{cell.key}: nfhiql train exited with {code} (log: {log_path})"
    try:
        save_json(cell.run_dir / RESULT_NAME, cell_result(cell, final_evals))
    except NfhiqlError as exc:
        return str(exc)
    return None


Key = TypeVar("Key", bound=Hashable)


def idle_core_shares(threads: dict[Key, int], cores: int) -> dict[Key, int]:
    """The raised thread counts of the runs still training (`threads`: each run's count) once no run
    waits: `cores` split evenly over them, for runs that set train.threads (0, torch's default of all
    cores, is left alone) and only where that is more than they have."""
    share = cores // max(len(threads), 1)
    return {key: share for key, n in threads.items() if 0 < n < share}


def _cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cell_result(cell: Cell, final_evals: int) -> dict[str, Any]:
    """A finished cell's score (mean of its last `final_evals` evaluations) and budget."""
    eval_csv = cell.run_dir / "eval.csv"
    rows = read_csv(eval_csv) if eval_csv.exists() else []
    if len(rows) < final_evals:
        raise NfhiqlError(f"{eval_csv}: {len(rows)} evaluation(s), the grid scores the mean of the last {final_evals}")
    last = rows[-final_evals:]
    tasks = sorted(k for k in last[0] if k.startswith("task"))
    loop = cell.recipe.train
    return {
        **_trained_with(cell),
        "task": cell.task, "policy": cell.policy, "data_fraction": cell.data_fraction, "seed": cell.seed,
        "success": float(np.mean([r["success"] for r in last])),
        "per_task": {t: float(np.mean([r[t] for r in last])) for t in tasks},
        "evaluated_steps": [int(r["step"]) for r in last],
        "curve": [{"step": int(r["step"]), "success": float(r["success"])} for r in rows],
        "train_wall_s": _train_seconds(cell.run_dir / "train.csv", loop.log_interval),
        "device": _device_name(loop.device), "threads": loop.threads,
        "threads_raised_to": _threads_raised_to(cell.run_dir),
        "dataset_sha256": _dataset_sha256(cell.run_dir),
    }


def _threads_raised_to(run_dir: Path) -> int | None:
    """The last thread count the run took from a grid (`share_idle_cores`) while training, None if it kept its own."""
    applied = run_dir / THREADS_APPLIED
    return int(applied.read_text()) if applied.exists() else None


def _dataset_sha256(run_dir: Path) -> str | None:
    """The sha256 of the dataset file the run trained on, where the run recorded it (older runs did not)."""
    record = run_dir / DATASET_RECORD
    return json.loads(record.read_text())["sha256"] if record.exists() else None


def _trained_with(cell: Cell) -> dict[str, Any]:
    """The part of a cell's recipe that decides its score: a result is reusable only where this matches."""
    loop = cell.recipe.train
    return {"steps": loop.steps, "batch_size": loop.batch_size, "eval_episodes": loop.eval_episodes,
            "eval_subgoal_candidates": loop.eval_subgoal_candidates, "agent": to_dict(cell.recipe.agent)}


def _same_budget(run: dict[str, Any], cell: Cell) -> bool:
    """Whether an earlier result was trained with `cell`'s budget; knobs added since it was scored (agent
    fields, eval_subgoal_candidates) count at their defaults."""
    try:
        agent = to_dict(from_dict(AgentConfig, run.get("agent"), "result", "agent."))
    except ConfigError:
        return False
    saved = {"eval_subgoal_candidates": LoopConfig.eval_subgoal_candidates, **run, "agent": agent}
    return all(saved.get(k) == v for k, v in _trained_with(cell).items())


def adopt_results(config: ExperimentConfig, report_path: str | Path) -> list[str]:
    """Mark cells finished with the runs of an earlier report (a results.json, e.g. a committed snapshot).

    A run is adopted only into a cell that has no result yet and whose budget (steps, batch, evaluation
    episodes, agent) equals the one the run was trained with, so a changed recipe is run again rather than
    mixed in. Returns the adopted cell keys; the adopted result records where it came from.
    """
    path = Path(report_path)
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NfhiqlError(f"{path}: not a results.json with a 'runs' table ({exc})") from exc
    adopted = []
    for cell in grid_cells(config):
        run = runs.get(cell.key)
        if run is None or (cell.run_dir / RESULT_NAME).exists():
            continue
        if not _same_budget(run, cell):
            tqdm.write(f"not adopted (budget differs from the recipe): {cell.key}")
            continue
        save_json(cell.run_dir / RESULT_NAME, {**run, "adopted_from": str(path)})
        adopted.append(cell.key)
    return adopted


def _train_seconds(train_csv: Path, log_interval: int) -> float:
    """Gradient-step wall time from the logged throughput (excludes evaluation; survives resumes)."""
    rows = read_csv(train_csv)
    return float(sum(log_interval / r["steps_per_s"] for r in rows if r["steps_per_s"] > 0))


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores)"


# --------------------------------------------------------------------------------- report
def write_report(config: ExperimentConfig) -> dict[str, Any]:
    """Aggregate finished cells into results.json / results.md and the two figures."""
    cells = grid_cells(config)
    results = {c.key: _load_result(c) for c in cells}
    groups = []
    for task in config.tasks:
        for fraction, policy in itertools.product(config.task_fractions(task), config.task_policies(task)):
            members = [c for c in cells if (c.task, c.policy, c.data_fraction) == (task.name, policy, fraction)]
            done = [results[c.key] for c in members if results[c.key] is not None]
            scores = [r["success"] for r in done]
            spreads = [s for s in (_eval_spread(r, config.final_evals) for r in done) if s is not None]
            groups.append({
                "task": task.name, "policy": policy, "data_fraction": fraction,
                "seeds_done": [r["seed"] for r in done], "seeds_planned": list(config.seeds),
                "success_per_seed": scores,
                "success_mean": float(np.mean(scores)) if scores else None,
                "success_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
                "eval_spread_mean": float(np.mean(spreads)) if spreads else None, "eval_spread_runs": len(spreads),
                "train_wall_s_mean": float(np.mean([r["train_wall_s"] for r in done])) if done else None,
                "train_wall_s_by_device": {d: float(np.mean([r["train_wall_s"] for r in done if r["device"] == d]))
                                           for d in sorted({r["device"] for r in done})},
                "budget": _budget(members[0].recipe, config.final_evals),
            })
    report = {"config": to_dict(config), "groups": groups, "retention": _retention(groups),
              "runs": {k: v for k, v in results.items() if v is not None}}
    out = Path(config.output_dir)
    save_json(out / "results.json", report)
    with atomic_open(out / "results.md", "w") as f:
        f.write(_markdown(config, report))
    _plot_curves(config, cells, results, out / "curves.png")
    _plot_fractions(config, groups, out / "data_fraction.png")
    return report


def _load_result(cell: Cell) -> dict[str, Any] | None:
    path = cell.run_dir / RESULT_NAME
    return json.loads(path.read_text()) if path.exists() else None


def _eval_spread(result: dict[str, Any], final_evals: int) -> float | None:
    """Sample std of a run's scored evaluations (how much its success moves from one evaluation to the next)."""
    last = [row["success"] for row in result.get("curve", [])][-final_evals:]
    return float(np.std(last, ddof=1)) if final_evals > 1 and len(last) == final_evals else None


def _budget(recipe: TrainConfig, final_evals: int) -> dict[str, Any]:
    agent, loop = recipe.agent, recipe.train
    return {"steps": loop.steps, "batch_size": loop.batch_size,
            "actor_hidden_dims": list(agent.actor_hidden_dims), "value_hidden_dims": list(agent.value_hidden_dims),
            "flow": f"{agent.flow_blocks} couplings × {list(agent.flow_hidden_dims)}",
            "eval": f"last {final_evals} of evals every {loop.eval_interval} steps from {loop.eval_start}, "
                    f"5 tasks × {loop.eval_episodes} episodes"}


def _retention(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Success with the smallest data fraction relative to full data, per task and policy."""
    rows = []
    by_key = {(g["task"], g["policy"], g["data_fraction"]): g for g in groups}
    for (task, policy, fraction), g in by_key.items():
        full = by_key.get((task, policy, 1.0))
        if fraction == 1.0 or full is None or g["success_mean"] is None or not full["success_mean"]:
            continue
        rows.append({"task": task, "policy": policy, "data_fraction": fraction,
                     "retention": g["success_mean"] / full["success_mean"],
                     "seeds": len(g["seeds_done"]), "full_data_seeds": len(full["seeds_done"])})
    return rows


def _fmt(mean: float | None, std: float | None, n: int, planned: int) -> str:
    if mean is None:
        return "—"
    text = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
    return text + ("" if n == planned else f" ({n}/{planned} seeds)")


def _markdown(config: ExperimentConfig, report: dict[str, Any]) -> str:
    lines = [f"# Experiment results: {config.output_dir}", ""]
    if config.description:
        lines += [config.description.strip(), ""]
    lines += ["Success (%) = mean over seeds of each run's mean of its last "
              f"{config.final_evals} evaluations (OGBench protocol: 5 tasks); ± = sample std over seeds.", "",
              "| task | data | " + " | ".join(config.policies) + " | budget | train wall time / run | device |",
              "|---|---|" + "---|" * len(config.policies) + "---|---|---|"]
    groups = report["groups"]
    for task in config.tasks:
        for fraction in config.task_fractions(task):
            row = [g for g in groups if g["task"] == task.name and g["data_fraction"] == fraction]
            by_policy = {g["policy"]: g for g in row}
            cells = [_fmt(g["success_mean"], g["success_std"], len(g["seeds_done"]), len(g["seeds_planned"]))
                     if (g := by_policy.get(policy)) else "n/a" for policy in config.policies]
            b = row[0]["budget"]
            budget = (f"{b['steps']} steps, batch {b['batch_size']}, actor {b['actor_hidden_dims']}, "
                      f"value {b['value_hidden_dims']}, flow {b['flow']}")
            lines.append(f"| {task.name} | {fraction:g} | " + " | ".join(cells) + f" | {budget} | {_walls(row)} |")
    lines += ["", "Data efficiency (success with less data ÷ success with all data):", ""]
    lines += [f"- {r['task']}, {r['policy']}, data {r['data_fraction']:g}: {100 * r['retention']:.0f} %"
              + ("" if r["seeds"] == r["full_data_seeds"] else
                 f" ({r['seeds']} vs {r['full_data_seeds']} seeds: not yet like for like)")
              for r in report["retention"]] or ["- (not enough finished runs yet)"]
    lines += ["", f"Training stability (sample std of a run's last {config.final_evals} evaluations, in points, "
              "mean over runs; the spread over seeds is the table's ±):", ""]
    lines += [f"- {g['task']}, {g['policy']}, data {g['data_fraction']:g}: "
              + (f"{100 * g['eval_spread_mean']:.1f} ({_count(g['eval_spread_runs'], 'run')})"
                 if g["eval_spread_mean"] is not None else "not recorded (no evaluation curve kept)")
              for g in groups if g["seeds_done"]]
    lines += ["", "Datasets (sha256 of the file each finished run trained on):", ""]
    for task in config.tasks:
        files = Counter(r.get("dataset_sha256") for r in report["runs"].values() if r["task"] == task.name)
        lines.append(f"- {task.name}: " + (", ".join(
            f"{sha[:12] + '…' if sha else 'not recorded'} ({_count(n, 'run')})"
            for sha, n in files.items()) or "no finished run yet"))
    refs = [t for t in config.tasks if t.reference]
    if refs:
        lines += ["", "Published reference for the Gaussian control:", ""]
        lines += [f"- {t.name}: {t.reference}" for t in refs]
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _walls(row: list[dict[str, Any]]) -> str:
    """The table's wall time and device cells for one row, per device where the row's runs used several."""
    devices = sorted({d for g in row for d in g["train_wall_s_by_device"]})
    wall = " / ".join(f"{g['policy']} " + ", ".join(f"{seconds / 60:.0f} min" + (f" on {d}" if len(devices) > 1 else "")
                                                    for d, seconds in g["train_wall_s_by_device"].items())
                      for g in row if g["train_wall_s_by_device"])
    return f"{wall or '—'} | {'; '.join(devices) or '—'}"


def _plot_curves(config: ExperimentConfig, cells: Sequence[Cell], results: dict[str, dict[str, Any] | None],
                 path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(config.tasks), figsize=(5.5 * len(config.tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], config.tasks):
        for fraction, policy in itertools.product(config.task_fractions(task), config.policies):
            curves = [_curve(c, results[c.key]) for c in cells
                      if (c.task, c.policy, c.data_fraction) == (task.name, policy, fraction)]
            curves = [c for c in curves if c]
            if not curves:
                continue
            by_step: dict[float, list[float]] = {}  # a run still training contributes the steps it has reached
            for curve in curves:
                for row in curve:
                    by_step.setdefault(row["step"], []).append(row["success"])
            steps = np.array(sorted(by_step))
            values = [np.array(by_step[s]) for s in steps]
            line, = ax.plot(steps, [v.mean() for v in values], marker="o", ms=3,
                            linestyle="-" if fraction == 1.0 else "--",
                            label=f"{policy}, data {fraction:g} ({_count(len(curves), 'seed')})")
            if len(curves) > 1:
                ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values],
                                color=line.get_color(), alpha=0.15)
        if not ax.lines:  # e.g. runs adopted from a snapshot written before results carried their curve
            ax.text(0.5, 0.5, "no evaluation curves available", ha="center", va="center", transform=ax.transAxes)
        _style(ax, task.name, "gradient step", "success (shaded: min–max over seeds)")
    _save(fig, path)


def _curve(cell: Cell, result: dict[str, Any] | None) -> list[dict[str, float]]:
    """A cell's evaluations so far: its eval.csv while it trains here, else the curve its `result` carries."""
    eval_csv = cell.run_dir / "eval.csv"
    if eval_csv.exists():
        return read_csv(eval_csv)
    return result.get("curve", []) if result else []


def _plot_fractions(config: ExperimentConfig, groups: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(config.tasks), figsize=(4.5 * len(config.tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], config.tasks):
        for policy in config.policies:
            rows = sorted((g for g in groups if g["task"] == task.name and g["policy"] == policy
                           and g["success_mean"] is not None), key=lambda g: g["data_fraction"])
            if rows:
                ax.errorbar([g["data_fraction"] for g in rows], [g["success_mean"] for g in rows],
                            yerr=[g["success_std"] or 0.0 for g in rows], marker="o", capsize=3, label=policy)
        ax.set_xscale("log")
        _style(ax, task.name, "fraction of the dataset", "success (mean ± std over seeds)")
    _save(fig, path)


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a task with no finished run yet has nothing to label
        ax.legend(fontsize=7)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path)
