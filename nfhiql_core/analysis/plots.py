"""Learning-curve figures from run directories (train.csv / eval.csv written by the trainer)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nfhiql_core.atomic_io import atomic_open
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.training.metrics import read_csv

TRAIN_PANELS = ("value/loss", "low_actor/log_prob", "high_actor/log_prob")


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """One figure: evaluation success (with 95 % CI) and key training curves, one line per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(TRAIN_PANELS), figsize=(4.2 * (1 + len(TRAIN_PANELS)), 3.4))
    for run_dir in map(Path, run_dirs):
        train_csv, eval_csv = run_dir / "train.csv", run_dir / "eval.csv"
        if not train_csv.exists():
            raise NfhiqlError(f"{train_csv}: not found (is {run_dir} a training run directory?)")
        label = run_dir.name
        if eval_csv.exists():
            rows = read_csv(eval_csv)
            steps = [r["step"] for r in rows]
            success = [r["success"] for r in rows]
            axes[0].plot(steps, success, marker="o", label=label)
            axes[0].fill_between(steps, [s - r["ci95"] for s, r in zip(success, rows)],
                                 [s + r["ci95"] for s, r in zip(success, rows)], alpha=0.2)
        rows = read_csv(train_csv)
        for ax, key in zip(axes[1:], TRAIN_PANELS):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=label)
    axes[0].set_title("evaluation success")
    axes[0].set_ylim(0, 1)
    for ax, key in zip(axes[1:], TRAIN_PANELS):
        ax.set_title(key)
    for ax in axes:
        ax.set_xlabel("gradient step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    save_figure(fig, output)
    return output


EXPERT_TRAIN_PANELS = ("episode_velocity", "critic_loss", "alpha")


def plot_expert_run(run_dir: str | Path, output: str | Path) -> Path:
    """One figure of an `nfhiql expert ant` run: evaluated directional velocity (mean and worst episode)
    and the exploration velocity, critic loss and temperature over environment steps."""
    run_dir = Path(run_dir)
    train_csv, eval_csv = run_dir / "train.csv", run_dir / "eval.csv"
    for path in (train_csv, eval_csv):
        if not path.exists():
            raise NfhiqlError(f"{path}: not found (is {run_dir} an `nfhiql expert ant` run directory?)")
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(EXPERT_TRAIN_PANELS), figsize=(4.2 * (1 + len(EXPERT_TRAIN_PANELS)), 3.4))
    rows = read_csv(eval_csv)
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["velocity"] for r in rows], marker="o", label="mean")
    axes[0].plot(steps, [r["velocity_min"] for r in rows], marker="o", label="worst episode")
    axes[0].set_title("evaluated directional velocity (m/s)")
    axes[0].legend(fontsize=8)
    rows = read_csv(train_csv)
    for ax, key in zip(axes[1:], EXPERT_TRAIN_PANELS):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows])
        ax.set_title(key)
    for ax in axes:
        ax.set_xlabel("environment step")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(3, 3))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    output = Path(output)
    save_figure(fig, output)
    return output


def is_expert_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` was written by `nfhiql expert ant` (its eval.csv reports velocities)."""
    eval_csv = Path(run_dir) / "eval.csv"
    return eval_csv.exists() and "velocity" in eval_csv.read_text().split("\n", 1)[0].split(",")


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Write `fig` as a PNG atomically (creating parent folders) and close it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)
